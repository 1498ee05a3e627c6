"""Readers: local files of every format to Examples with cats."""
import csv
import os
import json
import subprocess
import sys
from pathlib import Path

import pytest
import spacy

from spacy_dekd.corpus import DatasetCorpus, create_docbin_corpus_v1, write_docbin

from .conftest import write_jsonl


@pytest.fixture
def nlp():
    return spacy.blank("en")


def test_jsonl_with_string_labels(nlp, tmp_path):
    path = write_jsonl([{"text": "good", "label": "pos"}, {"text": "bad", "label": "neg"}], tmp_path / "a.jsonl")
    examples = list(DatasetCorpus(path)(nlp))
    assert [eg.reference.cats for eg in examples] == [{"neg": 0.0, "pos": 1.0}, {"neg": 1.0, "pos": 0.0}]
    assert examples[0].predicted.text == "good" and not examples[0].predicted.cats


def test_int_labels_with_names_and_tsv(nlp, tmp_path):
    path = tmp_path / "a.tsv"
    with path.open("w", newline="") as file_:
        writer = csv.writer(file_, delimiter="\t")
        writer.writerow(["sentence", "y"])
        writer.writerows([["good", 1], ["bad", 0], ["fine", 1]])
    corpus = DatasetCorpus(path, text_field="sentence", label_field="y", labels=["negative", "positive"])
    cats = [eg.reference.cats for eg in corpus(nlp)]
    assert cats[1] == {"negative": 1.0, "positive": 0.0}


def test_csv_and_parquet(nlp, tmp_path):
    import datasets

    ds = datasets.Dataset.from_dict(
        {"text": ["a", "b", "c"], "label": [0, 1, 0]},
        features=datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=["x", "y"])}),
    )
    ds.to_parquet(str(tmp_path / "a.parquet"))
    ds.to_csv(str(tmp_path / "a.csv"))
    from_parquet = [eg.reference.cats for eg in DatasetCorpus(tmp_path / "a.parquet")(nlp)]
    assert from_parquet[1] == {"x": 0.0, "y": 1.0}  # ClassLabel names kept by parquet
    from_csv = [eg.reference.cats for eg in DatasetCorpus(tmp_path / "a.csv", labels=["x", "y"])(nlp)]
    assert from_csv == from_parquet


def test_limit_and_shuffle_seed(nlp, tmp_path):
    rows = [{"text": f"t{i}", "label": "a" if i % 2 else "b"} for i in range(20)]
    path = write_jsonl(rows, tmp_path / "a.jsonl")
    first = [eg.predicted.text for eg in DatasetCorpus(path, limit=5)(nlp)]
    assert first == [f"t{i}" for i in range(5)]
    one = [eg.predicted.text for eg in DatasetCorpus(path, limit=5, shuffle_seed=1)(nlp)]
    two = [eg.predicted.text for eg in DatasetCorpus(path, limit=5, shuffle_seed=1)(nlp)]
    assert one == two and one != first


def test_multilabel_lists(nlp, tmp_path):
    path = write_jsonl([{"text": "a", "tags": ["x", "z"]}, {"text": "b", "tags": []}], tmp_path / "m.jsonl")
    cats = [eg.reference.cats for eg in DatasetCorpus(path, label_field="tags", labels=["x", "y", "z"], multilabel=True)(nlp)]
    assert cats == [{"x": 1.0, "y": 0.0, "z": 1.0}, {"x": 0.0, "y": 0.0, "z": 0.0}]


def test_docbin_round_trip_keeps_pairs(nlp, tmp_path):
    path = write_jsonl([{"p": "a", "h": "b", "label": "yes"}, {"p": "c", "h": "d", "label": "no"}], tmp_path / "p.jsonl")
    n = write_docbin(DatasetCorpus(path, text_field="p", pair_field="h")(nlp), tmp_path / "p.spacy")
    assert n == 2
    examples = list(create_docbin_corpus_v1(tmp_path / "p.spacy")(nlp))
    assert [eg.predicted._.text_pair for eg in examples] == ["b", "d"]
    assert examples[0].reference.cats == {"no": 0.0, "yes": 1.0}


