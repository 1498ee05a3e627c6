"""Selectors, routers and layer selectors pick the rows and layers they should."""
import math

import pytest
import torch

from spacy_dekd.distill.selectors import (
    RunningTopK,
    entropy_score,
    hidden_layer_scores,
    joined,
    least_confidence_score,
    make_assistant_only_router_v1,
    make_diverse_entropy_selector_v1,
    make_entropy_layer_selector_v1,
    make_entropy_selector_v1,
    make_entropy_split_router_v1,
    make_last_layer_selector_v1,
    make_least_confidence_selector_v1,
    make_margin_selector_v1,
    make_random_selector_v1,
    make_teacher_only_router_v1,
    make_uniform_layer_selector_v1,
    margin_score,
    n_selected,
    spread_layers,
    uniform_layers,
)


def logits_for(probs):
    return torch.tensor(probs).log()


# Rows, by design: 0 certain, 1 uniform (most uncertain), 2 fairly certain,
# 3 a near tie between two classes with a third one empty, 4 certain.
PROBS = [
    [0.98, 0.01, 0.01],
    [1 / 3, 1 / 3, 1 / 3],
    [0.80, 0.10, 0.10],
    [0.50, 0.49, 0.01],
    [0.01, 0.01, 0.98],
]


def test_scores_against_hand_values():
    logits = logits_for(PROBS)
    h = -sum(p * math.log(p) for p in PROBS[2]) / math.log(3)
    assert float(entropy_score(logits)[2]) == pytest.approx(h, rel=1e-5)
    assert float(entropy_score(logits)[1]) == pytest.approx(1.0, rel=1e-5)
    assert float(least_confidence_score(logits)[3]) == pytest.approx(0.5, rel=1e-5)
    assert float(margin_score(logits)[3]) == pytest.approx(1 - 0.01, rel=1e-4)


def test_entropy_selector_picks_the_most_uncertain_rows():
    select = make_entropy_selector_v1(ratio=0.4)  # ceil(0.4 * 5) = 2
    assert select(logits_for(PROBS)).tolist() == [1, 3]


def test_margin_picks_the_smallest_margins():
    # Margins: 0.5, 0.01, 0.3.
    select = make_margin_selector_v1(ratio=0.2)
    probs = [[0.7, 0.2, 0.1], [0.45, 0.44, 0.11], [0.6, 0.3, 0.1]]
    assert select(logits_for(probs)).tolist() == [1]
    select = make_margin_selector_v1(ratio=0.6)
    assert select(logits_for(probs)).tolist() == [1, 2]


def test_least_confidence_picks_the_lowest_top_probability():
    select = make_least_confidence_selector_v1(ratio=0.4)
    assert select(logits_for(PROBS)).tolist() == [1, 3]


def test_ties_break_by_position():
    select = make_entropy_selector_v1(ratio=0.5)
    assert select(torch.zeros(4, 2)).tolist() == [0, 1]


def test_selection_size_is_ceil_and_at_least_one():
    assert [n_selected(n, 0.5) for n in (1, 2, 3, 32, 33)] == [1, 1, 2, 16, 17]
    assert n_selected(10, 0.01) == 1
    assert n_selected(0, 0.5) == 0


def test_random_selector_is_seeded():
    a = make_random_selector_v1(ratio=0.5, seed=3)(torch.zeros(10, 2))
    b = make_random_selector_v1(ratio=0.5, seed=3)(torch.zeros(10, 2))
    assert a.tolist() == b.tolist() and len(a) == 5 and a.tolist() == sorted(a.tolist())


@pytest.mark.parametrize("ratio", [0.0, -0.1, 1.5])
@pytest.mark.parametrize(
    "make",
    [make_entropy_selector_v1, make_least_confidence_selector_v1, make_margin_selector_v1, make_random_selector_v1],
)
def test_ratio_outside_unit_interval_is_refused(make, ratio):
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        make(ratio=ratio)


@pytest.mark.parametrize("k,n_teacher", [(1, 1), (2, 1), (5, 3), (6, 3)])
def test_entropy_split_router_sizes(k, n_teacher):
    torch.manual_seed(k)
    teacher_rows, assistant_rows = make_entropy_split_router_v1()(torch.randn(k, 3))
    assert len(teacher_rows) == n_teacher == math.ceil(k / 2)
    assert len(assistant_rows) == k - n_teacher
    assert sorted(teacher_rows.tolist() + assistant_rows.tolist()) == list(range(k))


