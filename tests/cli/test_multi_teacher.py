"""The multi-teacher baselines distil tiny students: both teachers answer
every selected example once, in labelled batches and in query rounds."""
import pytest

from spacy_dekd.cli.distill import distill

from ..conftest import toy_rows, write_jsonl
from .conftest import ROOT, accuracy, overrides


@pytest.mark.parametrize("name", ["uhc", "muki", "dfa", "cfl", "ksm"])
def test_each_multi_teacher_config_distils_a_student(models, toy_data, tmp_path, name):
    import spacy

    metrics = distill(
        str(models["teacher"]), ROOT / "configs" / f"{name}.cfg", tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=overrides(toy_data, models["narrow"]),
    )
    # Every example, once each, to the teacher and to the assistant.
    assert metrics["teacher_forward_passes"] == metrics["assistant_forward_passes"] == metrics["examples"]
    assert accuracy(spacy.load(tmp_path / "out" / "model-best"), toy_data["dev"]) >= 0.9


def test_query_rounds_ask_both_teachers_and_count_the_budget_on_the_teacher(models, toy_data, tmp_path):
    from thinc.api import Config

    config = Config().from_disk(ROOT / "configs" / "uhc.cfg", interpolate=False)
    config["paths"]["unlabeled"] = None
    config["corpora"]["unlabeled"] = {"@readers": "spacy.PlainTextCorpus.v1", "path": "${paths.unlabeled}"}
    config["distillation"]["objective"]["selector"] = {"@dekd_selectors": "spacy-dekd.EntropySelector.v1", "ratio": 0.5}
    config.to_disk(tmp_path / "uhc.cfg")
    unlabelled = tmp_path / "unlabelled.txt"
    unlabelled.write_text("".join(row["text"] + "\n" for row in toy_rows(60, seed=7)), encoding="utf8")
    over = overrides(toy_data, models["narrow"], **{
        "paths.train": str(write_jsonl(toy_rows(40, seed=8), tmp_path / "labelled.jsonl")),
        "paths.unlabeled": str(unlabelled), "distillation.unlabeled_corpus": "corpora.unlabeled",
        "distillation.teacher_budget": 0.6,
    })
    metrics = distill(
        str(models["teacher"]), tmp_path / "uhc.cfg", tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    rounds = metrics["query_rounds"]
    assert rounds and all(r["teacher"] == r["assistant"] > 0 for r in rounds)
    assert metrics["teacher_forward_passes"] <= metrics["teacher_budget_passes"] == 60
    assert metrics["assistant_forward_passes"] == metrics["teacher_forward_passes"]


def test_a_resumed_ksm_run_ends_as_the_uninterrupted_one(models, toy_data, tmp_path, monkeypatch):
    # The policy, its generator and the step in flight come back with the checkpoint.
    from spacy_dekd.distill.output import RunOutput

    over = overrides(toy_data, models["narrow"], **{"distillation.max_epochs": 2, "distillation.eval_frequency": 4})
    cfg, teacher, assistant = ROOT / "configs" / "ksm.cfg", str(models["teacher"]), str(models["assistant"])
    whole = distill(teacher, cfg, tmp_path / "whole", assistant_path=assistant, overrides=over)
    original = RunOutput.save

    def save_then_die(self, run, state, *args):
        original(self, run, state, *args)
        if state.step == 8:
            raise KeyboardInterrupt

    monkeypatch.setattr(RunOutput, "save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over)
    monkeypatch.setattr(RunOutput, "save", original)
    resumed = distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over, resume=True)
    picks = [(r["knowledge"], r["loss"]) for r in resumed["history"]]
    assert picks == [(r["knowledge"], r["loss"]) for r in whole["history"]]
    assert len({r["knowledge"] for r in whole["history"]}) > 1


def test_muki_with_mc_dropout_asks_each_teacher_once_per_example(models, toy_data, tmp_path, monkeypatch):
    import spacy_dekd.distill.frozen as frozen_module

    calls = []
    original = frozen_module.teacher_forward

    def counting(pipe, docs, *, hidden, mc_samples=0):
        calls.append(mc_samples)
        out = original(pipe, docs, hidden=hidden, mc_samples=mc_samples)
        assert out.uncertainty is not None and out.uncertainty.shape == (len(docs),)
        assert bool((out.uncertainty >= 0).all()) and bool((out.uncertainty <= 0.7 + 1e-6).all())  # ≤ ln 2
        return out

    monkeypatch.setattr(frozen_module, "teacher_forward", counting)
    over = overrides(toy_data, models["narrow"], **{
        "distillation.objective.teacher_assistant.uncertainty": "mc_dropout",
        "distillation.objective.teacher_assistant.mc_samples": 3,
    })
    metrics = distill(
        str(models["teacher"]), ROOT / "configs" / "muki.cfg", tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    assert set(calls) == {3}
    # Each example answered once, at 1 + 3 passes (it counted answers as passes).
    assert metrics["teacher_answers"] == metrics["assistant_answers"] == metrics["examples"]
    assert metrics["teacher_forward_passes"] == metrics["assistant_forward_passes"] == 4 * metrics["examples"]
