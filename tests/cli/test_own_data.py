"""The workflow on a user's own data: a teacher no better than the majority
class is stopped in one line, its dev scores are computed once, lengths
come from the data, and the steps say what they do (and skip what the
student does not need)."""
import importlib.util
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy
import pytest
import spacy
import torch

from spacy_dekd.corpus import DatasetCorpus
from spacy_dekd.distill.teacher_check import dev_scores, record_dev_scores
from spacy_dekd.loggers import progress_logger_v1

from ..conftest import write_jsonl
from .conftest import ROOT, overrides, spacy_cli, student_config
from .test_bad_input import assert_one_line


def script(name, *args, cwd=None):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def load_script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


@pytest.fixture(scope="module")
def majority_teacher(models, tmp_path_factory):
    """The trained teacher with its 'positive' logit raised by 20: it ranks
    texts as well as before (macro AUC unchanged), and answers 'positive'
    for every one of them."""
    nlp = spacy.load(models["teacher"])
    pipe = nlp.get_pipe("textcat")
    with torch.no_grad():
        pipe.shim.module.head.bias[pipe.labels.index("positive")] += 20.0
    path = tmp_path_factory.mktemp("majority") / "teacher"
    nlp.to_disk(path)
    return path


def distill_args(toy_data, models, tmp_path, **extra):
    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 1, **extra})
    cfg = student_config(tmp_path, teacher_only=True)
    return [str(cfg), "--output", str(tmp_path / "out"), *[f"--{k}={v}" for k, v in over.items()]]


def test_a_teacher_at_the_majority_class_is_stopped(majority_teacher, models, toy_data, tmp_path):
    result = spacy_cli("distill", str(majority_teacher), *distill_args(toy_data, models, tmp_path))
    assert_one_line(result, "The teacher is not worth distilling: it scores 50.0% accuracy")
    assert "--distillation.check_teacher false" in result.stderr
    assert not (tmp_path / "out" / "model-best").exists()
    result = spacy_cli("distill", str(majority_teacher), *distill_args(toy_data, models, tmp_path, **{"distillation.check_teacher": "false"}))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "The teacher is weak: it scores 50.0% accuracy" in result.stdout


