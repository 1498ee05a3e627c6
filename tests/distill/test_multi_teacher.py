"""The multi-teacher baselines (UHC, MUKI), the teacher and the assistant as
their two teachers, against computations written out by hand."""
import math

import pytest
import torch

from spacy_dekd.distill.losses import cross_entropy, make_kl_divergence_v1
from spacy_dekd.distill.multi_teacher import (
    integrate_teachers,
    make_muki_v1,
    make_uhc_v1,
    prediction_entropy,
)
from spacy_dekd.distill.objective import TeacherOutput, make_dekd_v1
from spacy_dekd.distill.selectors import make_all_selector_v1, make_entropy_selector_v1
from spacy_dekd.models.pytorch import ClassifierOutput

# Two rows, two classes. Row 0: the teacher is the more certain; row 1: the assistant.
STUDENT = [[0.0, 0.0], [1.0, 0.0]]
TEACHER = [[2.0, 0.0], [0.0, 0.0]]
ASSISTANT = [[0.0, 1.0], [3.0, 0.0]]


def softmax(row, tau=1.0):
    exps = [math.exp(x / tau) for x in row]
    return [e / sum(exps) for e in exps]


def entropy(p):
    return -sum(x * math.log(x) for x in p)


def kl(p_target, p_student):
    return sum(t * math.log(t / s) for t, s in zip(p_target, p_student))


def test_entropy_of_each_teacher():
    got = prediction_entropy(torch.tensor(TEACHER)).tolist()
    p0 = softmax(TEACHER[0])
    assert got == pytest.approx([entropy(p0), math.log(2)], rel=1e-6)
    assert got[0] == pytest.approx(0.3653, abs=1e-4)


def test_uhc_is_the_sum_of_the_student_kl_to_each_teacher():
    uhc = make_uhc_v1(make_kl_divergence_v1(temperature=1.0))
    student = torch.tensor(STUDENT)
    teacher_rows, assistant_rows = uhc.route(student)
    assert teacher_rows.tolist() == assistant_rows.tolist() == [0, 1]
    routed = torch.cat([student[teacher_rows], student[assistant_rows]])
    got = float(uhc(routed, torch.tensor(TEACHER), torch.tensor(ASSISTANT)))
    expected = sum(
        sum(kl(softmax(t), softmax(s)) for s, t in zip(STUDENT, teachers)) / 2 for teachers in (TEACHER, ASSISTANT)
    )
    assert got == pytest.approx(expected, rel=1e-6)


def test_muki_hard_takes_the_most_certain_teacher_of_each_row():
    target = integrate_teachers([torch.tensor(TEACHER), torch.tensor(ASSISTANT)], integration="hard")
    assert target.tolist() == [TEACHER[0], ASSISTANT[1]]


@pytest.mark.parametrize("tau", [1.0, 2.0])
def test_muki_soft_weights_by_inverse_entropy(tau):
    target = integrate_teachers([torch.tensor(TEACHER), torch.tensor(ASSISTANT)], integration="soft", temperature=tau)
    for row in range(2):
        u_t, u_a = entropy(softmax(TEACHER[row])), entropy(softmax(ASSISTANT[row]))
        w_t = (1 / u_t) / (1 / u_t + 1 / u_a)
        p = [w_t * a + (1 - w_t) * b for a, b in zip(softmax(TEACHER[row], tau), softmax(ASSISTANT[row], tau))]
        assert softmax(target[row].tolist(), tau) == pytest.approx(p, rel=1e-5)
    # Row 0: the teacher (entropy 0.36) outweighs the assistant (0.58).
    u_t, u_a = entropy(softmax(TEACHER[0])), entropy(softmax(ASSISTANT[0]))
    assert (1 / u_t) / (1 / u_t + 1 / u_a) == pytest.approx(0.6145, abs=1e-3)