def test_bad_input(nlp, tmp_path):
    path = write_jsonl([{"text": "a", "label": "x"}], tmp_path / "a.jsonl")
    with pytest.raises(ValueError, match="Column 'sentence' not found"):
        list(DatasetCorpus(path, text_field="sentence")(nlp))
    with pytest.raises(ValueError, match="not in the reader's labels"):
        list(DatasetCorpus(path, labels=["y", "z"])(nlp))
    with pytest.raises(ValueError, match="not a local file"):
        list(DatasetCorpus(tmp_path / "missing.jsonl")(nlp))
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="Cannot read"):
        list(DatasetCorpus(tmp_path / "a.txt")(nlp))


def test_bad_files_are_one_line_errors(nlp, tmp_path):
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text,label\ncafé crème,positive\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"not UTF-8 \(line 2, byte 0xe9 at column 4\); save it as UTF-8"):
        list(DatasetCorpus(latin)(nlp))
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(ValueError, match="the file is empty"):
        list(DatasetCorpus(empty)(nlp))
    header_only = tmp_path / "header.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(ValueError, match="header.csv' as csv: it has no rows"):
        list(DatasetCorpus(header_only)(nlp))
    blank = tmp_path / "blank.csv"
    blank.write_text("text,label\ngood,positive\nbad,\n")
    with pytest.raises(ValueError, match=r"Row 2 of '.*blank.csv' has no label \(an empty cell, or a word such as NaN"):
        list(DatasetCorpus(blank)(nlp))
    nan = tmp_path / "nan.csv"
    nan.write_text("text,label\ngood,positive\nbad,NaN\n")
    with pytest.raises(ValueError, match=r"Row 2 of '.*nan.csv' has no label \(.* NaN, NA or null that the csv reader takes"):
        list(DatasetCorpus(nan)(nlp))


def test_build_corpus_keeps_the_rest_of_train_as_unlabelled_text(tmp_path):
    source = tmp_path / "movies"
    source.mkdir()
    lines = [f"{i}\t{(-1) ** i * 1.5}\tsentence number {i}" for i in range(1600)] + ["9999\t0\tneutral one"]
    (source / "movieReviewSnippets_GroundTruth.txt").write_text("\n".join(lines) + "\n", encoding="utf8")
    out = tmp_path / "corpus"
    script = Path(__file__).parents[1] / "scripts" / "build_corpus.py"
    result = subprocess.run(
        [sys.executable, str(script), str(source), str(out), "--n-train", "60", "--n-unlabeled", "30"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    read = lambda name: [json.loads(line)["text"] for line in (out / f"{name}.jsonl").read_text().splitlines()]
    train, dev, test = read("train"), read("dev"), read("test")
    unlabeled = (out / "unlabeled.txt").read_text(encoding="utf8").splitlines()
    assert (len(train), len(dev), len(test), len(unlabeled)) == (60, 500, 1000, 30)
    assert not set(unlabeled) & (set(train) | set(dev) | set(test))
    assert "neutral one" not in unlabeled  # zero scores are dropped everywhere


def test_a_local_file_never_touches_the_network(tmp_path):
    """Without the offline variables, reading a local jsonl makes no DNS
    lookup (datasets' load_dataset resolved its builder on the hub)."""
    import subprocess
    import sys

    data = write_jsonl([{"text": "a good film", "label": "positive"}], tmp_path / "local.jsonl")
    code = (
        "import socket, sys\n"
        "calls = []\n"
        "def refuse(*args, **kwargs):\n"
        "    calls.append(args[:1])\n"
        "    raise OSError('no network in this test')\n"
        "socket.getaddrinfo = socket.create_connection = refuse\n"
        "import spacy\n"
        "from spacy_dekd.corpus import DatasetCorpus\n"
        f"n = len(list(DatasetCorpus({str(data)!r})(spacy.blank('en'))))\n"
        "print(n, calls)\n"
    )
    env = {key: value for key, value in os.environ.items() if key not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1 []"


def test_read_texts_reads_a_folder_as_spacy_distill_reads_unlabelled_text(tmp_path):
    from spacy_dekd.corpus import read_texts

    folder = tmp_path / "more_text"
    (folder / "part").mkdir(parents=True)
    (folder / "b.txt").write_text("second file\n\nits other line\n", encoding="utf8")
    (folder / "part" / "a.txt").write_text("a nested file\n", encoding="utf8")
    (folder / "notes.md").write_text("not text to read\n", encoding="utf8")
    expected = [eg.text for eg in spacy.training.PlainTextCorpus(folder)(spacy.blank("en"))]
    assert read_texts(folder) == expected and sorted(expected) == ["a nested file", "its other line", "second file"]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no .txt files"):
        read_texts(tmp_path / "empty")
