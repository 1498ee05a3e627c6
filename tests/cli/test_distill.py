"""`spacy distill` end to end on tiny models."""
import errno
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import spacy
import torch
from thinc.api import Config
from transformers import AutoTokenizer

import spacy_dekd.distill.frozen as frozen_module
import spacy_dekd.distill.prepare as prepare_module
import spacy_dekd.distill.trainer as trainer_module
from spacy_dekd.cli.distill import distill
from spacy_dekd.corpus import DatasetCorpus
from spacy_dekd.distill.cache import OutputCache
from spacy_dekd.distill.output import RunOutput
from spacy_dekd.distill.trainer import DistillationError
from spacy_dekd.models import TransformerClassifierShim

from ..conftest import SPECIAL, VOCAB, toy_rows, write_jsonl, write_tiny_encoder
from .conftest import (
    ROOT, accuracy, fail_line, overrides, scores_and_losses, spacy_cli, student_config, train_classifier, weights,
)

def test_distill_cli_beats_the_untrained_student(models, toy_data, tmp_path):
    cfg = student_config(tmp_path, from_pretrained=True)
    # A random narrow encoder needs more steps than one built from the teacher.
    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 6, "distillation.optimizer.learn_rate": 0.003})
    out = tmp_path / "out"
    args = [f"--{k}={v}" for k, v in over.items()]
    result = spacy_cli("distill", str(models["teacher"]), str(cfg), "--assistant", str(models["assistant"]), "--output", str(out), *args)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "LOSS TEXTCAT" in result.stdout  # spaCy's console logger's table
    student = spacy.load(out / "model-best")
    assert student.pipe_names == ["textcat"]
    # The untrained student: the same initialisation, before any step.
    untrained = spacy.util.load_model_from_config(Config().from_disk(cfg, overrides=over), auto_fill=True)
    pipe = untrained.get_pipe("textcat")
    for label in student.get_pipe("textcat").labels:
        pipe.add_label(label)
    pipe.model.set_dim("nO", 2, force=True)
    torch.manual_seed(0)
    pipe.model.initialize()
    assert accuracy(student, toy_data["dev"]) >= 0.9
    assert accuracy(student, toy_data["dev"]) > accuracy(untrained, toy_data["dev"]) + 0.2
    # Widths differ (16 vs 32): projections trained but are not saved.
    files = {p.name for p in (out / "model-best" / "textcat" / "model").iterdir()}
    assert "projections.safetensors" not in files
    assert (out / "checkpoint" / "projections.safetensors").exists()
    assert student.get_pipe("textcat").shim.module.width == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["teacher_forward_passes"] <= metrics["examples"]
    assert metrics["assistant_forward_passes"] > 0
    # meta.json carries the scores, as after spacy train.
    performance = json.loads((out / "model-best" / "meta.json").read_text())["performance"]
    assert performance["cats_accuracy"] == student.meta["performance"]["cats_accuracy"] >= 0.9
    assert set(performance) >= {"cats_accuracy", "cats_macro_auc", "textcat_loss"}