def test_muki_loss_is_the_kl_to_the_integrated_prediction():
    muki = make_muki_v1(integration="soft", temperature=2.0)
    student = torch.tensor(STUDENT, requires_grad=True)
    routed = torch.cat([student, student])  # the teacher's side, then the assistant's
    got = muki(routed, torch.tensor(TEACHER), torch.tensor(ASSISTANT))
    expected = 0.0
    for row in range(2):
        u_t, u_a = entropy(softmax(TEACHER[row])), entropy(softmax(ASSISTANT[row]))
        w_t = (1 / u_t) / (1 / u_t + 1 / u_a)
        p = [w_t * a + (1 - w_t) * b for a, b in zip(softmax(TEACHER[row], 2.0), softmax(ASSISTANT[row], 2.0))]
        expected += kl(p, softmax(STUDENT[row], 2.0)) / 2 * 4.0  # mean over rows, τ²
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert student.grad is not None and float(student.grad.abs().sum()) > 0


def test_multilabel_integration_mixes_each_label():
    t, a = torch.tensor([[3.0, -1.0]]), torch.tensor([[0.0, 2.0]])
    target = integrate_teachers([t, a], integration="soft", multilabel=True)
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    h = lambda p: -(p * math.log(p) + (1 - p) * math.log(1 - p))  # noqa: E731
    u_t, u_a = h(sig(3)) + h(sig(-1)), h(sig(0)) + h(sig(2))
    w_t = (1 / u_t) / (1 / u_t + 1 / u_a)
    for label, (zt, za) in enumerate(((3.0, 0.0), (-1.0, 2.0))):
        assert float(torch.sigmoid(target[0, label])) == pytest.approx(w_t * sig(zt) + (1 - w_t) * sig(za), rel=1e-5)


def test_bad_settings():
    with pytest.raises(ValueError, match="integration must be one of hard, soft, mean"):
        make_muki_v1(integration="vote")
    with pytest.raises(ValueError, match="temperature must be > 0"):
        make_muki_v1(temperature=0)


@pytest.mark.parametrize("selector", [make_all_selector_v1(seed=0), make_entropy_selector_v1(ratio=0.5)])
def test_the_objective_asks_both_teachers_about_every_selected_row(selector):
    objective = make_dekd_v1(
        selector=selector, teacher_assistant=make_uhc_v1(make_kl_divergence_v1(temperature=1.0)),
        cross_entropy=cross_entropy, alignment=None, ce_weight=0.5, ta_weight=0.5, alignment_weight=0.0,
    )
    objective.initialize(multilabel=False, n_student_layers=2, student_width=4, teacher_width=4)
    logits = torch.tensor([[0.0, 0.1], [2.0, -2.0], [0.3, 0.2], [1.0, 0.0]], requires_grad=True)
    plan = objective.plan(logits)
    assert torch.equal(plan.teacher_query, plan.selected) and torch.equal(plan.assistant_query, plan.selected)
    assert objective.query_sizes(10) == (objective.selector.count(10),) * 2
    assert objective.query_rows(10, teacher_allowance=3) == 3  # the budget counts the teacher's answers
    teacher, assistant = torch.randn(4, 2), torch.randn(4, 2)
    gold = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 0]), 2).float()
    out = objective(
        ClassifierOutput(logits), gold, plan,
        TeacherOutput(teacher[plan.selected]), TeacherOutput(assistant[plan.selected]),
    )
    kl = make_kl_divergence_v1(temperature=1.0)
    rows = plan.selected
    expected = 0.5 * cross_entropy(logits, gold) + 0.5 * (kl(logits[rows], teacher[rows]) + kl(logits[rows], assistant[rows]))
    assert float(out.total.detach()) == pytest.approx(float(expected.detach()), rel=1e-6)


def linear(weight, bias=None):
    layer = torch.nn.Linear(len(weight[0]), len(weight))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias if bias is not None else [0.0] * len(weight)))
    return layer


def unit(v):
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def matvec(w, v, b=None):
    return [sum(wi * vi for wi, vi in zip(row, v)) + (b[i] if b else 0.0) for i, row in enumerate(w)]


