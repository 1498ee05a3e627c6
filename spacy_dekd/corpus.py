"""Readers: `datasets` builders and local files to spaCy Examples with `cats`.

`spacy-dekd.DatasetCorpus.v1` loads anything `datasets.load_dataset` can: a
hub name where a hub is reachable, or a local csv / tsv / json(l) / parquet
file. `spacy-dekd.DocBinCorpus.v1` reads `.spacy` files and keeps
`doc._.text_pair` on the predicted docs, which spaCy's `Corpus.v1` drops.
"""
import random
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin
from spacy.training import Corpus, Example
from spacy.training.corpus import walk_corpus
from spacy.util import registry

from .files import not_utf8
from .models.classifier import install_extensions

LOCAL_FORMATS = {
    ".csv": ("csv", {}),
    ".tsv": ("csv", {"delimiter": "\t"}),
    ".json": ("json", {}),
    ".jsonl": ("json", {}),
    ".parquet": ("parquet", {}),
}

Label = Union[int, str, Sequence[Union[int, str]]]


@registry.readers("spacy-dekd.DatasetCorpus.v1")
def create_dataset_corpus_v1(
    path: str,
    *,
    split: str = "train",
    text_field: str = "text",
    pair_field: Optional[str] = None,
    label_field: Optional[str] = "label",
    labels: Optional[List[str]] = None,
    multilabel: bool = False,
    limit: int = 0,
    shuffle_seed: Optional[int] = None,
) -> Callable[[Language], Iterable[Example]]:
    """Examples with `doc.cats` from a `datasets` dataset or a local file.

    path (str): A local .csv, .tsv, .json, .jsonl or .parquet file, or a
        dataset name for `datasets.load_dataset` where a hub is reachable.
    split (str): The split to read from a hub dataset.
    text_field (str): The column holding the text.
    pair_field (Optional[str]): The column holding the second text of a
        sentence pair, stored as `doc._.text_pair`.
    label_field (Optional[str]): The column holding the label: an int (an
        index into `labels` or the dataset's ClassLabel names), a string, or a
        list of them for multilabel data. None reads text alone, with no
        `doc.cats`: unlabelled text for `[distillation] unlabeled_corpus`.
    labels (Optional[List[str]]): All label names, in order. Taken from the
        dataset's ClassLabel feature, or collected from the data, when None.
    multilabel (bool): Whether a doc can have several labels.
    limit (int): Read at most this many examples (0: all), after shuffling.
    shuffle_seed (Optional[int]): Shuffle the rows with this seed first.
    RETURNS (Callable[[Language], Iterable[Example]]): The corpus.
    """
    return DatasetCorpus(
        path,
        split=split,
        text_field=text_field,
        pair_field=pair_field,
        label_field=label_field,
        labels=labels,
        multilabel=multilabel,
        limit=limit,
        shuffle_seed=shuffle_seed,
    )