def test_stored_dev_scores_are_reused_and_lengths_follow_the_teacher(models, toy_data, tmp_path):
    nlp = spacy.load(models["teacher"])
    dev = list(DatasetCorpus(toy_data["dev"])(nlp))
    record = dev_scores(nlp, dev)
    record["scores"]["cats_macro_auc"] = 0.987654  # only a stored score could say this
    record_dev_scores(nlp, record)
    nlp.get_pipe("textcat").shim.max_length = 24
    teacher = tmp_path / "teacher"
    nlp.to_disk(teacher)
    args = distill_args(toy_data, models, tmp_path, **{"components.textcat.model.max_length": 0})
    result = spacy_cli("distill", str(teacher), *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "The teacher on dev (from its meta.json): accuracy" in result.stdout and "macro AUC 0.988" in result.stdout
    student = spacy.load(tmp_path / "out" / "model-best")
    assert student.get_pipe("textcat").shim.max_length == 24
    assert student.config["components"]["textcat"]["model"]["max_length"] == 24


def test_max_length_0_outside_distillation_is_refused(bert_dir):
    nlp = spacy.blank("en")
    with pytest.raises(ValueError, match="max_length must be 1 or more"):
        nlp.add_pipe("transformer_textcat", config={"model": {"name": str(bert_dir), "max_length": 0}})


def test_train_teacher_schedule_and_lengths():
    train_teacher = load_script("train_teacher")
    # 800 rows in batches of 32: 25 steps an epoch, 4 epochs, never stopped before 100.
    assert train_teacher.schedule(800, 32, 0) == {"max_steps": 100, "eval_frequency": 25, "patience": 100, "warmup_steps": 10}
    # Few rows: at least 100 steps, scored every 10.
    assert train_teacher.schedule(100, 32, 0) == {"max_steps": 100, "eval_frequency": 10, "patience": 100, "warmup_steps": 10}
    # Many rows: scored every 200 steps, patience two evaluations.
    assert train_teacher.schedule(32_000, 32, 0) == {"max_steps": 4000, "eval_frequency": 200, "patience": 400, "warmup_steps": 400}
    # Epochs by hand: scored once an epoch, no early stop.
    assert train_teacher.schedule(160, 16, 6) == {"max_steps": 60, "eval_frequency": 10, "patience": 0, "warmup_steps": 6}
    lengths = numpy.array([20] * 96 + [40] * 3 + [900])
    assert train_teacher.choose_max_length(lengths) == 32
    assert train_teacher.choose_max_length(numpy.array([100] * 10)) == 128
    assert train_teacher.choose_max_length(numpy.array([5000] * 10)) == 256


def teacher_args(bert_dir, train, dev, *extra):
    return [ROOT / "configs" / "teacher.cfg", "unused", "--paths.train", train, "--paths.dev", dev, "--paths.encoder", bert_dir, *extra]


@pytest.mark.parametrize(
    "train_labels,dev_labels,expected",
    [
        (["positive"] * 6, ["positive", "negative"], "holds one class only ('positive')"),
        (["positive", "negative", "neutral"] * 2, ["positive", "negative"], "The dev data has no text of class(es) ['neutral']"),
    ],
)
def test_train_teacher_refuses_data_it_cannot_learn_from(bert_dir, tmp_path, train_labels, dev_labels, expected):
    train = write_jsonl([{"text": f"text {i}", "label": label} for i, label in enumerate(train_labels)], tmp_path / "train.jsonl")
    dev = write_jsonl([{"text": f"text {i}", "label": label} for i, label in enumerate(dev_labels)], tmp_path / "dev.jsonl")
    result = script("train_teacher.py", *teacher_args(bert_dir, train, dev))
    assert_one_line(result, expected)
    assert not (tmp_path / "unused").exists()


def test_train_teacher_refuses_an_output_or_setting_that_would_lose_or_waste_something(bert_dir, toy_data, tmp_path, capsys):
    """Each refused before the data is read or anything is written: an output
    that is a file or an input, a folder that holds more than a teacher,
    negative epochs or lengths, training texts that are mostly empty."""
    train_teacher = load_script("train_teacher")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    mixed = tmp_path / "mine"
    (mixed / "model-best").mkdir(parents=True)
    (mixed / "thesis.tex").write_text("mine")
    rows = [json.loads(line) for line in toy_data["train"].read_text().splitlines()]
    empty = write_jsonl([{**row, "text": "" if i % 4 else row["text"]} for i, row in enumerate(rows)], tmp_path / "empty.jsonl")
    train = toy_data["train"]
    cases = [
        ([notes], "'{}' is a file: a folder is written there".format(notes)),
        ([train], "is one of the inputs: writing it would replace"),
        ([mixed], "holds files that are not a teacher's (thesis.tex)"),
        ([tmp_path / "t", "--epochs", "-1"], "--epochs must be 0 (until dev stops improving) or more, got -1"),
        ([tmp_path / "t", "--max-length", "-5"], "--max-length must be 0 (chosen from the data) or a number of word pieces, got -5"),
        ([tmp_path / "t", "--paths.train", empty], "120 of the 160 texts of the training data are empty: check the text column 'text'"),
    ]
    for extra, expected in cases:
        args = teacher_args(bert_dir, train, toy_data["dev"])
        args[1:2] = extra[:1]
        args.extend(extra[1:])
        assert train_teacher.main([str(a) for a in args]) == 1, expected
        lines = [line for line in capsys.readouterr().err.splitlines() if "✘" in line]
        assert len(lines) == 1 and expected in lines[0], lines
    assert notes.read_text() == "mine" and (mixed / "thesis.tex").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.jsonl", "mine", "notes.txt"]


def test_train_teacher_reports_lengths_and_stops_a_majority_teacher(bert_dir, toy_data, tmp_path):
    """Three steps leave the tiny teacher far below always answering
    'positive' on a dev set that is 90 % positive: the script says what it
    found, trains, scores model-best once into its meta.json, and stops in
    one line with the teacher set aside in OUTPUT.rejected; --check false
    keeps it. A rerun whose teacher is rejected, or whose spacy train fails,
    leaves the teacher kept before it as it was."""
    rows = [json.loads(line) for line in toy_data["train"].read_text().splitlines()]
    rows[0]["text"] = " ".join(["good"] * 300)  # one text longer than any length chosen
    train = write_jsonl(rows, tmp_path / "train.jsonl")
    dev_rows = [json.loads(line) for line in toy_data["dev"].read_text().splitlines()]
    dev_rows = [row for row in dev_rows if row["label"] == "positive"] * 2 + [row for row in dev_rows if row["label"] == "negative"][:4]
    dev = write_jsonl(dev_rows[:36] + dev_rows[-4:], tmp_path / "dev.jsonl")
    out, rejected = tmp_path / "teacher", tmp_path / "teacher.rejected"
    args = teacher_args(bert_dir, train, dev, "--max-length", "0", "--epochs", "0.3", "--training.batcher.size", "16")
    args[1] = out
    result = script("train_teacher.py", *args)
    assert "ℹ Training data: 160 texts: 80 negative (50%), 80 positive (50%)" in result.stdout
    assert "max_length 32 (chosen to hold 95% of them, at most 256) cuts 1 of 160 texts" in result.stdout
    assert "3 steps (0.3 epochs)" in result.stdout
    assert rejected.exists(), result.stdout[-3000:] + result.stderr[-3000:]
    meta = json.loads((rejected / "model-best" / "meta.json").read_text())
    assert meta["spacy_dekd"]["dev"]["fingerprint"]["examples"] == 40
    assert spacy.load(rejected / "model-best").get_pipe("textcat").shim.max_length == 32
    assert_one_line(result, "is not worth distilling: it scores")
    assert f"it is in '{rejected}', nothing was written to '{out}'" in result.stderr and not out.exists()
    assert "below always answering 'positive'" in result.stderr and "--vars.teacher_epochs" in result.stderr
    result = script("train_teacher.py", *args, "--check", "false")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "⚠ The teacher is kept although" in result.stdout
    kept = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    # A rerun whose new teacher is rejected leaves the kept one byte for byte.
    result = script("train_teacher.py", *args, "--training.seed", "1")
    assert_one_line(result, f"it is in '{rejected}', '{out}' is as it was")
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == kept
    # So does a run that fails in spacy train.
    result = script("train_teacher.py", *args, "--training.dropout", "not-a-number")
    assert result.returncode != 0 and "ℹ Teacher: 3 steps" in result.stdout  # spacy train started
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == kept
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("teacher")) == ["teacher", "teacher.rejected"]