def test_entropy_split_router_sends_certain_rows_to_the_teacher():
    teacher_rows, assistant_rows = make_entropy_split_router_v1()(logits_for(PROBS))
    assert teacher_rows.tolist() == [0, 2, 4]
    assert assistant_rows.tolist() == [1, 3]


def test_teacher_and_assistant_only_routers():
    logits = torch.randn(4, 2)
    t, a = make_teacher_only_router_v1()(logits)
    assert t.tolist() == [0, 1, 2, 3] and a.numel() == 0
    t, a = make_assistant_only_router_v1()(logits)
    assert t.numel() == 0 and a.tolist() == [0, 1, 2, 3]


def test_multilabel_entropy_is_bernoulli_mean_over_labels():
    logits = torch.tensor([[0.0, 100.0]])  # p = 0.5 (H = log 2) and p ≈ 1 (H ≈ 0)
    assert float(entropy_score(logits, multilabel=True)[0]) == pytest.approx(0.5, abs=1e-4)


def test_hidden_layer_selector_finds_planted_flat_layers():
    torch.manual_seed(0)
    k, d = 8, 16
    hidden = [torch.randn(k, d) * 5 for _ in range(6)]
    hidden[1] = torch.zeros(k, d)  # softmax of a flat vector: entropy log d
    hidden[4] = torch.full((k, d), 0.3)
    select = make_entropy_layer_selector_v1(score="hidden")
    assert select(hidden, 2) == [1, 4]
    assert float(hidden_layer_scores(hidden)[1]) == pytest.approx(1.0, rel=1e-6)


def test_logit_layer_selector_uses_the_teacher_head():
    head = torch.nn.Linear(4, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [-1.0, 0, 0, 0]]))
        head.bias.zero_()
    confident = torch.tensor([[9.0, 0, 0, 0]] * 3)
    unsure = torch.tensor([[0.0, 1, 1, 1]] * 3)
    hidden = [confident, unsure, confident, unsure]
    select = make_entropy_layer_selector_v1(score="logits")
    assert select(hidden, 2, head=head) == [1, 3]
    with pytest.raises(ValueError, match="head"):
        select(hidden, 2)


def test_uniform_and_last_layer_selectors():
    hidden = [torch.zeros(1, 2)] * 12
    assert make_uniform_layer_selector_v1()(hidden, 3) == [3, 7, 11]
    assert uniform_layers(12, 6) == [1, 3, 5, 7, 9, 11]
    assert make_last_layer_selector_v1()(hidden, 3) == [9, 10, 11]
    assert spread_layers(12, 3) == [0, 6, 11]
    with pytest.raises(ValueError):
        uniform_layers(3, 4)


@pytest.mark.parametrize("n,k,chunk", [(1000, 100, 64), (1000, 100, 1000), (500, 0, 50), (300, 400, 7), (257, 1, 32)])
@pytest.mark.parametrize("make", [make_entropy_selector_v1, make_margin_selector_v1, make_least_confidence_selector_v1])
def test_running_top_k_over_chunks_keeps_what_ranking_the_whole_pool_keeps(make, n, k, chunk):
    # Scores rounded to a few values, so that many rows tie and the tie-break
    # by position decides.
    generator = torch.Generator().manual_seed(n + k + chunk)
    logits = (torch.randn(n, 3, generator=generator) * 4).round() / 4
    selector = make(0.5)
    whole = selector(logits, k=min(k, n))
    kept, rows = selector.select_chunks(logits.split(chunk), k)
    assert torch.equal(kept, whole)
    assert torch.equal(rows, logits[whole])


def test_running_top_k_keeps_k_rows_and_a_chunk():
    running = RunningTopK(10)
    for scores in torch.rand(10_000).split(100):
        running.push(scores, scores.unsqueeze(1))
        assert len(running.index) <= 10
    index, rows = running.result()
    assert index.tolist() == sorted(index.tolist()) and rows.shape == (10, 1)


