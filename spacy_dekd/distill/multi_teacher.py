"""The multi-teacher baselines of the paper's Table 3, the teacher and the
teacher assistant standing as their two teachers: both answer every selected
row (`BothRouter`), and each method says how the student learns from the two.

- UHC and MUKI replace Eq. 7 inside the DeKD objective (`teacher_assistant`):
  they combine the two teachers' logits.
- DFA and CFL are objectives of their own, built from parts
  (`MultiTeacherObjective`: the selection, a transfer term, CE): a KL to the
  teachers' logits and a term over the teachers' features (the first-token
  state of each model's last layer), through learned maps that train with
  the student and are not saved with it. KSM (ksm.py) is the same objective
  with another transfer: a policy choosing the knowledge per step.

Each term is a pure torch function, unit-tested against a hand computation.
Where a method is simplified here, its builder's docstring says how.
"""
import functools
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.pytorch import ClassifierOutput
from ..registry import registry
from .losses import TeacherAssistantLoss, kl_divergence, layer_alignment
from .objective import Selection, answered_plan, positions
from .selectors import BothRouter
from .types import InstanceSelector, Logits, LossFn, LossTerms, QueryPlan, TeacherOutput, Transfer

INTEGRATIONS = ("hard", "soft", "mean")


def prediction_entropy(logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
    """A model's uncertainty about each row: the entropy of its prediction
    (summed binary entropies per label for multilabel). (n, C) → (n,).
    """
    logits = logits.float()
    if multilabel:
        p = torch.sigmoid(logits)
        return -(p * F.logsigmoid(logits) + (1 - p) * F.logsigmoid(-logits)).sum(-1)
    log_p = F.log_softmax(logits, dim=-1)
    return -(log_p.exp() * log_p).sum(-1)


def integrate_teachers(
    teacher_logits: Sequence[torch.Tensor],
    *,
    integration: str = "soft",
    temperature: float = 1.0,
    multilabel: bool = False,
    uncertainties: Optional[Sequence[torch.Tensor]] = None,
    eps: float = 1e-6,
) -> torch.Tensor:
    """One target from several teachers, per row: the answer of the teacher
    most certain of the row ("hard", MUKI), the teachers' predictions at
    temperature τ averaged with weights proportional to their certainty, 1/u
    normalised over the teachers ("soft", MUKI), or with equal weights
    ("mean", CFL's combined logits). u is the entropy of a teacher's
    prediction, or the `uncertainties` given (Monte Carlo dropout).

    teacher_logits (Sequence[torch.Tensor]): One (n, C) tensor per teacher.
    uncertainties (Optional[Sequence[torch.Tensor]]): One (n,) per teacher.
    RETURNS (torch.Tensor): (n, C) logits whose softmax (sigmoid) at τ is
        the integrated prediction: τ·log p, or τ·logit p per label.
    """
    if integration not in INTEGRATIONS:
        raise ValueError(f"integration must be one of {', '.join(INTEGRATIONS)}, got '{integration}'.")
    logits = torch.stack([z.float().detach() for z in teacher_logits])  # (K, n, C)
    if uncertainties is not None:
        uncertainty = torch.stack([u.float().detach() for u in uncertainties])  # (K, n)
    else:
        uncertainty = torch.stack([prediction_entropy(z, multilabel=multilabel) for z in logits])
    if integration == "hard":
        best = uncertainty.argmin(0)  # (n,): ties go to the first teacher
        return logits[best, torch.arange(logits.shape[1], device=logits.device)]
    if integration == "soft":
        certainty = 1.0 / uncertainty.clamp(min=eps)
        weights = (certainty / certainty.sum(0, keepdim=True)).unsqueeze(-1)  # (K, n, 1)
    else:
        weights = torch.full(logits.shape[:2] + (1,), 1.0 / logits.shape[0], device=logits.device)
    t = float(temperature)
    if multilabel:
        p = (weights * torch.sigmoid(logits / t)).sum(0).clamp(eps, 1 - eps)
        return t * (p.log() - (1 - p).log())
    p = (weights * F.softmax(logits / t, dim=-1)).sum(0)
    return t * p.clamp(min=eps).log()


class IntegratedTeachersLoss(TeacherAssistantLoss):
    """The KL of the student to one target integrated from the teacher's and
    the assistant's answers (`integrate_teachers`) on every selected row.
    """

    def __init__(self, *, integration: str, temperature: float, mc_samples: int = 0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        if integration not in INTEGRATIONS:
            raise ValueError(f"integration must be one of {', '.join(INTEGRATIONS)}, got '{integration}'.")
        super().__init__(BothRouter(), kl_divergence)
        self.integration = integration
        self.temperature = temperature
        self.mc_samples = mc_samples

    def __call__(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        assistant_logits: torch.Tensor,
        *,
        multilabel: bool = False,
        uncertainties: Optional[Sequence[torch.Tensor]] = None,
    ) -> torch.Tensor:
        # The routed rows come twice: the teacher's side, then the assistant's.
        n = teacher_logits.shape[0]
        target = integrate_teachers(
            [teacher_logits, assistant_logits], integration=self.integration,
            temperature=self.temperature, multilabel=multilabel, uncertainties=uncertainties,
        )
        return kl_divergence(student_logits[:n], target, temperature=self.temperature, multilabel=multilabel)


# Feature terms


def dfa_feature_loss(
    student: torch.Tensor, teachers: Sequence[torch.Tensor], projections: Sequence[nn.Module]
) -> torch.Tensor:
    """DFA's feature alignment: the student's features, mapped into each
    teacher's width, against that teacher's features, as Eq. 9 compares
    layers (normalised vectors, squared distance per dimension), summed over
    the teachers. student (k, d_s); teachers: (k, d_j) each.
    """
    return sum(
        (layer_alignment([student], [h], projections=[p], reduction="mean") for h, p in zip(teachers, projections)),
        student.sum() * 0.0,
    )


def cfl_feature_loss(
    student: torch.Tensor,
    teachers: Sequence[torch.Tensor],
    student_map: nn.Module,
    teacher_maps: Sequence[nn.Module],
    decoders: Sequence[nn.Module],
) -> torch.Tensor:
    """CFL's common-feature term: the student's and each teacher's features
    mapped into one common space, the student's matched to each teacher's
    there (mean squared difference), and each teacher's map kept
    informative by reconstructing the teacher's features from it (without
    it, maps to zero would match trivially). Summed over the teachers.
    """
    common = student_map(student.float())  # (k, c)
    total = student.sum() * 0.0
    if student.shape[0] == 0:
        return total
    for h, to_common, back in zip(teachers, teacher_maps, decoders):
        h = h.float().detach()
        mapped = to_common(h)  # (k, c)
        total = total + (common - mapped).pow(2).mean() + (back(mapped) - h).pow(2).mean()
    return total


class DFAMaps(nn.Module):
    """DFA's learned maps: the student's features into each teacher's width."""

    def __init__(self, student_width: int, teacher_widths: Sequence[int]) -> None:
        super().__init__()
        self.projections = nn.ModuleList(nn.Linear(student_width, d) for d in teacher_widths)

    def forward(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        return dfa_feature_loss(student, teachers, list(self.projections))


class CFLMaps(nn.Module):
    """CFL's learned maps into a common space of `common_width`, and back."""

    def __init__(self, student_width: int, teacher_widths: Sequence[int], common_width: int) -> None:
        super().__init__()
        self.student_map = nn.Linear(student_width, common_width)
        self.teacher_maps = nn.ModuleList(nn.Linear(d, common_width) for d in teacher_widths)
        self.decoders = nn.ModuleList(nn.Linear(common_width, d) for d in teacher_widths)

    def forward(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        return cfl_feature_loss(student, teachers, self.student_map, list(self.teacher_maps), list(self.decoders))


# (student width, the teachers' widths) -> the maps of a feature term.
FeatureMaps = Callable[[int, Sequence[int]], nn.Module]


class TeachersKD:
    """DFA's and CFL's transfer: λ2·KD to the two teachers' logits (`kd`, a
    `TeacherAssistantLoss` that sends every row to both) + λ3·a feature term
    over their last layers' first-token states, through maps built once the
    widths are known.
    """

    feedback_size = 0

    def __init__(self, kd: TeacherAssistantLoss, maps: FeatureMaps, *, kd_weight: float, feature_weight: float) -> None:
        self.kd = kd
        self.maps = maps
        self.kd_weight = kd_weight
        self.feature_weight = feature_weight
        self.features: Optional[nn.Module] = None

    def initialize(self, student_width: int, teacher_widths: Sequence[int]) -> List[nn.Parameter]:
        self.features = self.maps(student_width, teacher_widths)
        return list(self.features.parameters())

    def module(self) -> Optional[nn.Module]:
        return self.features

    def __call__(
        self, logits: torch.Tensor, features: torch.Tensor, teacher: TeacherOutput, assistant: TeacherOutput,
        *, multilabel: bool = False,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        assert self.features is not None and teacher.hidden_states is not None and assistant.hidden_states is not None
        routed = torch.cat([logits, logits])  # the teacher's side, then the assistant's
        kd = self.kd(routed, teacher.logits, assistant.logits, multilabel=multilabel)
        feature = self.features(features, [teacher.hidden_states[-1], assistant.hidden_states[-1]])
        terms = {"ta": float(kd.detach()), "da": float(feature.detach())}
        return self.kd_weight * kd + self.feature_weight * feature, terms

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return {}

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
        pass

    def feedback(self, dev_loss: float) -> None:
        pass


class MultiTeacherObjective:
    """λ1·CE + a transfer term over the selected rows, which the teacher and
    the assistant both answer with their logits and every layer's states.
    Built from parts, each swappable: `selection` (the selector, every
    selected row routed to both teachers), `transfer` (what those rows learn:
    `TeachersKD` for DFA and CFL, `ksm.KnowledgeChoice` for KSM) and the
    cross-entropy on the gold labels. It gives what the loop reads of an
    objective (`types.Objective`).
    """

    needs_hidden_states = True
    needs_assistant_hidden_states = True
    needs_student_states = True  # its transfer maps the student's last-layer features
    uses_assistant = True
    mc_dropout_samples = 0

    def __init__(
        self, *, name: str, selector: InstanceSelector, transfer: Transfer, cross_entropy: LossFn, ce_weight: float,
    ) -> None:
        self.name = name
        self.selector = selector
        self.selection = Selection(selector, BothRouter())
        self.transfer = transfer
        self.cross_entropy = cross_entropy
        self.ce_weight = ce_weight
        self.multilabel = False

    @property
    def reads_logits(self) -> bool:
        return self.selection.reads_logits

    @property
    def reads_states(self) -> bool:
        return self.selection.reads_states

    @property
    def feedback_size(self) -> int:
        return self.transfer.feedback_size

    def initialize(
        self, *, multilabel: bool, n_student_layers: int, student_width: int, teacher_width: int,
        n_teacher_layers: Optional[int] = None, assistant_width: Optional[int] = None,
    ) -> List[nn.Parameter]:
        self.multilabel = multilabel
        widths = [teacher_width, teacher_width if assistant_width is None else assistant_width]
        return self.transfer.initialize(student_width, widths)

    def projections(self) -> Optional[nn.Module]:
        return self.transfer.module()

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return {**self.selection.rng_state(), **self.transfer.rng_state()}

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.selection.set_rng_state(state)
        self.transfer.set_rng_state(state)

    def teacher_query_size(self, n: int) -> int:
        return self.selector.count(n)  # both teachers answer every selected row

    def query_sizes(self, n: int, teacher_allowance: Optional[int] = None) -> Tuple[int, int]:
        return self.selection.query_sizes(n, teacher_allowance)

    def query_rows(self, n: int, teacher_allowance: Optional[int] = None) -> int:
        return self.selection.query_rows(n, teacher_allowance)

    def plan(self, student_logits: torch.Tensor, teacher_known: Optional[torch.Tensor] = None) -> QueryPlan:
        """Every selected row is asked of both teachers, and the feature term reads it."""
        selected, _, _ = self.selection(student_logits.detach(), multilabel=self.multilabel)
        return QueryPlan(selected, selected, selected, selected, selected)

    def plan_answered(self, teacher_rows: torch.Tensor, assistant_rows: torch.Tensor) -> QueryPlan:
        return answered_plan(teacher_rows, assistant_rows, aligned=True)

    def select_queries(
        self, student_logits: Logits, n: int, teacher_allowance: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.selection.select_queries(student_logits, n, teacher_allowance, multilabel=self.multilabel)

    def feedback(self, dev_loss: float) -> None:
        self.transfer.feedback(dev_loss)

    def __call__(
        self,
        student: ClassifierOutput,
        gold: torch.Tensor,
        plan: QueryPlan,
        teacher: TeacherOutput,
        assistant: Optional[TeacherOutput],
        *,
        gold_mask: Optional[torch.Tensor] = None,
        teacher_head: Optional[nn.Module] = None,
    ) -> LossTerms:
        if assistant is None or assistant.hidden_states is None or teacher.hidden_states is None or student.hidden_states is None:
            raise ValueError(f"{self.name} needs the hidden states of the student, the teacher and the assistant.")
        ce = self.cross_entropy(student.logits, gold, multilabel=self.multilabel, mask=gold_mask)
        rows = plan.teacher_rows  # = the assistant's rows = the selected rows
        t_pos = positions(plan.teacher_query, rows)
        transfer, terms = self.transfer(
            student.logits[rows], student.hidden_states[-1][rows],
            TeacherOutput(teacher.logits[t_pos], [h[t_pos] for h in teacher.hidden_states]), assistant,
            multilabel=self.multilabel,
        )
        return LossTerms(total=self.ce_weight * ce + transfer, terms={"ce": float(ce.detach()), **terms})


def check_weights(**weights: float) -> None:
    for name, value in weights.items():
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")


@registry.dekd_losses("spacy-dekd.UHC.v1")
def make_uhc_v1(kl: LossFn) -> TeacherAssistantLoss:
    """UHC (Vongkulbhisal et al., 2019), in place of Eq. 7: the student's
    output matched to each teacher independently, KL_T + KL_A over every
    selected row. UHC splits the student's logits into its teachers' class
    sets; here both teachers know every class, so each subset is the whole
    output.

    kl (LossFn): From `dekd_losses`, e.g. spacy-dekd.KLDivergence.v1.
    """
    return TeacherAssistantLoss(BothRouter(), kl)


@registry.dekd_losses("spacy-dekd.MUKI.v1")
def make_muki_v1(
    integration: str = "soft", temperature: float = 5.0, uncertainty: str = "entropy", mc_samples: int = 8,
) -> TeacherAssistantLoss:
    """MUKI (Li et al., 2022), in place of Eq. 7: each selected row learns
    from the most certain teacher's answer ("hard") or from the answers
    weighted by relative certainty ("soft").

    integration (str): "hard" or "soft" (or "mean": equal weights).
    temperature (float): τ of the KL to the integrated prediction.
    uncertainty (str): "entropy" of each teacher's prediction, or
        "mc_dropout": the entropy of its mean prediction over `mc_samples`
        passes with dropout on, computed once per example with its answer
        (each teacher then costs 1 + mc_samples passes per answer).
    """
    if uncertainty not in ("entropy", "mc_dropout"):
        raise ValueError(f"uncertainty must be 'entropy' or 'mc_dropout', got '{uncertainty}'.")
    if uncertainty == "mc_dropout" and mc_samples < 2:
        raise ValueError(f"mc_samples must be >= 2 for Monte Carlo dropout, got {mc_samples}.")
    samples = mc_samples if uncertainty == "mc_dropout" else 0
    return IntegratedTeachersLoss(integration=integration, temperature=temperature, mc_samples=samples)


@registry.dekd_objectives("spacy-dekd.DFA.v1")
def make_dfa_v1(
    selector: InstanceSelector,
    cross_entropy: LossFn,
    kl: LossFn,
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    feature_weight: float = 0.02,
) -> MultiTeacherObjective:
    """DFA as read from the paper's description: the student's features
    aligned to each teacher's features plus KD to each teacher.
    λ1·CE + λ2·(KL_T + KL_A) + λ3·Σ_j align(P_j h_s, h_j), h the first-token
    state of each model's last layer, P_j a learned map into teacher j's
    width, align as Eq. 9 (normalised, per dimension).

    selector (InstanceSelector): The rows both teachers answer.
    kl (LossFn): spacy-dekd.KLDivergence.v1.
    """
    check_weights(ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight)
    transfer = TeachersKD(
        TeacherAssistantLoss(BothRouter(), kl), DFAMaps, kd_weight=kd_weight, feature_weight=feature_weight
    )
    return MultiTeacherObjective(name="DFA", selector=selector, transfer=transfer, cross_entropy=cross_entropy, ce_weight=ce_weight)


@registry.dekd_objectives("spacy-dekd.CFL.v1")
def make_cfl_v1(
    selector: InstanceSelector,
    cross_entropy: LossFn,
    temperature: float = 5.0,
    common_width: int = 128,
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    feature_weight: float = 0.02,
) -> MultiTeacherObjective:
    """CFL (Luo et al., 2019): the teachers' features mapped into a common
    space by learned maps, the student's features matched there, plus KD to
    the teachers' combined prediction (their average at τ: CFL concatenates
    disjoint label sets, here both teachers know every class). CFL matches
    distributions with MMD; here each row's mapped features are matched by
    mean squared difference, and reconstruction keeps the maps informative.

    common_width (int): The width of the common space.
    """
    check_weights(ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight)
    if common_width < 1:
        raise ValueError(f"common_width must be >= 1, got {common_width}.")
    transfer = TeachersKD(
        IntegratedTeachersLoss(integration="mean", temperature=temperature),
        functools.partial(CFLMaps, common_width=common_width), kd_weight=kd_weight, feature_weight=feature_weight,
    )
    return MultiTeacherObjective(name="CFL", selector=selector, transfer=transfer, cross_entropy=cross_entropy, ce_weight=ce_weight)