def test_a_student_of_its_own_width_and_tokenizer_distils_from_a_bert_teacher(models, toy_data, tmp_path, monkeypatch):
    # MiniLM-shaped: a pretrained encoder of another width (16, the teacher
    # 32) whose vocabulary numbers the word pieces otherwise, and is larger.
    words = SPECIAL + list(reversed(VOCAB[len(SPECIAL):])) + [f"extra{i}" for i in range(40)]
    encoder = write_tiny_encoder(tmp_path / "minilm", "bert", n_layers=2, hidden=16, seed=5, words=words)
    teacher = spacy.load(models["teacher"]).get_pipe("textcat").shim.tokenizer
    ours = AutoTokenizer.from_pretrained(str(encoder))
    assert ours("a good film")["input_ids"] != teacher("a good film")["input_ids"]
    # Each model tokenizes the text itself: record the ids each width saw.
    seen = {}
    original = TransformerClassifierShim.encode

    def encode(self, docs):
        encoded = original(self, docs)
        for doc, ids in zip(docs, encoded["input_ids"]):
            seen[(self.module.width, doc.text)] = ids
        return encoded

    monkeypatch.setattr(TransformerClassifierShim, "encode", encode)
    over = overrides(toy_data, encoder, **{"distillation.max_epochs": 6, "distillation.optimizer.learn_rate": 0.003})
    metrics = distill(
        str(models["teacher"]), student_config(tmp_path, from_pretrained=True), tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    assert metrics["history"][-1]["da"] > 0  # aligned through the 16 -> 32 projection
    for (width, text), ids in seen.items():
        assert ids == (ours if width == 16 else teacher)(text)["input_ids"]
    assert {width for width, _ in seen} == {16, 32}
    student = spacy.load(tmp_path / "out" / "model-best")
    shim = student.get_pipe("textcat").shim
    assert shim.module.width == 16 and shim.tokenizer.get_vocab() == ours.get_vocab()
    assert accuracy(student, toy_data["dev"]) >= 0.9


@pytest.mark.parametrize("reuse", [False, True])
def test_teacher_is_queried_at_most_once_per_example(models, toy_data, tmp_path, monkeypatch, reuse):
    seen = {"teacher": [], "assistant": []}
    original = frozen_module.teacher_forward

    def counting(pipe, docs, **kwargs):
        role = "teacher" if pipe.shim.module.n_layers == 4 else "assistant"
        seen[role].extend(doc.text for doc in docs)
        return original(pipe, docs, **kwargs)

    monkeypatch.setattr(frozen_module, "teacher_forward", counting)
    metrics = distill(
        str(models["teacher"]),
        student_config(tmp_path),
        tmp_path / "out",
        assistant_path=str(models["assistant"]),
        overrides={**overrides(toy_data, models["narrow"]), "distillation.objective.reuse_teacher_outputs": reuse},
    )
    n = metrics["examples"]
    assert len(seen["teacher"]) == metrics["teacher_forward_passes"] <= n
    assert len(seen["assistant"]) == metrics["assistant_forward_passes"] <= n
    # Examples repeat in the toy corpus, so compare counts, not texts: the
    # teacher saw fewer examples than vanilla KD would (N per epoch).
    assert metrics["teacher_forward_passes"] < metrics["baseline_teacher_forward_passes"] / 2
    assert metrics["teacher_requests"] > metrics["teacher_forward_passes"]
    student = spacy.load(tmp_path / "out" / "model-best")
    assert student.get_pipe("textcat").shim.module.n_layers == 3  # "uniform": [0, 2, 3] of 4
    assert accuracy(student, toy_data["dev"]) >= 0.9


def test_resume_continues_from_the_checkpoint(models, toy_data, tmp_path):
    cfg = student_config(tmp_path, teacher_only=True)
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 6, "distillation.eval_frequency": 3})
    first = distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=over)
    assert first["steps"] == 6
    over["distillation.max_steps"] = 12
    second = distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=over, resume=True)
    assert second["steps"] == 12
    steps = [record["step"] for record in second["history"]]
    assert steps == list(range(1, 13))  # history carried over, no step run twice
    # The cache came back with the checkpoint: no example was re-queried.
    assert second["teacher_forward_passes"] <= second["examples"]
    assert second["teacher_forward_passes"] >= first["teacher_forward_passes"]


def test_takd_queries_only_the_assistant(models, toy_data, tmp_path):
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 4})
    metrics = distill(
        str(models["teacher"]), ROOT / "configs" / "takd.cfg", tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    assert metrics["teacher_forward_passes"] == 0
    assert metrics["assistant_forward_passes"] == 4 * 16


def test_batches_of_one_route_nothing_to_the_assistant(models, toy_data, tmp_path):
    # k = ceil(0.5 * 1) = 1 row: the teacher takes it, the assistant gets none.
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 3, "distillation.batcher.size": 1})
    metrics = distill(
        str(models["teacher"]), student_config(tmp_path), tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    assert metrics["steps"] == 3 and metrics["teacher_forward_passes"] == 3
    assert metrics["assistant_forward_passes"] == 0


@pytest.mark.parametrize("dev_scores,best_is_last", [([0.7, 0.7], True), ([0.8, 0.7], False), ([0.7, 0.8], True)])
def test_model_best_has_the_best_dev_score_and_ties_go_to_the_later_step(
    models, toy_data, tmp_path, monkeypatch, dev_scores, best_is_last
):
    # As in spaCy's training loop: a checkpoint scoring at least the best so far is model-best.
    scores = iter(dev_scores)
    monkeypatch.setattr(prepare_module, "create_evaluation_callback", lambda *args: lambda: (next(scores), {}))
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 6, "distillation.eval_frequency": 3})
    out = tmp_path / "out"
    metrics = distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    assert [r["score"] for r in metrics["history"] if "score" in r] == dev_scores
    assert metrics["best_score"] == max(dev_scores)
    assert (weights(out / "model-best") == weights(out / "model-last")) is best_is_last


