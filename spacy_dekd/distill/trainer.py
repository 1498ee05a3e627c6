"""Algorithm 1: distil a teacher (and an assistant) into a student pipeline.

The trainer knows spaCy, not equations: it reads examples, runs the
student, asks the objective which rows the frozen models must see, fetches
their (cached) outputs, and steps the optimizer. One screen per part:
`DistillTrainer.__call__` is the loop; the rest is bookkeeping.
"""
import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Dict, Iterator, List, Optional, Sequence, Tuple

import srsly
import torch
from safetensors import SafetensorError
from spacy.language import Language
from spacy.training import Example
from spacy.training.loop import create_evaluation_callback
from spacy.util import resolve_dot_names
from wasabi import Printer

from ..pipeline.textcat import TransformerTextCategorizer, docs_with_pairs
from ..registry import registry
from .cache import OutputCache
from .objective import DeKDObjective, LossTerms, TeacherOutput

logger = logging.getLogger("spacy_dekd")

DIR_MODEL_BEST = "model-best"
DIR_MODEL_LAST = "model-last"
DIR_CHECKPOINT = "checkpoint"


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
    history: List[Dict[str, Any]] = field(default_factory=list)


@dataclass
class Frozen:
    """A frozen pipe (teacher or assistant) and its cache of outputs."""

    pipe: Any
    cache: OutputCache


