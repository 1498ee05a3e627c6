"""The multi-teacher baselines (UHC, MUKI), the teacher and the assistant as
their two teachers, against computations written out by hand."""
import math

import pytest
import torch

from spacy_dekd.distill.losses import (
    integrate_teachers,
    make_kl_divergence_v1,
    make_muki_v1,
    make_uhc_v1,
    prediction_entropy,
)
from spacy_dekd.distill.objective import TeacherOutput, make_dekd_v1
from spacy_dekd.distill.losses import cross_entropy
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
    with pytest.raises(ValueError, match="integration must be 'hard' or 'soft'"):
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
    assert float(out.total) == pytest.approx(float(expected), rel=1e-6)
