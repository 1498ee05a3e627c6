"""Algorithm 1: distil a teacher (and an assistant) into a student pipeline.

The trainer knows spaCy, not equations: it reads examples, runs the
student, asks the objective which rows the frozen models must see, fetches
their (cached) outputs, and steps the optimizer. One screen per part:
`DistillTrainer.__call__` is the loop; the rest is bookkeeping.
"""
import itertools
import json
import logging
import math
import pickle
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError
from spacy.language import Language
from spacy.pipeline.textcat_multilabel import MultiLabel_TextCategorizer
from spacy.training import Example
from spacy.training.loop import DIR_MODEL_BEST, DIR_MODEL_LAST, create_evaluation_callback, update_meta
from spacy.util import resolve_dot_names
from thinc.api import ConfigValidationError
from wasabi import color

from ..models.pytorch import ClassifierOutput
from ..pipeline.textcat import TransformerTextCategorizer, docs_with_pairs
from ..registry import registry
from .cache import OutputCache
from .checkpoint import (
    Lock,
    OutputError,
    commit,
    config_fingerprint,
    corpus_fingerprint,
    differences,
    make_readable,
    module_sha256,
    pipe_sha256,
    recover,
    remove,
    rng_state,
    set_rng_state,
    staged,
    write_json,
)
from .objective import DeKDObjective
from .parallel import World
from .rounds import QueryRounds, labelled_need
from .schema import ConfigSchemaDistill, describe_errors, unknown_keys
from .teacher_check import dev_scores, stored_dev_scores, weak_teacher
from .types import LossTerms, TeacherOutput

logger = logging.getLogger("spacy_dekd")

DIR_CHECKPOINT = "checkpoint"
# Macro AUC at or below which a teacher or assistant is taken to know nothing.
CHANCE_AUC = 0.55


class DistillationError(Exception):
    """A run that cannot go on; the message is one actionable line."""