class DatasetCorpus:
    """Reads the rows once, then yields fresh Examples on every call."""

    def __init__(
        self,
        path: Union[str, Path],
        *,
        split: str = "train",
        text_field: str = "text",
        pair_field: Optional[str] = None,
        label_field: Optional[str] = "label",
        labels: Optional[List[str]] = None,
        multilabel: bool = False,
        limit: int = 0,
        shuffle_seed: Optional[int] = None,
    ) -> None:
        self.path = str(path)
        self.split = split
        self.text_field = text_field
        self.pair_field = pair_field
        self.label_field = label_field
        self.labels = list(labels) if labels is not None else None
        self.multilabel = multilabel
        self.limit = limit
        self.shuffle_seed = shuffle_seed
        self._records: Optional[List[Dict[str, Any]]] = None

    def __call__(self, nlp: Language) -> Iterator[Example]:
        install_extensions()
        for record in self.records:
            predicted = nlp.make_doc(record["text"])
            predicted._.text_pair = record["pair"]
            reference = predicted.copy()
            reference.cats = dict(record["cats"])
            yield Example(predicted, reference)

    @property
    def records(self) -> List[Dict[str, Any]]:
        if self._records is None:
            self._records = self._read()
        return self._records

    def _read(self) -> List[Dict[str, Any]]:
        dataset = load_rows(self.path, self.split)
        columns = list(dataset.column_names)
        for field in (self.text_field, self.label_field, self.pair_field):
            if field is not None and field not in columns:
                raise ValueError(
                    f"Column '{field}' not found in '{self.path}' (columns: {columns}): "
                    "set text_field / pair_field / label_field in the reader config."
                )
        label_names = self.labels
        if label_names is None and self.label_field is not None:
            label_names = _class_label_names(dataset, self.label_field)
        rows = list(range(len(dataset)))
        if self.shuffle_seed is not None:
            random.Random(self.shuffle_seed).shuffle(rows)
        if self.limit:
            rows = rows[: self.limit]
        texts = dataset[self.text_field]
        pairs = dataset[self.pair_field] if self.pair_field else None
        if self.label_field is None:  # unlabelled text
            return [
                {"text": str(texts[i] or ""), "pair": None if pairs is None else str(pairs[i] or ""), "cats": {}}
                for i in rows
            ]
        raw_labels = dataset[self.label_field]
        values = [_label_names(raw_labels[i], label_names, f"Row {i + 1} of '{self.path}'") for i in rows]
        if label_names is None:
            label_names = sorted({name for names in values for name in names})
        records = []
        for i, names in zip(rows, values):
            unknown = set(names) - set(label_names)
            if unknown:
                raise ValueError(
                    f"Row {i} of '{self.path}' has label(s) {sorted(unknown)} not in "
                    f"the reader's labels {label_names}."
                )
            if not self.multilabel and len(names) != 1:
                raise ValueError(
                    f"Row {i} of '{self.path}' has {len(names)} labels but the reader "
                    "is not multilabel: set multilabel = true."
                )
            cats = {label: float(label in names) for label in label_names}
            records.append(
                {
                    "text": str(texts[i] or ""),
                    "pair": None if pairs is None else str(pairs[i] or ""),
                    "cats": cats,
                }
            )
        return records


def load_rows(path: str, split: str = "train") -> Any:
    """A `datasets.Dataset` from a local file, or from the hub by name."""
    import datasets

    local = Path(path)
    if local.exists():
        if local.suffix not in LOCAL_FORMATS:
            raise ValueError(
                f"Cannot read '{path}': use a {', '.join(LOCAL_FORMATS)} file."
            )
        builder, kwargs = LOCAL_FORMATS[local.suffix]
        if builder != "parquet":
            check_text_file(local)
        # The packaged readers, never load_dataset: it resolves the builder's
        # name against the hub (a DNS lookup) unless told to stay offline.
        read = {"csv": datasets.Dataset.from_csv, "json": datasets.Dataset.from_json, "parquet": datasets.Dataset.from_parquet}[builder]
        try:
            return read(str(local), **kwargs)
        except Exception as err:  # datasets wraps the reader's errors in several layers
            reason = _innermost(err)
            if "corresponds to no data" in reason:  # a csv header and nothing under it
                reason = "it has no rows"
            raise ValueError(f"Cannot read '{path}' as {builder}: {reason}.") from err
    try:
        return datasets.load_dataset(path, split=split)
    except Exception as err:  # datasets raises many types for a missing dataset
        raise ValueError(
            f"Cannot load dataset '{path}': it is not a local file and loading it "
            f"by name failed ({type(err).__name__}). Build the corpus with "
            "`spacy project run corpus`, or check the path."
        ) from err