H_S = [[1.0, 2.0], [0.5, -1.0]]  # student features, width 2
H_T = [[2.0, 0.0, 1.0], [0.0, 1.0, 1.0]]  # teacher, width 3
H_A = [[1.0, 1.0, 0.0], [3.0, 0.0, -1.0]]  # assistant, width 3
P_T = [[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]
P_A = [[0.5, 0.0], [0.0, -1.0], [2.0, 0.0]]


def test_dfa_aligns_the_student_to_each_teacher_as_eq_9():
    from spacy_dekd.distill.multi_teacher import dfa_feature_loss

    got = dfa_feature_loss(torch.tensor(H_S), [torch.tensor(H_T), torch.tensor(H_A)], [linear(P_T), linear(P_A)])
    expected = 0.0
    for teacher, proj in ((H_T, P_T), (H_A, P_A)):
        per_row = [
            sum((a - b) ** 2 for a, b in zip(unit(matvec(proj, s)), unit(t))) / 3 for s, t in zip(H_S, teacher)
        ]
        expected += sum(per_row) / 2
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)


def test_cfl_matches_in_the_common_space_and_reconstructs():
    from spacy_dekd.distill.multi_teacher import cfl_feature_loss

    e_s = [[1.0, 0.0], [0.0, 1.0]]  # student -> common (width 2)
    e_t = [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]
    e_a = [[0.0, 1.0, 0.0], [1.0, 0.0, -1.0]]
    d_t = [[1.0, 0.0], [0.0, 1.0], [0.0, 0.5]]  # common -> teacher
    d_a = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]
    got = cfl_feature_loss(
        torch.tensor(H_S), [torch.tensor(H_T), torch.tensor(H_A)], linear(e_s), [linear(e_t), linear(e_a)], [linear(d_t), linear(d_a)]
    )
    expected = 0.0
    for feats, enc, dec in ((H_T, e_t, d_t), (H_A, e_a, d_a)):
        match = [(a - b) ** 2 for s, h in zip(H_S, feats) for a, b in zip(matvec(e_s, s), matvec(enc, h))]
        recon = [(a - b) ** 2 for h in feats for a, b in zip(matvec(dec, matvec(enc, h)), h)]
        expected += sum(match) / len(match) + sum(recon) / len(recon)
    assert float(got.detach()) == pytest.approx(expected, rel=1e-6)


def test_cfl_combined_logits_are_the_teachers_mean_prediction():
    target = integrate_teachers([torch.tensor(TEACHER), torch.tensor(ASSISTANT)], integration="mean", temperature=2.0)
    for row in range(2):
        p = [(a + b) / 2 for a, b in zip(softmax(TEACHER[row], 2.0), softmax(ASSISTANT[row], 2.0))]
        assert softmax(target[row].tolist(), 2.0) == pytest.approx(p, rel=1e-6)


