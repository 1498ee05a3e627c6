"""Probes as a user would run them: nothing wrong with exit 0, and a user's
mistake or an environment fault as one line (exit 1, no traceback, nothing
written)."""
import json
import os
import pickle
import stat
import subprocess
import sys

import pytest
import spacy
from thinc.api import Config

from spacy_dekd.cli.export import ExportError, textcat_export
from spacy_dekd.cli.init_config import distill_config
from spacy_dekd.corpus import DatasetCorpus, write_docbin
from spacy_dekd.distill.checkpoint import Lock, OutputError

from ..conftest import write_jsonl
from .conftest import overrides, spacy_cli, student_config
from .test_bad_input import assert_one_line


def distill(models, toy_data, tmp_path, *extra, **settings):
    over = overrides(toy_data, models["narrow"], **settings)
    cfg = student_config(tmp_path, teacher_only=True)
    return spacy_cli("distill", str(models["teacher"]), str(cfg), "--output", str(tmp_path / "out"), *extra, *[f"--{k}={v}" for k, v in over.items()])


def test_blank_lines_of_unlabelled_text_are_skipped_and_counted(models, toy_data, tmp_path):
    from .test_unlabelled import config_with

    texts = tmp_path / "texts.txt"
    texts.write_text("a good film\n   \n\t\nthe plot was dull\n \n")
    cfg = config_with(tmp_path, teacher_only=True)
    over = overrides(toy_data, models["narrow"], **{
        "paths.unlabeled": str(texts), "distillation.unlabeled_corpus": "corpora.unlabeled", "distillation.max_epochs": 2,
    })
    args = ["distill", str(models["teacher"]), str(cfg), *[f"--{k}={v}" for k, v in over.items()]]
    result = spacy_cli(*args, "--output", str(tmp_path / "out"))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "3 blank texts in the unlabelled corpus 'corpora.unlabeled' are skipped" in result.stdout
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["unlabeled_examples"] == 2
    texts.write_text("  \n\t\n   \n")
    result = spacy_cli(*args, "--output", str(tmp_path / "blank"))
    assert_one_line(result, "The unlabelled corpus 'corpora.unlabeled' ([distillation] unlabeled_corpus) is empty")


def test_resuming_a_run_that_reached_max_steps_takes_no_step(models, toy_data, tmp_path):
    result = distill(models, toy_data, tmp_path, **{"distillation.max_steps": 5})
    assert result.returncode == 0, result.stderr[-2000:]
    before = json.loads((tmp_path / "out" / "metrics.json").read_text())
    result = distill(models, toy_data, tmp_path, "--resume", **{"distillation.max_steps": 5})
    assert result.returncode == 0, result.stderr[-2000:]
    after = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert before["steps"] == after["steps"] == 5
    assert after["teacher_forward_passes"] == before["teacher_forward_passes"]


@pytest.mark.parametrize("encoder", ['my "best" encoder', "C:\\models\\minilm", "cost$ly", "it's"])
def test_init_distill_config_writes_the_encoder_as_given(encoder):
    assert Config().from_str(distill_config("dekd_minilm", encoder=encoder))["paths"]["encoder"] == encoder


def test_init_distill_config_refuses_what_it_cannot_write(tmp_path):
    result = spacy_cli("init", "distill-config", "-", "--encoder", "${paths.train}")
    assert_one_line(result, "holds '${', which a config reads as a reference")
    (tmp_path / "file").write_text("x")
    result = spacy_cli("init", "distill-config", str(tmp_path / "file" / "student.cfg"))
    assert_one_line(result, f"Cannot write '{tmp_path / 'file' / 'student.cfg'}'")


def test_spacy_evaluate_with_labels_the_model_lacks_is_one_line(models, tmp_path):
    data = write_jsonl([{"text": "a good film", "label": "neutral"}, {"text": "a bad film", "label": "negative"}], tmp_path / "x.jsonl")
    nlp = spacy.blank("en")
    write_docbin(DatasetCorpus(data)(nlp), tmp_path / "x.spacy")
    result = spacy_cli("evaluate", str(models["teacher"]), str(tmp_path / "x.spacy"))
    assert_one_line(result, "The gold data has label(s) ['neutral'] the model does not know")


def test_saved_weights_are_readable_by_others(models, tmp_path):
    nlp = spacy.load(models["teacher"])
    os.umask(0o022)
    nlp.to_disk(tmp_path / "pipe")
    mode = stat.S_IMODE((tmp_path / "pipe" / "textcat" / "model" / "model.safetensors").stat().st_mode)
    assert mode == 0o644


def test_gpu_id_without_a_gpu_is_one_line(models, toy_data, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = distill(models, toy_data, tmp_path, "--gpu-id", "0")
    assert_one_line(result, "--gpu-id 0: ")
    assert "without --gpu-id" in result.stderr
    assert not (tmp_path / "out").exists()


def test_export_into_a_folder_it_cannot_write_is_one_error(models, tmp_path, monkeypatch):
    # As root the folder is always writable: the check is what is tested.
    real = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if str(path) == str(tmp_path / "ro") else real(path, mode))
    (tmp_path / "ro").mkdir()
    with pytest.raises(ExportError, match="Cannot write into .* \\(permission denied\\)"):
        textcat_export(str(models["teacher"]), tmp_path / "ro" / "hf", fmt="hf")
    assert list((tmp_path / "ro").iterdir()) == []


def test_a_tampered_checkpoint_file_is_named(models, toy_data, tmp_path):
    result = distill(models, toy_data, tmp_path, **{"distillation.max_steps": 4, "distillation.max_epochs": 2, "distillation.eval_frequency": 2})
    assert result.returncode == 0, result.stderr[-2000:]

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    optimizer = tmp_path / "out" / "checkpoint" / "optimizer.pt"
    optimizer.write_bytes(pickle.dumps(Payload()))
    result = distill(models, toy_data, tmp_path, "--resume", **{"distillation.max_steps": 8, "distillation.max_epochs": 2, "distillation.eval_frequency": 2})
    assert_one_line(result, f"Cannot resume: '{optimizer}' is not a checkpoint weights file")
    assert "pwned" not in result.stdout


def test_a_lock_whose_pid_was_reused_is_taken_over(tmp_path):
    # A process that is alive (this one's parent), started at another time than the lock says.
    lock = tmp_path / ".lock"
    lock.write_text(f"{os.getppid()} 1")
    Lock(tmp_path).acquire()
    assert lock.read_text().split()[0] == str(os.getpid())
    # A live run's lock is kept, and the error names the file.
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        from spacy_dekd.distill.checkpoint import _start_time

        lock.write_text(f"{child.pid} {_start_time(child.pid)}")
        with pytest.raises(OutputError, match=f"delete its lock file '{lock}'"):
            Lock(tmp_path).acquire()
    finally:
        child.kill()
