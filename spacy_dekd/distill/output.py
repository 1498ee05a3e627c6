"""The output folder of a run: whole sets, and resuming from the last one.

Each evaluation writes one set: `model-last/` (and `model-best/` when it
is the best step), `checkpoint/` with what `--resume` needs, and
`metrics.json`; checkpoint.py commits a set's parts together, so a folder
holds one evaluation's whole set whenever the run is killed. Rank 0 alone
writes; every rank reads a checkpoint.
"""
import json
import math
import pickle
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import torch
from safetensors import SafetensorError
from spacy.training.loop import DIR_MODEL_BEST, DIR_MODEL_LAST, update_meta

from ..errors import DistillationError, Errors
from ..files import make_readable
from .checkpoint import (
    Lock,
    OutputError,
    commit,
    differences,
    recover,
    remove,
    set_rng_state,
    staged,
    write_json,
)
from .prepare import Run, first_line

DIR_CHECKPOINT = "checkpoint"
DIR_ANSWERS = "answers"  # the frozen models' answers, a shard per save (cache.py)


@dataclass
class DistillState:
    """Where a run stands: what a checkpoint needs to continue it."""

    epoch: int = 0
    batch_in_epoch: int = 0
    step: int = 0
    best_score: float = -math.inf
    elapsed: float = 0.0
    rounds_done: int = 0
    words: int = 0  # words of the training docs stepped over, as spaCy counts them
    history: List[Dict[str, Any]] = field(default_factory=list)


class RunOutput:
    """The output folder of one run (None: a run that writes nothing).

    path (Optional[Path]): `--output`.
    """

    def __init__(self, path: Optional[Path]) -> None:
        self.path = path
        self.lock: Optional[Lock] = None

    def open(self) -> None:
        """Create the folder, lock it against a second run, and leave it
        holding one whole set (see checkpoint.py).
        """
        if self.path is None:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            lock = Lock(self.path)
            lock.acquire()
            recover(self.path)
        except OutputError as err:
            raise DistillationError(str(err)) from err
        except OSError as err:
            raise write_error(self.path, None, err) from err
        self.lock = lock

    def start(self) -> None:
        """A new run in the folder: the answers an earlier run appended go
        (its set is replaced at this run's first save).
        """
        if self.path is not None:
            shutil.rmtree(self.path / DIR_ANSWERS, ignore_errors=True)

    def close(self) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    def save(self, run: Run, state: DistillState, is_best: bool, rng: List[Dict[str, Any]], metrics: Dict[str, Any]) -> None:
        """Write the evaluation's set: model-last, model-best if this is the
        best step, the checkpoint that --resume reads, and metrics.json.
        rng: every rank's random states, in rank order.
        """
        assert self.path is not None
        record = state.history[-1]
        # meta.json's performance, as `spacy train` writes it (spacy package shows it).
        update_meta(run.T, run.nlp, {"other_scores": record["scores"], "losses": {run.student.name: record["loss"]}})
        parts: Dict[str, Callable[[Path], Any]] = {
            DIR_MODEL_LAST: run.nlp.to_disk,
            DIR_CHECKPOINT: lambda path: write_checkpoint(run, state, path, rng),
            "metrics.json": lambda path: write_json(path, metrics),
        }
        if is_best:
            path = self.path
            parts[DIR_MODEL_BEST] = lambda target: shutil.copytree(staged(path / DIR_MODEL_LAST), target)
        self.commit(parts, state.step)

    def write_metrics(self, metrics: Dict[str, Any], step: int) -> None:
        if self.path is not None:
            self.commit({"metrics.json": lambda path: write_json(path, metrics)}, step)

    def commit(self, parts: Dict[str, Callable[[Path], Any]], step: Optional[int]) -> None:
        """Write each part into its staged path, then commit them together.
        A failed write removes what was staged and leaves the last set as it
        was.
        """
        assert self.path is not None
        try:
            for name, write in parts.items():
                tmp = staged(self.path / name)
                remove(tmp)
                write(tmp)
                make_readable(tmp)
            commit(self.path, parts)
        except (OSError, SafetensorError, RuntimeError) as err:
            if isinstance(err, RuntimeError) and "write" not in str(err) and "file" not in str(err):
                raise  # not a failed write
            for name in parts:
                remove(staged(self.path / name))
            raise write_error(self.path, step, err) from err

    def resume(self, run: Run) -> DistillState:
        """Continue where the saved set left off: weights, optimizer,
        scheduler, caches, query rounds, random states and dropout, so that
        the run ends as the uninterrupted one would have. Refuses a set that
        belongs to another corpus, teacher, assistant or config, or whose
        parts come from different steps.
        """
        if self.path is None:
            raise DistillationError(Errors.D013)
        ckpt, last = self.path / DIR_CHECKPOINT, self.path / DIR_MODEL_LAST
        if not (ckpt / "state.json").exists() or not last.exists():
            raise DistillationError(Errors.D014.format(path=self.path, checkpoint=DIR_CHECKPOINT, model_last=DIR_MODEL_LAST))
        data = json.loads((ckpt / "state.json").read_text(encoding="utf8"))
        saved = data.pop("fingerprint", None)
        if saved is None:
            raise DistillationError(Errors.D015.format(ckpt=ckpt))
        changed = differences(saved, run.fingerprint)
        if changed:
            verb = "differs" if len(changed) == 1 else "differ"
            raise DistillationError(Errors.D016.format(path=self.path, settings=", ".join(changed[:3]), verb=verb))
        _load_student(run, last, data.pop("model_sha256"), self.path)
        _load_training(run, ckpt)
        history = data.pop("query_rounds", [])
        if run.rounds is not None:
            from safetensors.torch import load_file

            run.rounds.load_answered(load_file(str(ckpt / "rounds.safetensors")))
            run.rounds.history = history
        _load_rng(run, ckpt)
        state = DistillState(**data)
        run.console.info(f"Resuming at step {state.step} (epoch {state.epoch})")
        return state