def test_a_selector_without_chunks_sees_them_joined():
    # The random selector draws over all rows at once: the same draw whether
    # the rows come whole or in chunks.
    logits = torch.randn(100, 2)
    whole = make_random_selector_v1(0.5, seed=3)(logits, k=20)
    kept, rows = make_random_selector_v1(0.5, seed=3).select_chunks(logits.split(9), 20)
    assert torch.equal(kept, whole) and torch.equal(rows, logits[whole])


def test_a_selector_that_reads_no_logits_draws_over_a_view_of_one_row():
    # A round hands such a selector a view of one row of zeros: the same draw
    # as over dense zeros, with no tensor of n rows made to stand in.
    n = 1000
    view = torch.zeros((1, 2)).expand(n, 2)
    assert joined([view]) is view
    kept, rows = make_random_selector_v1(0.5, seed=3).select_chunks([view], 20)
    dense = make_random_selector_v1(0.5, seed=3).select_chunks([torch.zeros((n, 2))], 20)
    assert torch.equal(kept, dense[0]) and rows.shape == (20, 2)


def planted_groups(n_groups, size, dim=16, seed=0):
    """`size` copies of each of `n_groups` texts, as a text and its variants:
    one state a group and logits a little apart; row i is of group i % n_groups."""
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(n_groups, dim, generator=generator).repeat(size, 1)
    logits = torch.randn(n_groups, 2, generator=generator).repeat(size, 1)
    return logits + 0.01 * torch.randn(logits.shape, generator=generator), states


def test_diverse_entropy_keeps_one_row_of_each_group_of_near_duplicates():
    logits, states = planted_groups(n_groups=30, size=4)
    k = 10
    entropy = make_entropy_selector_v1(0.5)(logits, k=k)
    kept, rows = make_diverse_entropy_selector_v1(prefilter=8.0, seed=1).select_states([(logits, states)], k)
    groups = (kept % 30).tolist()
    assert len(set(groups)) == k == len(kept)
    assert torch.equal(rows, logits[kept])
    # Each kept row is its group's most uncertain of the candidates.
    scores = entropy_score(logits)
    for row in kept.tolist():
        members = torch.arange(row % 30, 120, 30)
        assert scores[row] == scores[members].max()
    # Entropy alone spends its answers on the copies of a few texts.
    assert len(set((entropy % 30).tolist())) <= k // 4 + 1


def test_diverse_entropy_with_one_candidate_a_row_is_the_entropy_selector():
    generator = torch.Generator().manual_seed(4)
    logits, states = torch.randn(500, 3, generator=generator), torch.randn(500, 8, generator=generator)
    kept, _ = make_diverse_entropy_selector_v1(prefilter=1.0).select_states([(logits, states)], 40)
    assert torch.equal(kept, make_entropy_selector_v1(0.5)(logits, k=40))


@pytest.mark.parametrize("chunk", [7, 100, 1000])
def test_diverse_entropy_over_chunks_keeps_what_the_whole_pool_keeps(chunk):
    generator = torch.Generator().manual_seed(chunk)
    logits = (torch.randn(1000, 2, generator=generator) * 4).round() / 4  # many ties
    states = torch.randn(1000, 8, generator=generator)
    whole = make_diverse_entropy_selector_v1(seed=3).select_states([(logits, states)], 50)
    pieces = list(zip(logits.split(chunk), states.split(chunk)))
    kept, rows = make_diverse_entropy_selector_v1(seed=3).select_states(pieces, 50)
    assert torch.equal(kept, whole[0]) and torch.equal(rows, whole[1])
    assert kept.tolist() == sorted(set(kept.tolist())) and len(kept) == 50


@pytest.mark.parametrize("n_distinct,k", [(3, 10), (1, 5), (50, 49)])
def test_diverse_entropy_keeps_k_rows_when_states_are_fewer_than_clusters(n_distinct, k):
    logits, states = planted_groups(n_groups=n_distinct, size=60 // n_distinct + 1)
    kept, _ = make_diverse_entropy_selector_v1(prefilter=2.0).select_states([(logits, states)], k)
    assert len(kept) == k == len(set(kept.tolist()))


@pytest.mark.parametrize("arg,value", [("prefilter", 0.5), ("iterations", -1), ("ratio", 0.0)])
def test_diverse_entropy_refuses_bad_settings(arg, value):
    with pytest.raises(ValueError, match=arg if arg != "ratio" else "ratio"):
        make_diverse_entropy_selector_v1(**{arg: value})
