"""Query rounds: unlabelled text, and a budget of teacher answers.

Labelled examples learn batch by batch as in Algorithm 1: the selector picks
rows of each batch, the router sends them to the teacher or the assistant.
Unlabelled text has no gold label to learn from before it is answered, so it
is selected over the whole pool instead: each epoch after the first (which
trains on the labelled examples alone, so that the student's uncertainty
means something) starts with a query round, in which

1. the student predicts every unlabelled text that no model has answered yet,
2. the objective's selector ranks them and keeps the ones worth a query, and
   its router sends the more certain to the teacher and the rest to the
   assistant (Eq. 4-6 over the pool instead of a batch),
3. the answered texts join the training set for the rest of the run, in
   batches of their own, each learning from the answer it got (no CE).

A teacher budget b caps the distinct examples the teacher answers over the
run at ceil(b·N), N counting labelled and unlabelled examples. The labelled
batches take what Algorithm 1 can ask of the teacher (`labelled_need`); the
rounds share the rest evenly (round j may bring its total to ceil(P·j/R) of
the P left for them), so that later rounds choose with a better student, and
how a round spends its share is the selector's choice: the most uncertain
texts for entropy, any for random selection and vanilla KD. A budget that
covers every text of the pool (P at least the pool's size) leaves no text to
choose, so it is not paced: the first round may spend all of it, and the
student learns from every answer for every epoch after the first (a router
that splits then splits the whole pool by the first round's student).

Everything here depends on counts alone, not on what the student predicts, so
a run knows its number of steps before it starts.
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import torch

from .types import Objective


# Who answered an unlabelled example, as bits: a multi-teacher router has
# both answer it (TEACHER | ASSISTANT).
UNANSWERED, TEACHER, ASSISTANT = 0, 1, 2


def labelled_need(objective: Objective, batch_sizes: List[int], n_epochs: int, n_labelled: int) -> int:
    """The most distinct labelled examples Algorithm 1 can ask the teacher
    about: the rows of each labelled batch it queries, every epoch, and never
    more than the labelled examples (each is asked at most once).
    """
    per_epoch = sum(objective.teacher_query_size(n) for n in batch_sizes)
    return min(n_labelled, per_epoch * n_epochs)


@dataclass(frozen=True)
class TeacherBudget:
    """A run's teacher budget in answers: b·N rounded up, N counting labelled
    and unlabelled examples; what the labelled batches may ask (`need`), and
    what is left for the query rounds.

    share (Optional[float]): [distillation] teacher_budget, in (0, 1]; None
        for no cap.
    """

    share: Optional[float]
    answers: Optional[int]
    need: int

    @classmethod
    def create(
        cls, share: Optional[float], objective: Objective, labelled_sizes: List[int], n_epochs: int,
        n_labelled: int, n_examples: int,
    ) -> "TeacherBudget":
        """RAISES ValueError: the labelled batches alone may ask for more."""
        answers = None if share is None else math.ceil(share * n_examples)
        need = labelled_need(objective, labelled_sizes, n_epochs, n_labelled)
        if answers is not None and answers < need:
            raise ValueError(
                f"teacher_budget = {share} allows {answers} teacher answers for "
                f"{n_examples} examples, but the {n_labelled} labelled examples need up to "
                f"{need} over {n_epochs} epochs (the rows of each batch the selector sends "
                f"to the teacher): raise teacher_budget to at least {need / n_examples:.3f}, "
                "or select fewer rows (a lower selector ratio)."
            )
        return cls(share, answers, need)

    @property
    def pool(self) -> Optional[int]:
        """Teacher answers the query rounds may give in all."""
        return None if self.answers is None else self.answers - self.need

    def check(self, n_answers: int) -> None:
        """At run time: the teacher never answers more than the budget."""
        if self.answers is not None and n_answers > self.answers:
            raise RuntimeError(f"The teacher answered {n_answers} examples, over its budget of {self.answers}.")


@dataclass
class QueryRounds:
    """The unlabelled examples of a run, who answered each, and the schedule.

    first_id (int): Corpus id of the first unlabelled example; ids from
        there to `n_examples` are unlabelled.
    n_examples (int): Labelled and unlabelled examples.
    first_epoch (int): The epoch that starts with the first round.
    n_rounds (int): One per epoch from `first_epoch` on.
    pool_budget (Optional[int]): Teacher answers the rounds may give in all;
        None for no cap.
    sample (Optional[int]): The unanswered texts a round scores, drawn at
        random from the pool; None for all of them.
    seed (int): Seeds each round's draw (with the round's index).
    """

    first_id: int
    n_examples: int
    first_epoch: int
    n_rounds: int
    pool_budget: Optional[int] = None
    sample: Optional[int] = None
    seed: int = 0
    answered: torch.Tensor = field(init=False)  # (N,) int8: bits TEACHER, ASSISTANT; 0 unanswered
    history: List[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.answered = torch.zeros(self.n_examples, dtype=torch.int8)

    @classmethod
    def create(
        cls, n_labelled: int, n_unlabelled: int, n_epochs: int, pool_budget: Optional[int],
        *, sample: Optional[int] = None, seed: int = 0,
    ) -> "QueryRounds":
        first_epoch = 1 if n_labelled > 0 and n_epochs > 1 else 0
        return cls(n_labelled, n_labelled + n_unlabelled, first_epoch, n_epochs - first_epoch, pool_budget, sample, seed)

    def round_of(self, epoch: int) -> Optional[int]:
        """The round an epoch starts with, or None."""
        j = epoch - self.first_epoch
        return j if 0 <= j < self.n_rounds else None

    def allowance(self, round_index: int, spent: int) -> Optional[int]:
        """Teacher answers round j may give, having given `spent` before:
        an even share of the budget, or all that is left of a budget that
        covers the whole pool.
        """
        if self.pool_budget is None:
            return None
        if self.pool_budget >= self.n_examples - self.first_id:
            return self.pool_budget - spent
        share = math.ceil(self.pool_budget * (round_index + 1) / self.n_rounds)
        return max(0, min(self.pool_budget, share) - spent)

    @property
    def teacher_answers(self) -> int:
        return int(((self.answered & TEACHER) != 0).sum())

    def unanswered(self) -> torch.Tensor:
        """Corpus ids of the unlabelled examples nobody answered yet."""
        pool = self.answered[self.first_id :]
        return torch.nonzero(pool == UNANSWERED).flatten() + self.first_id

    def candidates(self, round_index: int) -> torch.Tensor:
        """The texts round j scores, ascending: every unanswered one, or
        `sample` of them drawn at random, the same draw on a resume.
        """
        unanswered = self.unanswered()
        n = self.n_candidates(unanswered.numel())
        if n == unanswered.numel():
            return unanswered
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + round_index)
        return unanswered[torch.randperm(unanswered.numel(), generator=generator)[:n].sort().values]

    def n_candidates(self, n_unanswered: int) -> int:
        return n_unanswered if self.sample is None else min(self.sample, n_unanswered)

    def answered_ids(self) -> List[int]:
        """Corpus ids of the unlabelled examples answered so far, ascending."""
        pool = self.answered[self.first_id :]
        return (torch.nonzero(pool != UNANSWERED).flatten() + self.first_id).tolist()

    def saved_answered(self) -> Dict[str, torch.Tensor]:
        """Who answered what, for a checkpoint: the answered ids and their
        bits, as many as the answers (not a byte per example).
        """
        ids = torch.nonzero(self.answered).flatten()
        return {"ids": ids, "bits": self.answered[ids]}

    def load_answered(self, tensors: Dict[str, torch.Tensor]) -> None:
        if "answered" in tensors:  # a byte per example, as earlier releases saved it
            self.answered = tensors["answered"]
            return
        self.answered = torch.zeros(self.n_examples, dtype=torch.int8)
        self.answered[tensors["ids"]] = tensors["bits"]

    def record(self, epoch: int, teacher_ids: torch.Tensor, assistant_ids: torch.Tensor, n_candidates: int) -> None:
        self.answered[teacher_ids] |= TEACHER
        self.answered[assistant_ids] |= ASSISTANT
        self.history.append(
            {"epoch": epoch, "candidates": n_candidates, "teacher": int(teacher_ids.numel()), "assistant": int(assistant_ids.numel())}
        )

    def rows_by_answer(self, ids: List[int]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Positions in `ids` answered by the teacher and by the assistant."""
        answers = self.answered[torch.tensor(ids)]
        return torch.nonzero(answers & TEACHER).flatten(), torch.nonzero(answers & ASSISTANT).flatten()

    def planned_sizes(self, objective: Objective, n_epochs: int) -> List[int]:
        """Answered unlabelled examples at each epoch, from counts alone."""
        answered, spent, sizes = 0, 0, []
        for epoch in range(n_epochs):
            j = self.round_of(epoch)
            if j is not None:
                n_left = self.n_candidates(self.n_examples - self.first_id - answered)
                allowance = self.allowance(j, spent)
                answered += objective.query_rows(n_left, allowance)
                spent += objective.query_sizes(n_left, allowance)[0]
            sizes.append(answered)
        return sizes
