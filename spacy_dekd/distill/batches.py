"""The batches of an epoch, as corpus ids, the same again after a resume.

Generators are seeded by the run's seed and the epoch, so that a run that
resumes mid-epoch sees the batches the uninterrupted run saw.
"""
import random
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Sequence

from spacy.training import Example

Batcher = Callable[[Iterable[Example]], Iterable[List[Example]]]


def labelled_batches(batcher: Batcher, seed: int, examples: Sequence[Example], epoch: int) -> Iterator[List[int]]:
    """The labelled examples, shuffled for the epoch and batched."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    return batched_ids(batcher, examples, order)


def batched_ids(batcher: Batcher, examples: Sequence[Example], order: List[int]) -> Iterator[List[int]]:
    """The batcher's batches of the examples of `order`, as their ids. Each
    Example is made as the batcher reads it and dropped once its batch is
    turned into ids, so that batching N answered texts holds a batch of
    Examples at a time, not N.
    """
    position: Dict[int, int] = {}  # id() of an Example the batcher holds → its corpus id

    def made() -> Iterator[Example]:
        for i in order:
            eg = examples[i]
            position[id(eg)] = i
            yield eg

    for batch in batcher(made()):
        yield [position.pop(id(eg)) for eg in batch]


def epoch_batches(
    batcher: Batcher, seed: int, examples: Sequence[Example], n_labelled: int, epoch: int, answered: Optional[List[int]],
) -> Iterator[List[int]]:
    """An epoch's batches: the labelled examples, and once query rounds have
    answered unlabelled ones (`answered`: their corpus ids) those in batches
    of their own, the two kinds of batch in a shuffled order.
    """
    labelled = list(labelled_batches(batcher, seed, examples[:n_labelled], epoch))
    if answered is None:
        yield from labelled
        return
    answered = list(answered)
    random.Random(seed * 1000 + epoch + 500).shuffle(answered)
    batches = labelled + list(batched_ids(batcher, examples, answered))
    random.Random(seed * 1000 + epoch + 700).shuffle(batches)
    yield from batches
