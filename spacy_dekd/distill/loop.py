"""Algorithm 1 in the shape of spaCy's training loop.

`train_while_distilling` is the generator (spaCy's `train_while_improving`):
epochs, a query round where one is due, one step per batch, and every
`eval_frequency` steps an evaluation; it yields `(batch, info, is_best)`,
`info` None between evaluations. `distill_loop` is the driver (spaCy's
`train`): it logs each step to `[training.logger]` and saves each
evaluation's set (output.py). `[distillation]`'s `before_update`,
`after_step` and `after_evaluate` callbacks extend it without a subclass. A step is the student forward, the
objective's plan, the frozen models' answers (frozen.py), the loss and one
update.
"""
import logging
import sys
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import torch
from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import ConfigValidationError

from ..errors import DistillationError, Errors
from ..models.pytorch import ClassifierOutput
from ..pipeline.textcat import docs_with_pairs
from ..registry import registry
from .checkpoint import rng_state
from .examples import View
from .output import DistillState, RunOutput, rng_to_tensors
from .prepare import Run, first_line
from .types import LossTerms

logger = logging.getLogger("spacy_dekd")

Info = Dict[str, Any]


def distill_loop(run: Run, state: DistillState, output: RunOutput) -> DistillState:
    """Run the steps left, log them, and save a set at each evaluation; rank
    0 logs and writes, with every rank's random states.
    """
    log_step, finalize = setup_logger(run)
    main = run.world.is_main
    try:
        for _, info, is_best in train_while_distilling(run, state):
            if info is not None:
                objective_rng = {"objective": run.objective.rng_state()}
                rng = run.world.gather_objects(rng_to_tensors(rng_state(objective_rng)))
                if output.path is not None and main:
                    output.save(run, state, is_best, rng, metrics(run, state))
                run.world.barrier()
                if main and run.T.get("after_evaluate"):
                    run.T["after_evaluate"](run.nlp, info)
            log_step(info if main else None)
    finally:
        finalize()
    return state


def train_while_distilling(run: Run, state: DistillState) -> Iterator[Tuple[Optional[List[int]], Optional[Info], bool]]:
    """Steps from `state` on. YIELDS: the batch's corpus ids (None for the
    closing evaluation), spaCy's `info` after an evaluation (else None), and
    whether this evaluation is the best so far.
    """
    T = run.T
    started = time.perf_counter() - state.elapsed
    # A run resumed from its last step has no step left to take.
    stop = bool(T["max_steps"]) and state.step >= T["max_steps"]
    while not stop and state.epoch < T["max_epochs"]:
        check_pool(run)
        if run.rounds is not None and run.rounds.round_of(state.epoch) == state.rounds_done:
            query_round(run, state.epoch)
            state.rounds_done += 1
        for i, batch_ids in enumerate(run.batches(state.epoch)):
            if i < state.batch_in_epoch:
                continue  # done before the checkpoint this run resumed from
            if T.get("before_update"):
                T["before_update"](run.nlp, {"step": state.step, "epoch": state.epoch})
            terms, words = step(run, batch_ids, state.step)
            state.step += 1
            state.batch_in_epoch = i + 1
            state.words += words
            state.history.append(_record(run, state, terms, started))
            if T.get("after_step"):
                T["after_step"](run.nlp, state.history[-1])
            if state.step % T["eval_frequency"] == 0 or state.step == run.total_steps:
                check_pool(run)  # before a student that read a changed file is saved
                yield (batch_ids, *evaluate(run, state, started))
            else:
                yield batch_ids, None, False
            if T["max_steps"] and state.step >= T["max_steps"]:
                stop = True
                break
        else:
            state.epoch += 1
            state.batch_in_epoch = 0
    if state.history and "score" not in state.history[-1]:
        # The epochs ran out before max_steps: score and save the last step too.
        yield (None, *evaluate(run, state, started))
    state.elapsed = time.perf_counter() - started


def check_pool(run: Run) -> None:
    """Stop the run where the pool's files changed on disk since they were
    read: their texts would be read at the old places.
    """
    try:
        run.examples.check_unchanged()
    except ValueError as err:
        raise DistillationError(Errors.D040.format(err=err)) from err


