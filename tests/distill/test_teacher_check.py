"""A teacher against always answering the majority class, by hand."""
import pytest
import spacy
from spacy.training import Example

from spacy_dekd.distill.teacher_check import (
    dev_fingerprint,
    majority_baseline,
    record_dev_scores,
    stored_dev_scores,
    weak_teacher,
)

LABELS = ["negative", "neutral", "positive"]


def examples(counts):
    nlp = spacy.blank("en")
    out = []
    for label, n in counts.items():
        for i in range(n):
            cats = {other: float(other == label) for other in LABELS}
            out.append(Example.from_dict(nlp.make_doc(f"{label} text {i}"), {"cats": cats}))
    return out


def scores(accuracy, macro_f, recall):
    return {"cats_accuracy": accuracy, "cats_macro_f": macro_f, "cats_f_per_type": {k: {"p": 1.0, "r": r, "f": 0.5} for k, r in recall.items()}}


DEV = examples({"negative": 18, "neutral": 41, "positive": 41})


def test_majority_baseline_by_hand():
    base = majority_baseline(DEV, LABELS)
    # 41 % answered 'neutral' (the first of the two largest classes met):
    # F of that class 2 * 0.41 / 1.41, 0 for the other two.
    assert base["label"] == "neutral"
    assert base["accuracy"] == pytest.approx(0.41)
    assert base["macro_f"] == pytest.approx(2 * 0.41 / 1.41 / 3)


@pytest.mark.parametrize(
    "accuracy,macro_f,recall,expected",
    [
        (0.42, 0.30, {"negative": 0.3, "neutral": 0.6, "positive": 0.4}, "within 2 points of always answering 'neutral'"),
        (0.60, 0.20, {"negative": 0.3, "neutral": 0.6, "positive": 0.4}, "within 2 points"),
        (0.60, 0.433, {"negative": 0.0, "neutral": 0.9, "positive": 0.006}, "never predicts 'negative' (recall 0.00), 'positive' (recall 0.01)"),
        (0.72, 0.68, {"negative": 0.5, "neutral": 0.8, "positive": 0.7}, None),
    ],
)
def test_weak_teacher(accuracy, macro_f, recall, expected):
    problem = weak_teacher(scores(accuracy, macro_f, recall), DEV, LABELS)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem


def test_multilabel_scores_are_not_judged():
    assert weak_teacher({"cats_macro_auc": 0.9}, DEV, LABELS) is None


def test_stored_scores_are_used_for_the_same_dev_data_only():
    nlp = spacy.blank("en")
    record_dev_scores(nlp, {"fingerprint": dev_fingerprint(DEV), "scores": {"cats_accuracy": 0.8}})
    assert stored_dev_scores(nlp, DEV) == {"cats_accuracy": 0.8}
    assert stored_dev_scores(nlp, DEV[:-1]) is None
    relabelled = examples({"negative": 19, "neutral": 40, "positive": 41})
    assert stored_dev_scores(nlp, relabelled) is None