# Bad input: one line, non-zero exit, nothing lost.


def test_ratio_outside_unit_interval(models, toy_data, tmp_path):
    cfg = student_config(tmp_path)
    result = spacy_cli(
        "distill", str(models["teacher"]), str(cfg), "--assistant", str(models["assistant"]),
        "--distillation.objective.selector.ratio=0", f"--paths.train={toy_data['train']}",
    )
    assert "(0, 1]" in fail_line(result)


def test_missing_teacher_and_assistant(models, tmp_path):
    cfg = student_config(tmp_path)
    line = fail_line(spacy_cli("distill", str(tmp_path / "nope"), str(cfg)))
    assert "teacher pipeline" in line and "neither a directory" in line
    line = fail_line(spacy_cli("distill", str(models["teacher"]), str(cfg), "--assistant", str(tmp_path / "nope")))
    assert "assistant pipeline" in line


def test_router_needs_an_assistant(models, toy_data, tmp_path):
    with pytest.raises(DistillationError, match="--assistant"):
        distill(str(models["teacher"]), student_config(tmp_path), tmp_path / "o", overrides=overrides(toy_data, models["narrow"]))


def test_label_mismatch(models, toy_data, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in [("good", "yes"), ("bad", "no")] * 20))
    assistant = train_classifier(models["narrow"], other, tmp_path / "assistant", epochs=1)
    with pytest.raises(DistillationError, match="Assistant labels"):
        distill(
            str(models["teacher"]), student_config(tmp_path), tmp_path / "o",
            assistant_path=str(assistant), overrides=overrides(toy_data, models["narrow"]),
        )


def train_bow_teacher(toy_data, path):
    nlp = spacy.blank("en")
    nlp.add_pipe("textcat")
    examples = list(DatasetCorpus(toy_data["train"])(nlp))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(5):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(path)
    return path


def test_alignment_needs_hidden_states(models, toy_data, tmp_path):
    train_bow_teacher(toy_data, tmp_path / "bow")
    cfg = student_config(tmp_path, teacher_only=True, from_pretrained=True)
    with pytest.raises(DistillationError, match="gives none"):
        distill(str(tmp_path / "bow"), cfg, tmp_path / "o", overrides=overrides(toy_data, models["narrow"]))
    # Without alignment, spaCy's own textcat can teach: its log-probabilities
    # stand in for logits.
    over = overrides(toy_data, models["narrow"], **{"distillation.objective.alignment_weight": 0, "distillation.max_steps": 3})
    metrics = distill(str(tmp_path / "bow"), cfg, tmp_path / "o", overrides=over)
    assert metrics["steps"] == 3 and metrics["teacher_forward_passes"] > 0