def write_checkpoint(run: Run, state: DistillState, path: Path, rng: List[Dict[str, Any]]) -> None:
    """What --resume reads besides model-last: optimizer, scheduler and
    scaler, random states, projections, the frozen models' caches, the
    query rounds, and the state of the loop.
    """
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    torch.save(
        {"optimizer": run.optimizer.state_dict(), "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict()},
        path / "optimizer.pt",
    )
    torch.save({"ranks": rng}, path / "rng.pt")
    projections = run.objective.projections()
    if projections is not None:
        save_file({k: v.contiguous() for k, v in projections.state_dict().items()}, str(path / "projections.safetensors"))
    answers = path.parent / DIR_ANSWERS  # beside checkpoint/, outside the sets: shards are only added
    run.teacher.cache.to_disk(path / "teacher_cache.safetensors", answers, "teacher")
    if run.teacher.cache.store is not None:  # the runs' shared answers, outside the output folder
        run.teacher.cache.store.flush()
    if run.assistant is not None:
        run.assistant.cache.to_disk(path / "assistant_cache.safetensors", answers, "assistant")
    data = {**state.__dict__, "fingerprint": run.fingerprint, "model_sha256": run.student.digest()}
    if run.rounds is not None:
        save_file(run.rounds.saved_answered(), str(path / "rounds.safetensors"))
        data["query_rounds"] = run.rounds.history
    write_json(path / "state.json", data)


def _load_student(run: Run, last: Path, sha256: str, output: Path) -> None:
    try:
        run.student.load(last)
    except ValueError as err:
        raise DistillationError(Errors.D017.format(err=err)) from err
    if run.student.digest() != sha256:
        raise DistillationError(Errors.D018.format(output=output, model_last=DIR_MODEL_LAST, checkpoint=DIR_CHECKPOINT))
    run.student.set_dropout(run.T["dropout"])


def _load_training(run: Run, ckpt: Path) -> None:
    """Optimizer, scheduler, scaler, projections and caches."""
    device = run.student.device
    saved = load_weights(ckpt / "optimizer.pt", device)
    # The optimizer holds the old parameter objects: point it at the new ones.
    run.params[:] = run.student.parameters() + list(run.extra_params)
    run.optimizer.param_groups[0]["params"] = run.params
    run.optimizer.load_state_dict(saved["optimizer"])
    run.scheduler.load_state_dict(saved["scheduler"])
    if saved.get("scaler"):
        run.scaler.load_state_dict(saved["scaler"])
    projections = run.objective.projections()
    if projections is not None:
        from safetensors.torch import load_file

        projections.load_state_dict(load_file(str(ckpt / "projections.safetensors")))
    answers = ckpt.parent / DIR_ANSWERS
    try:
        run.teacher.cache.from_disk(ckpt / "teacher_cache.safetensors", device, answers, "teacher")
        if run.assistant is not None:
            run.assistant.cache.from_disk(ckpt / "assistant_cache.safetensors", device, answers, "assistant")
    except ValueError as err:
        raise DistillationError(Errors.D017.format(err=err)) from err


def _load_rng(run: Run, ckpt: Path) -> None:
    """This rank's random states; a run resumed by another number of
    processes gives the extra ranks fresh seeds (and says so).
    """
    world = run.world
    ranks = load_weights(ckpt / "rng.pt", torch.device("cpu"))["ranks"]  # random states stay on the CPU
    same_world = len(ranks) == world.size
    rng = rng_from_tensors(ranks[world.rank if same_world else 0])
    set_rng_state(rng)
    run.objective.set_rng_state(rng["objective"])
    if not same_world:
        if world.rank > 0:
            torch.manual_seed(run.T["seed"] + world.rank)
        run.console.info(
            f"The run was saved by {len(ranks)} process(es) and resumes with {world.size}: "
            "the optimisation is the same, dropout draws differ from the uninterrupted run."
        )


def load_weights(path: Path, device: torch.device) -> Dict[str, Any]:
    """A checkpoint file through `torch.load(weights_only=True)`: tensors and
    plain data only; anything else (a pickle that runs code) is refused.
    """
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise DistillationError(Errors.D019.format(path=path, reason=first_line(err)[:120])) from err


def rng_to_tensors(state: Dict[str, Any]) -> Dict[str, Any]:
    """Random states in the types `torch.load(weights_only=True)` reads."""
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "python": [version, list(internal), gauss], "numpy": [name, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached]}


def rng_from_tensors(state: Dict[str, Any]) -> Dict[str, Any]:
    version, internal, gauss = state["python"]
    name, keys, pos, has_gauss, cached = state["numpy"]
    return {**state, "python": (version, tuple(internal), gauss), "numpy": (name, keys.numpy().astype("uint32"), pos, has_gauss, cached)}


def write_error(output_path: Path, step: Optional[int], err: Exception) -> DistillationError:
    reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err).splitlines()[0]
    when = f" at step {step}" if step is not None else ""
    return DistillationError(Errors.D020.format(output_path=output_path, when=when, reason=reason))
