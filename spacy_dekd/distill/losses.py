"""The loss terms of DeKD: KL (Eq. 1), CE (Eq. 2), teacher-assistant KL
(Eq. 7) and layer alignment (Eq. 9).

Each term is a pure torch function, unit-tested against a hand computation,
and a registered builder in `dekd_losses` that fixes its settings. With
`multilabel=True` the Bernoulli analogue is used per label (docs/DESIGN.md,
"Multilabel classes"): sigmoid instead of softmax, binary KL, summed over
labels and averaged over examples, like binary cross-entropy.
"""
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registry
from .types import LayerSelector, LossFn, Router


def kl_divergence(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    *,
    temperature: float = 1.0,
    scale_by_temperature: bool = True,
    multilabel: bool = False,
) -> torch.Tensor:
    """Eq. 1: KL(softmax(z_t / τ) ‖ softmax(z_s / τ)) · τ², averaged over
    the examples given; 0 when there are none.

    The paper writes KL(φ(S/τ) ‖ φ(T/τ)), the argument order of
    `F.kl_div(input=log p_s, target=p_t)`, which computes this forward KL of
    the teacher from the student. τ² (Hinton et al.) keeps the gradient
    scale independent of τ.

    student_logits (torch.Tensor): (n, C).
    teacher_logits (torch.Tensor): (n, C), no gradient needed.
    RETURNS (torch.Tensor): A scalar.
    """
    if student_logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    t = float(temperature)
    s = student_logits.float() / t  # (n, C)
    teacher = teacher_logits.float().detach() / t  # (n, C)
    if multilabel:
        # Binary KL per label: log-sigmoid keeps it finite for large logits.
        kl = (
            torch.sigmoid(teacher) * (F.logsigmoid(teacher) - F.logsigmoid(s))
            + torch.sigmoid(-teacher) * (F.logsigmoid(-teacher) - F.logsigmoid(-s))
        ).sum(-1)  # (n,)
        loss = kl.mean()
    else:
        loss = F.kl_div(
            F.log_softmax(s, dim=-1),
            F.log_softmax(teacher, dim=-1),
            reduction="batchmean",
            log_target=True,
        )
    return loss * (t * t) if scale_by_temperature else loss


