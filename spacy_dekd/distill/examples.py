"""The examples of a run by corpus id, the unlabelled ones kept as text.

A spaCy `Example` holds two Docs: about 27 KiB for a movie sentence. The
labelled examples are few and kept as read. The unlabelled pool is made into
an Example again, as spaCy's `PlainTextCorpus` makes it, only when a step, a
query round or a frozen model needs it, and is kept as:

- `TextPool`, for plain text files (`spacy.PlainTextCorpus.v1` without
  length limits): the texts stay on disk, read with pread, and the pool holds
  16 bytes a text (where each line starts and ends), found in one streaming pass that
  also checks the encoding, skips blank lines and hashes the files. A file
  changed on disk after that pass would be read at the old places:
  `check_unchanged` (at each epoch and query round) stops the run instead;
- a list of texts (and sentence pairs), for any other reader, read through
  it once: the size of the text.
"""
import hashlib
import json
import os
from array import array
from pathlib import Path
from typing import Any, Callable, Iterable, List, Optional, Sequence, Tuple, Union, overload

import numpy

from spacy.language import Language
from spacy.tokens import Doc
from spacy.training import Example

from ..files import not_utf8
from ..models.classifier import install_extensions
from ..pipeline.textcat import docs_with_pairs
from .checkpoint import corpus_fingerprint

Text = Tuple[str, Optional[str]]  # a text and its sentence pair, if any


class TextPool(Sequence[Text]):
    """The non-blank lines of plain text files, read from disk when asked for.

    Build it with `TextPool.read(paths)`. `pool[i]` is the i-th text, with no
    sentence pair, as `PlainTextCorpus` gives it (line ends stripped).
    `fingerprint` holds the files' SHA-256 and the counts, for `--resume`.
    """

    def __init__(
        self, paths: List[Path], spans: numpy.ndarray, file_ends: numpy.ndarray, fingerprint: dict,
        stats: List[Tuple[int, int, int]],
    ) -> None:
        self.paths = paths
        self.spans = spans  # (n, 2) int64: each text's start and end in the files laid end to end
        self.file_ends = file_ends  # (files,) where each file ends in that layout
        self.fingerprint = fingerprint
        self.stats = stats  # each file's _stat when it was read
        self._files: List[Optional[int]] = [None] * len(paths)  # descriptors, opened when first read

    @classmethod
    def read(cls, paths: Sequence[Path]) -> "TextPool":
        """One streaming pass over the files.

        RAISES ValueError: a file is not UTF-8 text (the line and the byte
            are named). A pool of blank lines alone is empty: the caller says so.
        """
        starts, ends, file_ends, stats = array("q"), array("q"), [], []
        digest, base, n_blank = hashlib.sha256(), 0, 0
        for path in paths:
            with open(path, "rb") as f:
                stats.append(_stat(path))
                offset = 0
                for number, line in enumerate(f, 1):
                    digest.update(line)
                    content = line.rstrip(b"\r\n")
                    _check_text(content, path, number)
                    if content.strip():
                        starts.append(base + offset)
                        ends.append(base + offset + len(content))
                    else:
                        n_blank += 1
                    offset += len(line)
            base += offset
            file_ends.append(base)
        fingerprint = {"texts": len(starts), "blank": n_blank, "sha256": digest.hexdigest()}
        spans = numpy.stack([numpy.frombuffer(starts, dtype=numpy.int64), numpy.frombuffer(ends, dtype=numpy.int64)], 1)
        return cls(list(paths), spans, numpy.asarray(file_ends, dtype=numpy.int64), fingerprint, stats)

    def check_unchanged(self) -> None:
        """RAISES ValueError: a file was rewritten, replaced or removed since
        it was read (its size, modification time or inode differ), so the
        places of its texts no longer hold.
        """
        for path, seen in zip(self.paths, self.stats):
            try:
                now = _stat(path)
            except OSError:
                raise ValueError(f"'{path}' was removed while the run read it") from None
            if now != seen:
                raise ValueError(f"'{path}' was changed on disk while the run read it")

    @property
    def n_blank(self) -> int:
        return int(self.fingerprint["blank"])

    def __len__(self) -> int:
        return len(self.spans)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        start, end = (int(x) for x in self.spans[index])
        f = int(numpy.searchsorted(self.file_ends, start, side="right"))
        file_start = int(self.file_ends[f - 1]) if f > 0 else 0
        return os.pread(self._fd(f), end - start, start - file_start).decode("utf8"), None

    def _fd(self, f: int) -> int:
        # pread, not mmap: the page cache holds the file, not the process's
        # RSS (a mapped 1M-line pool counts ~75 bytes a text once read).
        fd = self._files[f]
        if fd is None:
            fd = self._files[f] = os.open(self.paths[f], os.O_RDONLY)
        return fd

    def __del__(self) -> None:
        for fd in getattr(self, "_files", []):
            if fd is not None:
                os.close(fd)


