"""Teacher, assistant and student configs for the `spacy distill` tests:
tiny encoders trained in code."""
import random
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from thinc.api import Adam, Config

from spacy_dekd.corpus import DatasetCorpus

from ..conftest import toy_rows, write_jsonl, write_tiny_encoder

ROOT = Path(__file__).parents[2]
DEKD_CFG = ROOT / "configs" / "dekd.cfg"


def train_classifier(encoder, data, path, *, layers=None, epochs=5):
    nlp = spacy.blank("en")
    model = {"name": str(encoder), "layers": layers}
    nlp.add_pipe("transformer_textcat", name="textcat", config={"model": model})
    examples = list(DatasetCorpus(data)(nlp))
    random.seed(0)
    torch.manual_seed(0)
    optimizer = nlp.initialize(lambda: examples, sgd=Adam(1e-3))
    for _ in range(epochs):
        random.shuffle(examples)
        for i in range(0, len(examples), 16):
            nlp.update(examples[i : i + 16], sgd=optimizer)
    nlp.to_disk(path)
    return path


@pytest.fixture(scope="session")
def models(tmp_path_factory, teacher_encoder_dir, toy_data):
    root = tmp_path_factory.mktemp("distill")
    teacher = train_classifier(teacher_encoder_dir, toy_data["train"], root / "teacher")
    assistant = train_classifier(teacher_encoder_dir, toy_data["train"], root / "assistant", layers=[0, 2], epochs=3)
    narrow = write_tiny_encoder(root / "narrow", "bert", n_layers=2, hidden=16, seed=3)
    return {"teacher": teacher, "assistant": assistant, "narrow": narrow, "root": root}


@pytest.fixture(scope="module")
def texts(tmp_path_factory):
    """200 unlabelled sentences, one per line, and 40 labelled ones."""
    root = tmp_path_factory.mktemp("unlabelled")
    unlabelled = root / "unlabelled.txt"
    unlabelled.write_text("".join(row["text"] + "\n" for row in toy_rows(200, seed=7)), encoding="utf8")
    labelled = write_jsonl(toy_rows(40, seed=8), root / "labelled.jsonl")
    return {"unlabelled": unlabelled, "labelled": labelled, "root": root}


def overrides(toy_data, encoder, **extra):
    base = {
        "paths.train": str(toy_data["train"]),
        "paths.dev": str(toy_data["dev"]),
        "paths.encoder": str(encoder),
        "distillation.max_epochs": 3,
        "distillation.eval_frequency": 10,
        "distillation.batcher.size": 16,
        "distillation.optimizer.learn_rate": 0.001,
    }
    base.update(extra)
    return base


def student_config(tmp_path, *, from_pretrained=False, teacher_only=False, code_loss=None):
    config = Config().from_disk(DEKD_CFG, interpolate=False)
    if from_pretrained:
        config["distillation"]["student_init"] = {"@misc": "spacy-dekd.StudentFromPretrained.v1"}
    if teacher_only:
        config["distillation"]["objective"]["teacher_assistant"]["router"] = {
            "@dekd_routers": "spacy-dekd.TeacherOnlyRouter.v1"
        }
    if code_loss:
        config["distillation"]["objective"]["cross_entropy"] = {"@dekd_losses": code_loss}
    path = tmp_path / "student.cfg"
    config.to_disk(path)
    return path


def accuracy(nlp, data):
    return nlp.evaluate(list(DatasetCorpus(data)(nlp)))["cats_accuracy"]


def spacy_cli(*args):
    return subprocess.run([sys.executable, "-m", "spacy", *args], capture_output=True, text=True)


def fail_line(result):
    assert result.returncode != 0
    lines = [line for line in (result.stdout + result.stderr).strip().splitlines() if line.strip()]
    return lines[-1]


def weights(pipeline_dir):
    """The bytes of each file of the pipeline's textcat model (a folder for
    a transformer_textcat, one file for spaCy's textcat).
    """
    model = pipeline_dir / "textcat" / "model"
    if model.is_file():
        return {model.name: model.read_bytes()}
    return {path.name: path.read_bytes() for path in sorted(model.iterdir())}


def scores_and_losses(metrics):
    """Every step's loss and every evaluation's scores, but its speed."""
    return [
        (r["step"], r["loss"], r.get("score"), {k: v for k, v in r.get("scores", {}).items() if k != "speed"})
        for r in metrics["history"]
    ]


def killed_and_resumed(monkeypatch, teacher, cfg, output, over, *, at_step):
    """`spacy distill` into `output` killed (Ctrl-C) before step `at_step`,
    then resumed with --resume: the resumed run's metrics.
    """
    import spacy_dekd.distill.loop as loop_module
    from spacy_dekd.cli.distill import distill

    original = loop_module.step

    def dying(run, ids, i):
        if i == at_step:
            raise KeyboardInterrupt
        return original(run, ids, i)

    monkeypatch.setattr(loop_module, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, cfg, output, overrides=over)
    monkeypatch.setattr(loop_module, "step", original)
    return distill(teacher, cfg, output, overrides=over, resume=True)
