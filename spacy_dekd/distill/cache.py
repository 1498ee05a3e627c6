"""Frozen-model outputs, computed at most once per example per run.

Teacher and assistant are frozen (eval mode, no dropout), so an example's
logits and hidden states never change within a run: the first query pays a
forward pass, later epochs read the cache. `n_forward` counts the examples
actually run through the model, the figure DeKD's data efficiency is about;
with a store of answers that runs share (store.py), the examples found there
are taken instead and counted in `n_stored`.

The cache holds rows for the examples answered, not for every example: a
run over a large pool under a teacher budget keeps as many answers as the
budget allows (its storage grows as answers come, doubling), plus one slot
index per example.

Saved, the rows are appended: each save writes the rows answered since the
last one as a shard of its own (`answers/teacher-START-END.safetensors`),
written whole and never rewritten, and the checkpoint holds the counts and
how many rows it covers. A save then costs the new answers, not all of them,
and a resume reads the shards up to that count.
"""
import re
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy
import torch

from ..files import write_whole
from .store import AnswerStore
from .types import TeacherOutput

ForwardFn = Callable[[torch.Tensor], TeacherOutput]
UNFILLED = -1


class OutputCache:
    """Logits (rows, C) and, when asked, first-token states (rows, L, d) and
    uncertainties (rows,) of one frozen model, a row per example answered.

    n_examples (int): The size of the training corpus; ids index into it.
    with_hidden (bool): Whether to keep the hidden states (alignment on).
    with_uncertainty (bool): Whether to keep each row's Monte Carlo dropout
        uncertainty (MUKI).
    """

    def __init__(self, n_examples: int, *, with_hidden: bool, with_uncertainty: bool = False) -> None:
        self.n_examples = n_examples
        self.with_hidden = with_hidden
        self.with_uncertainty = with_uncertainty
        self.slot = torch.full((n_examples,), UNFILLED, dtype=torch.int64)  # example id → its row
        self.n_rows = 0
        self.n_saved = 0  # rows already in shards
        self.ids: Optional[torch.Tensor] = None  # row → example id
        self.logits: Optional[torch.Tensor] = None
        self.hidden: Optional[torch.Tensor] = None
        self.uncertainty: Optional[torch.Tensor] = None
        self.n_forward = 0  # examples run through the model
        self.n_stored = 0  # examples taken from the store instead
        self.n_requested = 0  # examples asked for, cached or not
        self.store: Optional[AnswerStore] = None
        self.keys_of: Optional[Callable[[torch.Tensor], numpy.ndarray]] = None
        self.device = torch.device("cpu")

    @property
    def filled(self) -> torch.Tensor:
        """(n_examples,) bool: which examples have an answer."""
        return self.slot != UNFILLED

    def use_store(self, store: AnswerStore, keys_of: Callable[[torch.Tensor], numpy.ndarray], device: torch.device) -> None:
        """Take answers from `store` (logits alone) before running the model,
        and add the ones run to it. keys_of: corpus ids → their texts' keys.
        """
        if self.with_hidden or self.with_uncertainty:
            raise ValueError("a store of answers keeps logits alone")
        self.store, self.keys_of, self.device = store, keys_of, device

    def known(self, ids: torch.Tensor) -> torch.Tensor:
        """(q,) bool: which of the corpus ids have an answer."""
        return self.slot[ids.cpu()] != UNFILLED

    @property
    def nbytes(self) -> int:
        """Bytes the answers' storage holds (the slot index aside)."""
        return sum(t.numel() * t.element_size() for t in (self.logits, self.hidden, self.uncertainty) if t is not None)

    def get(self, ids: torch.Tensor, forward: ForwardFn) -> TeacherOutput:
        """The outputs for the corpus ids, running `forward` on the missing
        ones only. ids (torch.Tensor): (q,) corpus indices, on the CPU.
        """
        ids = ids.cpu()
        self.n_requested += int(ids.numel())
        missing = ids[self.slot[ids] == UNFILLED].unique()
        keys = None
        if missing.numel() > 0 and self.store is not None:
            missing, keys = self._take_stored(missing)
        if missing.numel() > 0:
            output = forward(missing)
            self._put(missing, output)
            self.n_forward += int(missing.numel())
            if self.store is not None:
                self.store.add(keys, output.logits.detach().float().cpu().numpy())
        assert self.logits is not None
        rows = self.slot[ids]
        hidden = None
        if self.with_hidden:
            assert self.hidden is not None
            hidden = list(self.hidden[rows.to(self.hidden.device)].unbind(1))  # L x (q, d)
        uncertainty = None
        if self.with_uncertainty:
            assert self.uncertainty is not None
            uncertainty = self.uncertainty[rows.to(self.uncertainty.device)]
        return TeacherOutput(logits=self.logits[rows.to(self.logits.device)], hidden_states=hidden, uncertainty=uncertainty)

    def _take_stored(self, ids: torch.Tensor) -> Tuple[torch.Tensor, numpy.ndarray]:
        """Put the stored answers of some ids; the ids left, and their keys."""
        assert self.store is not None and self.keys_of is not None
        keys = self.keys_of(ids)
        found, logits = self.store.lookup(keys)
        if found.any():
            self._put(ids[torch.from_numpy(found)], TeacherOutput(logits=torch.from_numpy(logits).to(self.device)))
            self.n_stored += int(found.sum())
        return ids[torch.from_numpy(~found)], keys[~found]

    def _put(self, ids: torch.Tensor, output: TeacherOutput) -> None:
        start, end = self.n_rows, self.n_rows + int(ids.numel())
        rows = torch.arange(start, end)
        logits = output.logits.detach()
        self.logits = _grown(self.logits, end, logits)
        self.logits[rows.to(logits.device)] = logits
        if self.with_hidden:
            if output.hidden_states is None:
                raise ValueError("The frozen model returned no hidden states.")
            hidden = torch.stack([h.detach().float() for h in output.hidden_states], dim=1)  # (q, L, d)
            self.hidden = _grown(self.hidden, end, hidden)
            self.hidden[rows.to(hidden.device)] = hidden
        if self.with_uncertainty:
            if output.uncertainty is None:
                raise ValueError("The frozen model returned no uncertainty.")
            uncertainty = output.uncertainty.detach().float()
            self.uncertainty = _grown(self.uncertainty, end, uncertainty)
            self.uncertainty[rows.to(uncertainty.device)] = uncertainty
        self.ids = _grown(self.ids, end, ids)
        self.ids[rows] = ids
        self.slot[ids] = rows
        self.n_rows = end

    def to_disk(self, path: Path, answers: Path, name: str) -> None:
        """The counts and the rows covered (path); the rows answered since the
        last save as one more shard in `answers`.
        """
        from safetensors.torch import save_file

        if self.n_rows > self.n_saved:
            answers.mkdir(parents=True, exist_ok=True)
            rows = slice(self.n_saved, self.n_rows)
            assert self.ids is not None and self.logits is not None
            tensors = {"ids": self.ids[rows].contiguous(), "logits": self.logits[rows].cpu().contiguous()}
            for part in ("hidden", "uncertainty"):
                value = getattr(self, part)
                if value is not None:
                    tensors[part] = value[rows].cpu().contiguous()
            shard = answers / SHARD.format(name=name, start=self.n_saved, end=self.n_rows)
            write_whole(shard, lambda tmp: save_file(tensors, str(tmp)))
            self.n_saved = self.n_rows
        save_file({"counts": torch.tensor([self.n_forward, self.n_requested, self.n_rows, self.n_stored])}, str(path))

    def from_disk(self, path: Path, device: torch.device, answers: Optional[Path] = None, name: str = "") -> "OutputCache":
        """RAISES ValueError: a shard the checkpoint covers is missing."""
        from safetensors.torch import load_file

        tensors = load_file(str(path))
        counts = [int(x) for x in tensors["counts"]]
        self.n_forward, self.n_requested = counts[:2]
        self.n_stored = counts[3] if len(counts) > 3 else 0
        if len(counts) >= 3:  # rows in shards
            self.n_rows = counts[2]
            tensors = _read_shards(answers, name, self.n_rows) if answers is not None else {}
            self.ids = tensors.get("ids", torch.zeros(0, dtype=torch.int64))
            self.slot = torch.full((self.n_examples,), UNFILLED, dtype=torch.int64)
            self.slot[self.ids] = torch.arange(self.n_rows)
        elif "slot" in tensors:  # all rows in the checkpoint, a slot per example
            self.slot = tensors["slot"]
            self.n_rows = int(tensors["logits"].shape[0]) if "logits" in tensors else 0
        else:  # written before answers had rows of their own: a row per example
            self.slot = torch.where(tensors["filled"], torch.arange(self.n_examples), torch.full_like(self.slot, UNFILLED))
            self.n_rows = int(tensors["logits"].shape[0]) if "logits" in tensors else 0
        if "ids" not in tensors and self.n_rows:
            filled = torch.nonzero(self.slot != UNFILLED).flatten()
            self.ids = torch.empty(self.n_rows, dtype=torch.int64)
            self.ids[self.slot[filled]] = filled
        self.n_saved = self.n_rows if len(counts) >= 3 else 0
        self.logits = tensors["logits"].to(device) if "logits" in tensors else None
        self.hidden = tensors["hidden"].to(device) if "hidden" in tensors else None
        self.uncertainty = tensors["uncertainty"].to(device) if "uncertainty" in tensors else None
        return self


