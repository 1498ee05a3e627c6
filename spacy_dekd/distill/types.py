"""Every swappable interface and data type of the distillation in one place
(as spacy-llm's `ty.py`): what selectors, routers and layer selectors take
and give, what the frozen models answer, what the loop asks of a student,
and what a batch's plan and loss hold.
"""
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Protocol, Sequence, Tuple, Union, runtime_checkable

import torch
from torch import nn

from ..models.pytorch import ClassifierOutput

# A loss term: fn(student_logits, targets, *, multilabel=False, ...) -> scalar.
LossFn = Callable[..., torch.Tensor]


@runtime_checkable
class InstanceSelector(Protocol):
    """Picks the rows worth a query (Eq. 4-5), from the student's logits."""

    # Whether it reads the logits at all: a query round scores the pool with
    # the student only for a selector that does.
    reads_logits: bool

    def count(self, n: int) -> int:
        """How many of n rows it keeps when no k is given."""

    def __call__(
        self, student_logits: torch.Tensor, *, multilabel: bool = False, k: Optional[int] = None
    ) -> torch.Tensor:
        """(N, C) logits → ascending LongTensor of the selected row indices:
        `count(N)` of them, or the k it likes best.
        """


@runtime_checkable
class ChunkSelector(Protocol):
    """A selector that can pick from rows that come a chunk at a time (a
    query round over a large pool), never holding all of them. Selectors
    without it see the chunks joined.
    """

    def select_chunks(
        self, chunks: Iterable[torch.Tensor], k: int, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Chunks of (n_i, C) logits, in order → the ascending indices of
        the k rows it keeps (of all the rows), and those rows' logits.
        """


@runtime_checkable
class StateSelector(Protocol):
    """A selector that reads, in a query round, each candidate's state in
    the student (its last layer's first-token state) besides its logits:
    to spread the answers over texts unlike each other.
    """

    reads_states: bool

    def select_states(
        self, chunks: Iterable[Tuple[torch.Tensor, torch.Tensor]], k: int, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Chunks of ((n_i, C) logits, (n_i, d) states), in order → the
        ascending indices of the k rows it keeps, and those rows' logits.
        """


# A query round's student logits: all rows, the rows in chunks (pairs of
# logits and states, for a `StateSelector`), or none.
Logits = Union[None, torch.Tensor, Iterable[torch.Tensor], Iterable[Tuple[torch.Tensor, torch.Tensor]]]


@runtime_checkable
class Router(Protocol):
    """Splits selected rows into the teacher's and the assistant's (Eq. 6)."""

    uses_assistant: bool
    reads_logits: bool

    def n_teacher(self, k: int) -> int:
        """How many of k rows it sends to the teacher (whatever the logits)."""

    def n_assistant(self, k: int) -> int:
        """How many of k rows it sends to the assistant: the rest, or all of
        them for a router that sends every row to both.
        """

    def __call__(
        self, student_logits: torch.Tensor, *, multilabel: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """(k, C) logits → (teacher_rows, assistant_rows), ascending indices;
        the two may overlap (a row learning from both).
        """


@runtime_checkable
class LayerSelector(Protocol):
    def __call__(
        self, teacher_hidden: Sequence[torch.Tensor], n_layers: int, *, head: Optional[nn.Module] = None,
        multilabel: bool = False,
    ) -> List[int]:
        """L tensors (k, d) → M ascending indices into that list. `head`: the
        teacher's classification head; `multilabel`: the component's class
        mode (not exclusive_classes), for a score read through the head.
        """


@dataclass
class QueryPlan:
    """Row indices into the batch, each ascending.

    selected: the rows the instance selector kept (Eq. 4).
    teacher_rows / assistant_rows: the rows that learn from each in L_TA:
        the selected rows routed to each (Eq. 6), and on the teacher's side
        also `reused` rows.
    aligned: the rows layer alignment runs over (Eq. 8–9): the selected
        rows, or only those routed to the teacher; empty when it is off.
    teacher_query: the rows whose teacher outputs the loss reads: the
        teacher rows and the aligned rows.
    reused: unselected rows whose teacher outputs are already cached, when
        the objective reuses them (no forward pass: the teacher is frozen).
    """

    selected: torch.Tensor
    teacher_rows: torch.Tensor
    assistant_rows: torch.Tensor
    teacher_query: torch.Tensor
    aligned: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))
    reused: torch.Tensor = field(default_factory=lambda: torch.zeros(0, dtype=torch.long))

    @property
    def assistant_query(self) -> torch.Tensor:
        return self.assistant_rows


@dataclass
class TeacherOutput:
    """A frozen model's outputs for the rows of a query, in query order."""

    logits: torch.Tensor  # (q, C)
    hidden_states: Optional[List[torch.Tensor]] = None  # L x (q, d)
    # Per row, the entropy of the mean prediction over Monte Carlo dropout
    # passes, when the objective asks for it (MUKI).
    uncertainty: Optional[torch.Tensor] = None  # (q,)


@dataclass
class LossTerms:
    total: torch.Tensor
    terms: Dict[str, float] = field(default_factory=dict)
    teacher_layers: Optional[List[int]] = None


@runtime_checkable
class Transfer(Protocol):
    """What a multi-teacher objective's selected rows learn from the teacher
    and the assistant, both of which answer each of them (`multi_teacher.py`).
    """

    feedback_size: int  # dev examples whose loss it hears after each step

    def initialize(self, student_width: int, teacher_widths: Sequence[int]) -> List[nn.Parameter]:
        """Build its learned maps; RETURNS the parameters that train with the student."""

    def module(self) -> Optional[nn.Module]:
        """Its trained modules, saved with each checkpoint."""

    def __call__(
        self, logits: torch.Tensor, features: torch.Tensor, teacher: "TeacherOutput", assistant: "TeacherOutput",
        *, multilabel: bool = False,
    ) -> Tuple[torch.Tensor, Dict[str, float]]:
        """The student's logits (k, C) and last-layer features (k, d_s) on
        the selected rows, the two teachers' answers for the same rows →
        the weighted term and its parts for the log.
        """

    def rng_state(self) -> Dict[str, torch.Tensor]: ...

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None: ...

    def feedback(self, dev_loss: float) -> None: ...


@runtime_checkable
class Student(Protocol):
    """What the loop asks of the component it trains (student.py): a torch
    `transformer_textcat`, or spaCy's own `textcat` through its thinc model
    (spacy_student.py). The loop's update, the optimizer, the checkpoints and
    data-parallel runs see its torch parameters alone.
    """

    pipe: object  # the spaCy component: name, labels, saved with the pipeline
    gives_states: bool  # whether forward can give layer states, known before its weights
    n_layers: Optional[int]  # states forward gives, one per layer (once it has weights)
    width: Optional[int]  # the states' width
    device: torch.device
    multilabel: bool

    @property
    def name(self) -> str: ...

    @property
    def labels(self) -> Sequence[str]: ...

    def forward(self, docs: Sequence[object], *, is_train: bool, hidden: bool = False) -> ClassifierOutput:
        """Logits (N, C) that back-propagate into `parameters()`, and with
        `hidden` each layer's (N, width) state (never asked of a student
        whose n_layers is None).
        """

    def empty_output(self, *, hidden: bool = False) -> ClassifierOutput:
        """Outputs for no docs, shaped and placed as forward's."""

    def parameters(self) -> List[nn.Parameter]:
        """What the optimizer trains; new objects after `load`."""

    def set_dropout(self, rate: Optional[float]) -> None: ...

    def examples_to_truth(self, examples: Sequence[object]) -> Tuple[torch.Tensor, torch.Tensor]:
        """The gold targets (N, C) and where they are known; a row without
        gold cats is unknown.
        """

    def load(self, path: Path) -> None:
        """Its weights as `nlp.to_disk` saved them in `path` (a pipeline folder)."""

    def digest(self) -> str:
        """sha256 of its weights: a checkpoint's model-last must match."""

    def describe(self) -> str:
        """One line for the run's header: what the student is."""


@runtime_checkable
class Objective(Protocol):
    """What the loop (loop.py, prepare.py, rounds.py) reads of an objective:
    `DeKDObjective` and `MultiTeacherObjective` give all of it. Its
    requirements decide what the frozen models answer; its state is saved
    with each checkpoint.
    """

    # Requirements: what each answer must carry, and who answers.
    needs_hidden_states: bool  # the teacher's per-layer states
    needs_student_states: bool  # the student's: a logits-only student is refused
    needs_assistant_hidden_states: bool
    uses_assistant: bool
    reads_logits: bool  # whether selection reads the student's predictions
    reads_states: bool  # and its states (a `StateSelector`), in a query round
    mc_dropout_samples: int  # extra dropout passes per answer (an uncertainty per row)
    feedback_size: int  # dev examples whose loss it hears after each step
    multilabel: bool
    cross_entropy: LossFn

    def initialize(self, **dims: Optional[int]) -> List[nn.Parameter]:
        """Class mode and widths (multilabel, n_student_layers, student_width,
        teacher_width, n_teacher_layers, assistant_width). RETURNS: the
        parameters that train with the student.
        """

    def projections(self) -> Optional[nn.Module]:
        """Its trained modules, saved with each checkpoint."""

    def rng_state(self) -> Dict[str, torch.Tensor]: ...

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None: ...

    # Planning: the budget is sized from these before the first step.
    def teacher_query_size(self, n: int) -> int: ...

    def query_sizes(self, n: int, teacher_allowance: Optional[int] = None) -> Tuple[int, int]: ...

    def query_rows(self, n: int, teacher_allowance: Optional[int] = None) -> int: ...

    # A step: the plan, the answers it asked for, the loss.
    def plan(self, student_logits: torch.Tensor, teacher_known: Optional[torch.Tensor] = None) -> QueryPlan: ...

    def plan_answered(self, teacher_rows: torch.Tensor, assistant_rows: torch.Tensor) -> QueryPlan: ...

    def select_queries(
        self, student_logits: Logits, n: int, teacher_allowance: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]: ...

    def __call__(self, *args: object, **kwargs: object) -> LossTerms: ...

    def feedback(self, dev_loss: float) -> None: ...
