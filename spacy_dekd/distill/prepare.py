"""Everything a distillation run checks and builds before its first step.

`prepare_run` reads the corpora, checks that teacher, assistant, student,
data and settings fit together (each mismatch one line), initializes the
student, sizes the teacher budget, builds the optimizer, and returns a
`Run`: the fixed description of the run that the loop (loop.py) works on.
Nothing here writes to the output folder.
"""
import itertools
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import torch
from spacy.language import Language
from spacy.training import Example, PlainTextCorpus
from spacy.training.corpus import walk_corpus
from spacy.training.loop import create_evaluation_callback
from spacy.util import resolve_dot_names
from thinc.api import ConfigValidationError

from ..errors import DistillationError, Errors
from ..registry import registry
from .batches import epoch_batches, labelled_batches
from .checkpoint import config_fingerprint, pipe_sha256
from .console import Console
from .examples import RunExamples, Text, TextPool, texts_of
from .frozen import FrozenModel, check_can_answer, exclusive, torch_module
from .store import AnswerStore, teacher_digest, text_key
from .parallel import World
from .student import make_student
from .rounds import QueryRounds, TeacherBudget
from .schema import ConfigSchemaDistill, describe_errors, unknown_keys
from .types import Objective, Student
from .teacher_check import dev_scores, stored_dev_scores, weak_teacher

# Macro AUC at or below which a teacher or assistant is taken to know nothing.
CHANCE_AUC = 0.55

Evaluate = Callable[[], Tuple[float, Dict[str, Any]]]


