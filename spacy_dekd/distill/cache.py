"""Frozen-model outputs, computed at most once per example per run.

Teacher and assistant are frozen (eval mode, no dropout), so an example's
logits and hidden states never change within a run: the first query pays a
forward pass, later epochs read the cache. `n_forward` counts the examples
actually run through the model, the figure DeKD's data efficiency is about.
"""
from pathlib import Path
from typing import Callable, Optional

import torch

from .types import TeacherOutput

ForwardFn = Callable[[torch.Tensor], TeacherOutput]


class OutputCache:
    """Logits (n_examples, C) and, when asked, first-token states
    (n_examples, L, d) of one frozen model, filled on demand.

    n_examples (int): The size of the training corpus; ids index into it.
    with_hidden (bool): Whether to keep the hidden states (alignment on).
    with_uncertainty (bool): Whether to keep each row's Monte Carlo dropout
        uncertainty (MUKI).
    """

    def __init__(self, n_examples: int, *, with_hidden: bool, with_uncertainty: bool = False) -> None:
        self.n_examples = n_examples
        self.with_hidden = with_hidden
        self.with_uncertainty = with_uncertainty
        self.filled = torch.zeros(n_examples, dtype=torch.bool)
        self.logits: Optional[torch.Tensor] = None
        self.hidden: Optional[torch.Tensor] = None
        self.uncertainty: Optional[torch.Tensor] = None
        self.n_forward = 0  # examples run through the model
        self.n_requested = 0  # examples asked for, cached or not

    def get(self, ids: torch.Tensor, forward: ForwardFn) -> TeacherOutput:
        """The outputs for the corpus ids, running `forward` on the missing
        ones only. ids (torch.Tensor): (q,) corpus indices, on the CPU.
        """
        ids = ids.cpu()
        self.n_requested += int(ids.numel())
        missing = ids[~self.filled[ids]].unique()
        if missing.numel() > 0:
            self._put(missing, forward(missing))
        assert self.logits is not None
        hidden = None
        if self.with_hidden:
            assert self.hidden is not None
            hidden = list(self.hidden[ids.to(self.hidden.device)].unbind(1))  # L x (q, d)
        uncertainty = None
        if self.with_uncertainty:
            assert self.uncertainty is not None
            uncertainty = self.uncertainty[ids.to(self.uncertainty.device)]
        return TeacherOutput(logits=self.logits[ids.to(self.logits.device)], hidden_states=hidden, uncertainty=uncertainty)

    def _put(self, ids: torch.Tensor, output: TeacherOutput) -> None:
        logits = output.logits.detach()
        if self.logits is None:
            self.logits = logits.new_zeros((self.n_examples, logits.shape[1]))
        self.logits[ids.to(logits.device)] = logits
        if self.with_hidden:
            if output.hidden_states is None:
                raise ValueError("The frozen model returned no hidden states.")
            hidden = torch.stack([h.detach().float() for h in output.hidden_states], dim=1)  # (q, L, d)
            if self.hidden is None:
                self.hidden = hidden.new_zeros((self.n_examples,) + tuple(hidden.shape[1:]))
            self.hidden[ids.to(hidden.device)] = hidden
        if self.with_uncertainty:
            if output.uncertainty is None:
                raise ValueError("The frozen model returned no uncertainty.")
            if self.uncertainty is None:
                self.uncertainty = output.uncertainty.new_zeros((self.n_examples,))
            self.uncertainty[ids.to(output.uncertainty.device)] = output.uncertainty.detach().float()
        self.filled[ids] = True
        self.n_forward += int(ids.numel())

    def to_disk(self, path: Path) -> None:
        from safetensors.torch import save_file

        tensors = {"filled": self.filled, "counts": torch.tensor([self.n_forward, self.n_requested])}
        if self.logits is not None:
            tensors["logits"] = self.logits.cpu().contiguous()
        if self.hidden is not None:
            tensors["hidden"] = self.hidden.cpu().contiguous()
        if self.uncertainty is not None:
            tensors["uncertainty"] = self.uncertainty.cpu().contiguous()
        save_file(tensors, str(path))

    def from_disk(self, path: Path, device: torch.device) -> "OutputCache":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        self.filled = tensors["filled"]
        self.n_forward, self.n_requested = (int(x) for x in tensors["counts"])
        self.logits = tensors["logits"].to(device) if "logits" in tensors else None
        self.hidden = tensors["hidden"].to(device) if "hidden" in tensors else None
        self.uncertainty = tensors["uncertainty"].to(device) if "uncertainty" in tensors else None
        return self