@dataclass
class DistillState:
    """What a checkpoint needs to continue a run where it stopped."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_score: float = -math.inf
    elapsed: float = 0.0
    rounds_done: int = 0
    words: int = 0  # words of the training docs stepped over, as spaCy counts them
    history: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Frozen:
    """A frozen pipe (teacher or assistant) and its cache of outputs."""

    pipe: Any
    cache: OutputCache


@dataclass
class Run:
    """What one distillation run works on, built by `DistillTrainer.prepare`.
    `examples` holds the labelled examples first, then the unlabelled ones.
    """

    examples: List[Example]
    n_labelled: int
    teacher: Frozen
    assistant: Optional[Frozen]
    params: List[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int
    rounds: Optional[QueryRounds] = None
    teacher_budget: Optional[int] = None
    # Loss scaling for float16 autocast on a GPU; a no-op otherwise.
    scaler: torch.amp.GradScaler = field(default_factory=lambda: torch.amp.GradScaler("cuda", enabled=False))


def teacher_forward(pipe: Any, docs: Sequence, *, hidden: bool, mc_samples: int = 0) -> TeacherOutput:
    """Outputs of a frozen pipe: a `transformer_textcat` gives logits and
    hidden states; any other spaCy text classifier gives the logits its
    probabilities stand for, and no hidden states: log p for exclusive
    classes (softmax(log p) = p), log p - log(1 - p) per label for
    `textcat_multilabel` (sigmoid of it = p). With `mc_samples`, also each
    row's uncertainty: the entropy of its mean prediction over that many
    passes with dropout on (Monte Carlo dropout).
    """
    if isinstance(pipe, TransformerTextCategorizer):
        out = pipe.forward(docs, is_train=False, output_hidden_states=hidden)
        uncertainty = None
        if mc_samples > 0:
            with torch.no_grad():
                samples = [pipe.forward(docs, is_train=False, mc_dropout=True).logits.float() for _ in range(mc_samples)]
            uncertainty = mc_dropout_entropy(torch.stack(samples), multilabel=not pipe.exclusive_classes)
        return TeacherOutput(logits=out.logits.float(), hidden_states=out.hidden_states, uncertainty=uncertainty)
    if mc_samples > 0:
        raise DistillationError(
            f"Monte Carlo dropout needs a transformer_textcat, but '{pipe.name}' is a "
            f"{type(pipe).__name__}: set the objective's uncertainty to \"entropy\"."
        )
    if hidden:
        raise DistillationError(
            f"Layer alignment needs hidden states, but the teacher component "
            f"'{pipe.name}' ({type(pipe).__name__}) gives none: use a "
            "transformer_textcat teacher or set alignment_weight = 0."
        )
    probs = torch.as_tensor(pipe.model.ops.to_numpy(pipe.predict(docs))).float().clamp(1e-7, 1 - 1e-7)
    if isinstance(pipe, MultiLabel_TextCategorizer):
        return TeacherOutput(logits=probs.log() - (1 - probs).log())
    return TeacherOutput(logits=probs.log())


def mc_dropout_entropy(samples: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """(K, n, C) logits of K dropout passes → (n,) entropy of the mean
    prediction (summed binary entropies per label for multilabel).
    """
    if multilabel:
        p = torch.sigmoid(samples).mean(0).clamp(1e-7, 1 - 1e-7)
        return -(p * p.log() + (1 - p) * (1 - p).log()).sum(-1)
    p = torch.softmax(samples, dim=-1).mean(0).clamp(min=1e-12)
    return -(p * p.log()).sum(-1)


def empty_output(pipe: Any, *, hidden: bool) -> ClassifierOutput:
    """What a pipe answers for no docs: a rank whose share of a small batch
    is empty still joins the gather with tensors of the right shape.
    """
    module = getattr(getattr(pipe, "shim", None), "module", None)
    device = module.head.weight.device if module is not None else torch.device("cpu")
    logits = torch.zeros((0, len(pipe.labels)), device=device)
    states = [torch.zeros((0, module.width), device=device) for _ in range(module.n_layers)] if hidden and module is not None else None
    return ClassifierOutput(logits=logits, hidden_states=states)


class DistillTrainer:
    """Algorithm 1 over spaCy pipelines.

    student (Language): The student pipeline; its `transformer_textcat`
        component named in `student_to_teacher` is trained.
    teacher (Language): The trained teacher pipeline.
    assistant (Optional[Language]): The trained assistant, if the router uses one.
    T (Dict[str, Any]): The resolved `[distillation]` block.
    world (World): The processes of a data-parallel run (parallel.py); one
        process by default.
    """

    def __init__(
        self,
        student: Language,
        teacher: Language,
        assistant: Optional[Language],
        T: Dict[str, Any],
        *,
        output_path: Optional[Path] = None,
        stdout: IO = sys.stdout,
        world: World = World(),
    ) -> None:
        self.world = world
        self.nlp = student
        self.teacher_nlp = teacher
        self.assistant_nlp = assistant
        self.frozen_scores: Dict[str, Dict[str, Any]] = {}
        self.T = T
        self.output_path = output_path
        self.stdout = stdout
        self.objective: DeKDObjective = T["objective"]
        if len(T["student_to_teacher"]) != 1:
            raise DistillationError("student_to_teacher must map exactly one student component.")
        (student_name, teacher_name), = T["student_to_teacher"].items()
        self.student_pipe = _get_pipe(student, student_name, "student")
        if not isinstance(self.student_pipe, TransformerTextCategorizer):
            raise DistillationError(
                f"The student component '{student_name}' must be a transformer_textcat."
            )
        self.teacher_pipe = _get_pipe(teacher, teacher_name, "teacher")
        self.assistant_pipe = _get_pipe(assistant, teacher_name, "assistant") if assistant else None
        if self.objective.uses_assistant and self.assistant_pipe is None:
            raise DistillationError(
                "This objective routes uncertain examples to a teacher assistant: "
                "pass --assistant PATH, or use spacy-dekd.TeacherOnlyRouter.v1."
            )
        if self.assistant_pipe is not None and not self.objective.uses_assistant:
            self._say("info", "The objective's router sends nothing to the assistant: it is not used in this run.")

    def initialize(self) -> None:
        """Student weights and labels from `student_init`, checks that the
        three models agree, alignment projections, the dropout setting.
        """
        T = self.T
        teacher_labels = list(getattr(self.teacher_pipe, "labels", []))
        if self.assistant_pipe is not None and list(self.assistant_pipe.labels) != teacher_labels:
            raise DistillationError(
                f"Assistant labels {list(self.assistant_pipe.labels)} differ from "
                f"teacher labels {teacher_labels}."
            )
        if self.objective.needs_hidden_states and not isinstance(self.teacher_pipe, TransformerTextCategorizer):
            raise DistillationError(
                f"Layer alignment needs hidden states, but the teacher component "
                f"'{self.teacher_pipe.name}' ({type(self.teacher_pipe).__name__}) gives none: "
                "use a transformer_textcat teacher or set alignment_weight = 0."
            )
        try:
            self.student_source = T["student_init"](self.student_pipe, self.teacher_pipe)
        except ValueError as err:
            raise DistillationError(str(err)) from err
        student = self.student_pipe.shim.module
        assert student is not None
        self._set_dropout()
        # Autocast: student, teacher and assistant alike, or the frozen two
        # alone (their answers in bfloat16 differ by ~0.01 in a logit).
        frozen = T["mixed_precision"] or T.get("teacher_mixed_precision", False)
        for pipe, on in ((self.student_pipe, T["mixed_precision"]), (self.teacher_pipe, frozen), (self.assistant_pipe, frozen)):
            if on and isinstance(pipe, TransformerTextCategorizer):
                pipe.shim.set_mixed_precision(True)
        teacher_module = getattr(getattr(self.teacher_pipe, "shim", None), "module", None)
        assistant_module = getattr(getattr(self.assistant_pipe, "shim", None), "module", None)
        if self.objective.needs_assistant_hidden_states and assistant_module is None:
            raise DistillationError(
                "This objective aligns the student to the assistant's hidden states: the assistant "
                "must be a transformer_textcat (pass one with --assistant)."
            )
        try:
            self.extra_params = self.objective.initialize(
                multilabel=not self.student_pipe.exclusive_classes,
                n_student_layers=student.n_layers,
                student_width=student.width,
                teacher_width=student.width if teacher_module is None else teacher_module.width,
                n_teacher_layers=None if teacher_module is None else teacher_module.n_layers,
                assistant_width=None if assistant_module is None else assistant_module.width,
            )
        except ValueError as err:
            raise DistillationError(str(err)) from err
        projections = self.objective.projections()
        if projections is not None:
            projections.to(self.student_pipe.shim.device)

    def _set_dropout(self) -> None:
        """`[distillation] dropout` on every dropout layer of the student, also
        after a resume rebuilt it from its saved config.
        """
        if self.T["dropout"] is None:
            return
        for module in self.student_pipe.shim.module.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = float(self.T["dropout"])

    def prepare(self) -> "Run":
        """Read the corpora, check the budget, initialize the student, build
        caches, optimizer and the query rounds.
        """
        T = self.T
        examples = self._read_corpus(T["corpus"])
        if not examples:
            raise DistillationError(f"The training corpus '{T['corpus']}' is empty.")
        self._check_labels(examples, T["corpus"])
        unlabelled = self._read_unlabelled(T.get("unlabeled_corpus"))
        budget = T.get("teacher_budget")  # in (0, 1] or None: the schema checked it
        self.initialize()
        n_labelled = len(examples)
        examples = examples + unlabelled
        with_hidden = self.objective.needs_hidden_states
        mc = self.objective.mc_dropout_samples > 0
        teacher = Frozen(self.teacher_pipe, OutputCache(len(examples), with_hidden=with_hidden, with_uncertainty=mc))
        assistant = None
        if self.assistant_pipe is not None and self.objective.uses_assistant:
            assistant = Frozen(
                self.assistant_pipe,
                OutputCache(len(examples), with_hidden=self.objective.needs_assistant_hidden_states, with_uncertainty=mc),
            )
        params = list(self.student_pipe.shim.module.parameters()) + list(self.extra_params)
        # Every rank starts from rank 0's weights, and draws its own dropout masks.
        self.world.broadcast_parameters(params)
        if self.world.rank > 0:
            torch.manual_seed(T["seed"] + self.world.rank)
        labelled_sizes = [len(batch) for batch in self._labelled_batches(examples[:n_labelled], 0)]
        self.n_batches = len(labelled_sizes)
        teacher_budget = None if budget is None else math.ceil(budget * len(examples))
        need = labelled_need(self.objective, labelled_sizes, T["max_epochs"], n_labelled)
        if teacher_budget is not None and teacher_budget < need:
            raise DistillationError(
                f"teacher_budget = {budget} allows {teacher_budget} teacher answers for "
                f"{len(examples)} examples, but the {n_labelled} labelled examples need up to "
                f"{need} over {T['max_epochs']} epochs (the rows of each batch the selector sends "
                f"to the teacher): raise teacher_budget to at least {need / len(examples):.3f}, "
                "or select fewer rows (a lower selector ratio)."
            )
        # A fixed dev sample whose loss the objective hears after every step (KSM's reward).
        self._feedback = self._read_dev_sample(getattr(self.objective, "feedback_size", 0))
        rounds = None
        if unlabelled:
            pool_budget = None if teacher_budget is None else teacher_budget - need
            rounds = QueryRounds.create(n_labelled, len(unlabelled), T["max_epochs"], pool_budget)
        total_steps = T["max_steps"] or self._planned_steps(examples, n_labelled, rounds)
        if total_steps == 0:
            raise DistillationError(
                "The run has no step to take (max_epochs = 0, or a batcher that makes no "
                "batch): set [distillation] max_epochs or max_steps, and a batcher size > 0."
            )
        self.fingerprint = {
            "corpus": corpus_fingerprint((eg.text for eg in examples), (eg.reference.cats for eg in examples)),
            "labelled_examples": n_labelled,
            "teacher": pipe_sha256(self.teacher_pipe),
            "assistant": pipe_sha256(self.assistant_pipe) if self.assistant_pipe is not None else None,
            "config": config_fingerprint(self.nlp.config.interpolate()),
        }
        optimizer, scheduler = T["optimizer"].build(params, total_steps)
        shim = self.student_pipe.shim
        fp16 = T["mixed_precision"] and shim.device.type == "cuda" and shim.mixed_precision_dtype == "float16"
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        return Run(examples, n_labelled, teacher, assistant, params, optimizer, scheduler, total_steps, rounds, teacher_budget, scaler)

    def _check_labels(self, examples: List[Example], dot_name: str) -> None:
        """Gold labels must be the teacher's: a label it does not know would
        be learned as (and scored as) one it does.
        """
        known = set(getattr(self.teacher_pipe, "labels", []))
        found = {label for eg in examples for label, value in eg.reference.cats.items() if value}
        unknown = sorted(found - known)
        if unknown:
            raise DistillationError(
                f"The corpus '{dot_name}' has label(s) {unknown} the teacher does not know (it has "
                f"{sorted(known)}): distil on data labelled with the teacher's labels, or fix the "
                "reader's labels."
            )

    def _evaluation_callback(self) -> Callable[[], Tuple[float, Dict[str, Any]]]:
        """spaCy's evaluation over the dev corpus, read once now so that an
        unreadable or empty dev corpus fails before the first step.
        """
        dot_name = self.T["dev_corpus"]
        try:
            dev_corpus = resolve_dot_names(self.nlp.config.interpolate(), [dot_name])[0]
            dev = list(dev_corpus(self.nlp))
        except (OSError, ValueError) as err:
            raise DistillationError(f"Cannot read the dev corpus '{dot_name}': {_first_line(err)}") from err
        if not dev:
            raise DistillationError(f"The dev corpus '{dot_name}' is empty: point [training] dev_corpus at labelled examples.")
        self._check_labels(dev, dot_name)
        self.frozen_scores = {"teacher": self._score_frozen("teacher", self.teacher_nlp, dev)}
        if self.assistant_pipe is not None and self.objective.uses_assistant:
            self.frozen_scores["assistant"] = self._score_frozen("assistant", self.assistant_nlp, dev)
        return create_evaluation_callback(self.nlp, dev_corpus, self.T["score_weights"])

    def _score_frozen(self, role: str, nlp: Language, dev: List[Example]) -> Dict[str, Any]:
        """The teacher's (or assistant's) dev scores before the first step:
        those its meta.json holds for this very dev data, or one pass over
        it. One at chance, or no better than the majority class (exclusive
        classes; teacher_check.py), would teach the student nothing.
        """
        scores = stored_dev_scores(nlp, dev)
        source = " (from its meta.json)" if scores is not None else ""
        if scores is None:
            scores = dev_scores(nlp, dev)["scores"]
        auc, accuracy = scores.get("cats_macro_auc"), scores.get("cats_accuracy", scores.get("cats_score"))
        named = (("accuracy", accuracy), ("macro F", scores.get("cats_macro_f")), ("macro AUC", auc))
        shown = ", ".join(f"{name} {value:.3f}" for name, value in named if value is not None)
        self._say("info", f"The {role} on dev{source}: {shown}")
        if auc is not None and auc <= CHANCE_AUC:
            raise DistillationError(
                f"The {role} scores at chance on the dev set (macro AUC {auc:.2f}, accuracy {accuracy:.2f}): it "
                "has not learned the task. A `spacy train` run scored only before its first step keeps the "
                "untrained model as model-best: train it so that its last step is scored (configs/teacher.cfg "
                "counts max_steps, and eval_frequency divides it)."
            )
        pipe = self.teacher_pipe if role == "teacher" else self.assistant_pipe
        problem = weak_teacher(scores, dev, pipe.labels) if _exclusive(pipe) else None
        if problem and role == "teacher" and self.T["check_teacher"]:
            raise DistillationError(
                f"The teacher is not worth distilling: {problem}. Train it longer or weigh its classes "
                "(scripts/train_teacher.py; the workflow's --vars.teacher_epochs), or distil it anyway "
                "with --distillation.check_teacher false."
            )
        if problem:
            self._say("warn", f"The {role} is weak: {problem}.")
        return {key: value for key, value in scores.items() if key.startswith("cats_") and not isinstance(value, dict)}

    def _read_corpus(self, dot_name: str) -> List[Example]:
        node: Any = self.nlp.config
        for part in dot_name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            raise DistillationError(
                f"The config has no [{dot_name}] for the corpus it names '{dot_name}': add the section, "
                "or point the setting at a corpus the config defines."
            )
        try:
            corpus = resolve_dot_names(self.nlp.config.interpolate(), [dot_name])[0]
            return list(corpus(self.nlp))
        except (OSError, ValueError) as err:
            raise DistillationError(f"Cannot read the corpus '{dot_name}': {_first_line(err)}") from err

    def _read_unlabelled(self, dot_name: Optional[str]) -> List[Example]:
        """The unlabelled corpus, gold labels dropped (with one warning)."""
        if not dot_name:
            return []
        examples = self._read_corpus(dot_name)
        texts = [eg for eg in examples if eg.text.strip()]
        if len(texts) < len(examples) and texts:
            self._say("info", f"{len(examples) - len(texts)} blank texts in the unlabelled corpus '{dot_name}' are skipped.")
        examples = texts
        if not examples:
            raise DistillationError(
                f"The unlabelled corpus '{dot_name}' ([distillation] unlabeled_corpus) is empty: "
                "point it at a file with one text per line, or set it to null."
            )
        n_labelled = sum(1 for eg in examples if eg.reference.cats)
        if n_labelled:
            self._say("warn", (
                f"{n_labelled} of {len(examples)} examples in the unlabelled corpus '{dot_name}' "
                "have labels: they are ignored (put them in the training corpus to learn from them)."
            ))
        return [Example(eg.predicted, eg.predicted.copy()) for eg in examples]

    def _planned_steps(self, examples: List[Example], n_labelled: int, rounds: Optional[QueryRounds]) -> int:
        """Steps of the whole run: the labelled batches every epoch, and the
        batches of the unlabelled examples answered by then.
        """
        n_epochs = self.T["max_epochs"]
        steps = self.n_batches * n_epochs
        if rounds is not None:
            for n_answered in rounds.planned_sizes(self.objective, n_epochs):
                steps += sum(1 for _ in self.T["batcher"](examples[n_labelled : n_labelled + n_answered]))
        return steps

    def step(self, run: "Run", batch_ids: List[int], step: int) -> LossTerms:
        """Algorithm 1, lines 3-8, for one batch of corpus ids: student
        forward, select, route, query (cached), align, one update. A batch of
        answered unlabelled examples skips selection: each row learns from
        the model that answered it in its query round.
        """
        with_hidden = self.objective.needs_hidden_states
        batch = [run.examples[j] for j in batch_ids]
        ids = torch.tensor(batch_ids)
        out = self._forward(batch, is_train=True, hidden=with_hidden)
        if batch_ids[0] < run.n_labelled:
            plan = self.objective.plan(out.logits, teacher_known=run.teacher.cache.filled[ids])
        else:
            assert run.rounds is not None
            plan = self.objective.plan_answered(*run.rounds.rows_by_answer(batch_ids))
        t_out = self._query(run.teacher, run.examples, ids, plan.teacher_query, out.logits, hidden=with_hidden)
        a_out = None
        if run.assistant is not None:
            a_out = self._query(
                run.assistant, run.examples, ids, plan.assistant_query, out.logits,
                hidden=self.objective.needs_assistant_hidden_states,
            )
        gold, mask = self._gold(batch, out.logits.device)
        terms = self.objective(out, gold, plan, t_out, a_out, gold_mask=mask, teacher_head=self._teacher_head())
        self._check_finite(terms, step)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(terms.total).backward()
        self.world.average_gradients(run.params)
        grad_clip = self.T["optimizer"].grad_clip
        if grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.params, grad_clip)
        run.scaler.step(run.optimizer)  # skipped on an overflow
        run.scaler.update()
        run.scheduler.step()
        if self._feedback:
            self.objective.feedback(self._dev_loss())
        return terms

    def _read_dev_sample(self, n: int) -> List[Example]:
        if n <= 0:
            return []
        try:
            corpus = resolve_dot_names(self.nlp.config.interpolate(), [self.T["dev_corpus"]])[0]
            return list(itertools.islice(corpus(self.nlp), n))
        except (OSError, ValueError) as err:
            raise DistillationError(f"Cannot read the dev corpus '{self.T['dev_corpus']}': {_first_line(err)}") from err

    def _dev_loss(self) -> float:
        """The student's cross-entropy on the fixed dev sample, as it is now."""
        with torch.no_grad():
            out = self._forward(self._feedback, is_train=False, hidden=False)
            gold, mask = self._gold(self._feedback, out.logits.device)
            loss = self.objective.cross_entropy(out.logits, gold, multilabel=self.objective.multilabel, mask=mask)
        return float(loss)

    def query_round(self, run: "Run", epoch: int) -> None:
        """Select unlabelled texts for the teacher and the assistant over the
        whole pool, with the student as it is now (see rounds.py), and fetch
        their answers.
        """
        rounds = run.rounds
        assert rounds is not None
        j = rounds.round_of(epoch)
        assert j is not None
        candidates = rounds.unanswered()
        spent = rounds.teacher_answers
        allowance = rounds.allowance(j, spent)
        logits = None
        if self.objective.reads_logits and candidates.numel() > 0:
            logits = self._predict([run.examples[i] for i in candidates.tolist()])
        to_teacher, to_assistant = self.objective.select_queries(logits, candidates.numel(), allowance)
        teacher_ids, assistant_ids = candidates[to_teacher], candidates[to_assistant]
        like = torch.zeros((0, len(self.student_pipe.labels)))
        everything = torch.arange(teacher_ids.numel())
        self._query(run.teacher, run.examples, teacher_ids, everything, like, hidden=self.objective.needs_hidden_states)
        if assistant_ids.numel() > 0:
            assert run.assistant is not None
            self._query(
                run.assistant, run.examples, assistant_ids, torch.arange(assistant_ids.numel()), like,
                hidden=self.objective.needs_assistant_hidden_states,
            )
        rounds.record(epoch, teacher_ids, assistant_ids, candidates.numel())
        budget = "" if rounds.pool_budget is None else f" ({spent + teacher_ids.numel()} of the {rounds.pool_budget} the rounds may use)"
        self._say("info", (
            f"Query round {j + 1}: {candidates.numel()} unlabelled texts unanswered; the teacher answers "
            f"{teacher_ids.numel()}{budget}, the assistant {assistant_ids.numel()}"
        ))

    def _predict(self, examples: List[Example], batch_size: int = 1024) -> torch.Tensor:
        """The student's logits for many examples, without gradients."""
        logits = []
        with torch.no_grad():
            for start in range(0, len(examples), batch_size * self.world.size):
                chunk = examples[start : start + batch_size * self.world.size]
                logits.append(self._forward(chunk, is_train=False, hidden=False).logits)
        return torch.cat(logits)

    def _forward(self, examples: List[Example], *, is_train: bool, hidden: bool) -> ClassifierOutput:
        """The student's outputs for the examples. In a data-parallel run
        each rank runs its share and the shares are gathered (parallel.py).
        """
        share = examples[self.world.shard(len(examples))]
        if not share:
            out = empty_output(self.student_pipe, hidden=hidden)
        else:
            out = self.student_pipe.forward(docs_with_pairs(share), is_train=is_train, output_hidden_states=hidden)
        return ClassifierOutput(self.world.gather(out.logits), self.world.gather_list(out.hidden_states))

    def __call__(self, *, resume: bool = False) -> Tuple[Language, Dict[str, Any]]:
        run = self.prepare()
        # Rank 0 alone evaluates and writes; the others wait until the
        # output folder holds one whole set before they read a checkpoint.
        main = self.world.is_main
        evaluate = self._evaluation_callback() if main else None
        lock = self._open_output() if main else None
        self.world.barrier()
        try:
            state = self._load_checkpoint(run) if resume else DistillState()
            self._print_header(run)
            state = self._train(run, state, evaluate)
            metrics = self._metrics(state, run)
            if self.output_path is not None and main:
                self._commit({"metrics.json": lambda path: write_json(path, metrics)}, state.step)
            self.world.barrier()
        finally:
            if lock is not None:
                lock.release()
        return self.nlp, metrics

    def _train(self, run: "Run", state: DistillState, evaluate: Optional[Callable[[], Tuple[float, Dict[str, Any]]]]) -> DistillState:
        """The loop: epochs, a query round where one is due, steps, and an
        evaluation (reported to `[training.logger]`, and saved) every
        `eval_frequency` steps.
        """
        T = self.T
        log_step, finalize = self._setup_logger(run)
        started = time.perf_counter() - state.elapsed
        # A run resumed from its last step has no step left to take.
        stop = bool(T["max_steps"]) and state.step >= T["max_steps"]
        try:
            while not stop and state.epoch < T["max_epochs"]:
                if run.rounds is not None and run.rounds.round_of(state.epoch) == state.rounds_done:
                    self.query_round(run, state.epoch)
                    state.rounds_done += 1
                for i, batch_ids in enumerate(self._batches(run, state.epoch)):
                    if i < state.batch_in_epoch:
                        continue  # done before the checkpoint this run resumed from
                    terms = self.step(run, batch_ids, state.step)
                    state.step += 1
                    state.batch_in_epoch = i + 1
                    state.words += sum(len(run.examples[j].predicted) for j in batch_ids)
                    record = {"epoch": state.epoch, "step": state.step, "loss": float(terms.total.detach()), **terms.terms}
                    if terms.teacher_layers is not None:
                        record["teacher_layers"] = terms.teacher_layers
                    record["teacher_queries"] = run.teacher.cache.n_forward
                    record["assistant_queries"] = run.assistant.cache.n_forward if run.assistant else 0
                    record["seconds"] = round(time.perf_counter() - started, 4)  # since the run began
                    state.history.append(record)
                    logger.debug("step %d: %s", state.step, record)
                    if state.step % T["eval_frequency"] == 0 or state.step == run.total_steps:
                        log_step(self._evaluate_and_save(run, state, evaluate, started))
                    else:
                        log_step(None)
                    if T["max_steps"] and state.step >= T["max_steps"]:
                        stop = True
                        break
                else:
                    state.epoch += 1
                    state.batch_in_epoch = 0
            if state.history and "score" not in state.history[-1]:
                # The epochs ran out before max_steps: score and save the last step too.
                log_step(self._evaluate_and_save(run, state, evaluate, started))
        finally:
            finalize()
        state.elapsed = time.perf_counter() - started
        return state

    def _evaluate_and_save(self, run: "Run", state: DistillState, evaluate: Optional[Callable], started: float) -> Optional[Dict[str, Any]]:
        """Score the student on dev, save the set, and return the `info` dict
        spaCy's training loop gives its logger, with DeKD's queries. In a
        data-parallel run rank 0 does this with every rank's random state,
        while the others wait.
        """
        main = self.world.is_main
        rng = self.world.gather_objects(_rng_to_tensors(rng_state({"objective": self.objective.rng_state()})))
        record = state.history[-1]
        score, scores = self.world.broadcast_object(evaluate() if evaluate is not None else None)
        record.update(score=score, scores=scores)
        # Ties go to the later step, as in spaCy's training loop.
        is_best = score >= state.best_score
        state.best_score = max(score, state.best_score)
        state.elapsed = time.perf_counter() - started
        if self.output_path is not None and main:
            self._save(run, state, is_best, rng)
        self.world.barrier()
        if not main:
            return None
        evals = [r for r in state.history if "score" in r]
        since = [r for r in state.history if len(evals) < 2 or r["step"] > evals[-2]["step"]]
        return {
            "epoch": state.epoch,
            "step": state.step,
            "score": score,
            "other_scores": scores,
            "losses": {self.student_pipe.name: sum(r["loss"] for r in since)},
            "loss_terms": {key: sum(r.get(key, 0.0) for r in since) for key in ("ce", "ta", "da") if key in record},
            "checkpoints": [(r["score"], r["step"]) for r in evals],
            "seconds": int(state.elapsed),
            "words": state.words,
            "teacher_queries": record["teacher_queries"],
            "assistant_queries": record["assistant_queries"],
        }

    def _setup_logger(self, run: "Run") -> Tuple[Callable[[Optional[Dict[str, Any]]], None], Callable[[], None]]:
        """`[training.logger]` of the student's config, set up as `spacy train`
        does (spaCy's console logger by default, or any of spacy-loggers').
        It reads how long the run is from `[training]`: this run's steps and
        evaluation frequency stand in there. Rank 0 alone logs.
        """
        if not self.world.is_main:
            return (lambda info: None), (lambda: None)
        config = self.nlp.config.copy()
        config["training"]["max_steps"] = run.total_steps
        config["training"]["eval_frequency"] = self.T["eval_frequency"]
        block = config["training"].get("logger") or {"@loggers": "spacy.ConsoleLogger.v3", "progress_bar": "eval"}
        try:
            make_logger = registry.resolve({"logger": block})["logger"]
        except (ConfigValidationError, ValueError, TypeError) as err:
            raise DistillationError(f"Invalid [training.logger]: {_first_line(err)}") from err
        return make_logger(_LoggerView(self.nlp, config), stdout=self.stdout, stderr=sys.stderr)

    # Helpers

    def _batches(self, run: "Run", epoch: int) -> Iterator[List[int]]:
        """Batches of corpus ids, shuffled by generators seeded per epoch, so
        that a resumed run sees the same batches: the labelled examples, and
        after a query round the answered unlabelled ones in batches of their
        own, the two kinds of batch in a shuffled order.
        """
        labelled = list(self._labelled_batches(run.examples[: run.n_labelled], epoch))
        if run.rounds is None:
            yield from labelled
            return
        answered = run.rounds.answered_ids()
        random.Random(self.T["seed"] * 1000 + epoch + 500).shuffle(answered)
        position = {id(run.examples[i]): i for i in answered}
        batches = labelled + [[position[id(eg)] for eg in batch] for batch in self.T["batcher"]([run.examples[i] for i in answered])]
        random.Random(self.T["seed"] * 1000 + epoch + 700).shuffle(batches)
        yield from batches

    def _labelled_batches(self, examples: List[Example], epoch: int) -> Iterator[List[int]]:
        order = list(range(len(examples)))
        random.Random(self.T["seed"] * 1000 + epoch).shuffle(order)
        position = {id(examples[i]): i for i in order}
        for batch in self.T["batcher"]([examples[i] for i in order]):
            yield [position[id(eg)] for eg in batch]

    def _query(
        self, frozen: Frozen, examples: List[Example], ids: torch.Tensor, rows: torch.Tensor,
        like: torch.Tensor, *, hidden: bool,
    ) -> TeacherOutput:
        """A frozen model's outputs for some rows of the batch, from its cache.
        No rows (TAKD's teacher, a batch routed wholly to one side) is no query.
        """
        if rows.numel() == 0:
            return TeacherOutput(logits=like.detach().new_zeros((0, like.shape[1])))

        mc_samples = self.objective.mc_dropout_samples

        def forward(corpus_ids: torch.Tensor) -> TeacherOutput:
            # Each rank answers its share of the missing rows; every cache gets all.
            share = corpus_ids[self.world.shard(corpus_ids.numel())]
            if share.numel() == 0:
                empty = empty_output(frozen.pipe, hidden=hidden)
                uncertainty = empty.logits.new_zeros((0,)) if mc_samples else None
                out = TeacherOutput(empty.logits, empty.hidden_states, uncertainty)
            else:
                docs = docs_with_pairs([examples[i] for i in share.tolist()])
                out = teacher_forward(frozen.pipe, docs, hidden=hidden, mc_samples=mc_samples)
            uncertainty = None if out.uncertainty is None else self.world.gather(out.uncertainty)
            return TeacherOutput(self.world.gather(out.logits), self.world.gather_list(out.hidden_states), uncertainty)

        return frozen.cache.get(ids[rows.cpu()], forward)

    def _teacher_head(self) -> Optional[torch.nn.Module]:
        module = getattr(getattr(self.teacher_pipe, "shim", None), "module", None)
        return None if module is None else module.head

    def _gold(self, batch: List[Example], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        """The component's own gold targets and mask for the batch, in torch."""
        truths, known = self.student_pipe.examples_to_truth(batch)
        to_numpy = self.student_pipe.model.ops.to_numpy
        return torch.as_tensor(to_numpy(truths), device=device), torch.as_tensor(to_numpy(known), device=device)

    def _check_finite(self, terms: LossTerms, step: int) -> None:
        if not torch.isfinite(terms.total.detach()):
            values = ", ".join(f"{k}={v:.4g}" for k, v in terms.terms.items())
            raise DistillationError(
                f"The loss is not finite at step {step + 1} ({values}): lower the "
                "learning rate or the loss weights; checkpoints written so far are intact."
            )

    def _say(self, kind: str, text: str) -> None:
        """One message, on one line however long (wasabi wraps at 80), from
        rank 0 alone.
        """
        if not self.world.is_main:
            return
        icon, fg = {"info": ("ℹ", "blue"), "warn": ("⚠", "yellow")}[kind]
        self.stdout.write(color(f"{icon} {text}", fg=fg) + "\n")

    def _print_header(self, run: Run) -> None:
        n_unlabelled = len(run.examples) - run.n_labelled
        examples = f"{run.n_labelled} labelled examples" + (f" and {n_unlabelled} unlabelled texts" if n_unlabelled else "")
        budget = "" if run.teacher_budget is None else f", the teacher answering at most {run.teacher_budget} of them"
        self._say("info", f"Distilling into '{self.student_pipe.name}': {examples}, {run.total_steps} steps{budget}")
        if self.world.distributed:
            per_rank = "each batch split across them, rank 0 evaluating and saving"
            self._say("info", f"Data-parallel over {self.world.size} processes ({torch.distributed.get_backend()}), {per_rank}")
        shim = self.student_pipe.shim
        self._say("info", f"Student: {shim.module.n_layers} layers, width {shim.module.width}, from {self.student_source}")

    def _metrics(self, state: DistillState, run: Run) -> Dict[str, Any]:
        teacher, assistant, n_examples = run.teacher, run.assistant, len(run.examples)
        epochs_seen = state.epoch
        if state.batch_in_epoch:
            epochs_seen += state.batch_in_epoch / max(1, sum(1 for _ in self._batches(run, state.epoch)))
        every_example_every_epoch = int(round(n_examples * epochs_seen))
        t_forward = teacher.cache.n_forward
        a_forward = assistant.cache.n_forward if assistant else 0
        evals = [r for r in state.history if "score" in r]
        return {
            "steps": state.step,
            "world_size": self.world.size,
            "epochs": round(epochs_seen, 3),
            "examples": n_examples,
            "labeled_examples": run.n_labelled,
            "unlabeled_examples": n_examples - run.n_labelled,
            "wall_time_s": round(state.elapsed, 2),
            "best_score": state.best_score if evals else None,
            "teacher_budget": self.T.get("teacher_budget"),
            "teacher_budget_passes": run.teacher_budget,
            "teacher_forward_passes": t_forward,
            "assistant_forward_passes": a_forward,
            "teacher_requests": teacher.cache.n_requested,
            "assistant_requests": assistant.cache.n_requested if assistant else 0,
            "baseline_teacher_forward_passes": every_example_every_epoch,
            "teacher_forward_passes_saved": every_example_every_epoch - t_forward,
            "teacher_forward_ratio": t_forward / every_example_every_epoch if every_example_every_epoch else None,
            "query_rounds": run.rounds.history if run.rounds is not None else [],
            "frozen_dev_scores": self.frozen_scores,
            "history": state.history,
        }

    # Output: model-last / model-best are complete student pipelines;
    # checkpoint/ holds what --resume needs; checkpoint.py commits them as
    # one set.

    def _open_output(self) -> Optional[Lock]:
        """Create the output folder, lock it against a second run, and leave
        it holding one whole set (see checkpoint.py).
        """
        if self.output_path is None:
            return None
        try:
            self.output_path.mkdir(parents=True, exist_ok=True)
            lock = Lock(self.output_path)
            lock.acquire()
            recover(self.output_path)
        except OutputError as err:
            raise DistillationError(str(err)) from err
        except OSError as err:
            raise _write_error(self.output_path, None, err) from err
        return lock

    def _save(self, run: Run, state: DistillState, is_best: bool, rng: List[Dict[str, Any]]) -> None:
        """Write the evaluation's set: model-last, model-best if this is the
        best step, the checkpoint that --resume reads, and metrics.json.
        """
        assert self.output_path is not None
        record = state.history[-1]
        # meta.json's performance, as `spacy train` writes it (spacy package shows it).
        update_meta(self.T, self.nlp, {"other_scores": record["scores"], "losses": {self.student_pipe.name: record["loss"]}})
        parts: Dict[str, Callable[[Path], Any]] = {
            DIR_MODEL_LAST: self.nlp.to_disk,
            DIR_CHECKPOINT: lambda path: self._write_checkpoint(run, state, path, rng),
            "metrics.json": lambda path: write_json(path, self._metrics(state, run)),
        }
        if is_best:
            parts[DIR_MODEL_BEST] = lambda path: shutil.copytree(staged(self.output_path / DIR_MODEL_LAST), path)
        self._commit(parts, state.step)

    def _commit(self, parts: Dict[str, Callable[[Path], Any]], step: Optional[int]) -> None:
        """Write each part into its staged path, then commit them together.
        A failed write removes what was staged and leaves the last set as it
        was.
        """
        assert self.output_path is not None
        try:
            for name, write in parts.items():
                tmp = staged(self.output_path / name)
                remove(tmp)
                write(tmp)
                make_readable(tmp)
            commit(self.output_path, parts)
        except (OSError, SafetensorError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "write" not in str(err) and "file" not in str(err):
                raise  # not a failed write
            for name in parts:
                remove(staged(self.output_path / name))
            raise _write_error(self.output_path, step, err) from err

    def _write_checkpoint(self, run: Run, state: DistillState, path: Path, rng: List[Dict[str, Any]]) -> None:
        """rng (List[Dict[str, Any]]): Every rank's random states, in rank order."""
        from safetensors.torch import save_file

        path.mkdir(parents=True)
        torch.save(
            {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict()},
            path / "optimizer.pt",
        )
        torch.save({"ranks": rng}, path / "rng.pt")
        projections = self.objective.projections()
        if projections is not None:
            save_file({k: v.contiguous() for k, v in projections.state_dict().items()}, str(path / "projections.safetensors"))
        run.teacher.cache.to_disk(path / "teacher_cache.safetensors")
        if run.assistant is not None:
            run.assistant.cache.to_disk(path / "assistant_cache.safetensors")
        data = {**state.__dict__, "fingerprint": self.fingerprint, "model_sha256": module_sha256(self.student_pipe)}
        if run.rounds is not None:
            save_file({"answered": run.rounds.answered}, str(path / "rounds.safetensors"))
            data["query_rounds"] = run.rounds.history
        write_json(path / "state.json", data)

    def _load_checkpoint(self, run: Run) -> DistillState:
        """Continue where the saved set left off: weights, optimizer,
        scheduler, caches, query rounds, random states and dropout, so that
        the run ends as the uninterrupted one would have. Refuses a set that
        belongs to another corpus, teacher, assistant or config, or whose
        parts come from different steps.
        """
        if self.output_path is None:
            raise DistillationError("--resume needs --output.")
        ckpt = self.output_path / DIR_CHECKPOINT
        last = self.output_path / DIR_MODEL_LAST
        if not (ckpt / "state.json").exists() or not last.exists():
            raise DistillationError(f"Nothing to resume in '{self.output_path}': no {DIR_CHECKPOINT}/ and {DIR_MODEL_LAST}/ from an earlier run.")
        data = json.loads((ckpt / "state.json").read_text(encoding="utf8"))
        saved = data.pop("fingerprint", None)
        if saved is None:
            raise DistillationError(f"Cannot resume from '{ckpt}': it was written by an older spacy-dekd; start a new --output.")
        changed = differences(saved, self.fingerprint)
        if changed:
            raise DistillationError(
                f"Cannot resume the run in '{self.output_path}': {', '.join(changed[:3])} "
                f"{'differs' if len(changed) == 1 else 'differ'} from when it started; resume with the "
                "same corpus, teacher, assistant and config, or start a new --output."
            )
        device = self.student_pipe.shim.device
        try:
            self.student_pipe.shim.from_disk(last / self.student_pipe.name / "model")
        except ValueError as err:
            raise DistillationError(f"Cannot resume: {err}") from err
        if module_sha256(self.student_pipe) != data.pop("model_sha256"):
            raise DistillationError(
                f"Cannot resume the run in '{self.output_path}': {DIR_MODEL_LAST}/ and {DIR_CHECKPOINT}/ "
                "come from different steps; start a new --output."
            )
        self._set_dropout()
        saved_optim = _load_weights(ckpt / "optimizer.pt", device)
        # The optimizer holds the old parameter objects: point it at the new ones.
        run.params[:] = list(self.student_pipe.shim.module.parameters()) + list(self.extra_params)
        run.optimizer.param_groups[0]["params"] = run.params
        run.optimizer.load_state_dict(saved_optim["optimizer"])
        run.scheduler.load_state_dict(saved_optim["scheduler"])
        if saved_optim.get("scaler"):
            run.scaler.load_state_dict(saved_optim["scaler"])
        projections = self.objective.projections()
        if projections is not None:
            from safetensors.torch import load_file

            projections.load_state_dict(load_file(str(ckpt / "projections.safetensors")))
        run.teacher.cache.from_disk(ckpt / "teacher_cache.safetensors", device)
        if run.assistant is not None:
            run.assistant.cache.from_disk(ckpt / "assistant_cache.safetensors", device)
        history = data.pop("query_rounds", [])
        if run.rounds is not None:
            from safetensors.torch import load_file

            run.rounds.answered = load_file(str(ckpt / "rounds.safetensors"))["answered"]
            run.rounds.history = history
        ranks = _load_weights(ckpt / "rng.pt", torch.device("cpu"))["ranks"]  # random states stay on the CPU
        same_world = len(ranks) == self.world.size
        rng = _rng_from_tensors(ranks[self.world.rank if same_world else 0])
        set_rng_state(rng)
        self.objective.set_rng_state(rng["objective"])
        if not same_world:
            if self.world.rank > 0:
                torch.manual_seed(self.T["seed"] + self.world.rank)
            self._say("info", (
                f"The run was saved by {len(ranks)} process(es) and resumes with {self.world.size}: "
                "the optimisation is the same, dropout draws differ from the uninterrupted run."
            ))
        state = DistillState(**data)
        self._say("info", f"Resuming at step {state.step} (epoch {state.epoch})")
        return state


class _LoggerView:
    """The pipeline as a `[training.logger]` sees it: the student's, with a
    config whose [training] says how long this distillation run is.
    """

    def __init__(self, nlp: Language, config: Any) -> None:
        self._nlp = nlp
        self.config = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nlp, name)


def resolve_distillation(nlp: Language) -> Dict[str, Any]:
    """The resolved `[distillation]` block of a student pipeline's config,
    with the dev corpus and score weights of its `[training]` block, as in
    spaCy v4. A misspelt key or a setting out of range is one line.
    """
    config = nlp.config.interpolate()
    unknown = unknown_keys(config["distillation"])
    if unknown:
        raise DistillationError(unknown)
    try:
        T = registry.resolve(config["distillation"], schema=ConfigSchemaDistill, validate=True)
    except ConfigValidationError as err:
        raise DistillationError(f"Invalid [distillation] settings: {describe_errors(err.errors)}.") from err
    except (ValueError, TypeError) as err:  # raised by a registered function
        raise DistillationError(f"Invalid setting in [distillation]: {_first_line(err)}") from err
    T.setdefault("dev_corpus", config["training"]["dev_corpus"])
    T.setdefault("score_weights", config["training"]["score_weights"])
    return T


def _get_pipe(nlp: Language, name: str, role: str) -> Any:
    if name not in nlp.pipe_names:
        raise DistillationError(f"The {role} pipeline has no component '{name}' (it has {nlp.pipe_names}): fix student_to_teacher.")
    return nlp.get_pipe(name)


def _load_weights(path: Path, device: torch.device) -> Dict[str, Any]:
    """A checkpoint file through `torch.load(weights_only=True)`: tensors and
    plain data only; anything else (a pickle that runs code) is refused.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise DistillationError(
            f"Cannot resume: '{path}' is not a checkpoint weights file ({_first_line(err)[:120]}); "
            "start a new --output."
        ) from err


def _exclusive(pipe: Any) -> bool:
    """Whether a text classifier has exclusive classes (spaCy's textcat does)."""
    if isinstance(pipe, TransformerTextCategorizer):
        return pipe.exclusive_classes
    return not isinstance(pipe, MultiLabel_TextCategorizer)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _rng_to_tensors(state: Dict[str, Any]) -> Dict[str, Any]:
    """Random states in the types `torch.load(weights_only=True)` reads."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    out = {**state, "python": [version, list(internal), gauss], "numpy": [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]}
    return out


def _rng_from_tensors(state: Dict[str, Any]) -> Dict[str, Any]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "python": (version, tuple(internal), gauss), "numpy": (name, keys.numpy().astype("uint32"), pos, has_gauss, cached)}


def _write_error(output_path: Path, step: Optional[int], err: Exception) -> DistillationError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
    when = f" at step {step}" if step is not None else ""
    return DistillationError(
        f"Cannot write to '{output_path}'{when} ({reason}): check its disk space and "
        "permissions, or choose another --output; what earlier evaluations wrote is intact."
    )


@registry.dekd_trainers("spacy-dekd.DistillTrainer.v1")
def make_distill_trainer_v1() -> type:
    """Algorithm 1 (`DistillTrainer`): the loop `spacy distill` runs."""
    return DistillTrainer