def step(run: Run, batch_ids: List[int], step: int) -> Tuple[LossTerms, int]:
    """Algorithm 1, lines 3-8, for one batch of corpus ids: student
    forward, select, route, query (cached), align, one update. A batch of
    answered unlabelled examples skips selection: each row learns from the
    model that answered it in its query round. RETURNS: the loss's terms
    and the batch's words.
    """
    objective = run.objective
    batch = [run.examples[j] for j in batch_ids]
    ids = torch.tensor(batch_ids)
    out = forward(run, docs_with_pairs(batch), is_train=True, hidden=objective.needs_hidden_states)
    if batch_ids[0] < run.n_labelled:
        plan = objective.plan(out.logits, teacher_known=run.teacher.cache.known(ids))
    else:
        assert run.rounds is not None
        plan = objective.plan_answered(*run.rounds.rows_by_answer(batch_ids))
    t_out = run.teacher.answer(run.examples, ids, plan.teacher_query, out.logits, run.world)
    a_out = None
    if run.assistant is not None:
        a_out = run.assistant.answer(run.examples, ids, plan.assistant_query, out.logits, run.world)
    run.budget.check(run.teacher.n_answers)
    gold, mask = gold_targets(run, batch, out.logits.device)
    terms = objective(out, gold, plan, t_out, a_out, gold_mask=mask, teacher_head=run.teacher.head)
    _check_finite(terms, step)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(terms.total).backward()
    run.world.average_gradients(run.params)
    grad_clip = run.T["optimizer"].grad_clip
    if grad_clip > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.params, grad_clip)
    run.scaler.step(run.optimizer)  # skipped on an overflow
    run.scaler.update()
    run.scheduler.step()
    if run.feedback:
        objective.feedback(dev_loss(run))
    return terms, sum(len(eg.predicted) for eg in batch)


def query_round(run: Run, epoch: int) -> None:
    """Select unlabelled texts for the teacher and the assistant over the
    pool (or its `pool_sample`), with the student as it is now (see
    rounds.py), and fetch their answers.
    """
    rounds, objective = run.rounds, run.objective
    assert rounds is not None
    j = rounds.round_of(epoch)
    assert j is not None
    candidates = rounds.candidates(j)
    spent = rounds.teacher_answers
    allowance = rounds.allowance(j, spent)
    logits = None
    if objective.reads_logits and candidates.numel() > 0:
        docs = run.examples.docs(candidates.numpy())  # ids as an array: 8 bytes each
        logits = predict(run, docs, states=objective.reads_states)
    # A selector that scores rows one by one keeps a running top k of the chunks.
    to_teacher, to_assistant = objective.select_queries(logits, candidates.numel(), allowance)
    # The selection is on the student's device, the candidate ids on the CPU.
    teacher_ids, assistant_ids = candidates[to_teacher.cpu()], candidates[to_assistant.cpu()]
    like = torch.zeros((0, len(run.student.labels)))
    run.teacher.answer(run.examples, teacher_ids, torch.arange(teacher_ids.numel()), like, run.world, progress=answer_progress(run, "teacher"))
    if assistant_ids.numel() > 0:
        assert run.assistant is not None
        run.assistant.answer(
            run.examples, assistant_ids, torch.arange(assistant_ids.numel()), like, run.world, progress=answer_progress(run, "assistant"),
        )
    run.budget.check(run.teacher.n_answers)
    rounds.record(epoch, teacher_ids, assistant_ids, candidates.numel())
    budget = "" if rounds.pool_budget is None else f" ({spent + teacher_ids.numel()} of the {rounds.pool_budget} the rounds may use)"
    drawn = "unlabelled texts unanswered" if rounds.sample is None else "unanswered texts drawn (pool_sample)"
    run.console.info(
        f"Query round {j + 1}: {candidates.numel()} {drawn}; the teacher answers "
        f"{teacher_ids.numel()}{budget}, the assistant {assistant_ids.numel()}"
    )


