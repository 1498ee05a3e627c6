"""KSM (the paper's [17]), a multi-teacher baseline: per step, an
actor-critic chooses which knowledge the student learns from, the teacher's
or the assistant's logits or last-layer features. It is a
`MultiTeacherObjective` whose transfer part is that choice
(`KnowledgeChoice`); its reward comes through the objective's `feedback`.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..registry import registry
from .losses import layer_alignment
from .multi_teacher import DFAMaps, MultiTeacherObjective, check_weights
from .selectors import entropy_score
from .types import InstanceSelector, LossFn, TeacherOutput

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


class KnowledgeChoice:
    """KSM's transfer: λ2·(one kind of knowledge per step), the kind sampled
    from the policy; after each step the loop reports the student's loss on
    a fixed dev sample (`feedback`), whose relative improvement rewards the
    choice. The feature kinds go through DFA's maps (`DFAMaps`), which train
    with the student; the policy learns by its own SGD steps.
    """

    def __init__(
        self, *, kl: LossFn, kd_weight: float, feedback_size: int, gamma: float, policy_learn_rate: float, seed: int,
    ) -> None:
        self.kl = kl
        self.kd_weight = kd_weight
        self.feedback_size = feedback_size
        self.gamma = gamma
        self.policy_learn_rate = policy_learn_rate
        self.policy = KnowledgePolicy()
        self.generator = torch.Generator().manual_seed(seed)
        self.features: Optional[DFAMaps] = None
        self.container: Optional[nn.ModuleDict] = None

    def initialize(self, student_width: int, teacher_widths: Sequence[int]) -> List[nn.Parameter]:
        self.features = DFAMaps(student_width, teacher_widths)
        self.container = nn.ModuleDict({"features": self.features, "policy": self.policy})
        return list(self.features.parameters())  # the maps train with the student

    def module(self) -> Optional[nn.Module]:
        return self.container

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return {"ksm": self.generator.get_state()}

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
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

    def state(self, logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
        """The policy's input: the batch's mean normalised entropy (in [0, 1],
        `entropy_score` divides by log|Y|) and the last dev loss.
        """
        uncertainty = float(entropy_score(logits.detach().float().cpu(), multilabel=multilabel).mean())
        dev_loss = float(self.policy.dev_loss)
        return torch.tensor([uncertainty, dev_loss if dev_loss == dev_loss else 0.0], device=self.policy.actor.weight.device)

    def choose(self, logits: torch.Tensor, *, multilabel: bool = False) -> int:
        """Learn from the last choice's reward, then sample this step's."""
        state = self.state(logits, multilabel=multilabel)
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

    def __call__(
        self, logits: torch.Tensor, features: torch.Tensor, teacher: TeacherOutput, assistant: TeacherOutput,
        *, multilabel: bool = False,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        assert self.features is not None and teacher.hidden_states is not None and assistant.hidden_states is not None
        action = self.choose(logits, multilabel=multilabel)
        kind = KNOWLEDGE[action]
        if kind in ("teacher_logits", "assistant_logits"):
            target = teacher.logits if kind == "teacher_logits" else assistant.logits
            term = self.kl(logits, target, multilabel=multilabel)
        else:
            j = 0 if kind == "teacher_hidden" else 1
            h = (teacher, assistant)[j].hidden_states[-1]  # type: ignore[index]
            term = layer_alignment([features], [h], projections=[self.features.projections[j]], reduction="mean")
        return self.kd_weight * term, {"ta": float(term.detach()), "knowledge": float(action)}


@registry.dekd_objectives("spacy-dekd.KSM.v1")
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
) -> MultiTeacherObjective:
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
    check_weights(ce_weight=ce_weight, kd_weight=kd_weight)
    if feedback_size < 1:
        raise ValueError(f"feedback_size must be >= 1, got {feedback_size}.")
    if not 0 <= gamma <= 1:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}.")
    transfer = KnowledgeChoice(
        kl=kl, kd_weight=kd_weight, feedback_size=feedback_size, gamma=gamma, policy_learn_rate=policy_learn_rate, seed=seed,
    )
    return MultiTeacherObjective(name="KSM", selector=selector, transfer=transfer, cross_entropy=cross_entropy, ce_weight=ce_weight)
