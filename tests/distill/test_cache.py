"""The frozen models' cache: each example answered once, kept in rows for
the answered examples only, saved and read back as it was."""
import pytest
import torch

from spacy_dekd.distill.cache import OutputCache
from spacy_dekd.distill.types import TeacherOutput


def answers(calls, n_layers=3, width=4, n_labels=2):
    """A frozen model whose answer is a function of the id, counting its calls."""

    def forward(ids):
        calls.append(ids.tolist())
        x = ids.float()[:, None]
        return TeacherOutput(
            logits=torch.cat([x, -x], 1)[:, :n_labels],
            hidden_states=[x.repeat(1, width) + layer for layer in range(n_layers)],
            uncertainty=x[:, 0] / 10,
        )

    return forward


def test_each_example_is_answered_once_and_read_back_by_id():
    calls = []
    cache = OutputCache(100, with_hidden=True, with_uncertainty=True)
    out = cache.get(torch.tensor([7, 3, 7]), answers(calls))
    assert calls == [[3, 7]] and out.logits[:, 0].tolist() == [7, 3, 7]
    out = cache.get(torch.tensor([3, 50, 7]), answers(calls))
    assert calls == [[3, 7], [50]]
    assert out.logits[:, 0].tolist() == [3, 50, 7] and out.hidden_states[2][:, 0].tolist() == [5, 52, 9]
    assert out.uncertainty.tolist() == pytest.approx([0.3, 5.0, 0.7])
    assert cache.n_forward == 3 and cache.n_requested == 6
    assert cache.filled.nonzero().flatten().tolist() == [3, 7, 50]


def test_storage_follows_the_answers_not_the_pool():
    # A pool of a million texts, 5,000 answered: room for at most twice the
    # answers (it doubles as it fills), not for a million rows.
    cache = OutputCache(1_000_000, with_hidden=True)
    forward = answers([], n_layers=13, width=768)
    for start in range(0, 5_000, 500):
        cache.get(torch.arange(start * 150, start * 150 + 500 * 150, 150), forward)
    per_row = 2 * 4 + 13 * 768 * 4
    assert cache.n_rows == 5_000 and cache.nbytes <= 2 * 5_000 * per_row
    assert cache.nbytes < 1_000_000 * per_row / 90


def test_a_saved_cache_reads_back_equal_and_an_old_one_still_reads(tmp_path):
    calls = []
    cache = OutputCache(40, with_hidden=True)
    cache.get(torch.tensor([5, 1, 30]), answers(calls))
    cache.to_disk(tmp_path / "cache.safetensors", tmp_path / "answers", "teacher")
    again = OutputCache(40, with_hidden=True).from_disk(tmp_path / "cache.safetensors", torch.device("cpu"), tmp_path / "answers", "teacher")
    ids = torch.tensor([30, 5, 1])
    before, after = cache.get(ids, answers(calls)), again.get(ids, answers(calls))
    assert torch.equal(before.logits, after.logits) and all(torch.equal(a, b) for a, b in zip(before.hidden_states, after.hidden_states))
    assert (again.n_forward, again.n_requested) == (3, 6) and calls == [[1, 5, 30]]
    # The formats of earlier releases: every row in the checkpoint, with a
    # slot per example or (before that) a row per example and a `filled` mask.
    from safetensors.torch import save_file

    slot = torch.full((40,), -1, dtype=torch.int64)
    slot[[5, 1]] = torch.tensor([0, 1])
    save_file({"slot": slot, "counts": torch.tensor([2, 2]), "logits": torch.tensor([[5.0, -5.0], [1.0, -1.0]])}, str(tmp_path / "slots.safetensors"))
    old = OutputCache(40, with_hidden=False).from_disk(tmp_path / "slots.safetensors", torch.device("cpu"))
    assert old.get(torch.tensor([5, 1]), answers(calls)).logits[:, 0].tolist() == [5.0, 1.0]
    filled = torch.zeros(40, dtype=torch.bool)
    filled[[1, 5]] = True
    logits = torch.zeros(40, 2)
    logits[1], logits[5] = torch.tensor([1.0, -1.0]), torch.tensor([5.0, -5.0])
    save_file({"filled": filled, "counts": torch.tensor([2, 2]), "logits": logits}, str(tmp_path / "old.safetensors"))
    old = OutputCache(40, with_hidden=False).from_disk(tmp_path / "old.safetensors", torch.device("cpu"))
    assert old.get(torch.tensor([5, 1]), answers(calls)).logits[:, 0].tolist() == [5.0, 1.0]
    assert old.get(torch.tensor([9]), answers(calls)).logits[:, 0].tolist() == [9.0] and calls[-1] == [9]


def test_each_save_appends_the_new_answers_and_never_rewrites_a_shard(tmp_path):
    cache, folder = OutputCache(1000, with_hidden=True), tmp_path / "answers"
    cache.get(torch.arange(0, 100), answers([]))
    cache.to_disk(tmp_path / "c1.safetensors", folder, "teacher")
    first = folder / "teacher-0000000000-0000000100.safetensors"
    written = first.read_bytes()
    cache.to_disk(tmp_path / "c1.safetensors", folder, "teacher")  # nothing new: no shard
    cache.get(torch.arange(50, 130), answers([]))  # 30 new answers
    cache.to_disk(tmp_path / "c2.safetensors", folder, "teacher")
    assert sorted(p.name for p in folder.iterdir()) == [first.name, "teacher-0000000100-0000000130.safetensors"]
    assert first.read_bytes() == written
    again = OutputCache(1000, with_hidden=True).from_disk(tmp_path / "c2.safetensors", torch.device("cpu"), folder, "teacher")
    ids = torch.tensor([129, 3, 77])
    assert torch.equal(again.get(ids, answers([])).logits, cache.get(ids, answers([])).logits) and again.n_rows == 130


def test_a_resume_reads_the_shards_its_checkpoint_covers(tmp_path):
    cache, folder = OutputCache(100, with_hidden=False), tmp_path / "answers"
    cache.get(torch.arange(0, 10), answers([]))
    cache.to_disk(tmp_path / "c.safetensors", folder, "teacher")
    cache.get(torch.arange(10, 20), answers([]))
    cache.to_disk(tmp_path / "later.safetensors", folder, "teacher")  # a save whose set never committed
    resumed = OutputCache(100, with_hidden=False).from_disk(tmp_path / "c.safetensors", torch.device("cpu"), folder, "teacher")
    assert resumed.n_rows == 10 and [p.name for p in folder.iterdir()] == ["teacher-0000000000-0000000010.safetensors"]
    (folder / "teacher-0000000000-0000000010.safetensors").unlink()
    with pytest.raises(ValueError, match=r"the teacher's answers 0..10 are missing"):
        OutputCache(100, with_hidden=False).from_disk(tmp_path / "c.safetensors", torch.device("cpu"), folder, "teacher")