def test_ctrl_c_stops_train_teacher_in_one_line(bert_dir, toy_data, tmp_path):
    """Ctrl-C while spacy train runs: no traceback (of the script or of
    spacy train), exit 130, no OUTPUT.partial, no spacy train left running."""
    out = tmp_path / "teacher"
    # Far more steps than the test waits for: the run must still be going when Ctrl-C comes.
    args = teacher_args(bert_dir, toy_data["train"], toy_data["dev"], "--epochs", "2000", "--training.batcher.size", "4")
    args[1] = out
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "scripts" / "train_teacher.py"), *map(str, args)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # As a terminal starts it: tests run as a background job inherit SIGINT ignored.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    for line in proc.stdout:
        if line.startswith("ℹ Teacher:"):
            break
    deadline = time.monotonic() + 120
    while not (tmp_path / "teacher.partial").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # spacy train has begun writing
    assert proc.poll() is None, f"train_teacher.py ended (exit {proc.returncode}) before Ctrl-C: {proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "Traceback" not in stdout + stderr and "KeyboardInterrupt" not in stderr
    lines = [line for line in stderr.splitlines() if "✘" in line]
    assert lines == ["✘ Interrupted: spacy train stopped, the output folder is as it was."]
    assert not out.exists() and not (tmp_path / "teacher.partial").exists()
    assert not [p for p in psutil_children() if str(out) in p]


