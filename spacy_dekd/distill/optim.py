"""The distillation optimizer: torch's AdamW with linear warmup and decay.

The student, and the alignment projections that are not part of any spaCy
component, train in plain torch, so the optimizer step costs what it costs
in a plain PyTorch loop.
"""
from dataclasses import dataclass
from typing import Iterable, Tuple

import torch
from spacy.util import registry


@dataclass
class TorchAdamW:
    learn_rate: float
    warmup_ratio: float
    weight_decay: float
    beta1: float
    beta2: float
    eps: float
    grad_clip: float

    def build(
        self, params: Iterable[torch.nn.Parameter], total_steps: int
    ) -> Tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
        optimizer = torch.optim.AdamW(
            list(params),
            lr=self.learn_rate,
            betas=(self.beta1, self.beta2),
            eps=self.eps,
            weight_decay=self.weight_decay,
        )
        warmup = max(1, int(self.warmup_ratio * total_steps))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

        return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


@registry.optimizers("spacy-dekd.AdamW.v1")
def make_adamw_v1(
    learn_rate: float = 1e-4,
    warmup_ratio: float = 0.1,
    weight_decay: float = 0.01,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    grad_clip: float = 1.0,
) -> TorchAdamW:
    """AdamW for `[distillation.optimizer]`, with a linear warmup over
    `warmup_ratio` of the steps and a linear decay to 0.

    grad_clip (float): Clip the gradient norm to this; 0 turns it off.
    """
    if learn_rate <= 0:
        raise ValueError(f"learn_rate must be > 0, got {learn_rate}.")
    if not 0 <= warmup_ratio < 1:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}.")
    return TorchAdamW(learn_rate, warmup_ratio, weight_decay, beta1, beta2, eps, grad_clip)
