"""`spacy distill` into spaCy's own textcat (configs fast_cnn, fast_bow and
static, shrunk to toy size, over vectors from the toy teacher's encoder): it
learns the teacher's task, resumes bit-identically after a kill, and refuses
in one line what a logits-only student cannot do."""
import pytest
import spacy
from thinc.api import Config

from spacy_dekd.cli.distill import distill
from spacy_dekd.cli.vectors import init_encoder_vectors
from spacy_dekd.configs import config_text
from spacy_dekd.corpus import DatasetCorpus
from spacy_dekd.errors import DistillationError

from .conftest import killed_and_resumed, overrides, scores_and_losses, weights


def fast_config(tmp_path, variant, **changes):
    """The shipped variant with a toy tok2vec, as a file."""
    config = Config().from_str(config_text(variant), interpolate=False)
    model = config["components"]["textcat"]["model"]
    if "tok2vec" in model:
        embed = model["tok2vec"]["embed"]
        embed.update(width=16, rows=[200, 50, 50, 50][: len(embed["attrs"])])
        model["tok2vec"]["encode"].update(width=16, depth=1)
    if "linear_model" in model or "tok2vec" not in model:
        model.get("linear_model", model)["length"] = 4096
    for dotted, value in changes.items():
        *path, key = dotted.split(".")
        node = config
        for part in path:
            node = node[part]
        node[key] = value
    path = tmp_path / f"{variant}.cfg"
    config.to_disk(path)
    return path


def fast_overrides(toy_data, models, pool, **extra):
    return overrides(toy_data, models["narrow"], **{
        "paths.train": str(pool["labelled"]), "paths.unlabeled": str(pool["unlabelled"]),
        "distillation.max_epochs": 6, "distillation.teacher_budget": None, **extra,
    })


@pytest.fixture(scope="module")
def vectors(models, texts):
    """Vectors from the teacher's fine-tuned encoder, for the static student."""
    path = texts["root"] / "vectors"
    init_encoder_vectors(str(models["teacher"]), path, [texts["unlabelled"]], width=8)
    return path


@pytest.mark.parametrize("variant", ["fast_cnn", "fast_bow", "static"])
def test_spacy_textcat_students_learn_the_teachers_task(models, toy_data, texts, vectors, tmp_path, capsys, variant):
    out = tmp_path / "out"
    # The models are cut to width 16: the shipped dropout (0.3, for width 96) would leave them too few units.
    over = fast_overrides(toy_data, models, texts, **{"paths.vectors": str(vectors), "distillation.dropout": 0.1})
    metrics = distill(str(models["teacher"]), fast_config(tmp_path, variant), out, overrides=over)
    printed = capsys.readouterr().out
    assert "Student: spaCy's textcat (spacy.TextCat" in printed and "from fresh weights" in printed
    assert metrics["teacher_answers"] > 0 and metrics["query_rounds"]
    nlp = spacy.load(out / "model-best")
    assert nlp.get_pipe_meta("textcat").factory == "textcat" and list(nlp.get_pipe("textcat").labels) == ["negative", "positive"]
    # spaCy's own scorer: for exclusive classes its micro F is the accuracy.
    assert nlp.evaluate(list(DatasetCorpus(toy_data["dev"])(nlp)))["cats_micro_f"] >= 0.9


def test_a_killed_spacy_textcat_student_resumes_bit_identical(models, toy_data, texts, vectors, tmp_path, monkeypatch):
    cfg = fast_config(tmp_path, "fast_cnn")
    over = fast_overrides(toy_data, models, texts, **{
        "distillation.max_epochs": 3, "distillation.eval_frequency": 4, "distillation.dropout": 0.2, "paths.vectors": str(vectors),
    })
    teacher = str(models["teacher"])
    whole = distill(teacher, cfg, tmp_path / "whole", overrides=over)
    resumed = killed_and_resumed(monkeypatch, teacher, cfg, tmp_path / "cut", over, at_step=7)
    assert scores_and_losses(resumed) == scores_and_losses(whole)
    assert resumed["query_rounds"] == whole["query_rounds"]
    assert weights(tmp_path / "cut" / "model-last") == weights(tmp_path / "whole" / "model-last")


@pytest.mark.parametrize("change,expected", [
    ({"distillation.objective.alignment_weight": 0.02}, "but the layer alignment reads them: set [distillation.objective] alignment_weight = 0"),
    ({"distillation.objective.selector": {"@dekd_selectors": "spacy-dekd.DiverseEntropySelector.v1", "ratio": 0.5}},
     "but the selector reads them: use a selector of logits"),
    ({"distillation.student_init": {"@misc": "spacy-dekd.StudentFromTeacher.v1"}}, "use spacy-dekd.StudentFromConfig.v1"),
])
def test_what_a_logits_only_student_cannot_do_is_refused_before_the_first_step(models, toy_data, texts, tmp_path, change, expected):
    cfg = fast_config(tmp_path, "fast_bow", **change)
    with pytest.raises(DistillationError, match=expected.replace("[", r"\[").replace("]", r"\]")):
        distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=fast_overrides(toy_data, models, texts))
    assert not (tmp_path / "out" / "model-last").exists()


@pytest.mark.parametrize("variant", ["fast_cnn", "static"])
def test_a_student_without_its_vectors_is_one_line(models, toy_data, texts, tmp_path, variant):
    cfg = fast_config(tmp_path, variant)
    for vectors, expected in [(None, r"needs static vectors: set paths.vectors"), (str(tmp_path / "nowhere"), r"\[D047\]")]:
        with pytest.raises(DistillationError, match=expected):
            distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=fast_overrides(toy_data, models, texts, **{"paths.vectors": vectors}))
    assert not (tmp_path / "out" / "model-last").exists()


def test_runs_that_share_a_store_of_answers_ask_the_teacher_once(models, toy_data, texts, tmp_path):
    cfg = fast_config(tmp_path, "fast_bow")
    teacher, store = str(models["teacher"]), tmp_path / "answers"
    over = fast_overrides(toy_data, models, texts, **{"distillation.max_epochs": 3, "distillation.teacher_answers": str(store)})
    first = distill(teacher, cfg, tmp_path / "first", overrides=over)
    assert first["teacher_answers_stored"] == 0 and first["teacher_forward_passes"] == first["teacher_answers"] > 0
    # The same run again: every answer is in the store, and it learns the same.
    again = distill(teacher, cfg, tmp_path / "again", overrides=over)
    assert again["teacher_forward_passes"] == 0 and again["teacher_answers_stored"] == first["teacher_answers"]
    assert again["query_rounds"] == first["query_rounds"]
    for (step, loss, score, _), (step_again, loss_again, score_again, _) in zip(scores_and_losses(first), scores_and_losses(again)):
        assert step_again == step and loss_again == pytest.approx(loss, abs=1e-4) and score_again == pytest.approx(score, abs=1e-4)
    # Another seed picks other texts too: it asks only for those, and adds them.
    other = distill(teacher, cfg, tmp_path / "other", overrides={**over, "system.seed": 1})
    assert other["teacher_answers_stored"] + other["teacher_forward_passes"] == other["teacher_answers"]
    assert 0 < other["teacher_answers_stored"] and other["teacher_forward_passes"] < other["teacher_answers"]
    assert len(list(store.glob("*/answers-*.safetensors"))) >= 2 and not list(store.glob("*/*.tmp"))