def answer_progress(run: Run, role: str) -> Callable[[int, int, float], None]:
    """A line after each chunk of a round's answers: how many, how fast,
    and the time left (this rank's share, on a data-parallel run).
    """

    def report(done: int, total: int, seconds: float) -> None:
        rate = done / max(seconds, 1e-9)
        run.console.info(f"The {role} answered {done:,} of {total:,} texts ({rate:.0f} a second, about {(total - done) / rate:.0f} s left)")

    return report


def evaluate(run: Run, state: DistillState, started: float) -> Tuple[Optional[Info], bool]:
    """Score the student on dev (rank 0; the others hear the score).
    RETURNS: the `info` dict spaCy's training loop gives its logger, with
    DeKD's queries, on every rank (they all save together), and whether it
    is the best.
    """
    record = state.history[-1]
    score, scores = run.world.broadcast_object(run.evaluate() if run.evaluate is not None else None)
    record.update(score=score, scores=scores)
    # Ties go to the later step, as in spaCy's training loop.
    is_best = score >= state.best_score
    state.best_score = max(score, state.best_score)
    state.elapsed = time.perf_counter() - started
    evals = [r for r in state.history if "score" in r]
    since = [r for r in state.history if len(evals) < 2 or r["step"] > evals[-2]["step"]]
    info = {
        "epoch": state.epoch,
        "step": state.step,
        "score": score,
        "other_scores": scores,
        "losses": {run.student.name: sum(r["loss"] for r in since)},
        "loss_terms": {key: sum(r.get(key, 0.0) for r in since) for key in ("ce", "ta", "da") if key in record},
        "checkpoints": [(r["score"], r["step"]) for r in evals],
        "seconds": int(state.elapsed),
        "words": state.words,
        "teacher_queries": record["teacher_queries"],
        "assistant_queries": record["assistant_queries"],
    }
    return info, is_best


def metrics(run: Run, state: DistillState) -> Dict[str, Any]:
    """metrics.json: the run's counts, its frozen models' cost, and every
    step's record. A forward pass is one example through one model: an
    answer with Monte Carlo dropout costs 1 + mc_samples of them.
    """
    teacher, assistant, n_examples = run.teacher, run.assistant, len(run.examples)
    epochs_seen = state.epoch
    if state.batch_in_epoch:
        epochs_seen += state.batch_in_epoch / max(1, sum(1 for _ in run.batches(state.epoch)))
    # What asking the teacher about every example every epoch would cost.
    every_example_every_epoch = int(round(n_examples * epochs_seen)) * (1 + teacher.mc_samples)
    evals = [r for r in state.history if "score" in r]
    return {
        "steps": state.step,
        "world_size": run.world.size,
        "epochs": round(epochs_seen, 3),
        "examples": n_examples,
        "labeled_examples": run.n_labelled,
        "unlabeled_examples": n_examples - run.n_labelled,
        "wall_time_s": round(state.elapsed, 2),
        "best_score": state.best_score if evals else None,
        "teacher_budget": run.budget.share,
        "teacher_budget_passes": run.budget.answers,
        "teacher_answers": teacher.n_answers,
        "assistant_answers": assistant.n_answers if assistant else 0,
        "teacher_forward_passes": teacher.passes,
        "assistant_forward_passes": assistant.passes if assistant else 0,
        "teacher_answers_stored": teacher.cache.n_stored,
        "teacher_requests": teacher.cache.n_requested,
        "assistant_requests": assistant.cache.n_requested if assistant else 0,
        "baseline_teacher_forward_passes": every_example_every_epoch,
        "teacher_forward_passes_saved": every_example_every_epoch - teacher.passes,
        "teacher_forward_ratio": teacher.passes / every_example_every_epoch if every_example_every_epoch else None,
        "query_rounds": run.rounds.history if run.rounds is not None else [],
        "frozen_dev_scores": run.frozen_scores,
        "history": state.history,
    }


