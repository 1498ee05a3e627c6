"""Each loss term against a computation written out by hand."""
import math

import pytest
import torch
from torch import nn

from spacy_dekd.distill.losses import (
    cross_entropy,
    kl_divergence,
    layer_alignment,
    make_kl_divergence_v1,
    teacher_assistant_kl,
)
from spacy_dekd.distill.objective import QueryPlan, TeacherOutput, make_dekd_v1
from spacy_dekd.distill.losses import make_layer_alignment_v1, make_teacher_assistant_kl_v1
from spacy_dekd.distill.selectors import (
    make_entropy_selector_v1,
    make_entropy_split_router_v1,
    make_teacher_only_router_v1,
    make_uniform_layer_selector_v1,
)
from spacy_dekd.models.pytorch import ClassifierOutput


def softmax(row):
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def explicit_kl(student, teacher, tau):
    """Σ_y p_t(y) log(p_t(y) / p_s(y)) at temperature τ, times τ², averaged."""
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_s = softmax([x / tau for x in s_row])
        p_t = softmax([x / tau for x in t_row])
        total += sum(t * math.log(t / s) for t, s in zip(p_t, p_s))
    return total / len(student) * tau * tau


STUDENT = [[1.0, -0.5, 0.2], [0.3, 0.3, 2.0]]
TEACHER = [[2.0, -1.0, 0.0], [-1.0, 0.5, 1.5]]


@pytest.mark.parametrize("tau", [1.0, 2.0, 5.0])
def test_kl_matches_explicit_sum_with_tau_squared(tau):
    got = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=tau)
    assert float(got) == pytest.approx(explicit_kl(STUDENT, TEACHER, tau), rel=1e-5)


def test_kl_is_forward_kl_of_teacher_from_student():
    # KL(p_t || p_s) is not symmetric: swapping the arguments changes it.
    forward = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=1.0)
    reverse = explicit_kl(TEACHER, STUDENT, 1.0)
    assert float(forward) != pytest.approx(reverse, rel=1e-3)


def test_kl_without_tau_squared():
    got = kl_divergence(torch.tensor(STUDENT), torch.tensor(TEACHER), temperature=4.0, scale_by_temperature=False)
    assert float(got) == pytest.approx(explicit_kl(STUDENT, TEACHER, 4.0) / 16, rel=1e-5)


def test_kl_of_nothing_is_zero_and_has_a_gradient():
    student = torch.zeros((0, 3), requires_grad=True)
    loss = kl_divergence(student, torch.zeros((0, 3)), temperature=5.0)
    assert float(loss.detach()) == 0.0
    loss.backward()


def test_binary_kl_for_multilabel():
    s, t, tau = [[0.5, -2.0]], [[1.5, 0.0]], 2.0
    expected = 0.0
    for zs, zt in zip(s[0], t[0]):
        ps, pt = 1 / (1 + math.exp(-zs / tau)), 1 / (1 + math.exp(-zt / tau))
        expected += pt * math.log(pt / ps) + (1 - pt) * math.log((1 - pt) / (1 - ps))
    got = kl_divergence(torch.tensor(s), torch.tensor(t), temperature=tau, multilabel=True)
    assert float(got) == pytest.approx(expected * tau * tau, rel=1e-5)


def test_cross_entropy_against_hand_formula():
    gold = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    expected = -(math.log(softmax(STUDENT[0])[1]) + math.log(softmax(STUDENT[1])[2])) / 2
    assert float(cross_entropy(torch.tensor(STUDENT), gold)) == pytest.approx(expected, rel=1e-6)


def test_multilabel_cross_entropy_respects_mask():
    logits = torch.tensor([[2.0, -1.0]])
    gold = torch.tensor([[1.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0]])
    expected = -math.log(1 / (1 + math.exp(-2.0)))
    got = cross_entropy(logits, gold, multilabel=True, mask=mask)
    assert float(got) == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_averages_over_labelled_rows_only():
    # Row 1 is unlabelled text: no gold, so it neither adds to the sum nor
    # counts in the mean.
    gold = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    expected = -math.log(softmax(STUDENT[0])[1])
    got = cross_entropy(torch.tensor(STUDENT), gold, mask=mask)
    assert float(got) == pytest.approx(expected, rel=1e-6)
    none = cross_entropy(torch.tensor(STUDENT), gold, mask=torch.zeros(2, 3))
    assert float(none) == 0.0 and none.requires_grad is False