@dataclass
class Run:
    """What one distillation run works on, built by `DistillTrainer.prepare`."""

    examples: List[Example]
    teacher: Frozen
    assistant: Optional[Frozen]
    params: List[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scheduler: Any
    total_steps: int


def teacher_forward(pipe: Any, docs: Sequence, *, hidden: bool) -> TeacherOutput:
    """Outputs of a frozen pipe: a `transformer_textcat` gives logits and
    hidden states; any other text classifier (spaCy's `textcat`) gives
    log-probabilities as logits, and no hidden states.
    """
    if isinstance(pipe, TransformerTextCategorizer):
        out = pipe.forward(docs, is_train=False, output_hidden_states=hidden)
        return TeacherOutput(logits=out.logits, hidden_states=out.hidden_states)
    if hidden:
        raise DistillationError(
            f"Layer alignment needs hidden states, but the teacher component "
            f"'{pipe.name}' ({type(pipe).__name__}) gives none: use a "
            "transformer_textcat teacher or set alignment_weight = 0."
        )
    probs = torch.as_tensor(pipe.model.ops.to_numpy(pipe.predict(docs)))
    return TeacherOutput(logits=probs.clamp_min(1e-8).log())


class DistillTrainer:
    """Algorithm 1 over spaCy pipelines.

    student (Language): The student pipeline; its `transformer_textcat`
        component named in `student_to_teacher` is trained.
    teacher (Language): The trained teacher pipeline.
    assistant (Optional[Language]): The trained assistant, if the router uses one.
    T (Dict[str, Any]): The resolved `[distillation]` block.
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
    ) -> None:
        self.nlp = student
        self.T = T
        self.output_path = output_path
        self.msg = Printer(no_print=True)
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
        if T["dropout"] is not None:
            for module in student.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = float(T["dropout"])
        if T["mixed_precision"]:  # student, teacher and assistant alike
            for pipe in (self.student_pipe, self.teacher_pipe, self.assistant_pipe):
                if isinstance(pipe, TransformerTextCategorizer):
                    pipe.shim.set_mixed_precision(True)
        teacher_width = student.width
        teacher_module = getattr(getattr(self.teacher_pipe, "shim", None), "module", None)
        if teacher_module is not None:
            teacher_width = teacher_module.width
        try:
            self.extra_params = self.objective.initialize(
                multilabel=not self.student_pipe.exclusive_classes,
                n_student_layers=student.n_layers,
                student_width=student.width,
                teacher_width=teacher_width,
            )
        except ValueError as err:
            raise DistillationError(str(err)) from err
        projections = self.objective.projections()
        if projections is not None:
            projections.to(self.student_pipe.shim.device)

    def prepare(self) -> "Run":
        """Read the corpus, initialize the student, build caches and optimizer."""
        T = self.T
        train_corpus = resolve_dot_names(self.nlp.config.interpolate(), [T["corpus"]])[0]
        examples = list(train_corpus(self.nlp))
        if not examples:
            raise DistillationError(f"The training corpus '{T['corpus']}' is empty.")
        self.initialize()
        with_hidden = self.objective.needs_hidden_states
        teacher = Frozen(self.teacher_pipe, OutputCache(len(examples), with_hidden=with_hidden))
        assistant = None
        if self.assistant_pipe is not None and self.objective.uses_assistant:
            assistant = Frozen(self.assistant_pipe, OutputCache(len(examples), with_hidden=False))
        params = list(self.student_pipe.shim.module.parameters()) + list(self.extra_params)
        self.n_batches = sum(1 for _ in self._batches(examples, 0))
        total_steps = T["max_steps"] or self.n_batches * T["max_epochs"]
        optimizer, scheduler = T["optimizer"].build(params, total_steps)
        return Run(examples, teacher, assistant, params, optimizer, scheduler, total_steps)

    def step(self, run: "Run", batch_ids: List[int], step: int) -> LossTerms:
        """Algorithm 1, lines 3-8, for one batch of corpus ids: student
        forward, select, route, query (cached), align, one update.
        """
        with_hidden = self.objective.needs_hidden_states
        batch = [run.examples[j] for j in batch_ids]
        ids = torch.tensor(batch_ids)
        out = self.student_pipe.forward(docs_with_pairs(batch), is_train=True, output_hidden_states=with_hidden)
        plan = self.objective.plan(out.logits, teacher_known=run.teacher.cache.filled[ids])
        t_out = self._query(run.teacher, run.examples, ids, plan.teacher_query, out.logits, hidden=with_hidden)
        a_out = None
        if run.assistant is not None:
            a_out = self._query(run.assistant, run.examples, ids, plan.assistant_query, out.logits, hidden=False)
        gold, mask = self._gold(batch, list(self.student_pipe.labels), out.logits.device)
        terms = self.objective(out, gold, plan, t_out, a_out, gold_mask=mask, teacher_head=self._teacher_head())
        self._check_finite(terms, step)
        run.optimizer.zero_grad(set_to_none=True)
        terms.total.backward()
        grad_clip = self.T["optimizer"].grad_clip
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(run.params, grad_clip)
        run.optimizer.step()
        run.scheduler.step()
        return terms

    def __call__(self, *, resume: bool = False) -> Tuple[Language, Dict[str, Any]]:
        T = self.T
        run = self.prepare()
        dev_corpus = resolve_dot_names(self.nlp.config.interpolate(), [T["dev_corpus"]])[0]
        evaluate = create_evaluation_callback(self.nlp, dev_corpus, T["score_weights"])
        state = self._load_checkpoint(run) if resume else DistillState()
        self._print_header(len(run.examples), run.total_steps)
        started = time.perf_counter() - state.elapsed
        stop = False
        while not stop and state.epoch < T["max_epochs"]:
            for i, batch_ids in enumerate(self._batches(run.examples, state.epoch)):
                if i < state.batch_in_epoch:
                    continue  # done before the checkpoint this run resumed from
                terms = self.step(run, batch_ids, state.step)
                state.step += 1
                state.batch_in_epoch = i + 1
                record = {"epoch": state.epoch, "step": state.step, "loss": float(terms.total.detach()), **terms.terms}
                if terms.teacher_layers is not None:
                    record["teacher_layers"] = terms.teacher_layers
                record["teacher_queries"] = run.teacher.cache.n_forward
                record["assistant_queries"] = run.assistant.cache.n_forward if run.assistant else 0
                state.history.append(record)
                logger.debug("step %d: %s", state.step, record)
                if state.step % T["eval_frequency"] == 0 or state.step == run.total_steps:
                    score, scores = evaluate()
                    record.update(score=score, scores=scores)
                    # Ties go to the later step, as in spaCy's training loop.
                    is_best = score >= state.best_score
                    state.best_score = max(score, state.best_score)
                    state.elapsed = time.perf_counter() - started
                    self._log_row(record)
                    if self.output_path is not None:
                        self._save(run, state, is_best)
                if T["max_steps"] and state.step >= T["max_steps"]:
                    stop = True
                    break
            else:
                state.epoch += 1
                state.batch_in_epoch = 0
        state.elapsed = time.perf_counter() - started
        metrics = self._metrics(state, run)
        if self.output_path is not None:
            _write_json_atomic(self.output_path / "metrics.json", metrics)
        return self.nlp, metrics

    # Helpers

    def _batches(self, examples: List[Example], epoch: int) -> Iterator[List[int]]:
        """Batches of corpus ids, shuffled by a generator seeded per epoch, so
        that a resumed run sees the same batches.
        """
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

        def forward(corpus_ids: torch.Tensor) -> TeacherOutput:
            docs = docs_with_pairs([examples[i] for i in corpus_ids.tolist()])
            return teacher_forward(frozen.pipe, docs, hidden=hidden)

        return frozen.cache.get(ids[rows.cpu()], forward)

    def _teacher_head(self) -> Optional[torch.nn.Module]:
        module = getattr(getattr(self.teacher_pipe, "shim", None), "module", None)
        return None if module is None else module.head

    def _gold(self, batch: List[Example], labels: List[str], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
        gold = torch.zeros((len(batch), len(labels)))
        mask = torch.ones((len(batch), len(labels)))
        for i, eg in enumerate(batch):
            for j, label in enumerate(labels):
                if label in eg.reference.cats:
                    gold[i, j] = eg.reference.cats[label]
                else:
                    mask[i, j] = 0.0
        return gold.to(device), mask.to(device)

    def _check_finite(self, terms: LossTerms, step: int) -> None:
        if not torch.isfinite(terms.total.detach()):
            values = ", ".join(f"{k}={v:.4g}" for k, v in terms.terms.items())
            raise DistillationError(
                f"The loss is not finite at step {step + 1} ({values}): lower the "
                "learning rate or the loss weights; checkpoints written so far are intact."
            )

    def _print_header(self, n_examples: int, total_steps: int) -> None:
        self.stdout.write(self.msg.info(f"Distilling into '{self.student_pipe.name}': {n_examples} examples, {total_steps} steps") + "\n")
        shim = self.student_pipe.shim
        self.stdout.write(self.msg.info(f"Student: {shim.module.n_layers} layers, width {shim.module.width}, from {self.student_source}") + "\n")
        self.columns = ["E", "#", "LOSS", "CE", "TA", "DA", "Q TEACHER", "Q TA", "SCORE"]
        widths = [3, 6, 8, 8, 8, 8, 9, 6, 6]
        self.table_widths = widths
        self.stdout.write(self.msg.row(self.columns, widths=widths) + "\n")
        self.stdout.write(self.msg.row(["-" * w for w in widths], widths=widths) + "\n")

    def _log_row(self, record: Dict[str, Any]) -> None:
        row = [
            record["epoch"],
            record["step"],
            f"{record['loss']:.3f}",
            f"{record.get('ce', 0.0):.3f}",
            f"{record.get('ta', 0.0):.3f}",
            f"{record['da']:.3f}" if "da" in record else "-",
            record["teacher_queries"],
            record["assistant_queries"],
            f"{record['score']:.3f}",
        ]
        self.stdout.write(self.msg.row(row, widths=self.table_widths) + "\n")
        self.stdout.flush()

    def _metrics(self, state: DistillState, run: Run) -> Dict[str, Any]:
        teacher, assistant, n_examples = run.teacher, run.assistant, len(run.examples)
        epochs_seen = state.step / max(1, self.n_batches)
        every_example_every_epoch = int(round(n_examples * epochs_seen))
        t_forward = teacher.cache.n_forward
        a_forward = assistant.cache.n_forward if assistant else 0
        evals = [r for r in state.history if "score" in r]
        return {
            "steps": state.step,
            "epochs": round(epochs_seen, 3),
            "examples": n_examples,
            "wall_time_s": round(state.elapsed, 2),
            "best_score": state.best_score if evals else None,
            "teacher_forward_passes": t_forward,
            "assistant_forward_passes": a_forward,
            "teacher_requests": teacher.cache.n_requested,
            "assistant_requests": assistant.cache.n_requested if assistant else 0,
            "baseline_teacher_forward_passes": every_example_every_epoch,
            "teacher_forward_passes_saved": every_example_every_epoch - t_forward,
            "teacher_forward_ratio": t_forward / every_example_every_epoch if every_example_every_epoch else None,
            "history": state.history,
        }

    # Checkpoints: model-last / model-best are complete student pipelines;
    # checkpoint/ holds what --resume needs. All written to a temporary
    # folder first and moved into place, so a crash never leaves half a model.

    def _save(self, run: Run, state: DistillState, is_best: bool) -> None:
        """Write model-last, model-best if this is the best step, and the
        checkpoint that --resume reads. Each is written into a temporary
        folder first, and they replace the old ones only once all are
        written: a failed write (a full disk) leaves the folders of the
        previous evaluation as they were, consistent with each other.
        """
        assert self.output_path is not None
        names = [DIR_MODEL_LAST] + ([DIR_MODEL_BEST] if is_best else []) + [DIR_CHECKPOINT]
        staged = {name: _staging_dir(self.output_path / name) for name in names}
        try:
            self.nlp.to_disk(staged[DIR_MODEL_LAST])
            if is_best:
                shutil.copytree(staged[DIR_MODEL_LAST], staged[DIR_MODEL_BEST])
            self._write_checkpoint(run, state, staged[DIR_CHECKPOINT])
        except (OSError, SafetensorError) as err:
            for tmp in staged.values():
                shutil.rmtree(tmp, ignore_errors=True)
            raise _write_error(self.output_path, state.step, err) from err
        for name, tmp in staged.items():
            _replace_dir(tmp, self.output_path / name)

    def _write_checkpoint(self, run: Run, state: DistillState, path: Path) -> None:
        path.mkdir(parents=True)
        torch.save({"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict()}, path / "optimizer.pt")
        projections = self.objective.projections()
        if projections is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in projections.state_dict().items()}, str(path / "projections.safetensors"))
        run.teacher.cache.to_disk(path / "teacher_cache.safetensors")
        if run.assistant is not None:
            run.assistant.cache.to_disk(path / "assistant_cache.safetensors")
        srsly.write_json(path / "state.json", {**state.__dict__, "n_examples": len(run.examples)})

    def _load_checkpoint(self, run: Run) -> DistillState:
        if self.output_path is None:
            raise DistillationError("--resume needs --output.")
        ckpt = self.output_path / DIR_CHECKPOINT
        last = self.output_path / DIR_MODEL_LAST
        if not (ckpt / "state.json").exists() or not last.exists():
            raise DistillationError(f"Nothing to resume in '{self.output_path}': no {DIR_CHECKPOINT}/ and {DIR_MODEL_LAST}/ from an earlier run.")
        device = self.student_pipe.shim.device
        self.student_pipe.shim.from_disk(last / self.student_pipe.name / "model")
        saved = torch.load(ckpt / "optimizer.pt", map_location=device, weights_only=True)
        # The optimizer holds the old parameter objects: point it at the new ones.
        run.params[:] = list(self.student_pipe.shim.module.parameters()) + list(self.extra_params)
        run.optimizer.param_groups[0]["params"] = run.params
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        projections = self.objective.projections()
        if projections is not None:
            from safetensors.torch import load_file

            projections.load_state_dict(load_file(str(ckpt / "projections.safetensors")))
        run.teacher.cache.from_disk(ckpt / "teacher_cache.safetensors", device)
        if run.assistant is not None:
            run.assistant.cache.from_disk(ckpt / "assistant_cache.safetensors", device)
        data = srsly.read_json(ckpt / "state.json")
        data.pop("n_examples", None)
        state = DistillState(**data)
        self.stdout.write(self.msg.info(f"Resuming at step {state.step} (epoch {state.epoch})") + "\n")
        return state


def resolve_distillation(nlp: Language) -> Dict[str, Any]:
    """The resolved `[distillation]` block of a student pipeline's config,
    with the dev corpus and score weights of its `[training]` block, as in
    spaCy v4.
    """
    config = nlp.config.interpolate()
    T = registry.resolve(config["distillation"], validate=True)
    T.setdefault("dev_corpus", config["training"]["dev_corpus"])
    T.setdefault("score_weights", config["training"]["score_weights"])
    return T


def _get_pipe(nlp: Language, name: str, role: str) -> Any:
    if name not in nlp.pipe_names:
        raise DistillationError(f"The {role} pipeline has no component '{name}' (it has {nlp.pipe_names}): fix student_to_teacher.")
    return nlp.get_pipe(name)


def _staging_dir(path: Path) -> Path:
    """The temporary sibling a folder is written into before it replaces `path`."""
    tmp = path.with_name(path.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    return tmp


def _replace_dir(tmp: Path, path: Path) -> None:
    """Move a finished folder into place; the old one goes only after."""
    old = path.with_name(path.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if path.exists():
        path.rename(old)
    tmp.rename(path)
    if old.exists():
        shutil.rmtree(old)


def _write_json_atomic(path: Path, data: Dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(json.dumps(data, indent=2), encoding="utf8")
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise _write_error(path.parent, None, err) from err
    tmp.replace(path)


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
