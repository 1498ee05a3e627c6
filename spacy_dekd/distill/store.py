"""A folder of the teacher's answers that runs share: each text answered once.

On a CPU the teacher's answers are most of what a fast student costs, and the
runs of one teacher (three students, their seeds, a sweep) ask it about the
same texts. With `[distillation] teacher_answers` set to a folder, a run takes
the answers it finds there instead of running the teacher, and adds the ones
it paid for each time it saves, so that every run sharing the folder pays for
a text once.

The folder keeps each teacher's answers apart, in a folder named by the
start of the teacher's digest (its weights, labels and component settings):
a teacher trained anew starts an empty one, and no run reads another
teacher's answers. That folder holds `store.json` (the whole digest and the
labels) and shards `answers-*.safetensors`, each the rows one save added:
`keys` (n,) int64, a 64-bit BLAKE2b digest of the text and its sentence pair,
and `logits` (n, C) float32. A shard is written whole (staged, then renamed)
and never rewritten, so runs that share the folder side by side each add their
own; a text two of them answered is kept twice, and the answer of the first
shard by name is read.

Logits alone: hidden states (layer alignment) and Monte Carlo uncertainty
(MUKI) are not kept, and an objective that needs them is refused a store. A
stored answer counts against the teacher budget as any answer does (the budget
is what the student may learn from); `teacher_forward_passes` counts the ones
run. Stored answers were computed in other batches than this run's, so a run
with a store matches one without to float rounding, not bit for bit. A
resumed run reads its own answers from its checkpoint, as without a store.
"""
import hashlib
import json
import os
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy

from ..files import write_whole

META = "store.json"
TEACHER_PREFIX = 16  # hex digits of the teacher's digest that name its folder
SHARD_PREFIX = "answers-"
SHARD_SUFFIX = ".safetensors"


def text_key(text: str, pair: Optional[str] = None) -> int:
    """A text's (and its sentence pair's) 64-bit key: two texts among a
    million share one with odds of about 3e-8.
    """
    digest = hashlib.blake2b(text.encode("utf8"), digest_size=8)
    if pair is not None:
        digest.update(b"\x1f" + pair.encode("utf8"))
    return int.from_bytes(digest.digest(), "little", signed=True)


class AnswerStore:
    """The answers in a folder, as read when the run started, and the ones
    this run added since its last save.

    path (Path): The teacher's folder in the store; made at the first save.
    teacher (str): A digest of the teacher (`teacher_digest`).
    labels (Sequence[str]): The teacher's labels, the logits' columns.
    """

    def __init__(self, path: Path, teacher: str, labels: Sequence[str]) -> None:
        self.path = path
        self.teacher = teacher
        self.labels = list(labels)
        self.keys = numpy.zeros((0,), dtype=numpy.int64)  # sorted
        self.logits = numpy.zeros((0, len(self.labels)), dtype=numpy.float32)
        self._new_keys: List[numpy.ndarray] = []
        self._new_logits: List[numpy.ndarray] = []

    @classmethod
    def open(cls, root: Path, teacher: str, labels: Sequence[str]) -> "AnswerStore":
        """The teacher's answers in the store at `root`, its shards not yet
        read (`shards`, `read`).
        RAISES ValueError: root is a file, or a folder of other files.
        """
        if root.is_file():
            raise ValueError("it is a file; give a folder")
        if root.is_dir() and any(not _is_teacher_folder(p) for p in root.iterdir()):
            raise ValueError("it is a folder of other files, not a store of teacher answers; give a new or empty folder")
        store = cls(root / teacher[:TEACHER_PREFIX], teacher, labels)
        meta_path = store.path / META
        if meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf8")).get("teacher") != teacher:
            raise ValueError(f"its folder '{store.path.name}' holds another teacher's answers (their digests share a prefix); give another folder")
        return store

    def shards(self) -> List[str]:
        """The shards' names, in the order they are read."""
        if not self.path.is_dir():
            return []
        return sorted(p.name for p in self.path.glob(f"{SHARD_PREFIX}*{SHARD_SUFFIX}"))

    def read(self, names: Sequence[str]) -> None:
        """The answers of these shards (all ranks of a data-parallel run read
        the names rank 0 found), the first of a key's copies kept.
        """
        from safetensors.numpy import load_file

        parts = [load_file(str(self.path / name)) for name in names]
        if not parts:
            return
        keys = numpy.concatenate([part["keys"] for part in parts])
        logits = numpy.concatenate([part["logits"] for part in parts])
        keys, first = numpy.unique(keys, return_index=True)  # sorted; the first copy of each
        self.keys, self.logits = keys, logits[first]

    def __len__(self) -> int:
        return int(self.keys.size)

    def lookup(self, keys: numpy.ndarray) -> Tuple[numpy.ndarray, numpy.ndarray]:
        """(n,) int64 keys → which are stored (n,) bool, and the stored rows'
        logits (found, C), in the order of `keys`.
        """
        where = numpy.searchsorted(self.keys, keys)
        found = where < self.keys.size
        found[found] = self.keys[where[found]] == keys[found]
        return found, self.logits[where[found]]

    def add(self, keys: numpy.ndarray, logits: numpy.ndarray) -> None:
        """Answers this run paid for, written at the next `flush`."""
        self._new_keys.append(numpy.asarray(keys, dtype=numpy.int64))
        self._new_logits.append(numpy.asarray(logits, dtype=numpy.float32))

    def flush(self) -> None:
        """The answers added since the last flush, as one more shard."""
        from safetensors.numpy import save_file

        if not self._new_keys:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        meta_path = self.path / META
        if not meta_path.exists():
            meta = json.dumps({"teacher": self.teacher, "labels": self.labels}, indent=2) + "\n"
            write_whole(meta_path, lambda tmp: tmp.write_text(meta, encoding="utf8"), staged_name=f"{META}.{os.getpid()}.tmp")
        tensors = {"keys": numpy.concatenate(self._new_keys), "logits": numpy.concatenate(self._new_logits)}
        shard = self.path / f"{SHARD_PREFIX}{time.time_ns():020d}-{os.getpid()}{SHARD_SUFFIX}"
        write_whole(shard, lambda tmp: save_file(tensors, str(tmp)))
        self._new_keys, self._new_logits = [], []


def teacher_digest(weights: str, labels: Sequence[str], component_config: dict) -> str:
    """Whose answers a store keeps: the teacher's weights (their digest), its
    labels and its component's settings (its tokenizer's length limit among
    them).
    """
    settings = json.dumps({"labels": list(labels), "component": component_config}, sort_keys=True, default=str)
    return hashlib.sha256(f"{weights}\n{settings}".encode("utf8")).hexdigest()


def _is_teacher_folder(path: Path) -> bool:
    return path.is_dir() and len(path.name) == TEACHER_PREFIX and all(c in "0123456789abcdef" for c in path.name)