def test_teacher_assistant_kl_sums_subset_means():
    kl = make_kl_divergence_v1(temperature=2.0)
    student = torch.tensor(STUDENT + [[0.0, 1.0, -1.0]])
    teacher = torch.tensor(TEACHER[:1])
    assistant = torch.tensor([TEACHER[1], [1.0, 1.0, 1.0]])
    got = teacher_assistant_kl(student, teacher, assistant, kl)
    expected = explicit_kl(STUDENT[:1], TEACHER[:1], 2.0) + explicit_kl(
        [STUDENT[1], [0.0, 1.0, -1.0]], [TEACHER[1], [1.0, 1.0, 1.0]], 2.0
    )
    assert float(got) == pytest.approx(expected, rel=1e-5)


def test_teacher_assistant_kl_with_empty_assistant_subset():
    kl = make_kl_divergence_v1(temperature=1.0)
    got = teacher_assistant_kl(torch.tensor(STUDENT), torch.tensor(TEACHER), torch.zeros((0, 3)), kl)
    assert float(got) == pytest.approx(explicit_kl(STUDENT, TEACHER, 1.0), rel=1e-5)


def hand_alignment(student, teacher, reduction):
    total = 0.0
    for h_s_layer, h_t_layer in zip(student, teacher):
        per_layer = 0.0
        for h_s, h_t in zip(h_s_layer, h_t_layer):
            ns = math.sqrt(sum(x * x for x in h_s))
            nt = math.sqrt(sum(x * x for x in h_t))
            sq = sum((a / ns - b / nt) ** 2 for a, b in zip(h_s, h_t))
            per_layer += sq / (len(h_t) if reduction == "mean" else 1)
        total += per_layer / len(h_s_layer)
    return total


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_layer_alignment_matches_hand_formula(reduction):
    student = [[[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]], [[0.0, 1.0, 1.0], [2.0, 0.0, -1.0]]]
    teacher = [[[2.0, 1.0, 0.0], [0.5, 1.0, 1.0]], [[1.0, 1.0, 1.0], [-2.0, 0.0, 1.0]]]
    got = layer_alignment(
        [torch.tensor(h) for h in student], [torch.tensor(h) for h in teacher], reduction=reduction
    )
    assert float(got) == pytest.approx(hand_alignment(student, teacher, reduction), rel=1e-5)


def test_layer_alignment_with_projection():
    torch.manual_seed(0)
    proj = nn.Linear(2, 3)
    student = [torch.tensor([[1.0, -1.0], [0.5, 2.0]])]
    teacher = [torch.tensor([[2.0, 1.0, 0.0], [0.5, 1.0, 1.0]])]
    projected = proj(student[0]).tolist()
    got = layer_alignment(student, teacher, projections=[proj], reduction="sum")
    expected = hand_alignment([projected], [teacher[0].tolist()], "sum")
    assert float(got.detach()) == pytest.approx(expected, rel=1e-5)
    got.backward()
    assert proj.weight.grad is not None


def test_layer_alignment_width_mismatch_without_projection_fails():
    with pytest.raises(ValueError, match="projection"):
        layer_alignment([torch.ones(2, 2)], [torch.ones(2, 3)])