@pytest.mark.parametrize("method", ["dfa", "cfl"])
def test_feature_objectives_sum_their_weighted_terms(method):
    from spacy_dekd.distill.multi_teacher import make_cfl_v1, make_dfa_v1

    torch.manual_seed(0)
    kl = make_kl_divergence_v1(temperature=2.0)
    common = dict(selector=make_entropy_selector_v1(ratio=0.5), cross_entropy=cross_entropy, ce_weight=0.3, kd_weight=0.5, feature_weight=0.2)
    objective = make_dfa_v1(kl=kl, **common) if method == "dfa" else make_cfl_v1(temperature=2.0, common_width=3, **common)
    params = objective.initialize(multilabel=False, n_student_layers=2, student_width=2, teacher_width=3, assistant_width=4)
    assert objective.uses_assistant and objective.needs_hidden_states and objective.needs_assistant_hidden_states
    assert params and objective.projections() is not None
    logits = torch.randn(4, 2, requires_grad=True)
    student_hidden = [torch.randn(4, 2, requires_grad=True) for _ in range(2)]
    plan = objective.plan(logits)
    rows = plan.selected
    assert torch.equal(plan.teacher_query, rows) and torch.equal(plan.assistant_query, rows) and torch.equal(plan.aligned, rows)
    t_logits, a_logits = torch.randn(4, 2), torch.randn(4, 2)
    t_hidden, a_hidden = [torch.randn(4, 3) for _ in range(3)], [torch.randn(4, 4) for _ in range(2)]
    gold = torch.nn.functional.one_hot(torch.tensor([0, 1, 1, 0]), 2).float()
    out = objective(
        ClassifierOutput(logits, student_hidden), gold, plan,
        TeacherOutput(t_logits[rows], [h[rows] for h in t_hidden]), TeacherOutput(a_logits[rows], [h[rows] for h in a_hidden]),
    )
    ce = cross_entropy(logits, gold)
    if method == "dfa":
        kd = kl(logits[rows], t_logits[rows]) + kl(logits[rows], a_logits[rows])
    else:
        kd = kl(logits[rows], integrate_teachers([t_logits[rows], a_logits[rows]], integration="mean", temperature=2.0))
    feature = objective.transfer.features(student_hidden[-1][rows], [t_hidden[-1][rows], a_hidden[-1][rows]])
    assert float(out.total.detach()) == pytest.approx(float((0.3 * ce + 0.5 * kd + 0.2 * feature).detach()), rel=1e-5)
    out.total.backward()
    assert all(p.grad is not None for p in params)


def test_actor_critic_step_by_hand():
    from spacy_dekd.distill.ksm import KnowledgePolicy, actor_critic_update

    policy = KnowledgePolicy()  # zeros: uniform choice, V = 0
    state, next_state = torch.tensor([0.5, 2.0]), torch.tensor([0.4, 1.0])
    delta = actor_critic_update(policy, state, 2, 0.3, next_state, gamma=0.9, learn_rate=0.1)
    assert delta == pytest.approx(0.3)  # r + γ·0 − 0
    # Actor: W -= lr · (−(onehot(a) − π) ⊗ s · δ), π uniform.
    onehot = torch.tensor([0.0, 0.0, 1.0, 0.0])
    expected_w = 0.1 * 0.3 * torch.outer(onehot - 0.25, state)
    assert torch.allclose(policy.actor.weight.detach(), expected_w, atol=1e-7)
    assert torch.allclose(policy.actor.bias.detach(), 0.1 * 0.3 * (onehot - 0.25), atol=1e-7)
    # Critic: d(δ²)/dc = −2δ·s, so c = 2·lr·δ·s, b = 2·lr·δ.
    assert torch.allclose(policy.critic.weight.detach(), (2 * 0.1 * 0.3 * state).unsqueeze(0), atol=1e-7)
    assert float(policy.critic.bias.detach()) == pytest.approx(2 * 0.1 * 0.3)


def ksm(seed):
    from spacy_dekd.distill.ksm import make_ksm_v1

    objective = make_ksm_v1(
        selector=make_all_selector_v1(seed=0), cross_entropy=cross_entropy, kl=make_kl_divergence_v1(temperature=2.0), seed=seed,
    )
    objective.initialize(multilabel=False, n_student_layers=2, student_width=2, teacher_width=3, assistant_width=3)
    return objective


def choices(objective, n=30):
    torch.manual_seed(0)
    picked = []
    for step in range(n):
        logits = torch.randn(4, 2)
        picked.append(objective.transfer.choose(logits))
        objective.feedback(1.0 / (step + 1) + 0.05 * (picked[-1] == 1))
    return picked


def test_ksm_policy_is_seeded_and_reproducible():
    assert choices(ksm(3)) == choices(ksm(3))
    assert choices(ksm(3)) != choices(ksm(4))
    assert set(choices(ksm(3))) == {0, 1, 2, 3}  # uniform at first: every kind is tried