def forward(run: Run, docs: Sequence[Doc], *, is_train: bool, hidden: bool) -> ClassifierOutput:
    """The student's outputs for the docs. In a data-parallel run each rank
    runs its share (made alone, when `docs` is a lazy `View`) and the shares
    are gathered (parallel.py).
    """
    share = docs[run.world.shard(len(docs))]
    if not share:
        out = run.student.empty_output(hidden=hidden)
    else:
        out = run.student.forward(share, is_train=is_train, hidden=hidden)
    return ClassifierOutput(run.world.gather(out.logits), run.world.gather_list(out.hidden_states))


def predict(run: Run, docs: View, batch_size: int = 1024, *, states: bool = False) -> Iterator[Any]:
    """The student's logits for many docs, without gradients, a chunk at a
    time: each chunk's docs made, scored and dropped before the next. With
    `states`, pairs of logits and the last layer's first-token states.
    """
    chunk = batch_size * run.world.size
    for start in range(0, len(docs), chunk):
        with torch.no_grad():
            out = forward(run, docs.part(start, start + chunk), is_train=False, hidden=states)
        yield (out.logits, out.hidden_states[-1]) if states else out.logits


def gold_targets(run: Run, batch: List[Example], device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """The student's gold targets and mask for the batch, in torch."""
    truths, known = run.student.examples_to_truth(batch)
    return truths.to(device), known.to(device)


def dev_loss(run: Run) -> float:
    """The student's cross-entropy on the fixed dev sample, as it is now."""
    objective = run.objective
    with torch.no_grad():
        out = forward(run, docs_with_pairs(run.feedback), is_train=False, hidden=False)
        gold, mask = gold_targets(run, run.feedback, out.logits.device)
        loss = objective.cross_entropy(out.logits, gold, multilabel=objective.multilabel, mask=mask)
    return float(loss)


def setup_logger(run: Run) -> Tuple[Callable[[Optional[Info]], None], Callable[[], None]]:
    """`[training.logger]` of the student's config, set up as `spacy train`
    does (spaCy's console logger by default, or any of spacy-loggers').
    It reads how long the run is from `[training]`: this run's steps and
    evaluation frequency stand in there. Rank 0 alone logs.
    """
    if not run.world.is_main:
        return (lambda info: None), (lambda: None)
    config = run.nlp.config.copy()
    config["training"]["max_steps"] = run.total_steps
    config["training"]["eval_frequency"] = run.T["eval_frequency"]
    block = config["training"].get("logger") or {"@loggers": "spacy.ConsoleLogger.v3", "progress_bar": "eval"}
    try:
        make_logger = registry.resolve({"logger": block})["logger"]
    except (ConfigValidationError, ValueError, TypeError) as err:
        raise DistillationError(Errors.D011.format(err=first_line(err))) from err
    return make_logger(_LoggerView(run.nlp, config), stdout=run.console.stdout, stderr=sys.stderr)


class _LoggerView:
    """The pipeline as a `[training.logger]` sees it: the student's, with a
    config whose [training] says how long this distillation run is.
    """

    def __init__(self, nlp: Language, config: Any) -> None:
        self._nlp = nlp
        self.config = config

    def __getattr__(self, name: str) -> Any:
        return getattr(self._nlp, name)


def _record(run: Run, state: DistillState, terms: LossTerms, started: float) -> Dict[str, Any]:
    """One step's entry in metrics.json's history."""
    record = {"epoch": state.epoch, "step": state.step, "loss": float(terms.total.detach()), **terms.terms}
    if terms.teacher_layers is not None:
        record["teacher_layers"] = terms.teacher_layers
    record["teacher_queries"] = run.teacher.n_answers
    record["assistant_queries"] = run.assistant.n_answers if run.assistant else 0
    record["seconds"] = round(time.perf_counter() - started, 4)  # since the run began
    logger.debug("step %d: %s", state.step, record)
    return record


def _check_finite(terms: LossTerms, step: int) -> None:
    if not torch.isfinite(terms.total.detach()):
        values = ", ".join(f"{k}={v:.4g}" for k, v in terms.terms.items())
        raise DistillationError(Errors.D012.format(step=step + 1, values=values))