def _stat(path: Path) -> Tuple[int, int, int]:
    """What tells a file rewritten: its size, modification time and inode."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns, st.st_ino


def _check_text(line: bytes, path: Path, number: int) -> None:
    if b"\0" in line:
        raise ValueError(f"'{path}' is not a text file: line {number} holds a NUL byte (save it as UTF-8 text, one text a line)")
    where = not_utf8(line, first_line=number)
    if where is not None:
        raise ValueError(f"'{path}' is not UTF-8: {where} (save it as UTF-8 text, one text a line)")


class RunExamples(Sequence[Example]):
    """Labelled examples (ids 0 .. n_labelled - 1), then unlabelled texts.

    nlp (Language): Makes a text's Doc (`nlp.make_doc`).
    labelled (List[Example]): As the training corpus gave them.
    texts (Sequence[Text]): The unlabelled pool: a `TextPool` or a list.
    """

    def __init__(self, nlp: Language, labelled: List[Example], texts: Sequence[Text]) -> None:
        self.nlp = nlp
        self.labelled = labelled
        self.texts = texts
        self.n_labelled = len(labelled)

    def __len__(self) -> int:
        return self.n_labelled + len(self.texts)

    @overload
    def __getitem__(self, index: int) -> Example: ...

    @overload
    def __getitem__(self, index: slice) -> List[Example]: ...

    def __getitem__(self, index: Union[int, slice]) -> Union[Example, List[Example]]:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if index < self.n_labelled:
            return self.labelled[index]
        doc = self.doc(index)
        return Example(doc, doc.copy())

    def doc(self, index: int) -> Doc:
        """The doc the student and the frozen models read for an id: all a
        prediction needs, without the Example around it (for a pool text,
        an Example costs as much again as its Doc).
        """
        if index < 0:
            index += len(self)
        if index < self.n_labelled:
            return docs_with_pairs([self.labelled[index]])[0]
        text, pair = self.texts[index - self.n_labelled]
        doc = self.nlp.make_doc(text)
        if pair is not None:
            doc._.text_pair = pair
        return doc

    def text(self, index: int) -> Text:
        """The text (and sentence pair) of an id, without making its Doc."""
        if index < 0:
            index += len(self)
        if index < self.n_labelled:
            return texts_of([self.labelled[index]])[0]
        return self.texts[index - self.n_labelled]

    def docs(self, ids: Sequence[int]) -> "View":
        """The docs of some ids, made as they are read."""
        return View(ids, self.doc)

    def check_unchanged(self) -> None:
        """RAISES ValueError: the pool's files changed since they were read."""
        if isinstance(self.texts, TextPool):
            self.texts.check_unchanged()

    def fingerprint(self) -> dict:
        """What `--resume` checks the corpora against: the labelled examples
        (texts and labels) and the pool (its files' digest, or its texts').
        """
        labelled = corpus_fingerprint((eg.text for eg in self.labelled), (eg.reference.cats for eg in self.labelled))
        if isinstance(self.texts, TextPool):
            return {"labelled": labelled, "pool": self.texts.fingerprint}
        pool = corpus_fingerprint((json.dumps(text) for text in self.texts), ({} for _ in self.texts))
        return {"labelled": labelled, "pool": pool}


class View(Sequence[Any]):
    """Some of a run's examples (or their docs) in the order of their ids,
    each made when it is read; `part` is a lazy slice.
    """

    def __init__(self, ids: Sequence[int], make: Callable[[int], Any]) -> None:
        self.ids = ids
        self.make = make

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.make(i) for i in self.ids[index]]
        return self.make(self.ids[index])

    def part(self, start: int, end: int) -> "View":
        return View(self.ids[start:end], self.make)


def texts_of(examples: Iterable[Example]) -> List[Text]:
    """What an unlabelled example is kept as: its text and sentence pair."""
    install_extensions()
    return [(eg.text, eg.predicted._.text_pair if eg.predicted._.text_pair is not None else eg.reference._.text_pair) for eg in examples]
