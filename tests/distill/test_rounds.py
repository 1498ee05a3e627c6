"""Query rounds: how the budget is paced, how many a round asks, and that
the counts a run plans from are the counts the rounds then take."""
import pytest
import torch

from spacy_dekd.distill.objective import DeKDObjective
from spacy_dekd.distill.losses import make_cross_entropy_v1, make_kl_divergence_v1, make_teacher_assistant_kl_v1
from spacy_dekd.distill.rounds import QueryRounds, labelled_need
from spacy_dekd.distill.selectors import (
    make_all_selector_v1,
    make_diverse_entropy_selector_v1,
    make_entropy_selector_v1,
    make_entropy_split_router_v1,
    make_teacher_only_router_v1,
)


def objective(selector, router):
    return DeKDObjective(
        selector=selector,
        teacher_assistant=make_teacher_assistant_kl_v1(router, make_kl_divergence_v1()),
        alignment=None,
        cross_entropy=make_cross_entropy_v1(),
        ce_weight=0.5, ta_weight=0.5, alignment_weight=0.0,
    )


def test_rounds_share_the_budget_evenly_and_carry_over_what_is_left():
    rounds = QueryRounds.create(n_labelled=10, n_unlabelled=90, n_epochs=3, pool_budget=80)
    assert (rounds.first_epoch, rounds.n_rounds) == (1, 2)  # epoch 0 learns from the labelled examples
    assert [rounds.round_of(e) for e in range(3)] == [None, 0, 1]
    assert rounds.allowance(0, spent=0) == 40
    assert rounds.allowance(1, spent=40) == 40
    assert rounds.allowance(1, spent=30) == 50  # a round that spent less leaves it to the next
    assert QueryRounds.create(0, 90, 3, 10).first_epoch == 0  # no labelled examples: start at once
    assert QueryRounds.create(10, 90, 1, 10).first_epoch == 0  # one epoch: its only chance


def test_a_budget_that_covers_the_pool_is_spent_in_the_first_round():
    # Nothing to choose: every text is answered, so no round holds its answers back.
    rounds = QueryRounds.create(n_labelled=10, n_unlabelled=90, n_epochs=4, pool_budget=90)
    assert rounds.allowance(0, spent=0) == 90
    assert rounds.allowance(1, spent=90) == 0
    kd = objective(make_all_selector_v1(), make_teacher_only_router_v1())
    assert rounds.planned_sizes(kd, 4) == [0, 90, 90, 90]
    # One answer short of the pool: paced as before.
    assert QueryRounds.create(10, 90, 4, pool_budget=89).planned_sizes(kd, 4) == [0, 30, 60, 89]


@pytest.mark.parametrize("allowance,split,expected", [
    (None, True, (25, 25)),  # no budget: ratio 0.5 of 100, halved by the router
    (10, True, (10, 10)),  # a budget sets k: 20 selected, 10 of them for the teacher
    (10, False, (10, 0)),
    (500, False, (100, 0)),  # up to every candidate, whatever the ratio
])
def test_query_sizes(allowance, split, expected):
    router = make_entropy_split_router_v1() if split else make_teacher_only_router_v1()
    assert objective(make_entropy_selector_v1(0.5), router).query_sizes(100, allowance) == expected


@pytest.mark.parametrize("sample", [None, 30, 1000])
def test_planned_sizes_are_what_the_rounds_take(sample):
    torch.manual_seed(0)
    for obj in (objective(make_entropy_selector_v1(0.5), make_entropy_split_router_v1()),
                objective(make_all_selector_v1(seed=1), make_teacher_only_router_v1())):
        rounds = QueryRounds.create(n_labelled=20, n_unlabelled=200, n_epochs=4, pool_budget=90, sample=sample, seed=3)
        planned = rounds.planned_sizes(obj, 4)
        taken = []
        for epoch in range(4):
            j = rounds.round_of(epoch)
            if j is not None:
                candidates = rounds.candidates(j)
                t, a = obj.select_queries(torch.randn(len(candidates), 2), len(candidates), rounds.allowance(j, rounds.teacher_answers))
                rounds.record(epoch, candidates[t], candidates[a], len(candidates))
            taken.append(len(rounds.answered_ids()))
        assert taken == planned
        assert rounds.teacher_answers <= 90


def test_labelled_need_counts_the_teachers_rows_of_each_batch():
    split = objective(make_entropy_selector_v1(0.5), make_entropy_split_router_v1())
    # Batches of 32, 32 and 16: 8, 8 and 4 rows to the teacher, 20 an epoch.
    assert labelled_need(split, [32, 32, 16], n_epochs=3, n_labelled=80) == 60
    assert labelled_need(split, [32, 32, 16], n_epochs=5, n_labelled=80) == 80  # each asked once at most
    kd = objective(make_all_selector_v1(), make_teacher_only_router_v1())
    assert labelled_need(kd, [32, 32, 16], n_epochs=1, n_labelled=80) == 80


def test_a_pool_sample_is_a_seeded_draw_of_unanswered_texts():
    rounds = QueryRounds.create(n_labelled=10, n_unlabelled=1000, n_epochs=3, pool_budget=50, sample=100, seed=7)
    first = rounds.candidates(0)
    assert first.numel() == 100 and torch.equal(first, first.sort().values) and int(first.min()) >= 10
    assert torch.equal(first, rounds.candidates(0))  # the same draw on a resume
    assert not torch.equal(first, rounds.candidates(1))  # another round, another draw
    other_seed = QueryRounds.create(n_labelled=10, n_unlabelled=1000, n_epochs=3, pool_budget=50, sample=100, seed=8)
    assert not torch.equal(first, other_seed.candidates(0))
    rounds.record(1, first[:40], first[:0], 100)
    assert not set(rounds.candidates(1).tolist()) & set(first[:40].tolist())  # answered texts are not drawn again
    small = QueryRounds.create(n_labelled=0, n_unlabelled=50, n_epochs=2, pool_budget=None, sample=100)
    assert torch.equal(small.candidates(0), small.unanswered())  # a sample larger than the pool is the pool


@pytest.mark.parametrize("n,allowance", [(0, 5), (40, 5), (40, 0)])
def test_a_round_that_reads_states_is_handed_logits_and_states(n, allowance):
    # The split router takes the most certain half of the k kept rows: 5 of 10.
    obj = objective(make_diverse_entropy_selector_v1(0.5), make_entropy_split_router_v1())
    assert obj.reads_states and obj.reads_logits
    chunks = [(torch.randn(n, 2), torch.randn(n, 8))] if n else None  # none for a round with no candidates
    to_teacher, to_assistant = obj.select_queries(chunks, n, allowance)
    assert len(to_teacher) == (min(allowance, n // 2) if n else 0) and len(to_assistant) == len(to_teacher)
    assert not objective(make_entropy_selector_v1(0.5), make_entropy_split_router_v1()).reads_states
