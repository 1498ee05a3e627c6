"""Each mistake a user can make with `spacy distill`: exit 1, one line on
stderr naming what to change, no traceback, and no output folder touched."""
import json
import os

import pytest
from thinc.api import Config

from ..conftest import write_jsonl
from .conftest import DEKD_CFG, overrides, spacy_cli, student_config


def write_csv(path, text):
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf8"))
    return path


def bad_train_file(kind):
    def make(tmp_path, toy_data, models):
        files = {
            "empty": ("empty.jsonl", "\n"),
            "header_only": ("header.csv", "text,label\n"),
            "latin1": ("latin.csv", "text,label\ncafé crème,positive\nbad film,negative\n".encode("latin-1")),
            "empty_label": ("blank.csv", "text,label\ngood film,positive\nbad film,\n"),
        }
        name, content = files[kind]
        return {"paths.train": str(write_csv(tmp_path / name, content))}
    return make


def setting(**values):
    return lambda tmp_path, toy_data, models: values


CASES = {
    "empty corpus file": (bad_train_file("empty"), "the file is empty"),
    "header-only csv": (bad_train_file("header_only"), "it has no rows"),
    "latin-1 csv": (bad_train_file("latin1"), "not UTF-8 (line 2, byte 0xe9 at column 4)"),
    "empty label cell": (bad_train_file("empty_label"), "Row 2 of"),
    "selector ratio 0": (setting(**{"distillation.objective.selector.ratio": 0}), "(0, 1]"),
    "temperature 0": (setting(**{"distillation.temperature": 0}), "temperature must be > 0"),
    "eval_frequency 0": (setting(**{"distillation.eval_frequency": 0}), "eval_frequency"),
    "max_epochs 0": (setting(**{"distillation.max_epochs": 0}), "max_epochs: Input should be greater than or equal to 1 (1 or more)"),
    "max_epochs 0 with max_steps": (setting(**{"distillation.max_epochs": 0, "distillation.max_steps": 5}), "max_epochs: Input should be greater than or equal to 1"),
    "batcher size 0": (setting(**{"distillation.batcher.size": 0}), "no step to take"),
    "misspelt key": (setting(**{"distillation.max_epoch": 2}), "did you mean 'max_epochs'"),
    "unlabelled corpus not in the config": (
        setting(**{"distillation.unlabeled_corpus": "corpora.unlabeled"}), "The config has no [corpora.unlabeled]"
    ),
    "missing dev file": (lambda tmp_path, toy_data, models: {"paths.dev": str(tmp_path / "nope.jsonl")}, "Cannot read the dev corpus 'corpora.dev'"),
    "student deeper than the teacher": (
        setting(**{"distillation.student_init.layers": "uniform", "distillation.student_init.n_layers": 4,
                   "distillation.objective.alignment.n_layers": 5}),
        "Cannot align M=5",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_setting_or_file(models, toy_data, tmp_path, case):
    make, expected = CASES[case]
    over = {**overrides(toy_data, models["narrow"]), **make(tmp_path, toy_data, models)}
    out = tmp_path / "out"
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path)), "--assistant", str(models["assistant"]),
        "--output", str(out), *[f"--{k}={v}" for k, v in over.items()],
    )
    assert_one_line(result, expected)
    assert not out.exists()


def assert_one_line(result, expected):
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
    assert "Traceback" not in result.stdout + result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and "✘" in line]
    assert len(lines) == 1 and expected in lines[0], result.stderr[-2000:]


def test_a_spacy_textcat_teacher_with_student_from_teacher(models, toy_data, tmp_path):
    from .test_distill import train_bow_teacher

    teacher = train_bow_teacher(toy_data, tmp_path / "bow")
    over = overrides(toy_data, models["narrow"], **{"distillation.objective.alignment_weight": 0})
    cfg = student_config(tmp_path, teacher_only=True)
    result = spacy_cli("distill", str(teacher), str(cfg), "--output", str(tmp_path / "out"), *[f"--{k}={v}" for k, v in over.items()])
    assert_one_line(result, "copies layers of a transformer_textcat teacher")


def test_output_under_a_file(models, toy_data, tmp_path):
    (tmp_path / "file").write_text("x")
    over = overrides(toy_data, models["narrow"])
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)),
        "--output", str(tmp_path / "file" / "out"), *[f"--{k}={v}" for k, v in over.items()],
    )
    assert_one_line(result, "is a file, not a directory")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_output_parent_not_writable(models, toy_data, tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    parent.chmod(0o500)
    over = overrides(toy_data, models["narrow"])
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)),
        "--output", str(parent / "out"), *[f"--{k}={v}" for k, v in over.items()],
    )
    assert_one_line(result, "permission denied")


def test_labels_the_teacher_does_not_know(models, toy_data, tmp_path):
    other = write_jsonl([{"text": t, "label": l} for t, l in [("good", "yes"), ("bad", "no")] * 20], tmp_path / "yn.jsonl")
    config = Config().from_disk(DEKD_CFG, interpolate=False)
    config["corpora"]["train"]["labels"] = None
    cfg = tmp_path / "student.cfg"
    config.to_disk(cfg)
    over = overrides(toy_data, models["narrow"], **{"paths.train": str(other)})
    result = spacy_cli(
        "distill", str(models["teacher"]), str(cfg), "--assistant", str(models["assistant"]),
        "--output", str(tmp_path / "out"), *[f"--{k}={v}" for k, v in over.items()],
    )
    assert_one_line(result, "has label(s) ['no', 'yes'] the teacher does not know")


def test_a_resume_with_a_bigger_corpus_leaves_the_run_as_it_was(models, toy_data, tmp_path):
    cfg = student_config(tmp_path, teacher_only=True)
    out = tmp_path / "out"
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 2, "distillation.eval_frequency": 2})
    args = ["distill", str(models["teacher"]), str(cfg), "--output", str(out)]
    assert spacy_cli(*args, *[f"--{k}={v}" for k, v in over.items()]).returncode == 0
    before = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    rows = [json.loads(line) for line in toy_data["train"].read_text().splitlines()]
    bigger = write_jsonl(rows + rows[:20], tmp_path / "bigger.jsonl")
    over["paths.train"] = str(bigger)
    result = spacy_cli(*args, "--resume", *[f"--{k}={v}" for k, v in over.items()])
    assert_one_line(result, "corpus.labelled.examples, corpus.labelled.sha256, labelled_examples differ from when it started")
    assert {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == before


def test_verbose_shows_the_traceback(models, toy_data, tmp_path):
    over = overrides(toy_data, models["narrow"], **{"distillation.eval_frequency": 0})
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)), "-V",
        *[f"--{k}={v}" for k, v in over.items()],
    )
    assert result.returncode != 0 and "Traceback" in result.stderr and "eval_frequency" in result.stderr
