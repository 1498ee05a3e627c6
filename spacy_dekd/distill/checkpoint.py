"""What a distillation run writes into its output folder, and how it stays
consistent through a crash, a kill or a full disk.

An evaluation writes a set: `model-last/`, `model-best/` (when it improved),
`checkpoint/` and `metrics.json`. Each part is staged as `NAME.tmp` first;
when all are written, one rename of `commit.json.tmp` to `commit.json`
commits the set, and the staged parts then replace the old ones. A run that
starts in the folder first finishes a committed set whose renames a crash
interrupted, and drops staged parts that were never committed: the folder
always holds one evaluation's whole set. `checkpoint/state.json` records the
sha256 of model-last's weights, so that `--resume` refuses a set mixed by
hand.

A lock file keeps a second run out of a folder a live run writes to, and
`fingerprint` records what a run was started with, so that `--resume`
refuses a changed corpus, teacher, assistant or config.
"""
import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy
import torch

from ..files import OutputError

COMMIT = "commit.json"
LOCK = ".lock"
# Distillation settings a resumed run may change: they say how long to
# train, how often to evaluate and where answers may be found, not what.
RESUMABLE = ("max_steps", "max_epochs", "eval_frequency", "teacher_answers")


def staged(path: Path) -> Path:
    """The temporary sibling a part is written into before it replaces `path`."""
    return path.with_name(path.name + ".tmp")


def commit(output: Path, names: Iterable[str]) -> None:
    """Make the staged parts `names` the folder's current set: one rename
    commits them all, then each replaces its predecessor.
    """
    journal = staged(output / COMMIT)
    journal.write_text(json.dumps(sorted(names)), encoding="utf8")
    _fsync(journal)
    journal.replace(output / COMMIT)  # the commit point
    finish_commit(output)


def finish_commit(output: Path) -> None:
    """Complete the renames of a committed set (idempotent), then forget it."""
    journal = output / COMMIT
    if not journal.exists():
        return
    for name in json.loads(journal.read_text(encoding="utf8")):
        tmp, path = staged(output / name), output / name
        if not tmp.exists():
            continue  # renamed before the crash
        old = path.with_name(path.name + ".old")
        if path.exists():
            remove(old)
            path.rename(old)
        tmp.rename(path)
        remove(old)
    journal.unlink()


def recover(output: Path) -> None:
    """Leave the folder holding one whole set: finish a committed set, drop
    staged parts and leftovers that were never committed.
    """
    if not output.is_dir():
        return
    finish_commit(output)
    for path in output.iterdir():
        if path.name.endswith((".tmp", ".old")):
            remove(path)


def remove(path: Path) -> None:
    """Delete a file or folder if it is there."""
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _fsync(path: Path) -> None:
    with path.open("rb") as file_:
        os.fsync(file_.fileno())


def write_json(path: Path, data: Any) -> None:
    """JSON with every float as Python writes it (repr: round-trips exactly;
    srsly rounds), so that a resumed run's history equals the one it left.
    """
    path.write_text(json.dumps(data, indent=2), encoding="utf8")


class Lock:
    """`output/.lock`, holding the pid of the run that writes to the folder
    and when that process started. A lock whose process is gone, or whose
    pid now belongs to a process started at another time, is taken over.
    """

    def __init__(self, output: Path) -> None:
        self.path = output / LOCK

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, started = _read_lock(self.path)
            if pid is not None and pid != os.getpid() and _alive(pid, started):
                raise OutputError(
                    f"Another run (pid {pid}) is writing to '{self.path.parent}': wait for it to end, "
                    f"or, if no run uses the folder, delete its lock file '{self.path}'."
                ) from None
            self.path.unlink(missing_ok=True)  # left by a run that died
            return self.acquire()
        with os.fdopen(fd, "w") as file_:
            file_.write(f"{os.getpid()} {_start_time(os.getpid()) or ''}".strip())

    def release(self) -> None:
        if _read_lock(self.path)[0] == os.getpid():
            self.path.unlink(missing_ok=True)


def _read_lock(path: Path) -> Tuple[Optional[int], Optional[str]]:
    """The pid in a lock file and its process's start time, if recorded."""
    try:
        parts = path.read_text().split()
        return int(parts[0]), parts[1] if len(parts) > 1 else None
    except (OSError, ValueError, IndexError):
        return None, None


def _start_time(pid: int) -> Optional[str]:
    """When a process started, in clock ticks since boot (Linux's
    /proc/PID/stat, field 22); None where there is no /proc.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, started: Optional[str] = None) -> bool:
    """Whether the process that wrote the lock still runs: its pid is taken,
    by a process that started when it did (where both are known).
    """
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    now = _start_time(pid)
    return started is None or now is None or now == started


# Random states: what an exact resume needs besides weights and optimizer.


def rng_state(extra: Dict[str, Any]) -> Dict[str, Any]:
    state = {
        "torch": torch.get_rng_state(),
        "python": random.getstate(),
        "numpy": numpy.random.get_state(),
        **extra,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    numpy.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# Fingerprints: what a run was started with.


def corpus_fingerprint(texts: Iterable[str], labels: Iterable[Dict[str, float]]) -> Dict[str, Any]:
    digest, n = hashlib.sha256(), 0
    for text, cats in zip(texts, labels):
        digest.update(json.dumps([text, sorted(cats.items())]).encode())
        n += 1
    return {"examples": n, "sha256": digest.hexdigest()}


def pipe_sha256(pipe: Any) -> str:
    """A digest of a frozen pipe's weights: what `--resume` checks it against."""
    runtime = getattr(pipe, "runtime", None)  # a transformer_textcat: "torch" or "onnx"
    if runtime == "torch" and pipe.torch_module is not None:
        return module_sha256(pipe)
    if runtime == "onnx" and pipe.shim.model_bytes is not None:
        return hashlib.sha256(pipe.shim.model_bytes).hexdigest()
    return hashlib.sha256(pipe.to_bytes()).hexdigest()


def module_sha256(pipe: Any) -> str:
    """A digest of a transformer_textcat's weights, as they are in memory."""
    digest = hashlib.sha256()
    for name, tensor in pipe.torch_module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def config_fingerprint(config: Dict[str, Any]) -> Dict[str, Any]:
    """The settings that define the run: the student's components and the
    [distillation] block, without what a resumed run may change.
    """
    distillation = {k: v for k, v in config.get("distillation", {}).items() if k not in RESUMABLE}
    return {"components": config.get("components", {}), "distillation": distillation}


def differences(saved: Any, now: Any, prefix: str = "") -> List[str]:
    """Dotted keys whose values differ between two nested dicts."""
    if isinstance(saved, dict) and isinstance(now, dict):
        keys = sorted(set(saved) | set(now))
        return [d for k in keys for d in differences(saved.get(k), now.get(k), f"{prefix}{k}.")]
    return [] if saved == now else [prefix.rstrip(".")]