def test_dekd_equals_its_lambda_weighted_terms():
    torch.manual_seed(0)
    n, c, d, n_teacher_layers = 6, 3, 4, 4
    kl = make_kl_divergence_v1(temperature=5.0)
    alignment = make_layer_alignment_v1(make_uniform_layer_selector_v1(), reduction="sum")
    objective = make_dekd_v1(
        selector=make_entropy_selector_v1(ratio=0.5),
        teacher_assistant=make_teacher_assistant_kl_v1(make_entropy_split_router_v1(), kl),
        cross_entropy=cross_entropy,
        alignment=alignment,
        ce_weight=0.5,
        ta_weight=0.3,
        alignment_weight=0.2,
    )
    objective.initialize(multilabel=False, n_student_layers=2, student_width=d, teacher_width=d)
    logits = torch.randn(n, c, requires_grad=True)
    student_hidden = [torch.randn(n, d, requires_grad=True) for _ in range(2)]
    gold = torch.nn.functional.one_hot(torch.arange(n) % c, c).float()
    plan = objective.plan(logits)
    assert plan.selected.tolist() == sorted(plan.selected.tolist()) and len(plan.selected) == 3
    assert torch.equal(plan.teacher_query, plan.selected)  # alignment needs all selected
    teacher_all = torch.randn(n, c)
    teacher_hidden_all = [torch.randn(n, d) for _ in range(n_teacher_layers)]
    teacher = TeacherOutput(
        logits=teacher_all[plan.teacher_query],
        hidden_states=[h[plan.teacher_query] for h in teacher_hidden_all],
    )
    assistant_all = torch.randn(n, c)
    assistant = TeacherOutput(logits=assistant_all[plan.assistant_query])
    out = objective(ClassifierOutput(logits, student_hidden), gold, plan, teacher, assistant)

    ce = cross_entropy(logits, gold)
    ta = kl(logits[plan.teacher_rows], teacher_all[plan.teacher_rows]) + kl(
        logits[plan.assistant_rows], assistant_all[plan.assistant_rows]
    )
    layers = [1, 3]  # uniform: round(i * 4 / 2) - 1
    da = layer_alignment(
        [h[plan.selected] for h in student_hidden],
        [teacher_hidden_all[i][plan.selected] for i in layers],
        reduction="sum",
    )
    assert out.teacher_layers == layers
    assert float(out.total.detach()) == pytest.approx(float((0.5 * ce + 0.3 * ta + 0.2 * da).detach()), rel=1e-5)
    assert out.terms["da"] == pytest.approx(float(da.detach()), rel=1e-5)


def test_vanilla_kd_plan_queries_every_row_of_the_teacher_only():
    kl = make_kl_divergence_v1(temperature=1.0)
    objective = make_dekd_v1(
        selector=make_entropy_selector_v1(ratio=1.0),
        teacher_assistant=make_teacher_assistant_kl_v1(make_teacher_only_router_v1(), kl),
        cross_entropy=cross_entropy,
        alignment=None,
        ce_weight=0.5,
        ta_weight=0.5,
        alignment_weight=0.0,
    )
    plan = objective.plan(torch.randn(5, 2))
    assert plan.teacher_query.tolist() == [0, 1, 2, 3, 4]
    assert plan.assistant_query.numel() == 0
    assert not objective.uses_assistant and not objective.needs_hidden_states
    assert isinstance(plan, QueryPlan)


# Rows 0-3 near certain, 4-7 uncertain: entropy at r = 0.5 picks 4-7, and of
# those the certain half (largest |margin|: rows 5, 6) goes to the teacher.
SPLIT_LOGITS = [[5.0, -5.0], [-4.0, 4.0], [6.0, -6.0], [-5.0, 5.0],
                [0.1, 0.0], [0.0, 0.2], [0.3, 0.0], [0.0, 0.05]]


def split_objective(n_teacher_layers, reduction, **settings):
    """A DeKD objective with `settings` for a one-layer student of width 4,
    its KL, and random outputs of every model for the 8 rows of SPLIT_LOGITS.
    """
    torch.manual_seed(1)
    n, c, d = 8, 2, 4
    kl = make_kl_divergence_v1(temperature=2.0)
    objective = make_dekd_v1(
        selector=make_entropy_selector_v1(ratio=0.5),
        teacher_assistant=make_teacher_assistant_kl_v1(make_entropy_split_router_v1(), kl),
        cross_entropy=cross_entropy,
        alignment=make_layer_alignment_v1(make_uniform_layer_selector_v1(), reduction=reduction),
        alignment_weight=0.2,
        **settings,
    )
    objective.initialize(multilabel=False, n_student_layers=1, student_width=d, teacher_width=d)
    logits = torch.tensor(SPLIT_LOGITS, requires_grad=True)
    world = {
        "logits": logits,
        "teacher": torch.randn(n, c),
        "assistant": torch.randn(n, c),
        "teacher_hidden": [torch.randn(n, d) for _ in range(n_teacher_layers)],
        "student_hidden": [torch.randn(n, d, requires_grad=True)],
        "gold": torch.nn.functional.one_hot(torch.arange(n) % c, c).float(),
    }
    return objective, kl, world