def cross_entropy(
    student_logits: torch.Tensor,
    gold: torch.Tensor,
    *,
    multilabel: bool = False,
    mask: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Eq. 2: cross-entropy against the gold labels, averaged over the
    examples that have any (gold labels cost no teacher query; unlabelled
    text has none); 0 when none has.

    student_logits (torch.Tensor): (N, C).
    gold (torch.Tensor): (N, C), one-hot for exclusive classes, 0/1 per label
        for multilabel.
    mask (Optional[torch.Tensor]): (N, C), 0 where a gold value is missing:
        a whole row for an unlabelled example, single labels for multilabel.
    RETURNS (torch.Tensor): A scalar.
    """
    logits = student_logits.float()
    if mask is None:
        mask = torch.ones_like(logits)
    labelled = mask.amax(-1) > 0  # (N,)
    if not bool(labelled.any()):
        return logits.sum() * 0.0
    if multilabel:
        bce = F.binary_cross_entropy_with_logits(logits, gold.float(), reduction="none")
        per_example = (bce * mask).sum(-1)  # (N,)
    else:
        per_example = -(gold.float() * F.log_softmax(logits, dim=-1)).sum(-1)  # (N,)
    return per_example[labelled].mean()


def teacher_assistant_kl(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    assistant_logits: torch.Tensor,
    kl: LossFn,
    *,
    multilabel: bool = False,
) -> torch.Tensor:
    """Eq. 7: L_TA = KL_T(certain) + KL_A(uncertain), each averaged over its
    own subset; an empty subset contributes 0.

    student_logits (torch.Tensor): (k, C), the routed rows: first the
        teacher's (certain) rows, then the assistant's (uncertain) rows.
    teacher_logits (torch.Tensor): (k_T, C) for the certain rows.
    assistant_logits (torch.Tensor): (k_A, C) for the uncertain rows.
    """
    n_teacher = teacher_logits.shape[0]
    loss_t = kl(student_logits[:n_teacher], teacher_logits, multilabel=multilabel)
    loss_a = kl(student_logits[n_teacher:], assistant_logits, multilabel=multilabel)
    return loss_t + loss_a


def layer_alignment(
    student_hidden: Sequence[torch.Tensor],
    teacher_hidden: Sequence[torch.Tensor],
    *,
    projections: Optional[Sequence[nn.Module]] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Eq. 9: L_DA = mean_x Σ_i ‖ ĥ_s^i(x) − ĥ_t^{I(i)}(x) ‖², ĥ = h / ‖h‖₂.

    student_hidden (Sequence[torch.Tensor]): M tensors (k, d_s), the aligned
        student layers in order.
    teacher_hidden (Sequence[torch.Tensor]): M tensors (k, d_t), the picked
        teacher layers I(1) < ... < I(M).
    projections (Optional[Sequence[nn.Module]]): One d_s → d_t map per student
        layer, applied before normalising, when the widths differ.
    reduction (str): "sum" over hidden dimensions (the literal ‖·‖²) or
        "mean" over them (the sum / d_t, BERT-PKD's released code).
    RETURNS (torch.Tensor): A scalar; 0 for no examples.
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean', got '{reduction}'.")
    if len(student_hidden) != len(teacher_hidden):
        raise ValueError(
            f"Cannot align {len(student_hidden)} student layers with "
            f"{len(teacher_hidden)} teacher layers."
        )
    total = student_hidden[0].sum() * 0.0
    if student_hidden[0].shape[0] == 0:
        return total
    for i, (h_s, h_t) in enumerate(zip(student_hidden, teacher_hidden)):
        h_s = h_s.float()
        if projections is not None:
            h_s = projections[i](h_s)  # (k, d_t)
        if h_s.shape[-1] != h_t.shape[-1]:
            raise ValueError(
                f"Student width {h_s.shape[-1]} differs from teacher width "
                f"{h_t.shape[-1]}: enable the projection."
            )
        diff = F.normalize(h_s, dim=-1) - F.normalize(h_t.float().detach(), dim=-1)
        per_example = diff.pow(2).sum(-1)  # (k,)
        if reduction == "mean":
            per_example = per_example / h_t.shape[-1]
        total = total + per_example.mean()
    return total


class TeacherAssistantLoss:
    """Eq. 7 with its router: which selected rows learn from the teacher and
    which from the assistant.
    """

    # Monte Carlo dropout passes each frozen model makes per answer, so that
    # the answer carries an uncertainty per row (MUKI's); 0: none.
    mc_samples: int = 0

    def __init__(self, router: Router, kl: LossFn) -> None:
        self.router = router
        self.kl = kl

    def route(
        self, student_logits: torch.Tensor, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.router(student_logits, multilabel=multilabel)

    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        assistant_logits: torch.Tensor,
        *,
        multilabel: bool = False,
    ) -> torch.Tensor:
        return teacher_assistant_kl(
            student_logits, teacher_logits, assistant_logits, self.kl, multilabel=multilabel
        )


class LayerAlignmentLoss:
    """Eq. 9 with its layer selector (Eq. 8) and, when widths differ, one
    learned d_s → d_t projection per aligned student layer. The projections
    train with the student and are not part of the saved pipeline.
    """

    def __init__(
        self,
        layer_selector: LayerSelector,
        *,
        n_layers: Optional[int] = None,
        project: bool = True,
        reduction: str = "mean",
    ) -> None:
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got '{reduction}'.")
        self.layer_selector = layer_selector
        self.multilabel = False  # the component's class mode, set by initialize
        self.n_layers = n_layers
        self.project = project
        self.reduction = reduction
        self.projections: Optional[nn.ModuleList] = None

    def initialize(
        self, n_student_layers: int, student_width: int, teacher_width: int, n_teacher_layers: Optional[int] = None,
        *, multilabel: bool = False,
    ) -> List[nn.Parameter]:
        """Fix M and the class mode, and create the projections. RETURNS:
        their parameters.
        """
        self.multilabel = multilabel
        m = self.n_layers or n_student_layers
        if not 1 <= m <= n_student_layers:
            raise ValueError(
                f"Cannot align M={m} layers: the student has {n_student_layers}."
            )
        if n_teacher_layers is not None and m > n_teacher_layers:
            raise ValueError(
                f"Cannot align {m} student layers with {n_teacher_layers} teacher layers: set "
                f"the alignment's n_layers to at most {n_teacher_layers}, use a shallower student, "
                "or set alignment_weight = 0."
            )
        self.n_layers = m
        if student_width != teacher_width:
            if not self.project:
                raise ValueError(
                    f"Student width {student_width} differs from teacher width "
                    f"{teacher_width}: set project = true to learn a projection."
                )
            self.projections = nn.ModuleList(
                nn.Linear(student_width, teacher_width) for _ in range(m)
            )
            return list(self.projections.parameters())
        return []

    def pick_layers(self, teacher_hidden: Sequence[torch.Tensor], head: Optional[nn.Module] = None) -> List[int]:
        return self.layer_selector(teacher_hidden, self.n_layers, head=head, multilabel=self.multilabel)

    def __call__(
        self,
        student_hidden: Sequence[torch.Tensor],
        teacher_hidden: Sequence[torch.Tensor],
        teacher_layers: Sequence[int],
    ) -> torch.Tensor:
        # With M below the student's depth, its last M layers are aligned.
        student = list(student_hidden)[-self.n_layers :] if self.n_layers else list(student_hidden)
        teacher = [teacher_hidden[i] for i in teacher_layers]
        return layer_alignment(
            student, teacher, projections=self.projections, reduction=self.reduction
        )


@registry.dekd_losses("spacy-dekd.KLDivergence.v1")
def make_kl_divergence_v1(
    temperature: float = 5.0, scale_by_temperature: bool = True
) -> LossFn:
    """Eq. 1 at a fixed temperature.

    temperature (float): τ.
    scale_by_temperature (bool): Multiply by τ² (Hinton et al.).
    RETURNS: fn(student_logits, teacher_logits, *, multilabel=False) -> scalar.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")

    def kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
        return kl_divergence(
            student_logits,
            teacher_logits,
            temperature=temperature,
            scale_by_temperature=scale_by_temperature,
            multilabel=multilabel,
        )

    return kl


@registry.dekd_losses("spacy-dekd.CrossEntropy.v1")
def make_cross_entropy_v1() -> LossFn:
    """Eq. 2. RETURNS: fn(student_logits, gold, *, multilabel=False, mask=None)."""
    return cross_entropy


@registry.dekd_losses("spacy-dekd.TeacherAssistantKL.v1")
def make_teacher_assistant_kl_v1(router: Router, kl: LossFn) -> TeacherAssistantLoss:
    """Eq. 7: KL to the teacher on the rows the router calls certain, KL to
    the assistant on the others.

    router (Router): From `dekd_routers`, e.g. spacy-dekd.EntropySplitRouter.v1.
    kl (LossFn): From `dekd_losses`, e.g. spacy-dekd.KLDivergence.v1.
    """
    return TeacherAssistantLoss(router, kl)


@registry.dekd_losses("spacy-dekd.LayerAlignment.v1")
def make_layer_alignment_v1(
    layer_selector: LayerSelector,
    n_layers: Optional[int] = None,
    project: bool = True,
    reduction: str = "mean",
) -> LayerAlignmentLoss:
    """Eq. 9 over the teacher layers the selector picks (Eq. 8).

    layer_selector (LayerSelector): From `dekd_layer_selectors`.
    n_layers (Optional[int]): M; the student's number of layers when None.
    project (bool): Learn a d_s → d_t projection when the widths differ.
    reduction (str): "sum" or "mean" over hidden dimensions (docs/DESIGN.md).
    """
    return LayerAlignmentLoss(layer_selector, n_layers=n_layers, project=project, reduction=reduction)