def psutil_children():
    """Command lines of this machine's running processes (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            found.append(stat.read_bytes().replace(b"\0", b" ").decode("utf8", "replace"))
        except OSError:
            continue
    return found


def test_progress_logger_prints_steps_and_time_left(capsys):
    class Nlp:
        config = {"training": {"max_steps": 10, "eval_frequency": 5, "score_weights": {"cats_score": 1.0}}}
        pipeline = []

    log_step, finalize = progress_logger_v1(interval=1e-9)(Nlp(), stdout=sys.stdout, stderr=sys.stderr)
    log_step({"epoch": 0, "step": 0, "score": 0.0, "other_scores": {"cats_score": 0.0}, "losses": {}})
    log_step(None)
    log_step(None)
    time.sleep(1.0)  # a query round between two steps
    log_step(None)
    finalize()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("step")]
    assert lines[0].startswith("step 1 of 10: ") and "s a step, about" in lines[0] and lines[0].endswith("to go besides query rounds")
    assert lines[1].startswith("step 2 of 10: ")
    # The pause is one step's time among three, not the pace: the median.
    assert lines[2].startswith("step 3 of 10: 0.0 s a step, about 0 s to go")


def test_evaluate_prints_a_table_with_the_majority_class_and_skips_a_missing_optional(models, toy_data, tmp_path):
    result = script(
        "evaluate.py", toy_data["dev"], tmp_path / "metrics", f"teacher={models['teacher']}", f"assistant?={tmp_path / 'none'}",
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "No 'assistant'" in result.stdout and "skipped" in result.stdout
    table = result.stdout[result.stdout.index("macro F") :]
    assert "teacher" in table and "always 'negative'" in table and "50.0" in table
    result = script("evaluate.py", toy_data["dev"], tmp_path / "metrics", f"assistant={tmp_path / 'none'}")
    assert_one_line(result, "No pipeline at")


def test_evaluate_says_what_the_teacher_is_worth_against_the_rival(models, majority_teacher, toy_data, tmp_path, capsys):
    """Both verdicts on tiny models: a rival that always answers 'positive'
    (the teacher and a student ahead of it: what distillation added), and a
    rival as good as the teacher (nothing to add: said in one plain line)."""
    evaluate = load_script("evaluate")
    pipelines = [f"teacher={models['teacher']}", f"student={models['assistant']}"]
    out = tmp_path / "metrics"
    args = [toy_data["dev"], out, *pipelines, f"no-teacher={majority_teacher}", "--rival", "student=no-teacher"]
    assert evaluate.main([str(a) for a in args]) == 0
    printed = capsys.readouterr().out
    report = json.loads((out / "distillation.json").read_text())["students"]["student"]
    student, rival = (json.loads((out / f"{name}.json").read_text())["cats_accuracy"] for name in ("student", "no-teacher"))
    assert report["accuracy"]["rival"] == pytest.approx(rival) == 0.5 and report["accuracy"]["student"] == pytest.approx(student)
    assert report["texts"] == 40 and report["student_beats_rival"]
    assert f"Distillation added {(student - rival) * 100:.1f} points over no-teacher" in printed
    assert "student against no-teacher (the same architecture on the labels alone), 40 test texts" in printed
    meta = json.loads((out / "student-meta.json").read_text())
    assert meta["performance"]["dekd_student_over_rival"] == pytest.approx(student - rival)
    assert meta["performance"]["cats_accuracy"] == pytest.approx(student) and meta["name"] == spacy.load(models["assistant"]).meta["name"]
    # The rival as good as the teacher: nothing for distillation to add.
    args = [toy_data["dev"], tmp_path / "again", *pipelines, f"no-teacher={models['teacher']}", "--rival", "student=no-teacher"]
    assert evaluate.main([str(a) for a in args]) == 0
    assert "⚠ The teacher is not clearly better than no-teacher" in capsys.readouterr().out
    # A rival whose step did not run is skipped with a line, not an error.
    args = [toy_data["dev"], tmp_path / "third", pipelines[0], f"no-teacher?={tmp_path / 'none'}", "--rival", "teacher=no-teacher"]
    assert evaluate.main([str(a) for a in args]) == 0
    assert "No 'no-teacher' to compare: --rival teacher=no-teacher skipped" in capsys.readouterr().out


def test_evaluate_and_benchmark_mistakes_are_one_line(models, toy_data, tmp_path, capsys):
    """Nothing left to score, labels the model lacks, an output that is a
    file or holds the data, a test file without text: one line, exit 1."""
    evaluate, benchmark = load_script("evaluate"), load_script("benchmark")
    other = write_jsonl([{"text": "a film", "label": "great"}, {"text": "a mess", "label": "awful"}], tmp_path / "other.jsonl")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    header = tmp_path / "header.csv"
    header.write_text("text,label\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    teacher, missing = f"teacher={models['teacher']}", f"student?={tmp_path / 'none'}"
    cases = [
        (evaluate, [toy_data["dev"], tmp_path / "metrics", missing], "Nothing was evaluated: no pipeline is at the paths given"),
        (evaluate, [other, tmp_path / "metrics", teacher], "The gold data has label(s) ['awful', 'great'] the model does not know"),
        (evaluate, [toy_data["dev"], notes, teacher], "is a file: a folder is written there"),
        (evaluate, [tmp_path / "notes.txt", tmp_path, teacher], "holds the input"),
        (benchmark, [toy_data["dev"], missing], "Nothing to benchmark: no pipeline is at the paths given"),
        (benchmark, [empty, teacher], "the file is empty"),
        (benchmark, [header, teacher], "it has no rows"),
        (benchmark, [toy_data["dev"], teacher, "--output", toy_data["dev"]], "is one of the inputs"),
    ]
    for script_, args, expected in cases:
        assert script_.main([str(a) for a in args]) == 1, expected
        lines = [line for line in capsys.readouterr().err.splitlines() if "✘" in line]
        assert len(lines) == 1 and expected in lines[0], (expected, lines)
    assert notes.read_text() == "mine"


def test_corpus_step_on_your_own_data(tmp_path):
    own = [tmp_path / f"{split}.csv" for split in ("train", "dev", "test")]
    for path in own:
        path.write_text("text,label\na,b\n")
    args = ["assets/movies", tmp_path / "movies", "--own-data", *own]
    result = script("build_corpus.py", *args, "--unlabeled-corpus", "null", cwd=ROOT)
    assert result.returncode == 0 and "no movies corpus is built" in result.stdout
    assert not (tmp_path / "movies").exists()
    result = script("build_corpus.py", *args, "--unlabeled", tmp_path / "movies" / "unlabeled.txt", "--unlabeled-corpus", "corpora.unlabeled", cwd=ROOT)
    assert_one_line(result, "vars.unlabeled: ")
    assert "--vars.unlabeled_corpus null" in result.stderr
    result = script("build_corpus.py", "assets/movies", tmp_path / "movies", "--own-data", own[0], tmp_path / "nope.csv", own[2], cwd=ROOT)
    assert_one_line(result, "vars.dev: ")


def test_the_assistant_step_skips_a_student_that_asks_the_teacher_alone(tmp_path):
    result = script("distill_assistant.py", ROOT / "configs" / "dekd_minilm.cfg", tmp_path / "teacher", ROOT / "configs" / "assistant.cfg")
    assert result.returncode == 0 and "asks the teacher alone: no assistant is distilled" in result.stdout
    result = script("distill_assistant.py", ROOT / "configs" / "dekd_minilm_ta.cfg", tmp_path / "teacher", ROOT / "configs" / "assistant.cfg")
    assert result.returncode != 0 and "teacher" in result.stderr  # it went on to spacy distill