SHARD = "{name}-{start:010d}-{end:010d}.safetensors"


def _shards(answers: Path, name: str) -> List[Tuple[int, int, Path]]:
    found = []
    for path in answers.glob(f"{name}-*-*.safetensors"):
        match = re.fullmatch(rf"{re.escape(name)}-(\d+)-(\d+)\.safetensors", path.name)
        if match:
            found.append((int(match.group(1)), int(match.group(2)), path))
    return sorted(found)


def _read_shards(answers: Path, name: str, n_rows: int) -> Dict[str, torch.Tensor]:
    """Rows 0 .. n_rows from the shards, in order. A shard from a save that
    never committed (it starts at or past n_rows) is removed.
    """
    from safetensors.torch import load_file

    parts: List[Dict[str, torch.Tensor]] = []
    position = 0
    for start, end, path in _shards(answers, name) if answers.exists() else []:
        if start >= n_rows:
            path.unlink()
        elif start == position and end <= n_rows:
            parts.append(load_file(str(path)))
            position = end
    if position != n_rows:
        raise ValueError(f"the {name}'s answers {position}..{n_rows} are missing from '{answers}'")
    if not parts:
        return {}
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}


def _grown(storage: Optional[torch.Tensor], n_rows: int, like: torch.Tensor) -> torch.Tensor:
    """`storage` with room for at least n_rows rows shaped as `like`'s:
    doubled when full, so that n answers cost O(n) copies in all.
    """
    if storage is not None and storage.shape[0] >= n_rows:
        return storage
    capacity = max(n_rows, 2 * (0 if storage is None else storage.shape[0]), 64)
    grown = like.new_zeros((capacity,) + tuple(like.shape[1:]))
    if storage is not None:
        grown[: storage.shape[0]] = storage
    return grown
