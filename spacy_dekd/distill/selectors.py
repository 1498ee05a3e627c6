"""Which instances query the teacher (Eq. 4–5, 11–12), which of them learn
from the assistant (Eq. 6), and which teacher layers the student aligns to
(Eq. 8). Registered in `dekd_selectors`.

All scores are computed on detached tensors: selection never carries a
gradient. With multilabel logits, each label is a Bernoulli distribution
[p, 1 - p]; scores are averaged over labels (docs/DESIGN.md).
"""
import math
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..registry import registry
from .types import InstanceSelector, LayerSelector, Router


# Scores: higher means "more informative" (docs/DESIGN.md, Data selection).


def _distribution(logits: torch.Tensor, multilabel: bool) -> torch.Tensor:
    """(N, C) logits → (N, C, K) probabilities: K = C classes, or K = 2
    outcomes per label for multilabel.
    """
    logits = logits.detach().float()
    if multilabel:
        p = logits.sigmoid()
        return torch.stack([p, 1 - p], dim=-1)  # (N, C, 2)
    return logits.softmax(-1).unsqueeze(1)  # (N, 1, C)


def entropy(probs: torch.Tensor) -> torch.Tensor:
    """H(p) = -Σ p log p over the last axis, with 0 log 0 = 0."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(-1)


def entropy_score(logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
    """Eq. 4–5: U = H(p_s) / log |Y| (log 2 per label for multilabel). (N,)"""
    probs = _distribution(logits, multilabel)
    n_outcomes = probs.shape[-1]
    if n_outcomes < 2:
        return torch.zeros(logits.shape[0], device=logits.device)
    return (entropy(probs) / math.log(n_outcomes)).mean(-1)


def least_confidence_score(logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
    """Eq. 11: U = 1 - max_y p(y). (N,)"""
    probs = _distribution(logits, multilabel)
    return (1 - probs.max(-1).values).mean(-1)


def margin_score(logits: torch.Tensor, *, multilabel: bool = False) -> torch.Tensor:
    """Eq. 12 flipped: U = 1 - (p_(1) - p_(2)). The paper defines the margin
    itself, but small margins are the uncertain ones, so the score is flipped
    to keep "higher = select". (N,)
    """
    probs = _distribution(logits, multilabel)
    if probs.shape[-1] < 2:
        return torch.zeros(logits.shape[0], device=logits.device)
    top2 = probs.topk(2, dim=-1).values
    return (1 - (top2[..., 0] - top2[..., 1])).mean(-1)


def n_selected(n: int, ratio: float) -> int:
    """k = max(1, ceil(r · N)), for N > 0."""
    return 0 if n == 0 else max(1, math.ceil(ratio * n - 1e-9))


def top_k(scores: torch.Tensor, k: int) -> torch.Tensor:
    """The indices of the k highest scores, ties broken by position, in
    ascending order.
    """
    order = torch.sort(scores, descending=True, stable=True).indices
    return order[:k].sort().values


class RunningTopK:
    """The k highest scores among rows seen a chunk at a time, in order, ties
    broken by position, each with its row of logits: what `top_k` over all
    the rows at once keeps, in memory for k rows and a chunk (a query round
    over a pool far larger than its share of the budget).
    """

    def __init__(self, k: int) -> None:
        self.k = k
        self.seen = 0
        self.scores = torch.zeros(0)
        self.index = torch.zeros(0, dtype=torch.long)
        self.rows: Optional[torch.Tensor] = None

    def push(self, scores: torch.Tensor, rows: torch.Tensor) -> None:
        """The next chunk's scores (n,) and rows (n, ...)."""
        index = torch.arange(self.seen, self.seen + scores.shape[0], device=scores.device)
        self.seen += scores.shape[0]
        if self.rows is None:
            self.scores, self.index, self.rows = scores[:0], index[:0], rows[:0]
        if len(self.index) == self.k:
            # A tie with the lowest kept score goes to the kept row: it came first.
            better = scores > self.scores.min() if self.k > 0 else scores < scores
            scores, index, rows = scores[better], index[better], rows[better]
        if scores.numel() == 0:
            return
        # Kept rows come before the chunk's and are in ascending order, so a
        # stable ranking of the two breaks ties by position, as `top_k` does.
        scores, index, rows = torch.cat([self.scores, scores]), torch.cat([self.index, index]), torch.cat([self.rows, rows])
        keep = top_k(scores, self.k)
        self.scores, self.index, self.rows = scores[keep], index[keep], rows[keep]

    def result(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """The kept row indices, ascending, and their rows."""
        assert self.rows is not None, "no chunk was pushed"
        return self.index, self.rows


def joined(chunks: Iterable[torch.Tensor]) -> torch.Tensor:
    """Chunks of rows as one tensor; a single chunk as it is (not copied)."""
    chunks = list(chunks)
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks)