def read_texts(path: Union[str, Path], text_field: str = "text") -> List[str]:
    """The texts of a file: a `.txt` file a text a line (blank lines left
    out), a `.spacy` DocBin, or a csv/tsv/json(l)/parquet file's text field;
    or of a folder's `.txt` files, found as spaCy's `PlainTextCorpus` finds
    them (`walk_corpus`, sorted), so a folder `spacy distill` reads as its
    unlabelled text reads the same here.
    """
    path = Path(path)
    if path.is_dir():
        with warnings.catch_warnings():  # spaCy's W090 for none: the error below says it in one line
            warnings.simplefilter("ignore")
            files = walk_corpus(path, ".txt")
        if not files:
            raise ValueError(f"Cannot read '{path}': the folder holds no .txt files.")
        return [text for file in files for text in read_texts(file)]
    if path.suffix == ".txt":
        check_text_file(path)
        with open(path, encoding="utf8") as f:
            return [line.strip() for line in f if line.strip()]
    nlp = spacy.blank("en")
    if path.suffix == ".spacy":
        return [doc.text for doc in DocBin().from_disk(path).get_docs(nlp.vocab)]
    corpus = DatasetCorpus(path, text_field=text_field, label_field=None)
    return [eg.reference.text for eg in corpus(nlp)]


def check_text_file(path: Path) -> None:
    """A text file to read must be UTF-8 and hold something."""
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"Cannot read '{path}': the file is empty.")
    where = not_utf8(data)
    if where is not None:
        raise ValueError(f"Cannot read '{path}': it is not UTF-8 ({where}); save it as UTF-8.")


def _innermost(err: BaseException) -> str:
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__  # type: ignore[assignment]
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _class_label_names(dataset: Any, field: str) -> Optional[List[str]]:
    feature = dataset.features.get(field)
    inner = getattr(feature, "feature", feature)  # Sequence(ClassLabel) for multilabel
    names = getattr(inner, "names", None)
    return list(names) if names else None


def _label_names(value: Label, label_names: Optional[List[str]], where: str) -> List[str]:
    """The label names of one row's label cell; `where` names the row."""
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(
            f"{where} has no label (an empty cell, or a word such as NaN, NA or null that the csv reader takes "
            "for a missing value): fill it in, or drop the row."
        )
    items = value if isinstance(value, (list, tuple)) else [value]
    names = []
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise ValueError(f"{where} has the label {item!r}: use ints or strings.")
        if isinstance(item, int):
            if label_names is None:
                names.append(str(item))
            elif 0 <= item < len(label_names):
                names.append(label_names[item])
            else:
                raise ValueError(f"{where} has the label index {item}, out of range for labels {label_names}.")
        else:
            names.append(item)
    return names


@registry.readers("spacy-dekd.DocBinCorpus.v1")
def create_docbin_corpus_v1(
    path: Path, *, limit: int = 0, shuffle: bool = False
) -> Callable[[Language], Iterable[Example]]:
    """spaCy's `Corpus.v1` over `.spacy` files, keeping `doc._.text_pair` on
    the predicted docs so that sentence pairs reach the model.
    """
    corpus = Corpus(path, limit=limit, shuffle=shuffle)

    def read(nlp: Language) -> Iterator[Example]:
        install_extensions()
        for eg in corpus(nlp):
            eg.predicted._.text_pair = eg.reference._.text_pair
            yield eg

    return read


def write_docbin(examples: Iterable[Example], path: Union[str, Path]) -> int:
    """Write the gold docs of the examples, cats and `doc._.text_pair`
    included, to a `.spacy` file. RETURNS (int): The number of docs.
    """
    docbin = DocBin(store_user_data=True)
    n = 0
    for eg in examples:
        docbin.add(eg.reference)
        n += 1
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    docbin.to_disk(tmp)
    tmp.replace(path)
    return n


def make_docs(nlp: Language, texts: Iterable[str], pairs: Optional[Iterable[str]] = None) -> List[Doc]:
    """Docs for prediction, with `doc._.text_pair` set when pairs are given."""
    install_extensions()
    docs = [nlp.make_doc(text) for text in texts]
    if pairs is not None:
        for doc, pair in zip(docs, pairs):
            doc._.text_pair = pair
    return docs