@dataclass(frozen=True)
class Run:
    """What one distillation run works on, fixed before its first step.
    `examples` holds the labelled examples first, then the unlabelled texts;
    `params` (the student's and the objective's) is refilled on a resume.
    """

    nlp: Language
    student: Student  # the student component, through the seam (student.py)
    T: Dict[str, Any]  # the resolved [distillation] block
    objective: Objective
    world: World
    console: Console
    examples: RunExamples
    n_labelled: int
    teacher: FrozenModel
    assistant: Optional[FrozenModel]
    params: List[torch.nn.Parameter]
    extra_params: List[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    # Loss scaling for float16 autocast on a GPU; a no-op otherwise.
    scaler: torch.amp.GradScaler
    total_steps: int
    n_batches: int  # labelled batches an epoch
    rounds: Optional[QueryRounds]
    budget: TeacherBudget
    feedback: List[Example]  # a fixed dev sample whose loss the objective hears after each step
    fingerprint: Dict[str, Any]  # what --resume checks
    student_source: str
    evaluate: Optional[Evaluate]  # on rank 0
    frozen_scores: Dict[str, Dict[str, Any]]

    def batches(self, epoch: int) -> Iterator[List[int]]:
        answered = self.rounds.answered_ids() if self.rounds is not None else None
        return epoch_batches(self.T["batcher"], self.T["seed"], self.examples, self.n_labelled, epoch, answered)


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
        raise DistillationError(Errors.D021.format(errors=describe_errors(err.errors))) from err
    except (ValueError, TypeError) as err:  # raised by a registered function
        raise DistillationError(Errors.D022.format(err=first_line(err))) from err
    T.setdefault("dev_corpus", config["training"]["dev_corpus"])
    T.setdefault("score_weights", config["training"]["score_weights"])
    return T


def prepare_run(
    student: Language, teacher: Language, assistant: Optional[Language], T: Dict[str, Any], *,
    world: World, console: Console, score_dev: bool = True,
) -> Run:
    """Check, read and build everything the run needs, in the order that
    fails cheapest first. score_dev: read the dev corpus and score the
    frozen models on it (False for a benchmark of steps alone).
    """
    objective: Objective = T["objective"]
    pipes = _pipes(student, teacher, assistant, T, objective, console)
    learner, teacher_pipe, assistant_pipe = pipes
    examples = read_corpus(student, T["corpus"])
    if not examples:
        raise DistillationError(Errors.D023.format(corpus=T['corpus']))
    check_labels(teacher_pipe, examples, T["corpus"])
    unlabelled = _read_unlabelled(student, T.get("unlabeled_corpus"), console)
    student_source, extra_params = _initialize(pipes, T, objective)
    n_labelled = len(examples)
    examples = RunExamples(student, examples, unlabelled)
    mc = objective.mc_dropout_samples
    frozen_teacher = FrozenModel.create(teacher_pipe, len(examples), hidden=objective.needs_hidden_states, mc_samples=mc, role="teacher")
    teacher_sha256 = pipe_sha256(teacher_pipe)
    if T.get("teacher_answers"):
        _use_store(frozen_teacher, teacher, teacher_sha256, Path(T["teacher_answers"]), examples, world)
    frozen_assistant = None
    if assistant_pipe is not None and objective.uses_assistant:
        frozen_assistant = FrozenModel.create(
            assistant_pipe, len(examples), hidden=objective.needs_assistant_hidden_states, mc_samples=mc, role="assistant"
        )
    params = learner.parameters() + list(extra_params)
    # Every rank starts from rank 0's weights, and draws its own dropout masks.
    world.broadcast_parameters(params)
    if world.rank > 0:
        torch.manual_seed(T["seed"] + world.rank)
    labelled_sizes = [len(batch) for batch in labelled_batches(T["batcher"], T["seed"], examples[:n_labelled], 0)]
    try:
        budget = TeacherBudget.create(T.get("teacher_budget"), objective, labelled_sizes, T["max_epochs"], n_labelled, len(examples))
    except ValueError as err:
        raise DistillationError(str(err)) from err
    feedback = _read_dev_sample(student, T["dev_corpus"], objective.feedback_size)
    rounds = None
    if unlabelled:
        rounds = QueryRounds.create(
            n_labelled, len(unlabelled), T["max_epochs"], budget.pool, sample=T.get("pool_sample"), seed=T["seed"] or 0
        )
    total_steps = T["max_steps"] or _planned_steps(T, objective, examples, n_labelled, len(labelled_sizes), rounds)
    if total_steps == 0:
        raise DistillationError(Errors.D024)
    fingerprint = {
        "corpus": examples.fingerprint(),
        "labelled_examples": n_labelled,
        "teacher": teacher_sha256,
        "assistant": pipe_sha256(assistant_pipe) if assistant_pipe is not None else None,
        "config": config_fingerprint(student.config.interpolate()),
    }
    optimizer, scheduler = T["optimizer"].build(params, total_steps)
    fp16 = T["mixed_precision"] and learner.float16
    scaler = torch.amp.GradScaler("cuda", enabled=fp16)
    # Rank 0 alone evaluates: the dev corpus is read (and the frozen models
    # scored on it) now, so that a bad one fails before the first step.
    evaluate, frozen_scores = None, {}
    if world.is_main and score_dev:
        evaluate, frozen_scores = _evaluation(student, teacher, assistant if frozen_assistant else None, pipes, T, console)
    return Run(
        student, learner, T, objective, world, console, examples, n_labelled, frozen_teacher, frozen_assistant,
        params, list(extra_params), optimizer, scheduler, scaler, total_steps, len(labelled_sizes), rounds, budget,
        feedback, fingerprint, student_source, evaluate, frozen_scores,
    )


Pipes = Tuple[Student, Any, Optional[Any]]


def _use_store(frozen: FrozenModel, teacher: Language, sha256: str, path: Path, examples: RunExamples, world: World) -> None:
    """The teacher's answers from the folder runs share (store.py), before it
    runs: refused in one line for an objective that needs more than logits,
    or a path that is not a store.
    """
    if frozen.hidden:
        raise DistillationError(Errors.D050.format(
            what="the layer alignment", needs="hidden states", fix="alignment_weight = 0"))
    if frozen.mc_samples:
        raise DistillationError(Errors.D050.format(
            what="MUKI", needs="Monte Carlo dropout uncertainty", fix='uncertainty = "entropy" in its loss'))
    name = frozen.pipe.name
    digest = teacher_digest(sha256, frozen.pipe.labels, dict(teacher.config["components"][name]))
    try:
        store = AnswerStore.open(path, digest, frozen.pipe.labels)
    except ValueError as err:
        raise DistillationError(Errors.D049.format(path=path, why=err)) from err
    # Every rank reads the shards rank 0 found: the same answers, the same rows left to run.
    store.read(world.broadcast_object(store.shards()))
    module = torch_module(frozen.pipe)
    device = next(module.parameters()).device if module is not None else torch.device("cpu")

    def keys_of(ids: torch.Tensor) -> numpy.ndarray:
        return numpy.array([text_key(*examples.text(i)) for i in ids.tolist()], dtype=numpy.int64)

    frozen.cache.use_store(store, keys_of, device)


def _pipes(student: Language, teacher: Language, assistant: Optional[Language], T: Dict[str, Any], objective: Objective, console: Console) -> Pipes:
    """The student, teacher and assistant components `student_to_teacher` names."""
    if len(T["student_to_teacher"]) != 1:
        raise DistillationError(Errors.D025)
    (student_name, teacher_name), = T["student_to_teacher"].items()
    architecture = student.config["components"].get(student_name, {}).get("model", {}).get("@architectures", "")
    learner = make_student(get_pipe(student, student_name, "student"), architecture)
    teacher_pipe = get_pipe(teacher, teacher_name, "teacher")
    assistant_pipe = get_pipe(assistant, teacher_name, "assistant") if assistant else None
    if objective.uses_assistant and assistant_pipe is None:
        raise DistillationError(Errors.D027)
    if assistant_pipe is not None and not objective.uses_assistant:
        console.info("The objective's router sends nothing to the assistant: it is not used in this run.")
    return learner, teacher_pipe, assistant_pipe


def _initialize(pipes: Pipes, T: Dict[str, Any], objective: Objective) -> Tuple[str, List[torch.nn.Parameter]]:
    """Student weights and labels from `student_init`, checks that the three
    models agree, alignment projections, dropout and mixed precision.
    RETURNS: where the student's weights came from, and the objective's
    parameters that train with it.
    """
    student, teacher_pipe, assistant_pipe = pipes
    teacher_labels = list(getattr(teacher_pipe, "labels", []))
    if assistant_pipe is not None and list(assistant_pipe.labels) != teacher_labels:
        raise DistillationError(Errors.D028.format(labels=list(assistant_pipe.labels), teacher_labels=teacher_labels))
    teacher_module, assistant_module = torch_module(teacher_pipe), torch_module(assistant_pipe)
    check_can_answer(teacher_pipe, hidden=objective.needs_hidden_states, mc_samples=0)
    if not student.gives_states and objective.needs_student_states:
        raise DistillationError(_logits_only(student, objective))
    try:
        student_source = T["student_init"](student.pipe, teacher_pipe)
    except ValueError as err:
        raise DistillationError(str(err)) from err
    student.set_dropout(T["dropout"])
    # Autocast: student, teacher and assistant alike, or the frozen two
    # alone (their answers in bfloat16 differ by ~0.01 in a logit).
    frozen = T["mixed_precision"] or T.get("teacher_mixed_precision", False)
    if T["mixed_precision"]:
        student.set_mixed_precision(True)
    for each in (teacher_pipe, assistant_pipe):
        if frozen and torch_module(each) is not None:
            each.set_mixed_precision(True)
    if objective.needs_assistant_hidden_states and assistant_module is None:
        raise DistillationError(Errors.D029)
    # A logits-only student has no states: the widths below go unread.
    width = student.width or 0
    try:
        extra_params = objective.initialize(
            multilabel=student.multilabel,
            n_student_layers=student.n_layers or 0,
            student_width=width,
            teacher_width=width if teacher_module is None else teacher_module.width,
            n_teacher_layers=None if teacher_module is None else teacher_module.n_layers,
            assistant_width=None if assistant_module is None else assistant_module.width,
        )
    except ValueError as err:
        raise DistillationError(str(err)) from err
    projections = objective.projections()
    if projections is not None:
        projections.to(student.device)
    return student_source, extra_params


def _logits_only(student: Student, objective: Objective) -> str:
    """The one line for a config that asks states of a student without any."""
    if getattr(objective, "alignment", None) is not None:
        what, fix = "the layer alignment", "set [distillation.objective] alignment_weight = 0"
    elif objective.reads_states:
        what, fix = "the selector", 'use a selector of logits, such as "spacy-dekd.EntropySelector.v1"'
    else:
        what, fix = "this objective's transfer", 'distil with "spacy-dekd.DeKD.v1" (alignment_weight = 0) instead'
    return Errors.D046.format(name=student.name, what=what, fix=fix)


def check_labels(teacher_pipe: Any, examples: List[Example], dot_name: str) -> None:
    """Gold labels must be the teacher's: a label it does not know would
    be learned as (and scored as) one it does.
    """
    known = set(getattr(teacher_pipe, "labels", []))
    found = {label for eg in examples for label, value in eg.reference.cats.items() if value}
    unknown = sorted(found - known)
    if unknown:
        raise DistillationError(Errors.D030.format(dot_name=dot_name, unknown=unknown, known=sorted(known)))


def read_corpus(nlp: Language, dot_name: str) -> List[Example]:
    try:
        return list(_corpus(nlp, dot_name)(nlp))
    except (OSError, ValueError) as err:
        raise DistillationError(Errors.D031.format(dot_name=dot_name, err=first_line(err))) from err


def _corpus(nlp: Language, dot_name: str) -> Callable[[Language], Iterator[Example]]:
    """The reader the config names at `dot_name`; reading it may still fail
    (callers say which corpus).
    """
    node: Any = nlp.config
    for part in dot_name.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    if node is None:
        raise DistillationError(Errors.D032.format(dot_name=dot_name))
    try:
        return resolve_dot_names(nlp.config.interpolate(), [dot_name])[0]
    except (OSError, ValueError) as err:
        raise DistillationError(Errors.D031.format(dot_name=dot_name, err=first_line(err))) from err


def _read_unlabelled(nlp: Language, dot_name: Optional[str], console: Console) -> Sequence[Text]:
    """The unlabelled corpus as its texts, gold labels dropped (with one
    warning), blank texts skipped (and counted): plain text files stay on
    disk (`TextPool`); any other reader is read once, its Docs not kept
    (examples.py).
    """
    if not dot_name:
        return []
    reader = _corpus(nlp, dot_name)
    if isinstance(reader, PlainTextCorpus) and reader.min_length < 1 and reader.max_length < 1:
        with warnings.catch_warnings():  # spaCy's W090 for no .txt file: D041 says more
            warnings.simplefilter("ignore", UserWarning)
            files = walk_corpus(reader.path, ".txt")
        if not files:
            path = Path(reader.path)
            found = "holds no .txt file" if path.is_dir() else "is not a .txt file" if path.exists() else "does not exist"
            raise DistillationError(Errors.D041.format(dot_name=dot_name, path=path, found=found))
        try:
            pool = TextPool.read(files)
        except (OSError, ValueError) as err:
            raise DistillationError(Errors.D031.format(dot_name=dot_name, err=first_line(err))) from err
        texts, n_blank, n_labelled = pool, pool.n_blank, 0
    else:
        n_read, n_labelled, texts = 0, 0, []
        try:
            for eg in reader(nlp):
                n_read += 1
                n_labelled += bool(eg.reference.cats)
                if eg.text.strip():
                    texts.extend(texts_of([eg]))
        except (OSError, ValueError) as err:
            raise DistillationError(Errors.D031.format(dot_name=dot_name, err=first_line(err))) from err
        n_blank = n_read - len(texts)
    if n_blank and texts:
        console.info(f"{n_blank} blank texts in the unlabelled corpus '{dot_name}' are skipped.")
    if not texts:
        raise DistillationError(Errors.D033.format(dot_name=dot_name))
    if n_labelled:
        console.warn(
            f"{n_labelled} of {len(texts)} examples in the unlabelled corpus '{dot_name}' "
            "have labels: they are ignored (put them in the training corpus to learn from them)."
        )
    return texts


def _read_dev_sample(nlp: Language, dot_name: str, n: int) -> List[Example]:
    if n <= 0:
        return []
    try:
        corpus = resolve_dot_names(nlp.config.interpolate(), [dot_name])[0]
        return list(itertools.islice(corpus(nlp), n))
    except (OSError, ValueError) as err:
        raise DistillationError(Errors.D034.format(dot_name=dot_name, err=first_line(err))) from err


def _planned_steps(
    T: Dict[str, Any], objective: Objective, examples: RunExamples, n_labelled: int, n_batches: int,
    rounds: Optional[QueryRounds],
) -> int:
    """Steps of the whole run: the labelled batches every epoch, and the
    batches of the unlabelled examples answered by then.
    """
    steps = n_batches * T["max_epochs"]
    if rounds is not None:
        for n_answered in rounds.planned_sizes(objective, T["max_epochs"]):
            pool = (examples[i] for i in range(n_labelled, n_labelled + n_answered))  # made as batched, not kept
            steps += sum(1 for _ in T["batcher"](pool))
    return steps


def _evaluation(
    student: Language, teacher: Language, assistant: Optional[Language], pipes: Pipes, T: Dict[str, Any], console: Console,
) -> Tuple[Evaluate, Dict[str, Dict[str, Any]]]:
    """spaCy's evaluation over the dev corpus, and the frozen models' dev
    scores (which stop a run whose teacher is not worth distilling).
    """
    dot_name = T["dev_corpus"]
    try:
        dev_corpus = resolve_dot_names(student.config.interpolate(), [dot_name])[0]
        dev = list(dev_corpus(student))
    except (OSError, ValueError) as err:
        raise DistillationError(Errors.D034.format(dot_name=dot_name, err=first_line(err))) from err
    if not dev:
        raise DistillationError(Errors.D035.format(dot_name=dot_name))
    _, teacher_pipe, assistant_pipe = pipes
    check_labels(teacher_pipe, dev, dot_name)
    scores = {"teacher": score_frozen("teacher", teacher, teacher_pipe, dev, T["check_teacher"], console)}
    if assistant is not None:
        scores["assistant"] = score_frozen("assistant", assistant, assistant_pipe, dev, False, console)
    return create_evaluation_callback(student, dev_corpus, T["score_weights"]), scores


def score_frozen(role: str, nlp: Language, pipe: Any, dev: List[Example], check: bool, console: Console) -> Dict[str, Any]:
    """The teacher's (or assistant's) dev scores before the first step:
    those its meta.json holds for this very dev data, or one pass over it.
    One at chance, or no better than the majority class (exclusive classes;
    teacher_check.py), would teach the student nothing: with `check`, that
    stops the run.
    """
    scores = stored_dev_scores(nlp, dev)
    source = " (from its meta.json)" if scores is not None else ""
    if scores is None:
        scores = dev_scores(nlp, dev)["scores"]
    auc, accuracy = scores.get("cats_macro_auc"), scores.get("cats_accuracy", scores.get("cats_score"))
    named = (("accuracy", accuracy), ("macro F", scores.get("cats_macro_f")), ("macro AUC", auc))
    shown = ", ".join(f"{name} {value:.3f}" for name, value in named if value is not None)
    console.info(f"The {role} on dev{source}: {shown}")
    if auc is not None and auc <= CHANCE_AUC:
        raise DistillationError(Errors.D036.format(role=role, auc=auc, accuracy=accuracy))
    problem = weak_teacher(scores, dev, pipe.labels) if exclusive(pipe) else None
    if problem and check:
        raise DistillationError(Errors.D037.format(problem=problem))
    if problem:
        console.warn(f"The {role} is weak: {problem}.")
    return {key: value for key, value in scores.items() if key.startswith("cats_") and not isinstance(value, dict)}


def get_pipe(nlp: Language, name: str, role: str) -> Any:
    if name not in nlp.pipe_names:
        raise DistillationError(Errors.D038.format(role=role, name=name, pipe_names=nlp.pipe_names))
    return nlp.get_pipe(name)


def first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