def check_ratio(ratio: float) -> None:
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"The selection ratio must be in (0, 1], got {ratio}.")


class RatioSelector:
    """Keeps `count(N)` of N rows, k = max(1, ceil(r·N)), or the k asked for;
    subclasses say which.
    """

    reads_logits = True

    def __init__(self, ratio: float) -> None:
        check_ratio(ratio)
        self.ratio = ratio

    def count(self, n: int) -> int:
        return n_selected(n, self.ratio)

    def __call__(
        self, student_logits: torch.Tensor, *, multilabel: bool = False, k: Optional[int] = None
    ) -> torch.Tensor:
        n = student_logits.shape[0]
        return self.pick(student_logits, self.count(n) if k is None else min(k, n), multilabel=multilabel)

    def pick(self, student_logits: torch.Tensor, k: int, *, multilabel: bool) -> torch.Tensor:
        raise NotImplementedError

    def select_chunks(
        self, chunks: Iterable[torch.Tensor], k: int, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """k rows of logits that come a chunk at a time: their ascending
        indices and their logits. This one joins the chunks and picks;
        a selector that scores rows one by one keeps a running top k instead.
        """
        logits = joined(chunks)
        selected = self.pick(logits, min(k, logits.shape[0]), multilabel=multilabel)
        return selected, logits[selected]


class ScoreSelector(RatioSelector):
    """The rows of highest score, ties broken by position."""

    def __init__(self, score: Callable[..., torch.Tensor], ratio: float) -> None:
        super().__init__(ratio)
        self.score = score

    def pick(self, student_logits: torch.Tensor, k: int, *, multilabel: bool) -> torch.Tensor:
        return top_k(self.score(student_logits, multilabel=multilabel), k)

    def select_chunks(
        self, chunks: Iterable[torch.Tensor], k: int, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        running = RunningTopK(k)
        for logits in chunks:
            running.push(self.score(logits, multilabel=multilabel), logits.detach())
        return running.result()


class RandomSelector(RatioSelector):
    """Rows uniformly at random, from a generator seeded once."""

    reads_logits = False

    def __init__(self, ratio: float, seed: int) -> None:
        super().__init__(ratio)
        self.generator = torch.Generator().manual_seed(seed)

    def pick(self, student_logits: torch.Tensor, k: int, *, multilabel: bool) -> torch.Tensor:
        rows = torch.randperm(student_logits.shape[0], generator=self.generator)[:k].sort().values
        return rows.to(student_logits.device)


class DiverseEntropySelector(ScoreSelector):
    """Entropy with diversity in a query round: of the `prefilter`·k
    candidates of highest entropy, the k it keeps are each the most uncertain
    member of one cluster of the student's states (k-means into k clusters,
    cosine, k-means++ seeding), so that near-duplicates (a text and its
    variants, a template message) take one teacher answer between them, not
    one each. Diverse mini-batch active learning (Zhdanov, 2019) clusters the
    same way and keeps the member nearest each centre; this one keeps DeKD's
    choice within a cluster, the most uncertain.

    In a labelled batch, which has no states to read, it is the entropy
    selector. Its seeding draws from a generator seeded once, which a
    checkpoint keeps.
    """

    reads_states = True

    def __init__(self, ratio: float, prefilter: float, iterations: int, seed: int) -> None:
        super().__init__(entropy_score, ratio)
        if prefilter < 1:
            raise ValueError(f"prefilter must be at least 1 (candidates per selected row), got {prefilter}.")
        if iterations < 0:
            raise ValueError(f"iterations must be 0 or more, got {iterations}.")
        self.prefilter = prefilter
        self.iterations = iterations
        self.generator = torch.Generator().manual_seed(seed)

    def select_states(
        self, chunks: Iterable[Tuple[torch.Tensor, torch.Tensor]], k: int, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Chunks of (logits (n_i, C), states (n_i, d)), in order → the
        ascending indices of the k rows it keeps, and their logits. It holds
        the prefiltered candidates' logits and states, never all the rows.
        """
        running = RunningTopK(math.ceil(self.prefilter * k - 1e-9))
        n_classes = 0
        for logits, states in chunks:
            n_classes = logits.shape[1]
            rows = torch.cat([logits.detach().float(), states.detach().float()], dim=1)
            running.push(self.score(logits, multilabel=multilabel), rows)
        index, rows = running.result()
        picked = diverse_top(running.scores, rows[:, n_classes:], k, self.iterations, self.generator)
        return index[picked], rows[picked, :n_classes]


def diverse_top(
    scores: torch.Tensor, states: torch.Tensor, k: int, iterations: int, generator: torch.Generator,
    block: int = 4096,
) -> torch.Tensor:
    """k of m rows, ascending: the states, centred, clustered into k clusters
    (spherical k-means: k-means++ seeding, then at most `iterations` Lloyd
    steps) and the row of highest score kept in each (ties by position); a
    cluster left empty gives its place to the best-scored row not kept. With
    k >= m, every row. Costs (1 + iterations)·m·k·d multiply-adds.
    """
    m = scores.shape[0]
    if k >= m:
        return torch.arange(m, device=scores.device)
    # Centred first: a transformer's states share a large common direction,
    # which would leave every pair of texts near cosine 1.
    states = states.float()
    points = nn.functional.normalize(states - states.mean(0), dim=1)

    def nearest(centres: torch.Tensor) -> torch.Tensor:
        # Rows in blocks: a block's similarities to the centres at a time.
        return torch.cat([(points[i : i + block] @ centres.T).argmax(1) for i in range(0, m, block)])

    # k-means++: each next centre drawn with probability ∝ its squared distance
    # to the nearest centre so far (a duplicate of a centre is never drawn).
    chosen = [int(torch.randint(m, (1,), generator=generator))]
    similarity = points @ points[chosen[0]]
    for _ in range(1, k):
        weights = (2 - 2 * similarity).clamp_min(0).cpu()
        if float(weights.sum()) <= 0:
            break  # fewer distinct states than clusters
        chosen.append(int(torch.multinomial(weights, 1, generator=generator)))
        similarity = torch.maximum(similarity, points @ points[chosen[-1]])
    centres = points[chosen]
    assign = nearest(centres)
    for _ in range(iterations):
        sums = torch.zeros_like(centres).index_add_(0, assign, points)
        filled = sums.norm(dim=1) > 0
        centres[filled] = nn.functional.normalize(sums[filled], dim=1)
        moved = nearest(centres)
        if torch.equal(moved, assign):
            break
        assign = moved
    order = torch.sort(scores, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank[order] = torch.arange(m, device=order.device)
    best = torch.full((centres.shape[0],), m, dtype=torch.long, device=scores.device)
    best.scatter_reduce_(0, assign, rank, reduce="amin")
    kept = best[best < m]
    if kept.numel() < k:
        taken = torch.zeros(m, dtype=torch.bool, device=scores.device)
        taken[kept] = True
        kept = torch.cat([kept, torch.nonzero(~taken).flatten()[: k - kept.numel()]])
    return order[kept].sort().values


@registry.dekd_selectors("spacy-dekd.EntropySelector.v1")
def make_entropy_selector_v1(ratio: float = 0.5) -> InstanceSelector:
    """DeKD's selector: the ceil(r·N) examples of highest scaled entropy."""
    return ScoreSelector(entropy_score, ratio)


@registry.dekd_selectors("spacy-dekd.DiverseEntropySelector.v1")
def make_diverse_entropy_selector_v1(
    ratio: float = 0.5, prefilter: float = 4.0, iterations: int = 10, seed: int = 0
) -> InstanceSelector:
    """DeKD's entropy selector, made to spread a query round's answers over
    the student's states: one answer per cluster of near-alike texts among
    the `prefilter`·k most uncertain (`DiverseEntropySelector`).

    prefilter (float): Candidates per selected row, the most uncertain; 1 is
        the entropy selector.
    iterations (int): k-means steps at most.
    seed (int): Seeds the k-means++ draws.
    """
    return DiverseEntropySelector(ratio, prefilter, iterations, seed)


@registry.dekd_selectors("spacy-dekd.LeastConfidenceSelector.v1")
def make_least_confidence_selector_v1(ratio: float = 0.5) -> InstanceSelector:
    return ScoreSelector(least_confidence_score, ratio)


@registry.dekd_selectors("spacy-dekd.MarginSelector.v1")
def make_margin_selector_v1(ratio: float = 0.5) -> InstanceSelector:
    return ScoreSelector(margin_score, ratio)


@registry.dekd_selectors("spacy-dekd.RandomSelector.v1")
def make_random_selector_v1(ratio: float = 0.5, seed: int = 0) -> InstanceSelector:
    """k examples uniformly at random, from a generator seeded once."""
    return RandomSelector(ratio, seed)


@registry.dekd_selectors("spacy-dekd.AllSelector.v1")
def make_all_selector_v1(seed: int = 0) -> InstanceSelector:
    """Every example: no data selection (vanilla KD, the "w/o DS" ablation).
    Under a teacher budget, when fewer than all can be answered, the ones
    answered are drawn at random: vanilla KD prefers none.
    """
    return RandomSelector(1.0, seed)


# Routers (Eq. 6–7)


class EntropySplitRouter:
    """Sort by student entropy; the ceil(k/2) most certain rows learn from
    the teacher, the rest from the assistant.
    """

    uses_assistant = True
    reads_logits = True

    def n_teacher(self, k: int) -> int:
        return math.ceil(k / 2)

    def n_assistant(self, k: int) -> int:
        return k - self.n_teacher(k)

    def __call__(self, student_logits: torch.Tensor, *, multilabel: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        scores = entropy_score(student_logits, multilabel=multilabel)
        order = torch.sort(scores, stable=True).indices  # most certain first
        n_teacher = self.n_teacher(student_logits.shape[0])
        return order[:n_teacher].sort().values, order[n_teacher:].sort().values


class OneSideRouter:
    """Every row to one side: the teacher or the assistant."""

    reads_logits = False

    def __init__(self, *, to_assistant: bool) -> None:
        self.uses_assistant = to_assistant

    def n_teacher(self, k: int) -> int:
        return 0 if self.uses_assistant else k

    def n_assistant(self, k: int) -> int:
        return k if self.uses_assistant else 0

    def __call__(self, student_logits: torch.Tensor, *, multilabel: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(student_logits.shape[0], device=student_logits.device)
        return (rows[:0], rows) if self.uses_assistant else (rows, rows[:0])


class BothRouter:
    """Every row to the teacher and to the assistant: the two are the
    teachers of a multi-teacher method (UHC, MUKI), and its loss combines
    their answers.
    """

    uses_assistant = True
    reads_logits = False

    def n_teacher(self, k: int) -> int:
        return k

    def n_assistant(self, k: int) -> int:
        return k

    def __call__(self, student_logits: torch.Tensor, *, multilabel: bool = False) -> Tuple[torch.Tensor, torch.Tensor]:
        rows = torch.arange(student_logits.shape[0], device=student_logits.device)
        return rows, rows


@registry.dekd_routers("spacy-dekd.EntropySplitRouter.v1")
def make_entropy_split_router_v1() -> Router:
    """Eq. 6: the more certain half of the selected rows learns from the
    teacher, the more uncertain half from the assistant.
    """
    return EntropySplitRouter()


@registry.dekd_routers("spacy-dekd.TeacherOnlyRouter.v1")
def make_teacher_only_router_v1() -> Router:
    """Every selected row learns from the teacher ("w/o TA", vanilla KD)."""
    return OneSideRouter(to_assistant=False)


@registry.dekd_routers("spacy-dekd.AssistantOnlyRouter.v1")
def make_assistant_only_router_v1() -> Router:
    """Every selected row learns from the assistant (TAKD's second stage)."""
    return OneSideRouter(to_assistant=True)


@registry.dekd_routers("spacy-dekd.BothTeachersRouter.v1")
def make_both_teachers_router_v1() -> Router:
    """Every selected row learns from the teacher and from the assistant, as
    from two teachers (UHC, MUKI).
    """
    return BothRouter()


# Layer selectors (Eq. 8)

LAYER_SCORES = ("hidden", "logits")


def hidden_layer_scores(teacher_hidden: Sequence[torch.Tensor]) -> torch.Tensor:
    """The literal Eq. 8: R_l = mean_x H(softmax(h_l(x))) / log d. (L,)"""
    scores = []
    for h in teacher_hidden:
        h = h.detach().float()  # (k, d)
        scores.append((entropy(h.softmax(-1)) / math.log(h.shape[-1])).mean())
    return torch.stack(scores)


def logit_layer_scores(
    teacher_hidden: Sequence[torch.Tensor], head: nn.Module, *, multilabel: bool = False
) -> torch.Tensor:
    """Eq. 8 read through the `log|Y|` divisor: the teacher's own head on each
    layer's first-token state, R_l = mean_x H(softmax(head(h_l(x)))) / log C. (L,)
    """
    with torch.no_grad():
        scores = [entropy_score(head(h.float()), multilabel=multilabel).mean() for h in teacher_hidden]
    return torch.stack(scores)


def check_pick(n_layers: int, n_teacher: int) -> None:
    if not 1 <= n_layers <= n_teacher:
        raise ValueError(f"Cannot pick {n_layers} of {n_teacher} teacher layers.")


def pick_top_layers(scores: torch.Tensor, n_layers: int) -> List[int]:
    """The M highest-scoring layers (ties by position), ascending."""
    check_pick(n_layers, scores.shape[0])
    return top_k(scores, n_layers).tolist()


@registry.dekd_layer_selectors("spacy-dekd.EntropyLayerSelector.v1")
def make_entropy_layer_selector_v1(score: str = "logits", multilabel: Optional[bool] = None) -> LayerSelector:
    """DeKD's dynamic choice of the M most informative teacher layers,
    recomputed every batch on the selected examples.

    score (str): "hidden" (the literal Eq. 8, entropy of the softmax over the
        hidden vector) or "logits" (entropy of the teacher head's prediction
        from that layer). See docs/DESIGN.md for why both exist.
    multilabel (Optional[bool]): Not read: the class mode is the component's
        (exclusive_classes), passed at each call. Kept so that configs that
        set it still resolve.
    """
    if score not in LAYER_SCORES:
        raise ValueError(f"score must be one of {LAYER_SCORES}, got '{score}'.")

    def select(
        teacher_hidden: Sequence[torch.Tensor], n_layers: int, *, head: Optional[nn.Module] = None,
        multilabel: bool = False,
    ) -> List[int]:
        if score == "hidden":
            scores = hidden_layer_scores(teacher_hidden)
        else:
            if head is None:
                raise ValueError("The 'logits' layer score needs the teacher's head.")
            scores = logit_layer_scores(teacher_hidden, head, multilabel=multilabel)
        return pick_top_layers(scores, n_layers)

    return select


@registry.dekd_layer_selectors("spacy-dekd.UniformLayerSelector.v1")
def make_uniform_layer_selector_v1() -> LayerSelector:
    """Teacher layers round(i·L/M), i = 1..M (BERT-PKD "skip")."""

    def select(
        teacher_hidden: Sequence[torch.Tensor], n_layers: int, *, head: Optional[nn.Module] = None,
        multilabel: bool = False,
    ) -> List[int]:
        return uniform_layers(len(teacher_hidden), n_layers)

    return select


@registry.dekd_layer_selectors("spacy-dekd.LastLayerSelector.v1")
def make_last_layer_selector_v1() -> LayerSelector:
    """The last M teacher layers (BERT-PKD "last")."""

    def select(
        teacher_hidden: Sequence[torch.Tensor], n_layers: int, *, head: Optional[nn.Module] = None,
        multilabel: bool = False,
    ) -> List[int]:
        return last_layers(len(teacher_hidden), n_layers)

    return select


def uniform_layers(n_teacher: int, n_layers: int) -> List[int]:
    """0-based indices of teacher layers round(i·L/M), i = 1..M."""
    check_pick(n_layers, n_teacher)
    return [max(0, math.floor(i * n_teacher / n_layers + 0.5) - 1) for i in range(1, n_layers + 1)]


def spread_layers(n_teacher: int, n_layers: int) -> List[int]:
    """0-based indices spread evenly from the first layer to the last, e.g.
    [0, 6, 11] of 12 (a student built from a teacher's layers).
    """
    check_pick(n_layers, n_teacher)
    if n_layers == 1:
        return [n_teacher - 1]
    step = (n_teacher - 1) / (n_layers - 1)
    return [math.floor(i * step + 0.5) for i in range(n_layers)]


def first_layers(n_teacher: int, n_layers: int) -> List[int]:
    check_pick(n_layers, n_teacher)
    return list(range(n_layers))


def last_layers(n_teacher: int, n_layers: int) -> List[int]:
    check_pick(n_layers, n_teacher)
    return list(range(n_teacher - n_layers, n_teacher))
