"""The unlabelled pool kept on disk: the texts spaCy's reader gives, 16 bytes a text."""
import pytest
import spacy
from spacy.training import PlainTextCorpus

from spacy_dekd.distill.examples import RunExamples, TextPool


def spacy_texts(path):
    return [eg.text for eg in PlainTextCorpus(path)(spacy.blank("en")) if eg.text.strip()]


def test_the_pool_holds_the_texts_spacys_reader_gives(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_bytes("one text\r\n\n   \ntwo: ünïcode ✓\nthree  \n\nlast, no newline".encode("utf8"))
    pool = TextPool.read([path])
    assert [text for text, _ in pool] == spacy_texts(path) == ["one text", "two: ünïcode ✓", "three  ", "last, no newline"]
    assert all(pair is None for _, pair in pool)
    assert pool.fingerprint["texts"] == 4 and pool.n_blank == 3
    assert pool[-1] == ("last, no newline", None) and pool[1:3] == [("two: ünïcode ✓", None), ("three  ", None)]
    assert pool.spans.nbytes == 16 * len(pool)


def test_a_folder_of_files_is_one_pool_in_spacys_order(tmp_path):
    (tmp_path / "b.txt").write_text("b1\nb2\n", encoding="utf8")
    (tmp_path / "a.txt").write_text("a1\n", encoding="utf8")
    (tmp_path / "notes.md").write_text("not read\n", encoding="utf8")
    from spacy.training.corpus import walk_corpus

    pool = TextPool.read(walk_corpus(tmp_path, ".txt"))
    assert [text for text, _ in pool] == spacy_texts(tmp_path)
    assert sorted(text for text, _ in pool) == ["a1", "b1", "b2"]


def test_the_fingerprint_changes_with_the_file(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("a\nb\n", encoding="utf8")
    before = TextPool.read([path]).fingerprint
    path.write_text("a\nc\n", encoding="utf8")
    assert TextPool.read([path]).fingerprint["sha256"] != before["sha256"]


def test_a_file_that_is_not_utf8_names_the_line_and_the_byte(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("fine\ncafé au lait\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"is not UTF-8: line 2, byte 0xe9 at column 4"):
        TextPool.read([path])


def test_a_binary_file_is_refused(tmp_path):
    path = tmp_path / "model.bin"
    path.write_bytes(b"text\n\x00\x01\x02\x03\n")
    with pytest.raises(ValueError, match="is not a text file: line 2 holds a NUL byte"):
        TextPool.read([path])


def test_run_examples_make_an_example_of_a_pool_text_when_read(tmp_path):
    path = tmp_path / "pool.txt"
    path.write_text("first text\nsecond text\n", encoding="utf8")
    nlp = spacy.blank("en")
    examples = RunExamples(nlp, [], TextPool.read([path]))
    assert len(examples) == 2 and examples[1].text == "second text" and not examples[1].reference.cats
    assert examples.fingerprint()["pool"]["texts"] == 2
