"""The store of teacher answers that runs share: a text is answered once for
all of them, a folder another teacher wrote is refused, and what the cache
takes from it is counted apart from what it ran."""
import numpy
import pytest
import torch

from spacy_dekd.distill.cache import OutputCache
from spacy_dekd.distill.store import AnswerStore, teacher_digest, text_key
from spacy_dekd.distill.types import TeacherOutput

LABELS = ["negative", "positive"]
TEACHER = teacher_digest("weights", LABELS, {"max_length": 64})


def keys_of(ids):
    return numpy.array([text_key(f"text {i}") for i in ids.tolist()], dtype=numpy.int64)


def forward(calls):
    def run(ids):
        calls.append(ids.tolist())
        x = ids.float()[:, None]
        return TeacherOutput(logits=torch.cat([x, -x], 1))

    return run


def opened(path, teacher=TEACHER):
    store = AnswerStore.open(path, teacher, LABELS)
    store.read(store.shards())
    return store


def test_keys_tell_texts_and_pairs_apart():
    assert text_key("a film") == text_key("a film")
    assert len({text_key("a film"), text_key("a film", ""), text_key("a film", "b"), text_key("a filmb")}) == 4


def test_a_second_run_takes_the_first_runs_answers_and_asks_for_the_rest(tmp_path):
    path = tmp_path / "answers"
    first = OutputCache(100, with_hidden=False)
    first.use_store(opened(path), keys_of, torch.device("cpu"))
    calls = []
    first.get(torch.tensor([3, 7, 3]), forward(calls))
    assert not path.exists()  # nothing written before a save
    first.store.flush()
    assert (first.n_forward, first.n_stored) == (2, 0)

    second = OutputCache(100, with_hidden=False)
    second.use_store(opened(path), keys_of, torch.device("cpu"))
    calls = []
    out = second.get(torch.tensor([7, 50, 3]), forward(calls))
    assert calls == [[50]] and out.logits[:, 0].tolist() == [7, 50, 3]
    assert (second.n_forward, second.n_stored) == (1, 2)
    second.store.flush()
    assert len(opened(path)) == 3 and len(opened(path).shards()) == 2


def test_runs_side_by_side_each_add_a_shard_and_the_first_copy_is_read(tmp_path):
    path = tmp_path / "answers"
    a, b = opened(path), opened(path)
    a.add(numpy.array([1, 2]), numpy.array([[1.0, 0.0], [2.0, 0.0]], dtype=numpy.float32))
    a.flush()
    b.add(numpy.array([2, 3]), numpy.array([[9.0, 0.0], [3.0, 0.0]], dtype=numpy.float32))
    b.flush()
    both = opened(path)
    found, logits = both.lookup(numpy.array([3, 4, 2, 1]))
    assert found.tolist() == [True, False, True, True]
    assert logits[:, 0].tolist() == [3.0, 2.0, 1.0]
    assert not list(path.glob("*.tmp"))


@pytest.mark.parametrize("make,expected", [
    (lambda p: p.write_text("x"), "it is a file"),
    (lambda p: (p.mkdir(), (p / "train.csv").write_text("x")), "a folder of other files"),
])
def test_a_path_that_is_not_a_store_is_refused(tmp_path, make, expected):
    path = tmp_path / "answers"
    make(path)
    with pytest.raises(ValueError, match=expected):
        AnswerStore.open(path, TEACHER, LABELS)


def test_each_teacher_reads_its_own_answers(tmp_path):
    path = tmp_path / "answers"
    store = opened(path)
    store.add(numpy.array([1]), numpy.ones((1, 2), dtype=numpy.float32))
    store.flush()
    retrained = opened(path, teacher=teacher_digest("new weights", LABELS, {"max_length": 64}))
    assert len(retrained) == 0 and retrained.path != store.path
    assert len(opened(path)) == 1 and sorted(p.name for p in path.iterdir()) == sorted([store.path.name])


def test_the_teacher_digest_covers_weights_labels_and_settings():
    assert TEACHER == teacher_digest("weights", LABELS, {"max_length": 64})
    others = [teacher_digest("w", LABELS, {"max_length": 64}), teacher_digest("weights", LABELS[::-1], {"max_length": 64}),
              teacher_digest("weights", LABELS, {"max_length": 128})]
    assert len({TEACHER, *others}) == 4


def test_a_cache_with_hidden_states_takes_no_store(tmp_path):
    with pytest.raises(ValueError, match="logits alone"):
        OutputCache(10, with_hidden=True).use_store(opened(tmp_path / "a"), keys_of, torch.device("cpu"))


def test_the_stored_count_survives_a_save(tmp_path):
    cache = OutputCache(100, with_hidden=False)
    store = opened(tmp_path / "answers")
    store.add(keys_of(torch.tensor([4])), numpy.array([[4.0, -4.0]], dtype=numpy.float32))
    store.flush()
    cache.use_store(opened(tmp_path / "answers"), keys_of, torch.device("cpu"))
    cache.get(torch.tensor([4, 5]), forward([]))
    cache.to_disk(tmp_path / "cache.safetensors", tmp_path / "shards", "teacher")
    again = OutputCache(100, with_hidden=False).from_disk(tmp_path / "cache.safetensors", torch.device("cpu"), tmp_path / "shards", "teacher")
    assert (again.n_forward, again.n_stored, again.n_rows) == (1, 1, 2)
    assert again.get(torch.tensor([5, 4]), forward([])).logits[:, 0].tolist() == [5.0, 4.0]
