"""Where spacy-dekd may write, and whole-folder replacement (spacy_dekd/files.py)."""
import os

import pytest

from spacy_dekd.files import OutputError, check_output, config_inputs, replace_folder, write_whole


def test_replace_folder_puts_the_new_folder_in_place_of_the_old(tmp_path):
    out = tmp_path / "model"
    new = tmp_path / "model.partial"
    new.mkdir()
    (new / "a.txt").write_text("new", encoding="utf8")
    replace_folder(new, out)  # nothing there before
    assert (out / "a.txt").read_text(encoding="utf8") == "new" and not new.exists()
    again = tmp_path / "model.partial"
    again.mkdir()
    (again / "b.txt").write_text("newer", encoding="utf8")
    replace_folder(again, out)  # the old folder goes, none of its files stay
    assert sorted(p.name for p in out.iterdir()) == ["b.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_check_output_refuses_what_writing_would_lose(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("text,label\n", encoding="utf8")
    pipeline = tmp_path / "pipeline"
    (pipeline / "textcat").mkdir(parents=True)
    inputs = [data, pipeline, "en_core_web_sm", None]  # a package name and None are passed over
    cases = {
        data: "is one of the inputs",  # the training csv as the output
        pipeline: "is one of the inputs",  # quantize PIPE PIPE
        tmp_path: "holds the input",  # replacing it would take the inputs with it
        pipeline / "int8": "is inside the input",
    }
    for output, expected in cases.items():
        with pytest.raises(OutputError, match=expected):
            check_output(output, inputs)
    notes = tmp_path / "notes.txt"
    notes.write_text("mine", encoding="utf8")
    with pytest.raises(OutputError, match="'.*notes.txt' is a file: a folder is written there"):
        check_output(notes, inputs)
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output(notes / "teacher", inputs)
    with pytest.raises(OutputError, match="is a folder: a file is written there"):
        check_output(tmp_path / "pipeline" / "textcat", [], folder=False)
    # What may be written: a new folder beside the inputs, a file over an old file.
    check_output(tmp_path / "teacher", inputs)
    check_output(notes, [data], folder=False)
    assert notes.read_text(encoding="utf8") == "mine"


def test_check_output_names_a_folder_it_cannot_write(tmp_path, monkeypatch):
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path / "ro") else real(path, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(OutputError, match=r"Cannot write into '.*ro' \(permission denied\): choose another --output"):
        check_output(tmp_path / "ro" / "out", option="--output")


def test_config_inputs_are_the_paths_a_config_reads(tmp_path):
    train = tmp_path / "train.csv"
    train.write_text("text,label\n", encoding="utf8")
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    config = {
        "paths": {"train": str(train), "dev": str(tmp_path / "missing.csv"), "vectors": None},
        "corpora": {"train": {"path": str(train), "text_field": "text"}},
        "components": {"textcat": {"factory": "textcat", "model": {"name": str(encoder)}}},
    }
    assert sorted(set(config_inputs(config))) == sorted([str(train), str(encoder)])


def test_a_file_is_written_whole_or_not_at_all(tmp_path):
    path = tmp_path / "answers.bin"
    write_whole(path, lambda tmp: tmp.write_bytes(b"first"))
    umask = os.umask(0)
    os.umask(umask)
    assert path.read_bytes() == b"first" and path.stat().st_mode & 0o777 == 0o666 & ~umask

    def fails(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_whole(path, fails)
    assert path.read_bytes() == b"first" and sorted(p.name for p in tmp_path.iterdir()) == ["answers.bin"]