def test_an_untrained_teacher_is_refused_before_the_first_step(models, toy_data, tmp_path):
    # The teacher a spacy train run leaves as model-best when it only scored
    # step 0: here, a head that gives every class the same logit.
    nlp = spacy.load(models["teacher"])
    torch.nn.init.zeros_(nlp.get_pipe("textcat").shim.module.head.weight)
    torch.nn.init.zeros_(nlp.get_pipe("textcat").shim.module.head.bias)
    nlp.to_disk(tmp_path / "untrained")
    out = tmp_path / "out"
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 2})
    result = spacy_cli(
        "distill", str(tmp_path / "untrained"), str(student_config(tmp_path, teacher_only=True)),
        "--output", str(out), *[f"--{k}={v}" for k, v in over.items()],
    )
    line = fail_line(result)
    assert "The teacher scores at chance on the dev set (macro AUC 0.50" in line and "last step is scored" in line
    assert "Traceback" not in result.stdout + result.stderr and not (out / "model-last").exists()
    # A trained teacher's dev scores are recorded.
    metrics = distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    assert metrics["frozen_dev_scores"]["teacher"]["cats_accuracy"] >= 0.9


@pytest.mark.parametrize("make,expected", [
    (None, r"keeps the teacher's logits alone, but the layer alignment needs its hidden states: set teacher_answers = null, or alignment_weight = 0"),
    (lambda p: (p.mkdir(), (p / "train.csv").write_text("text,label")), r"\[D049\] .* it is a folder of other files"),
])
def test_a_store_of_answers_it_cannot_use_is_one_line(models, toy_data, tmp_path, make, expected):
    store = tmp_path / "answers"
    if make is not None:
        make(store)
    over = overrides(toy_data, models["narrow"], **{"distillation.teacher_answers": str(store)})
    if make is not None:
        over["distillation.objective.alignment_weight"] = 0
    with pytest.raises(DistillationError, match=expected):
        distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), tmp_path / "o", overrides=over)
    assert not (tmp_path / "o").exists() and (make is None) == (not store.exists())


def test_student_layers_out_of_range(models, toy_data, tmp_path):
    over = overrides(toy_data, models["narrow"], **{"distillation.student_init.layers": [0, 7]})
    with pytest.raises(DistillationError, match=r"out of range.*4 layers"):
        distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), tmp_path / "o", overrides=over)


NAN_CODE = '''
import torch
from spacy_dekd.registry import registry
from spacy_dekd.distill.losses import cross_entropy

@registry.dekd_losses("test.NaNAfterFour.v1")
def make():
    calls = []
    def loss(*args, **kwargs):
        calls.append(1)
        value = cross_entropy(*args, **kwargs)
        return value * float("nan") if len(calls) > 4 else value
    return loss
'''


def test_nan_loss_stops_with_checkpoints_intact(models, toy_data, tmp_path):
    code = tmp_path / "nan.py"
    code.write_text(NAN_CODE)
    cfg = student_config(tmp_path, teacher_only=True, code_loss="test.NaNAfterFour.v1")
    over = overrides(toy_data, models["narrow"], **{"distillation.eval_frequency": 2})
    out = tmp_path / "out"
    result = spacy_cli(
        "distill", str(models["teacher"]), str(cfg), "--output", str(out), "--code", str(code),
        *[f"--{k}={v}" for k, v in over.items()],
    )
    line = fail_line(result)
    assert "not finite at step 5" in line
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["step"] == 4
    assert spacy.load(out / "model-last")("a good film").cats


def test_a_failed_write_leaves_the_previous_evaluation_intact(models, toy_data, tmp_path, monkeypatch):
    # The disk fills up while the second evaluation's checkpoint is written.
    original = OutputCache.to_disk
    calls = []

    def to_disk(self, path, *args):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        original(self, path, *args)

    monkeypatch.setattr(OutputCache, "to_disk", to_disk)
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 6, "distillation.eval_frequency": 3})
    out = tmp_path / "out"
    with pytest.raises(DistillationError, match="at step 6 .No space left on device.*intact"):
        distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    # No *.tmp, no lock: the set of step 3, metrics included.
    assert sorted(p.name for p in out.iterdir()) == ["answers", "checkpoint", "metrics.json", "model-best", "model-last"]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3
    assert json.loads((out / "metrics.json").read_text())["steps"] == 3
    # model-last is still step 3's student, the one the checkpoint belongs to.
    assert weights(out / "model-last") == weights(out / "model-best")
    assert spacy.load(out / "model-last")("a good film").cats