def test_ksm_reward_is_the_relative_dev_loss_improvement():
    objective = ksm(0)
    objective.transfer.choose(torch.zeros(4, 2))
    objective.feedback(2.0)
    assert math.isnan(float(objective.transfer.policy.reward))  # nothing to improve on yet
    objective.transfer.choose(torch.zeros(4, 2))
    objective.feedback(1.5)
    assert float(objective.transfer.policy.reward) == pytest.approx(0.25)
    before = objective.transfer.policy.critic.bias.detach().clone()
    objective.transfer.choose(torch.zeros(4, 2))  # learns from the reward
    assert not torch.equal(objective.transfer.policy.critic.bias.detach(), before)


@pytest.mark.parametrize("multilabel,n_classes", [(False, 2), (False, 5), (True, 3)])
def test_ksm_state_holds_the_normalised_entropy_once(multilabel, n_classes):
    # Uniform predictions are the most uncertain: 1 for any number of classes
    # (it was 1 / log C, normalised twice); confident ones are near 0.
    choice = ksm(0).transfer
    assert float(choice.state(torch.zeros(4, n_classes), multilabel=multilabel)[0]) == pytest.approx(1.0)
    confident = torch.full((4, n_classes), -20.0)
    confident[:, 0] = 20.0
    assert float(choice.state(confident, multilabel=multilabel)[0]) < 1e-3


def test_ksm_settings_are_checked():
    from spacy_dekd.distill.ksm import make_ksm_v1

    kwargs = dict(selector=make_all_selector_v1(seed=0), cross_entropy=cross_entropy, kl=make_kl_divergence_v1())
    with pytest.raises(ValueError, match="gamma must be in"):
        make_ksm_v1(gamma=1.5, **kwargs)
    with pytest.raises(ValueError, match="feedback_size must be >= 1"):
        make_ksm_v1(feedback_size=0, **kwargs)


def test_given_uncertainties_replace_the_entropy():
    # The assistant is the more certain of row 0 by MC dropout, though not by entropy.
    t, a = torch.tensor(TEACHER), torch.tensor(ASSISTANT)
    hard = integrate_teachers([t, a], integration="hard", uncertainties=[torch.tensor([0.9, 0.1]), torch.tensor([0.3, 0.2])])
    assert hard.tolist() == [ASSISTANT[0], TEACHER[1]]
    soft = integrate_teachers([t, a], integration="soft", uncertainties=[torch.tensor([0.9, 0.1]), torch.tensor([0.3, 0.2])])
    w_t = (1 / 0.9) / (1 / 0.9 + 1 / 0.3)  # 0.25
    p = [w_t * x + (1 - w_t) * y for x, y in zip(softmax(TEACHER[0]), softmax(ASSISTANT[0]))]
    assert softmax(soft[0].tolist()) == pytest.approx(p, rel=1e-5)


def test_mc_dropout_entropy_is_the_entropy_of_the_mean_prediction():
    from spacy_dekd.distill.frozen import mc_dropout_entropy

    samples = torch.tensor([[[2.0, 0.0]], [[0.0, 2.0]], [[1.0, 1.0]]])  # 3 passes, 1 row
    mean = [sum(softmax(s[0])[c] for s in samples.tolist()) / 3 for c in range(2)]
    assert float(mc_dropout_entropy(samples, multilabel=False)[0]) == pytest.approx(entropy(mean), rel=1e-6)
    assert float(mc_dropout_entropy(samples, multilabel=False)[0]) == pytest.approx(math.log(2), rel=1e-6)  # symmetric


def test_muki_mc_dropout_settings():
    muki = make_muki_v1(uncertainty="mc_dropout", mc_samples=4)
    assert muki.mc_samples == 4 and make_muki_v1().mc_samples == 0
    with pytest.raises(ValueError, match="uncertainty must be 'entropy' or 'mc_dropout'"):
        make_muki_v1(uncertainty="variance")
    with pytest.raises(ValueError, match="mc_samples must be >= 2"):
        make_muki_v1(uncertainty="mc_dropout", mc_samples=1)
