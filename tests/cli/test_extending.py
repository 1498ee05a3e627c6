"""docs/EXTENDING.md's examples, run as written: a selector and a router
registered from the page's own code, and a `spacy distill` run that names
the selector in its config."""
import importlib.util
import json
import math
import re

import pytest
import torch
from spacy.util import registry

from .conftest import ROOT, overrides, spacy_cli, student_config

PAGE = ROOT / "docs" / "EXTENDING.md"


def example(name, tmp_path):
    """The page's python block that starts with `# NAME`, written to a file and imported."""
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf8"), flags=re.S)
    code = next(block for block in blocks if block.startswith(f"# {name}\n"))
    path = tmp_path / name
    path.write_text(code, encoding="utf8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return path, module


def test_the_example_selector_scores_and_keeps_the_most_uncertain_rows(tmp_path):
    _, module = example("my_selectors.py", tmp_path)
    # p = (0.5, 0.5): 1 - 0.5 = 0.5, over 1 - 1/2 → 1; p = (0.9, 0.1): 1 - 0.82 = 0.18 → 0.36.
    logits = torch.tensor([[0.0, 0.0], [math.log(9.0), 0.0], [8.0, -8.0], [0.1, 0.0]])
    scores = module.gini_score(logits)
    assert scores[0] == pytest.approx(1.0) and scores[1] == pytest.approx(0.36, abs=1e-5)
    assert module.gini_score(torch.zeros(2, 3, dtype=torch.float64), multilabel=True).tolist() == pytest.approx([1.0, 1.0])
    selector = registry.resolve({"s": {"@dekd_selectors": "my.GiniSelector.v1", "ratio": 0.5}})["s"]
    assert selector(logits).tolist() == [0, 3]


def test_the_example_router_sends_the_certain_third_to_the_teacher(tmp_path):
    _, module = example("my_routers.py", tmp_path)
    router = registry.resolve({"r": {"@dekd_routers": "my.ConfidentThirdRouter.v1"}})["r"]
    logits = torch.tensor([[0.0, 0.0], [5.0, -5.0], [0.2, 0.0], [3.0, 0.0], [0.0, 9.0], [0.1, 0.0]])
    teacher, assistant = router(logits)
    assert teacher.tolist() == [1, 4] and assistant.tolist() == [0, 2, 3, 5]
    assert all(router.n_teacher(k) + router.n_assistant(k) == k for k in range(50))


def test_spacy_distill_runs_the_example_selector_from_its_config(models, toy_data, tmp_path):
    code, _ = example("my_selectors.py", tmp_path)
    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 1})
    selector = json.dumps({"@dekd_selectors": "my.GiniSelector.v1", "ratio": 0.5})
    out = tmp_path / "out"
    result = spacy_cli(
        "distill", str(models["teacher"]), str(student_config(tmp_path, teacher_only=True)), "--output", str(out),
        "--code", str(code), "--distillation.objective.selector", selector, *[f"--{k}={v}" for k, v in over.items()],
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((out / "metrics.json").read_text())
    # Half of each labelled batch asked: the teacher answered about half the examples.
    assert 0 < metrics["teacher_answers"] < metrics["examples"]


def test_the_example_exporter_is_a_format_of_textcat_export(models, tmp_path):
    from spacy_dekd.cli.export import textcat_export

    example("my_exporters.py", tmp_path)
    info = textcat_export(str(models["teacher"]), tmp_path / "labels", fmt="my.LabelsExporter.v1")
    written = json.loads((tmp_path / "labels" / "labels.json").read_text())
    assert info == {"format": "labels", "n_labels": 2} and written["exclusive"] is True
    assert len(written["labels"]) == 2


@pytest.fixture(scope="module")
def students_module(tmp_path_factory):
    """The page's BiLSTM student, imported once: its factory and kind stay registered."""
    return example("my_students.py", tmp_path_factory.mktemp("students"))[1]


def bilstm_config(tmp_path):
    from thinc.api import Config

    from spacy_dekd.configs import config_text

    config = Config().from_str(config_text("fast_bow"), interpolate=False)
    config["components"]["textcat"] = {"factory": "bilstm_textcat", "rows": 512, "width": 16}
    path = tmp_path / "bilstm.cfg"
    config.to_disk(path)
    return path


def test_the_example_student_kind_gives_the_components_own_predictions(students_module):
    import spacy

    from spacy_dekd.distill.student import make_student

    nlp = spacy.blank("en")
    pipe = nlp.add_pipe("bilstm_textcat", config={"rows": 64, "width": 8})
    pipe.initialize(None, labels=["negative", "positive"])
    student = make_student(pipe)
    assert isinstance(student, students_module.BiLSTMStudent) and not student.gives_states
    docs = [nlp.make_doc(text) for text in ("a good film", "dull", "the plot was very boring and weak")]
    probs = student.forward(docs, is_train=False).logits.softmax(-1)
    for doc, row in zip(docs, probs):
        assert list(nlp(doc.text).cats.values()) == pytest.approx(row.tolist(), abs=1e-6)


def test_spacy_distill_trains_the_example_student_and_resumes_it_bit_identical(students_module, models, toy_data, texts, tmp_path, monkeypatch):
    import spacy

    from spacy_dekd.cli.distill import distill
    from spacy_dekd.corpus import DatasetCorpus

    from .conftest import killed_and_resumed, scores_and_losses

    cfg = bilstm_config(tmp_path)
    over = overrides(toy_data, models["narrow"], **{
        "paths.train": str(texts["labelled"]), "paths.unlabeled": str(texts["unlabelled"]), "distillation.max_epochs": 6,
        "distillation.teacher_budget": None, "distillation.eval_frequency": 8, "distillation.optimizer.learn_rate": 0.01,
    })
    teacher = str(models["teacher"])
    whole = distill(teacher, cfg, tmp_path / "whole", overrides=over)
    nlp = spacy.load(tmp_path / "whole" / "model-best")
    assert nlp.evaluate(list(DatasetCorpus(toy_data["dev"])(nlp)))["cats_micro_f"] >= 0.9
    resumed = killed_and_resumed(monkeypatch, teacher, cfg, tmp_path / "cut", over, at_step=9)
    assert scores_and_losses(resumed) == scores_and_losses(whole)
    assert (tmp_path / "cut" / "model-last" / "textcat" / "model.pt").read_bytes() == (tmp_path / "whole" / "model-last" / "textcat" / "model.pt").read_bytes()