def run_plan(objective, world, plan):
    q = plan.teacher_query
    teacher = TeacherOutput(world["teacher"][q], [h[q] for h in world["teacher_hidden"]])
    assistant = TeacherOutput(world["assistant"][plan.assistant_query])
    student = ClassifierOutput(world["logits"], world["student_hidden"])
    return objective(student, world["gold"], plan, teacher, assistant)


def test_dekd_reuses_cached_teacher_outputs_for_unselected_rows():
    objective, kl, w = split_objective(1, "mean", reuse_teacher_outputs=True)
    logits = w["logits"]
    known = torch.tensor([True, False, True, False, False, True, False, False])
    plan = objective.plan(logits, teacher_known=known)
    assert plan.selected.tolist() == [4, 5, 6, 7]
    assert plan.reused.tolist() == [0, 2]  # known and unselected; row 5 is selected anyway
    assert plan.teacher_rows.tolist() == [0, 2, 5, 6]  # routed (5, 6) + reused
    assert plan.assistant_rows.tolist() == [4, 7]
    assert plan.teacher_query.tolist() == [0, 2, 4, 5, 6, 7]  # selected (alignment) + reused
    out = run_plan(objective, w, plan)
    t_rows, a_rows = plan.teacher_rows, plan.assistant_rows
    ta = kl(logits[t_rows], w["teacher"][t_rows]) + kl(logits[a_rows], w["assistant"][a_rows])
    sel = plan.selected
    da = layer_alignment([w["student_hidden"][0][sel]], [w["teacher_hidden"][0][sel]], reduction="mean")
    expected = 0.5 * cross_entropy(logits, w["gold"]) + 0.3 * ta + 0.2 * da
    assert float(out.total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    # Without the setting, nothing is reused.
    objective.reuse_teacher_outputs = False
    assert objective.plan(logits, teacher_known=known).reused.numel() == 0


def test_dekd_aligning_teacher_rows_only_queries_the_teacher_for_those():
    objective, kl, w = split_objective(2, "sum", align_rows="teacher")
    logits = w["logits"]
    plan = objective.plan(logits)
    assert plan.teacher_rows.tolist() == [5, 6] and plan.assistant_rows.tolist() == [4, 7]
    assert plan.aligned.tolist() == plan.teacher_query.tolist() == [5, 6]
    out = run_plan(objective, w, plan)
    rows = [5, 6]
    ta = kl(logits[rows], w["teacher"][rows]) + kl(logits[[4, 7]], w["assistant"][[4, 7]])
    # uniform with M = 1 of 2 teacher layers: the last
    da = layer_alignment([w["student_hidden"][0][rows]], [w["teacher_hidden"][1][rows]], reduction="sum")
    expected = 0.5 * cross_entropy(logits, w["gold"]) + 0.3 * ta + 0.2 * da
    assert out.teacher_layers == [1]
    assert float(out.total.detach()) == pytest.approx(float(expected.detach()), rel=1e-5)
    with pytest.raises(ValueError, match="align_rows"):
        split_objective(2, "sum", align_rows="all")


def test_the_layer_selector_follows_the_components_class_mode():
    # Layer states whose head outputs rank differently under softmax over
    # classes and under a sigmoid per label: a multilabel run must pick by
    # the latter (it picked by softmax whatever the component was).
    from spacy_dekd.distill.selectors import logit_layer_scores, make_entropy_layer_selector_v1, pick_top_layers

    head = nn.Linear(4, 3)
    for seed in range(100):
        torch.manual_seed(seed)
        hidden = [torch.randn(5, 4) * 3 for _ in range(6)]
        by_mode = {m: pick_top_layers(logit_layer_scores(hidden, head, multilabel=m), 2) for m in (False, True)}
        if by_mode[False] != by_mode[True]:
            break
    assert by_mode[False] != by_mode[True]
    for multilabel in (False, True):
        alignment = make_layer_alignment_v1(make_entropy_layer_selector_v1(score="logits"))
        alignment.initialize(2, 4, 4, 6, multilabel=multilabel)
        assert alignment.pick_layers(hidden, head=head) == by_mode[multilabel]
