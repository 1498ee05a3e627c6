"""The batches of an epoch, as corpus ids, the same again after a resume.

Generators are seeded by the run's seed and the epoch, so that a run that
resumes mid-epoch sees the batches the uninterrupted run saw.
"""
import random
from typing import Callable, Iterable, Iterator, List, Optional, Sequence

from spacy.training import Example

Batcher = Callable[[Iterable[Example]], Iterable[List[Example]]]


def labelled_batches(batcher: Batcher, seed: int, examples: Sequence[Example], epoch: int) -> Iterator[List[int]]:
    """The labelled examples, shuffled for the epoch and batched."""
    order = list(range(len(examples)))
    random.Random(seed * 1000 + epoch).shuffle(order)
    position = {id(examples[i]): i for i in order}
    for batch in batcher([examples[i] for i in order]):
        yield [position[id(eg)] for eg in batch]


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
    made = [examples[i] for i in answered]  # unlabelled texts are made into Examples here
    position = {id(eg): i for eg, i in zip(made, answered)}
    batches = labelled + [[position[id(eg)] for eg in batch] for batch in batcher(made)]
    random.Random(seed * 1000 + epoch + 700).shuffle(batches)
    yield from batches
