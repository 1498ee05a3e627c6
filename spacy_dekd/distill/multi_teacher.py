"""The multi-teacher baselines of the paper's Table 3, the teacher and the
teacher assistant standing as their two teachers: both answer every selected
row (`BothRouter`), and each method says how the student learns from the two.

- UHC and MUKI replace Eq. 7 inside the DeKD objective (`teacher_assistant`):
  they combine the two teachers' logits.
- DFA and CFL are objectives of their own (`MultiTeacherObjective`): CE, a
  KL to the teachers' logits and a term over the teachers' features (the
  first-token state of each model's last layer), through learned maps that
  train with the student and are not saved with it.

Each term is a pure torch function, unit-tested against a hand computation.
Where a method is simplified here, its builder's docstring says how.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.pytorch import ClassifierOutput
from ..registry import registry
from .losses import TeacherAssistantLoss, kl_divergence, layer_alignment
from .objective import DeKDObjective, _positions
from .selectors import BothRouter, entropy_score
from .types import InstanceSelector, LossFn, LossTerms, QueryPlan, TeacherOutput

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
        self.mc_samples = mc_samples  # read by the trainer: dropout passes per answer

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


class MultiTeacherFeatures(nn.Module):
    """The learned maps of a feature term, built once the widths are known."""

    def __init__(self, method: str, student_width: int, teacher_widths: Sequence[int], common_width: int) -> None:
        super().__init__()
        self.method = method
        if method == "dfa":
            self.projections = nn.ModuleList(nn.Linear(student_width, d) for d in teacher_widths)
        else:
            self.student_map = nn.Linear(student_width, common_width)
            self.teacher_maps = nn.ModuleList(nn.Linear(d, common_width) for d in teacher_widths)
            self.decoders = nn.ModuleList(nn.Linear(common_width, d) for d in teacher_widths)

    def forward(self, student: torch.Tensor, teachers: Sequence[torch.Tensor]) -> torch.Tensor:
        if self.method == "dfa":
            return dfa_feature_loss(student, teachers, list(self.projections))
        return cfl_feature_loss(student, teachers, self.student_map, list(self.teacher_maps), list(self.decoders))


class MultiTeacherObjective(DeKDObjective):
    """λ1·CE + λ2·KL to the teachers' logits + λ3·(feature term), the teacher
    and the assistant answering every selected row with their logits and
    their last layer's first-token state.
    """

    def __init__(
        self,
        *,
        method: str,
        selector: InstanceSelector,
        teachers_kl: TeacherAssistantLoss,
        cross_entropy: LossFn,
        ce_weight: float,
        kd_weight: float,
        feature_weight: float,
        common_width: int = 128,
    ) -> None:
        super().__init__(
            selector=selector, teacher_assistant=teachers_kl, alignment=None, cross_entropy=cross_entropy,
            ce_weight=ce_weight, ta_weight=kd_weight, alignment_weight=0.0,
        )
        self.method = method
        self.feature_weight = feature_weight
        self.common_width = common_width
        self.features: Optional[MultiTeacherFeatures] = None

    @property
    def needs_hidden_states(self) -> bool:
        return True

    @property
    def needs_assistant_hidden_states(self) -> bool:
        return True

    def initialize(
        self, *, multilabel: bool, n_student_layers: int, student_width: int, teacher_width: int,
        n_teacher_layers: Optional[int] = None, assistant_width: Optional[int] = None,
    ) -> List[nn.Parameter]:
        self.multilabel = multilabel
        widths = [teacher_width, teacher_width if assistant_width is None else assistant_width]
        self.features = MultiTeacherFeatures(self.method, student_width, widths, self.common_width)
        return list(self.features.parameters())

    def projections(self) -> Optional[nn.Module]:
        return self.features

    def plan(self, student_logits: torch.Tensor, teacher_known: Optional[torch.Tensor] = None) -> QueryPlan:
        plan = super().plan(student_logits, teacher_known)
        plan.aligned = plan.selected  # the feature term reads every selected row
        return plan

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
        t_pos = _positions(plan.teacher_query, rows)
        transfer, terms = self.transfer(
            student.logits[rows], student.hidden_states[-1][rows],
            TeacherOutput(teacher.logits[t_pos], [h[t_pos] for h in teacher.hidden_states]), assistant,
        )
        return LossTerms(total=self.ce_weight * ce + transfer, terms={"ce": float(ce.detach()), **terms})

    @property
    def name(self) -> str:
        return self.method.upper()

    def transfer(
        self, logits: torch.Tensor, features: torch.Tensor, teacher: TeacherOutput, assistant: TeacherOutput,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """What the selected rows learn from the two teachers: λ2·KL + λ3·(the
        feature term), and the terms for the log. logits (k, C) and
        features (k, d_s) are the student's on those rows; teacher and
        assistant answer the same rows, in order.
        """
        assert self.features is not None and teacher.hidden_states is not None and assistant.hidden_states is not None
        routed = torch.cat([logits, logits])  # the teacher's side, then the assistant's
        kd = self.teacher_assistant(routed, teacher.logits, assistant.logits, multilabel=self.multilabel)
        feature = self.features(features, [teacher.hidden_states[-1], assistant.hidden_states[-1]])
        terms = {"ta": float(kd.detach()), "da": float(feature.detach())}
        return self.ta_weight * kd + self.feature_weight * feature, terms


def _check_weights(**weights: float) -> None:
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


@registry.dekd_losses("spacy-dekd.DFA.v1")
def make_dfa_v1(
    selector: InstanceSelector,
    cross_entropy: LossFn,
    kl: LossFn,
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    feature_weight: float = 0.02,
) -> DeKDObjective:
    """DFA as read from the paper's description: the student's features
    aligned to each teacher's features plus KD to each teacher.
    λ1·CE + λ2·(KL_T + KL_A) + λ3·Σ_j align(P_j h_s, h_j), h the first-token
    state of each model's last layer, P_j a learned map into teacher j's
    width, align as Eq. 9 (normalised, per dimension).

    selector (InstanceSelector): The rows both teachers answer.
    kl (LossFn): spacy-dekd.KLDivergence.v1.
    """
    _check_weights(ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight)
    return MultiTeacherObjective(
        method="dfa", selector=selector, teachers_kl=TeacherAssistantLoss(BothRouter(), kl),
        cross_entropy=cross_entropy, ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight,
    )


@registry.dekd_losses("spacy-dekd.CFL.v1")
def make_cfl_v1(
    selector: InstanceSelector,
    cross_entropy: LossFn,
    temperature: float = 5.0,
    common_width: int = 128,
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    feature_weight: float = 0.02,
) -> DeKDObjective:
    """CFL (Luo et al., 2019): the teachers' features mapped into a common
    space by learned maps, the student's features matched there, plus KD to
    the teachers' combined prediction (their average at τ: CFL concatenates
    disjoint label sets, here both teachers know every class). CFL matches
    distributions with MMD; here each row's mapped features are matched by
    mean squared difference, and reconstruction keeps the maps informative.

    common_width (int): The width of the common space.
    """
    _check_weights(ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=feature_weight)
    if common_width < 1:
        raise ValueError(f"common_width must be >= 1, got {common_width}.")
    return MultiTeacherObjective(
        method="cfl", selector=selector,
        teachers_kl=IntegratedTeachersLoss(integration="mean", temperature=temperature),
        cross_entropy=cross_entropy, ce_weight=ce_weight, kd_weight=kd_weight,
        feature_weight=feature_weight, common_width=common_width,
    )


# KSM: which knowledge to transfer, chosen per step by an actor-critic

KNOWLEDGE = ("teacher_logits", "assistant_logits", "teacher_hidden", "assistant_hidden")


class KnowledgePolicy(nn.Module):
    """KSM's actor (a softmax over the kinds of knowledge) and critic (a
    state's value), both linear in the state: the student's mean normalised
    entropy on the batch and its last dev loss. Zero-initialised: the first
    choices are uniform. Its buffers hold the step in flight (state, action,
    reward), so that a checkpoint resumes it exactly.
    """

    n_state = 2

    def __init__(self) -> None:
        super().__init__()
        self.actor = nn.Linear(self.n_state, len(KNOWLEDGE))
        self.critic = nn.Linear(self.n_state, 1)
        for layer in (self.actor, self.critic):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.register_buffer("pending_state", torch.zeros(self.n_state))
        self.register_buffer("pending_action", torch.tensor(-1))
        self.register_buffer("reward", torch.tensor(float("nan")))
        self.register_buffer("dev_loss", torch.tensor(float("nan")))


def actor_critic_update(
    policy: KnowledgePolicy, state: torch.Tensor, action: int, reward: float, next_state: torch.Tensor,
    *, gamma: float, learn_rate: float,
) -> float:
    """One TD(0) actor-critic step: δ = r + γ·V(s') − V(s); the actor
    follows −log π(a|s)·δ, the critic δ², by plain SGD (no optimizer state,
    so a checkpoint of the weights resumes it). RETURNS: δ.
    """
    with torch.enable_grad():
        value = policy.critic(state).squeeze()
        with torch.no_grad():
            target = reward + gamma * policy.critic(next_state).squeeze()
        delta = target - value
        log_prob = F.log_softmax(policy.actor(state), dim=-1)[action]
        loss = -log_prob * delta.detach() + delta.pow(2)
        grads = torch.autograd.grad(loss, list(policy.actor.parameters()) + list(policy.critic.parameters()))
    with torch.no_grad():
        for param, grad in zip(list(policy.actor.parameters()) + list(policy.critic.parameters()), grads):
            param -= learn_rate * grad
    return float(delta.detach())


class KSMObjective(MultiTeacherObjective):
    """λ1·CE + λ2·(one kind of knowledge per step), the kind sampled from
    KSM's policy; after each step the trainer reports the student's loss on
    a fixed dev sample (`feedback`), whose relative improvement rewards the
    choice.
    """

    def __init__(
        self, *, selector: InstanceSelector, cross_entropy: LossFn, kl: LossFn, ce_weight: float, kd_weight: float,
        feedback_size: int, gamma: float, policy_learn_rate: float, seed: int,
    ) -> None:
        super().__init__(
            method="dfa", selector=selector, teachers_kl=TeacherAssistantLoss(BothRouter(), kl),
            cross_entropy=cross_entropy, ce_weight=ce_weight, kd_weight=kd_weight, feature_weight=0.0,
        )
        self.kl = kl
        self.feedback_size = feedback_size
        self.gamma = gamma
        self.policy_learn_rate = policy_learn_rate
        self.policy = KnowledgePolicy()
        self.generator = torch.Generator().manual_seed(seed)

    def initialize(self, **kwargs: Any) -> List[nn.Parameter]:  # type: ignore[override]
        params = super().initialize(**kwargs)  # the feature maps train with the student
        self.container = nn.ModuleDict({"features": self.features, "policy": self.policy})
        return params

    def projections(self) -> Optional[nn.Module]:
        return getattr(self, "container", None)

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return {**super().rng_state(), "ksm": self.generator.get_state()}

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
        super().set_rng_state(state)
        if "ksm" in state:
            self.generator.set_state(state["ksm"])

    def feedback(self, dev_loss: float) -> None:
        """The student's dev loss after the step just taken: its relative
        improvement over the last one rewards the knowledge chosen.
        """
        previous = float(self.policy.dev_loss)
        if previous == previous:  # not NaN: there is a loss to improve on
            self.policy.reward.fill_((previous - dev_loss) / max(previous, 1e-8))
        self.policy.dev_loss.fill_(dev_loss)

    def _state(self, logits: torch.Tensor) -> torch.Tensor:
        # entropy_score is already divided by log|Y| (log 2 per label): in [0, 1].
        uncertainty = float(entropy_score(logits.detach().float().cpu(), multilabel=self.multilabel).mean())
        dev_loss = float(self.policy.dev_loss)
        return torch.tensor([uncertainty, dev_loss if dev_loss == dev_loss else 0.0], device=self.policy.actor.weight.device)

    def choose(self, logits: torch.Tensor) -> int:
        """Learn from the last choice's reward, then sample this step's."""
        state = self._state(logits)
        policy = self.policy
        reward = float(policy.reward)
        if int(policy.pending_action) >= 0 and reward == reward:
            actor_critic_update(
                policy, policy.pending_state, int(policy.pending_action), reward, state,
                gamma=self.gamma, learn_rate=self.policy_learn_rate,
            )
        with torch.no_grad():
            probs = F.softmax(policy.actor(state), dim=-1).cpu()
        action = int(torch.multinomial(probs, 1, generator=self.generator))
        policy.pending_state.copy_(state)
        policy.pending_action.fill_(action)
        policy.reward.fill_(float("nan"))
        return action

    @property
    def name(self) -> str:
        return "KSM"

    def transfer(
        self, logits: torch.Tensor, features: torch.Tensor, teacher: TeacherOutput, assistant: TeacherOutput,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """λ2·(the one kind of knowledge the policy picks for this step)."""
        assert self.features is not None and teacher.hidden_states is not None and assistant.hidden_states is not None
        action = self.choose(logits)
        kind = KNOWLEDGE[action]
        if kind in ("teacher_logits", "assistant_logits"):
            target = teacher.logits if kind == "teacher_logits" else assistant.logits
            term = self.kl(logits, target, multilabel=self.multilabel)
        else:
            j = 0 if kind == "teacher_hidden" else 1
            h = (teacher, assistant)[j].hidden_states[-1]  # type: ignore[index]
            term = layer_alignment([features], [h], projections=[self.features.projections[j]], reduction="mean")
        return self.ta_weight * term, {"ta": float(term.detach()), "knowledge": float(action)}


@registry.dekd_losses("spacy-dekd.KSM.v1")
def make_ksm_v1(
    selector: InstanceSelector,
    cross_entropy: LossFn,
    kl: LossFn,
    ce_weight: float = 0.5,
    kd_weight: float = 0.5,
    feedback_size: int = 64,
    gamma: float = 0.9,
    policy_learn_rate: float = 0.1,
    seed: int = 0,
) -> DeKDObjective:
    """KSM (the paper's [17]): an actor-critic chooses, per step, which
    knowledge the student learns from: the teacher's or the assistant's
    logits (KL) or last-layer features (aligned as Eq. 9 through a learned
    map). The reward is the relative improvement of the student's loss on a
    fixed sample of `feedback_size` dev examples after the step; the critic
    bootstraps with γ so that a choice is judged by the steps after it too.
    Simplified: a linear actor and critic over a two-number state (the
    batch's mean normalised entropy, the last dev loss), updated by SGD.

    seed (int): The policy's sampling generator.
    """
    _check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
    if feedback_size < 1:
        raise ValueError(f"feedback_size must be >= 1, got {feedback_size}.")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
    return KSMObjective(
        selector=selector, cross_entropy=cross_entropy, kl=kl, ce_weight=ce_weight, kd_weight=kd_weight,
        feedback_size=feedback_size, gamma=gamma, policy_learn_rate=policy_learn_rate, seed=seed,
    )