def test_a_full_disk_inside_torch_save_is_one_line_and_leaves_the_last_set(models, toy_data, tmp_path, monkeypatch):
    original = torch.save
    calls = []

    def save(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) == 3:  # the second evaluation's optimizer state
            raise RuntimeError("[enforce fail at inline_container.cc:603] . PytorchStreamWriter failed writing file data/0: file write failed")
        return original(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 6, "distillation.eval_frequency": 3})
    out = tmp_path / "out"
    with pytest.raises(DistillationError, match="Cannot write to .* at step 6 .*file write failed"):
        distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    assert sorted(p.name for p in out.iterdir()) == ["answers", "checkpoint", "metrics.json", "model-best", "model-last"]
    assert json.loads((out / "checkpoint" / "state.json").read_text())["step"] == 3


# The project's evaluate step: several pipelines, one process


EVALUATE = ROOT / "scripts" / "evaluate.py"


def test_evaluate_script_scores_each_pipeline_like_spacy_evaluate(models, toy_data, tmp_path):
    from spacy.tokens import DocBin

    nlp = spacy.blank("en")
    test = tmp_path / "test.spacy"
    DocBin(docs=[eg.reference for eg in DatasetCorpus(toy_data["dev"])(nlp)]).to_disk(test)
    out = tmp_path / "metrics"
    result = subprocess.run(
        [sys.executable, str(EVALUATE), str(test), str(out),
         f"teacher={models['teacher']}", f"assistant={models['assistant']}"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr
    for name in ("teacher", "assistant"):
        ours = json.loads((out / f"{name}.json").read_text())
        assert ours["cats_accuracy"] == pytest.approx(accuracy(spacy.load(models[name]), toy_data["dev"]))
    # A bad argument fails before anything is scored or written.
    result = subprocess.run(
        [sys.executable, str(EVALUATE), str(test), str(tmp_path / "none"),
         f"teacher={models['teacher']}", f"student={tmp_path / 'nope'}"],
        capture_output=True, text=True,
    )
    assert "No pipeline at" in fail_line(result) and "student" in fail_line(result)
    assert not (tmp_path / "none").exists()


# Faults: exact resume, consistent sets.


def wait_for(path, proc, poll=0.02):
    """Until PATH exists (or PROC ends)."""
    while not path.exists() and proc.poll() is None:
        time.sleep(poll)


def run_until_first_save(command, out):
    """Run COMMAND; RETURNS: the process, the seconds until OUT first held a
    committed checkpoint, and the seconds until it ended.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for(out / trainer_module.DIR_CHECKPOINT, proc)
    first_save = time.perf_counter() - started
    proc.wait()
    return proc, first_save, time.perf_counter() - started


@pytest.mark.parametrize("selector", ["spacy-dekd.EntropySelector.v1", "spacy-dekd.RandomSelector.v1"])
def test_a_resumed_run_ends_bit_identical_to_the_uninterrupted_one(models, toy_data, tmp_path, monkeypatch, selector):
    # Dropout on and a random selector: the random states must come back too.
    over = overrides(toy_data, models["narrow"], **{
        "distillation.max_epochs": 2, "distillation.eval_frequency": 4, "distillation.dropout": 0.1,
        "distillation.objective.selector": {"@dekd_selectors": selector, "ratio": 0.5},
    })
    cfg = student_config(tmp_path)
    teacher, assistant = str(models["teacher"]), str(models["assistant"])
    whole = distill(teacher, cfg, tmp_path / "whole", assistant_path=assistant, overrides=over)

    original_save = RunOutput.save

    def save_then_die(self, run, state, *args):
        original_save(self, run, state, *args)
        if state.step == 8:
            raise KeyboardInterrupt  # killed right after the second evaluation

    monkeypatch.setattr(RunOutput, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over)
    monkeypatch.setattr(RunOutput, "save", original_save)
    resumed = distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over, resume=True)
    assert scores_and_losses(resumed) == scores_and_losses(whole)
    assert resumed["teacher_forward_passes"] == whole["teacher_forward_passes"]
    assert weights(tmp_path / "cut" / "model-last") == weights(tmp_path / "whole" / "model-last")


def test_resume_refuses_another_corpus_and_a_mixed_set(models, toy_data, tmp_path):
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 4, "distillation.eval_frequency": 2})
    cfg = student_config(tmp_path, teacher_only=True)
    out = tmp_path / "out"
    distill(str(models["teacher"]), cfg, out, overrides=over)
    # The same number of examples, other texts.
    other = write_jsonl(toy_rows(160, seed=11), tmp_path / "other.jsonl")
    with pytest.raises(DistillationError, match=r"corpus.labelled.sha256 differs from when it started"):
        distill(str(models["teacher"]), cfg, out, overrides={**over, "paths.train": str(other)}, resume=True)
    with pytest.raises(DistillationError, match=r"config.distillation.temperature differ from when it started"):
        distill(str(models["teacher"]), cfg, out, overrides={**over, "distillation.temperature": 2.0}, resume=True)
    # model-last of another step than the checkpoint: refused, not trained on.
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    state["model_sha256"] = "0" * 64
    (out / "checkpoint" / "state.json").write_text(json.dumps(state))
    with pytest.raises(DistillationError, match="come from different steps"):
        distill(str(models["teacher"]), cfg, out, overrides=over, resume=True)


def test_files_are_readable_as_spacy_train_leaves_them(models, toy_data, tmp_path):
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 2, "distillation.eval_frequency": 2})
    out = tmp_path / "out"
    distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    umask = os.umask(0)
    os.umask(umask)
    for path in out.rglob("*"):
        assert path.stat().st_mode & 0o777 == (0o777 if path.is_dir() else 0o666) & ~umask, path


def test_a_second_run_into_the_same_output_is_refused(models, toy_data, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    # A live process holds the lock (this one's parent stands in for a run).
    (out / ".lock").write_text(str(os.getppid()))
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 2})
    with pytest.raises(DistillationError, match=rf"Another run \(pid {os.getppid()}\) is writing to"):
        distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    # A lock left by a process that is gone is taken over.
    (out / ".lock").write_text("999999999")
    metrics = distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), out, overrides=over)
    assert metrics["steps"] == 2 and not (out / ".lock").exists()


@pytest.mark.slow
def test_killed_at_random_moments_a_run_never_resumes_from_a_mixed_set(models, toy_data, tmp_path):
    """SIGKILL (and every third time SIGINT) at 12 random moments of a run that
    saves at every step: each time, --resume either refuses in one line or
    ends bit-identical to the run that was never killed.
    """
    cfg = student_config(tmp_path, teacher_only=True)
    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 2, "distillation.eval_frequency": 1})
    args = ["distill", str(models["teacher"]), str(cfg), *[f"--{k}={v}" for k, v in over.items()]]
    command = [sys.executable, "-m", "spacy", *args]
    # The moments are drawn over the stretch that saves (from the first
    # committed checkpoint to the end), timed on the run that is not killed:
    # start-up (imports, corpora, the teacher check) takes most of a toy run,
    # and its length varies from machine to machine.
    whole, first_save, end = run_until_first_save(command + ["--output", str(tmp_path / "whole")], tmp_path / "whole")
    assert whole.returncode == 0
    reference = scores_and_losses(json.loads((tmp_path / "whole" / "metrics.json").read_text()))
    rng = random.Random(0)
    outcomes = []
    for attempt in range(12):
        out = tmp_path / f"killed{attempt}"
        proc = subprocess.Popen([*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if attempt % 4 == 3:  # before the first save: --resume must refuse or start clean
            time.sleep(rng.uniform(0.3, 1.0) * first_save)
        else:
            wait_for(out / trainer_module.DIR_CHECKPOINT, proc)
            time.sleep(rng.uniform(0.0, 1.0) * (end - first_save))
        proc.send_signal(signal.SIGINT if attempt % 3 == 2 else signal.SIGKILL)  # Ctrl-C every third time
        proc.wait()
        resumed = subprocess.run([*command, "--output", str(out), "--resume"], capture_output=True, text=True)
        if resumed.returncode != 0:
            line = fail_line(resumed)
            assert "Nothing to resume" in line and "Traceback" not in resumed.stdout + resumed.stderr, line
            outcomes.append("refused")
            continue
        assert scores_and_losses(json.loads((out / "metrics.json").read_text())) == reference
        assert weights(out / "model-last") == weights(tmp_path / "whole" / "model-last")
        outcomes.append("resumed")
    assert outcomes.count("resumed") >= 6, outcomes


@pytest.mark.parametrize("factory", ["textcat", "textcat_multilabel"])
def test_spacy_bag_of_words_teachers_give_the_targets_their_probabilities_mean(toy_data, tmp_path, factory):
    nlp = spacy.blank("en")
    nlp.add_pipe(factory)
    examples = list(DatasetCorpus(toy_data["train"])(nlp))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(3):
        nlp.update(examples, sgd=optimizer)
    pipe = nlp.get_pipe(factory)
    docs = [nlp.make_doc(text) for text in ("a good film", "the plot was dull", "story")]
    probs = torch.tensor(pipe.predict(docs))
    logits = trainer_module.teacher_forward(pipe, docs, hidden=False).logits
    # The KL terms read the teacher's logits through softmax (exclusive) or
    # sigmoid per label (multilabel); either way they must give back p.
    targets = logits.sigmoid() if factory == "textcat_multilabel" else logits.softmax(-1)
    assert torch.allclose(targets, probs, atol=1e-5)


LOGGER_CODE = '''
import json
from spacy.util import registry

@registry.loggers("test.JsonLinesLogger.v1")
def make(path: str):
    def setup(nlp, stdout=None, stderr=None):
        out = open(path, "w")
        def log_step(info):
            if info is not None:
                out.write(json.dumps({k: info[k] for k in ("epoch", "step", "score", "losses", "words", "teacher_queries", "assistant_queries", "seconds")}) + "\\n")
        return log_step, out.close
    return setup
'''


def test_the_training_logger_gets_an_info_dict_per_evaluation(models, toy_data, tmp_path):
    code = tmp_path / "logger.py"
    code.write_text(LOGGER_CODE)
    log = tmp_path / "log.jsonl"
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 6, "distillation.eval_frequency": 2})
    args = [f"--{k}={v}" for k, v in over.items()]
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)), "--code", str(code),
        "--output", str(tmp_path / "out"), f"--training.logger={{\"@loggers\": \"test.JsonLinesLogger.v1\", \"path\": \"{log}\"}}", *args,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    infos = [json.loads(line) for line in log.read_text().splitlines()]
    assert [info["step"] for info in infos] == [2, 4, 6]
    assert all(info["losses"]["textcat"] > 0 and info["words"] > 0 for info in infos)
    assert [info["teacher_queries"] for info in infos] == [16, 32, 48]  # half of each batch of 16
    # spaCy's console logger writes its JSONL file when asked.
    jsonl = tmp_path / "console.jsonl"
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)), "--output", str(tmp_path / "out2"),
        f"--training.logger.output_file={jsonl}", *args,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [line["step"] for line in lines] == [2, 4, 6] and "cats_accuracy" in lines[0]["scores"]


def test_init_distill_config_writes_a_config_that_distils(models, toy_data, tmp_path):
    cfg = tmp_path / "student.cfg"
    result = spacy_cli("init", "distill-config", str(cfg), "--variant", "kd", "--encoder", str(models["narrow"]))
    assert result.returncode == 0, result.stderr
    assert fail_line(spacy_cli("init", "distill-config", str(cfg))).endswith("pass --force to overwrite it, or choose another file.\x1b[0m")
    over = overrides(toy_data, models["narrow"], **{"distillation.max_steps": 4, "distillation.eval_frequency": 2})
    metrics = distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=over)
    assert metrics["steps"] == 4 and metrics["teacher_forward_passes"] == 4 * 16


def test_a_spacy_multilabel_bag_of_words_teacher_teaches_a_pretrained_student(models, toy_data, tmp_path):
    nlp = spacy.blank("en")
    nlp.add_pipe("textcat_multilabel", name="textcat")
    examples = list(DatasetCorpus(toy_data["train"], multilabel=True)(nlp))
    optimizer = nlp.initialize(lambda: examples)
    for _ in range(8):
        nlp.update(examples, sgd=optimizer)
    nlp.to_disk(tmp_path / "bow")
    config = Config().from_disk(student_config(tmp_path, teacher_only=True, from_pretrained=True), interpolate=False)
    config["components"]["textcat"]["exclusive_classes"] = False
    for split in ("train", "dev"):
        config["corpora"][split]["multilabel"] = True
    cfg = tmp_path / "multilabel.cfg"
    config.to_disk(cfg)
    over = overrides(toy_data, models["narrow"], **{
        "distillation.objective.alignment_weight": 0, "distillation.max_epochs": 6,
        "distillation.optimizer.learn_rate": 0.003,
    })
    metrics = distill(str(tmp_path / "bow"), cfg, tmp_path / "out", overrides=over)
    assert metrics["teacher_forward_passes"] > 0
    student = spacy.load(tmp_path / "out" / "model-best")
    assert not student.get_pipe("textcat").exclusive_classes
    assert student.evaluate(list(DatasetCorpus(toy_data["dev"], multilabel=True)(student)))["cats_accuracy"] >= 0.9


def test_an_int8_teacher_teaches_by_its_logits_and_says_what_it_cannot_do(models, toy_data, tmp_path):
    """An ONNX (int8) teacher answers with logits: a student from a pretrained
    encoder distils from it; copying its layers or aligning to its hidden
    states is one line each (it was a wrong "not trained", an AttributeError
    and a TypeError).
    """
    from spacy_dekd.cli.export import textcat_quantize

    int8 = tmp_path / "int8"
    textcat_quantize(str(models["teacher"]), int8, threads=1)
    no_alignment = {"distillation.objective.alignment_weight": 0}
    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 1, **no_alignment})
    cfg = student_config(tmp_path, from_pretrained=True, teacher_only=True)
    metrics = distill(str(int8), cfg, tmp_path / "out", overrides=over)
    assert metrics["steps"] > 0 and 0 < metrics["teacher_answers"] <= metrics["examples"]
    with pytest.raises(DistillationError, match="is an ONNX export: distil from the torch pipeline"):
        distill(str(int8), student_config(tmp_path, teacher_only=True), tmp_path / "copy", overrides=over)
    aligned = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 1})
    with pytest.raises(DistillationError, match="Layer alignment needs hidden states, but the teacher component 'textcat' is an ONNX"):
        distill(str(int8), cfg, tmp_path / "aligned", overrides=aligned)


def test_registered_callbacks_hear_each_step_and_evaluation(models, toy_data, tmp_path):
    heard = []

    @spacy.registry.callbacks("test.before_update.v1")
    def before_update():
        return lambda nlp, args: heard.append(("before", args["step"], args["epoch"]))

    @spacy.registry.callbacks("test.after_step.v1")
    def after_step():
        return lambda nlp, record: heard.append(("step", record["step"], round(record["loss"], 6)))

    @spacy.registry.callbacks("test.after_evaluate.v1")
    def after_evaluate():
        return lambda nlp, info: heard.append(("evaluate", info["step"], info["score"]))

    over = overrides(toy_data, models["narrow"], **{
        "distillation.max_steps": 4, "distillation.eval_frequency": 2,
        "distillation.before_update": {"@callbacks": "test.before_update.v1"},
        "distillation.after_step": {"@callbacks": "test.after_step.v1"},
        "distillation.after_evaluate": {"@callbacks": "test.after_evaluate.v1"},
    })
    metrics = distill(str(models["teacher"]), student_config(tmp_path, teacher_only=True), tmp_path / "out", overrides=over)
    losses = {r["step"]: round(r["loss"], 6) for r in metrics["history"]}
    scores = {r["step"]: r["score"] for r in metrics["history"] if "score" in r}
    assert heard == [
        ("before", 0, 0), ("step", 1, losses[1]), ("before", 1, 0), ("step", 2, losses[2]), ("evaluate", 2, scores[2]),
        ("before", 2, 0), ("step", 3, losses[3]), ("before", 3, 0), ("step", 4, losses[4]), ("evaluate", 4, scores[4]),
    ]
