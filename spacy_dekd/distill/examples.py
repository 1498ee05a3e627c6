"""The examples of a run by corpus id, the unlabelled ones kept as text.

A spaCy `Example` holds two Docs: about 27 KiB for a movie sentence. The
labelled examples are few and kept as read; the unlabelled pool is read
through its reader once and kept as its texts (and sentence pairs), each
made into an Example again, as spaCy's `PlainTextCorpus` makes it, when a
step, a query round or a frozen model needs it. A pool then costs the size
of its text, not of its Docs.
"""
from typing import Iterable, Iterator, List, Optional, Sequence, Tuple, Union, overload

from spacy.language import Language
from spacy.training import Example

from ..models.classifier import install_extensions

Text = Tuple[str, Optional[str]]  # a text and its sentence pair, if any


class RunExamples(Sequence[Example]):
    """Labelled examples (ids 0 .. n_labelled - 1), then unlabelled texts.

    nlp (Language): Makes a text's Doc (`nlp.make_doc`).
    labelled (List[Example]): As the training corpus gave them.
    texts (List[Text]): The unlabelled pool.
    """

    def __init__(self, nlp: Language, labelled: List[Example], texts: List[Text]) -> None:
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
        text, pair = self.texts[index - self.n_labelled]
        doc = self.nlp.make_doc(text)
        if pair is not None:
            doc._.text_pair = pair
        return Example(doc, doc.copy())

    def view(self, ids: Sequence[int]) -> "ExampleView":
        """The examples of some ids, made as they are read."""
        return ExampleView(self, list(ids))

    def all_texts(self) -> Iterator[str]:
        yield from (eg.text for eg in self.labelled)
        yield from (text for text, _ in self.texts)

    def all_cats(self) -> Iterator[dict]:
        yield from (eg.reference.cats for eg in self.labelled)
        yield from ({} for _ in self.texts)


class ExampleView(Sequence[Example]):
    """Some of a run's examples, in the order of their ids."""

    def __init__(self, examples: RunExamples, ids: List[int]) -> None:
        self.examples = examples
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index):  # type: ignore[override]
        if isinstance(index, slice):
            return [self.examples[i] for i in self.ids[index]]
        return self.examples[self.ids[index]]


def texts_of(examples: Iterable[Example]) -> List[Text]:
    """What an unlabelled example is kept as: its text and sentence pair."""
    install_extensions()
    return [(eg.text, eg.predicted._.text_pair if eg.predicted._.text_pair is not None else eg.reference._.text_pair) for eg in examples]
