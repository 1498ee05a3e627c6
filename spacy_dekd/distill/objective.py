"""Eq. 10: L = λ1·CE + λ2·L_TA + λ3·L_DA, and the per-batch plan of which
rows the teacher and the assistant must see.

The objective knows tensors, not spaCy: the trainer gives it the student's
outputs, asks it for a `QueryPlan`, fetches exactly those teacher and
assistant outputs, and hands them back.
"""
from typing import Dict, Iterable, List, Optional, Tuple

import torch
from torch import nn

from ..models.pytorch import ClassifierOutput
from ..registry import registry
from .losses import LayerAlignmentLoss, TeacherAssistantLoss
from .selectors import joined
from .types import ChunkSelector, InstanceSelector, Logits, LossFn, LossTerms, QueryPlan, Router, StateSelector, TeacherOutput


class Selection:
    """Eq. 4-6 as one part: the selector keeps the rows worth a query, the
    router splits them between the teacher and the assistant, in a batch
    (`__call__`) and over a query round's candidates (`select_queries`).
    The objective's side of the budget arithmetic sits here: how many
    candidates a round can select for a teacher allowance.
    """

    def __init__(self, selector: InstanceSelector, router: Router) -> None:
        self.selector = selector
        self.router = router

    @property
    def reads_logits(self) -> bool:
        """Whether selection or routing reads the student's predictions."""
        return self.selector.reads_logits or self.router.reads_logits

    @property
    def reads_states(self) -> bool:
        """Whether a query round's selection reads the student's states too
        (`types.StateSelector`): its chunks are then (logits, states) pairs.
        """
        return isinstance(self.selector, StateSelector) and self.selector.reads_states

    def __call__(
        self, logits: torch.Tensor, *, multilabel: bool = False, k: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(N, C) detached logits → the selected rows, and of them the
        teacher's and the assistant's: ascending indices into the N rows.
        """
        selected = self.selector(logits, multilabel=multilabel, k=k)
        to_teacher, to_assistant = self.router(logits[selected], multilabel=multilabel)
        return selected, selected[to_teacher].sort().values, selected[to_assistant].sort().values

    def query_sizes(self, n: int, teacher_allowance: Optional[int] = None) -> Tuple[int, int]:
        """How many of n candidates a query round sends to the teacher and to
        the assistant (the same rows, for a router that sends each to both).
        RETURNS (Tuple[int, int]): Rows for the teacher and for the assistant.
        """
        k = self.query_rows(n, teacher_allowance)
        return self.router.n_teacher(k), self.router.n_assistant(k)

    def query_rows(self, n: int, teacher_allowance: Optional[int] = None) -> int:
        """How many of n candidates a query round selects. It depends on the
        sizes alone, so that a run knows its number of steps before it starts.

        Without an allowance the selector keeps its share, ceil(r·n), as it
        does in a batch. With one (a teacher budget), it keeps as many as put
        `teacher_allowance` rows on the teacher's side: the budget, not the
        ratio, sets how many are asked, so that every selector spends it.
        """
        k = self.selector.count(n)
        if teacher_allowance is not None and self.router.n_teacher(n) > 0:
            # The largest k whose teacher share fits the allowance.
            low, high = 0, n
            while low < high:
                mid = (low + high + 1) // 2
                if self.router.n_teacher(mid) <= teacher_allowance:
                    low = mid
                else:
                    high = mid - 1
            k = low
        return k

    def select_queries(
        self, student_logits: Logits, n: int, teacher_allowance: Optional[int] = None,
        *, multilabel: bool = False,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """A query round over n candidates (Eq. 4-6 over a pool instead of a
        batch): the selector ranks them on the student's detached logits and
        keeps as many as `query_sizes` says; the router splits those.

        student_logits (Logits): (n, C), or the n rows in chunks, in order
            (a selector that scores rows one by one then keeps a running top
            k, never all n rows); for a selector that reads states
            (`reads_states`), chunks of (logits, states) pairs; None for a
            selector that does not read them (zeros stand in).
        RETURNS (Tuple[torch.Tensor, torch.Tensor]): Candidate indices for
            the teacher and for the assistant, each ascending.
        """
        if student_logits is None:
            # A view of one row: no memory a candidate.
            view = torch.zeros((1, 2)).expand(n, 2)
            chunks: Iterable = [(view, view)] if self.reads_states else [view]
        elif isinstance(student_logits, torch.Tensor):
            chunks = [student_logits.detach()]
        else:
            chunks = student_logits
        k = self.query_rows(n, teacher_allowance)
        if self.reads_states:
            selected, logits = self.selector.select_states(chunks, k, multilabel=multilabel)
        elif isinstance(self.selector, ChunkSelector):
            selected, logits = self.selector.select_chunks(chunks, k, multilabel=multilabel)
        else:
            all_logits = joined(chunks)
            selected = self.selector(all_logits, multilabel=multilabel, k=k)
            logits = all_logits[selected]
        to_teacher, to_assistant = self.router(logits, multilabel=multilabel)
        return selected[to_teacher].sort().values, selected[to_assistant].sort().values

    def rng_state(self) -> Dict[str, torch.Tensor]:
        """The states of the generators its selector draws from (each
        `torch.Generator` attribute, whatever its name), for an exact resume.
        """
        return {_rng_key(name): g.get_state() for name, g in _generators(self.selector).items()}

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
        for name, generator in _generators(self.selector).items():
            if _rng_key(name) in state:
                generator.set_state(state[_rng_key(name)])


def answered_plan(teacher_rows: torch.Tensor, assistant_rows: torch.Tensor, *, aligned: bool) -> QueryPlan:
    """The plan of a batch whose rows were answered in query rounds: each row
    learns from the model that answered it, and alignment (when on) runs
    over the teacher's rows (only they have teacher hidden states).
    """
    teacher_rows = teacher_rows.sort().values
    assistant_rows = assistant_rows.sort().values
    selected = torch.cat([teacher_rows, assistant_rows]).unique(sorted=True)
    return QueryPlan(selected, teacher_rows, assistant_rows, teacher_rows, teacher_rows if aligned else teacher_rows[:0])


class DeKDObjective:
    """Eq. 10, with every part swappable.

    selector (InstanceSelector): Which rows query the teacher (Eq. 4–5).
    teacher_assistant (TeacherAssistantLoss): Eq. 7 and its router.
    alignment (Optional[LayerAlignmentLoss]): Eq. 8–9; None switches it off.
    cross_entropy (LossFn): Eq. 2.
    ce_weight, ta_weight, alignment_weight (float): λ1, λ2, λ3.
    reuse_teacher_outputs (bool): Unselected rows whose teacher outputs are
        cached from an earlier epoch join the teacher's side of L_TA. Costs
        no teacher query; a deviation from Eq. 7 (see `make_dekd_v1`).
    align_rows (str): "selected" (Eq. 8–9) or "teacher": align only the
        rows routed to the teacher, which then sees no other row.
    """

    # Dev examples whose loss the objective hears after each step (`feedback`);
    # 0: it hears none (KSM's reward reads them).
    feedback_size: int = 0

    def __init__(
        self,
        *,
        selector: InstanceSelector,
        teacher_assistant: TeacherAssistantLoss,
        alignment: Optional[LayerAlignmentLoss],
        cross_entropy: LossFn,
        ce_weight: float,
        ta_weight: float,
        alignment_weight: float,
        reuse_teacher_outputs: bool = False,
        align_rows: str = "selected",
    ) -> None:
        if align_rows not in ("selected", "teacher"):
            raise ValueError(f"align_rows must be 'selected' or 'teacher', got '{align_rows}'.")
        self.selector = selector
        self.teacher_assistant = teacher_assistant
        self.selection = Selection(selector, teacher_assistant.router)
        self.alignment = alignment if alignment_weight > 0 else None
        self.cross_entropy = cross_entropy
        self.ce_weight = ce_weight
        self.ta_weight = ta_weight
        self.alignment_weight = alignment_weight
        self.reuse_teacher_outputs = reuse_teacher_outputs
        self.align_rows = align_rows
        self.multilabel = False

    @property
    def needs_hidden_states(self) -> bool:
        return self.alignment is not None

    @property
    def needs_student_states(self) -> bool:
        """The student's layer states: for the alignment, and for a selector
        that reads them in a query round.
        """
        return self.alignment is not None or self.reads_states

    @property
    def uses_assistant(self) -> bool:
        """Whether the router can send rows to the assistant."""
        return self.teacher_assistant.router.uses_assistant

    @property
    def reads_logits(self) -> bool:
        return self.selection.reads_logits

    @property
    def reads_states(self) -> bool:
        return self.selection.reads_states

    def rng_state(self) -> Dict[str, torch.Tensor]:
        return self.selection.rng_state()

    def set_rng_state(self, state: Dict[str, torch.Tensor]) -> None:
        self.selection.set_rng_state(state)

    @property
    def mc_dropout_samples(self) -> int:
        """Monte Carlo dropout passes the frozen models make per row to
        estimate their uncertainty (MUKI); 0 for none.
        """
        return self.teacher_assistant.mc_samples

    @property
    def needs_assistant_hidden_states(self) -> bool:
        """Whether the loss reads the assistant's hidden states (DeKD's does not)."""
        return False

    def initialize(
        self, *, multilabel: bool, n_student_layers: int, student_width: int, teacher_width: int,
        n_teacher_layers: Optional[int] = None, assistant_width: Optional[int] = None,
    ) -> List[nn.Parameter]:
        """Fix the class mode and build the alignment projections.
        RETURNS (List[nn.Parameter]): Parameters to train with the student.
        """
        self.multilabel = multilabel
        if self.alignment is None:
            return []
        return self.alignment.initialize(n_student_layers, student_width, teacher_width, n_teacher_layers, multilabel=multilabel)

    def projections(self) -> Optional[nn.Module]:
        return None if self.alignment is None else self.alignment.projections

    def plan(self, student_logits: torch.Tensor, teacher_known: Optional[torch.Tensor] = None) -> QueryPlan:
        """Select (Eq. 4–5) and route (Eq. 6) on the student's current,
        detached predictions.

        teacher_known (Optional[torch.Tensor]): (N,) bool, the rows whose
            teacher outputs are cached; read only when reusing them.
        """
        logits = student_logits.detach()
        selected, teacher_rows, assistant_rows = self.selection(logits, multilabel=self.multilabel)
        aligned = selected.new_zeros((0,))
        if self.needs_hidden_states:
            aligned = selected if self.align_rows == "selected" else teacher_rows
        reused = selected.new_zeros((0,))
        if self.reuse_teacher_outputs and teacher_known is not None:
            unselected = torch.ones(logits.shape[0], dtype=torch.bool)
            unselected[selected.cpu()] = False
            reused = torch.nonzero(unselected & teacher_known.cpu().bool()).flatten().to(selected.device)
            teacher_rows = torch.cat([teacher_rows, reused]).sort().values
        teacher_query = torch.cat([teacher_rows, aligned]).unique(sorted=True)
        return QueryPlan(selected, teacher_rows, assistant_rows, teacher_query, aligned, reused)

    def teacher_query_size(self, n: int) -> int:
        """The most rows of a batch of n that `plan` asks the teacher about:
        its side of the selected rows, or all of them when alignment runs
        over every selected row.
        """
        k = self.selector.count(n)
        if self.needs_hidden_states and self.align_rows == "selected":
            return k
        return self.teacher_assistant.router.n_teacher(k)

    def query_sizes(self, n: int, teacher_allowance: Optional[int] = None) -> Tuple[int, int]:
        return self.selection.query_sizes(n, teacher_allowance)

    def query_rows(self, n: int, teacher_allowance: Optional[int] = None) -> int:
        return self.selection.query_rows(n, teacher_allowance)

    def select_queries(
        self, student_logits: Logits, n: int, teacher_allowance: Optional[int] = None
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        return self.selection.select_queries(student_logits, n, teacher_allowance, multilabel=self.multilabel)

    def plan_answered(self, teacher_rows: torch.Tensor, assistant_rows: torch.Tensor) -> QueryPlan:
        return answered_plan(teacher_rows, assistant_rows, aligned=self.needs_hidden_states)

    def feedback(self, dev_loss: float) -> None:
        """The student's loss on `feedback_size` dev examples after a step:
        Eq. 10 does not listen (KSM's objective does).
        """

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
        """The total loss and its terms for one batch.

        student (ClassifierOutput): Logits (N, C) and, if alignment is on,
            hidden states L_s x (N, d_s), with gradients.
        gold (torch.Tensor): (N, C) gold targets.
        plan (QueryPlan): From `plan`.
        teacher (TeacherOutput): For `plan.teacher_query`, in that order.
        assistant (Optional[TeacherOutput]): For `plan.assistant_query`.
        """
        logits = student.logits
        ce = self.cross_entropy(logits, gold, multilabel=self.multilabel, mask=gold_mask)
        t_pos = positions(plan.teacher_query, plan.teacher_rows)
        teacher_logits = teacher.logits[t_pos]
        if assistant is None:
            if plan.assistant_rows.numel() > 0:
                raise ValueError("The router sent rows to the assistant, but there is none.")
            assistant_logits = logits.new_zeros((0, logits.shape[1]))
        else:
            assistant_logits = assistant.logits
        routed = torch.cat([plan.teacher_rows, plan.assistant_rows])
        extra = {}
        if self.mc_dropout_samples:
            assert assistant is not None and teacher.uncertainty is not None and assistant.uncertainty is not None
            extra["uncertainties"] = [teacher.uncertainty[t_pos], assistant.uncertainty]
        ta = self.teacher_assistant(
            logits[routed], teacher_logits, assistant_logits, multilabel=self.multilabel, **extra
        )
        total = self.ce_weight * ce + self.ta_weight * ta
        terms = {"ce": float(ce.detach()), "ta": float(ta.detach())}
        layers = None
        if self.alignment is not None and plan.aligned.numel() == 0:
            terms["da"] = 0.0  # no row to align in this batch
        elif self.alignment is not None:
            if student.hidden_states is None or teacher.hidden_states is None:
                raise ValueError("Layer alignment needs the hidden states of student and teacher.")
            a_pos = positions(plan.teacher_query, plan.aligned)
            teacher_hidden = [h[a_pos] for h in teacher.hidden_states]
            layers = self.alignment.pick_layers(teacher_hidden, head=teacher_head)
            student_hidden = [h[plan.aligned] for h in student.hidden_states]
            da = self.alignment(student_hidden, teacher_hidden, layers)
            total = total + self.alignment_weight * da
            terms["da"] = float(da.detach())
        return LossTerms(total=total, terms=terms, teacher_layers=layers)


def _generators(part: object) -> Dict[str, torch.Generator]:
    return {name: value for name, value in sorted(vars(part).items()) if isinstance(value, torch.Generator)}


def _rng_key(name: str) -> str:
    # "selector" is the key checkpoints have held a selector's `generator` under.
    return "selector" if name == "generator" else f"selector.{name}"


def positions(query: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Where each of `rows` sits in `query` (both ascending, rows ⊆ query)."""
    return torch.searchsorted(query, rows)


@registry.dekd_objectives("spacy-dekd.DeKD.v1")
def make_dekd_v1(
    selector: InstanceSelector,
    teacher_assistant: TeacherAssistantLoss,
    cross_entropy: LossFn,
    alignment: Optional[LayerAlignmentLoss] = None,
    ce_weight: float = 0.5,
    ta_weight: float = 0.3,
    alignment_weight: float = 0.2,
    reuse_teacher_outputs: bool = False,
    align_rows: str = "selected",
) -> DeKDObjective:
    """Eq. 10: λ1·CE + λ2·L_TA + λ3·L_DA. Vanilla KD, BERT-PKD, TAKD and the
    ablations are settings of this one objective (configs/).

    selector (InstanceSelector): From `dekd_selectors`.
    teacher_assistant (TeacherAssistantLoss): spacy-dekd.TeacherAssistantKL.v1.
    cross_entropy (LossFn): spacy-dekd.CrossEntropy.v1.
    alignment (Optional[LayerAlignmentLoss]): spacy-dekd.LayerAlignment.v1,
        or null for none.
    ce_weight (float): λ1.
    ta_weight (float): λ2.
    alignment_weight (float): λ3; 0 switches alignment off.
    reuse_teacher_outputs (bool): Let unselected rows whose teacher outputs
        are already cached (a frozen teacher's outputs never change) learn
        from them on the teacher's side of L_TA. Not in the paper, which
        shows the teacher's outputs to the selected rows only: it spends no
        extra teacher query, and it is what a data-efficient KD would do
        with outputs it has already paid for. Measured in docs/RESULTS.md.
    align_rows (str): "selected": align over every selected row (Eq. 8–9
        as written), so the teacher sees all k of them; "teacher": only
        over the rows routed to the teacher, which halves the rows the
        teacher is asked about per batch.
    The argument defaults are the paper's; configs/dekd.cfg holds this
    project's measured defaults (docs/RESULTS.md).
    """
    for name, value in (("ce_weight", ce_weight), ("ta_weight", ta_weight), ("alignment_weight", alignment_weight)):
        if value < 0:
            raise ValueError(f"{name} must be >= 0, got {value}.")
    return DeKDObjective(
        selector=selector,
        teacher_assistant=teacher_assistant,
        alignment=alignment,
        cross_entropy=cross_entropy,
        ce_weight=ce_weight,
        ta_weight=ta_weight,
        alignment_weight=alignment_weight,
        reuse_teacher_outputs=reuse_teacher_outputs,
        align_rows=align_rows,
    )
