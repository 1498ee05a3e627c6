"""A teacher against always answering the majority class, and a student
against its rival, by hand."""
import numpy
import pytest
import spacy
from spacy.training import Example

from spacy_dekd.distill.teacher_check import (
    against_rival,
    dev_fingerprint,
    majority_baseline,
    paired_difference,
    record_dev_scores,
    rival_verdict,
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
        (0.60, 0.20, {"negative": 0.3, "neutral": 0.6, "positive": 0.4}, "20.0 macro F on dev, within 2 points"),
        # Above the baseline's accuracy, below its macro F (19.4): below, not "within".
        (0.60, 0.15, {"negative": 0.3, "neutral": 0.6, "positive": 0.4}, "15.0 macro F on dev, below always answering 'neutral'"),
        (0.20, 0.10, {"negative": 0.3, "neutral": 0.1, "positive": 0.4}, "below always answering 'neutral' (41.0%, 19.4)"),
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


def test_paired_difference_against_a_normal_interval_and_a_resampling_bootstrap():
    # 1,000 texts: both right on 700, a alone on 120, b alone on 80.
    a = numpy.array([True] * 700 + [True] * 120 + [False] * 80 + [False] * 100)
    b = numpy.array([True] * 700 + [False] * 120 + [True] * 80 + [False] * 100)
    diff, low, high = paired_difference(a, b)
    assert diff == pytest.approx(0.04)
    # The normal approximation of a paired difference: se = sqrt((p+ + p- - d^2) / n).
    se = ((0.12 + 0.08 - 0.04**2) / 1000) ** 0.5
    assert low == pytest.approx(0.04 - 1.96 * se, abs=0.002) and high == pytest.approx(0.04 + 1.96 * se, abs=0.002)
    # Resampling the texts themselves gives the same interval.
    rng = numpy.random.default_rng(1)
    idx = rng.integers(0, 1000, size=(4000, 1000))
    resampled = a[idx].mean(1) - b[idx].mean(1)
    assert numpy.quantile(resampled, [0.025, 0.975]) == pytest.approx([low, high], abs=0.003)
    assert paired_difference(b, a) == pytest.approx((-0.04, -high, -low), abs=0.002)
    assert paired_difference(a, a) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="one length"):
        paired_difference(a, b[:10])


def test_against_rival_and_its_verdicts():
    n = 400
    rng = numpy.random.default_rng(0)
    rival = rng.random(n) < 0.75
    teacher = rival | (rng.random(n) < 0.6)  # right wherever the rival is, and on most of the rest
    student = rival | (rng.random(n) < 0.3)
    report = against_rival(teacher, student, rival)
    lead, added = report["teacher_over_rival"][0], report["student_over_rival"][0]
    assert report["accuracy"]["rival"] == pytest.approx(rival.mean())
    assert lead == pytest.approx(teacher.mean() - rival.mean()) and added == pytest.approx(student.mean() - rival.mean())
    assert report["kept"] == pytest.approx(added / lead) and report["texts"] == n
    kinds = [kind for kind, _ in rival_verdict(report, "student", "no-teacher")]
    assert kinds[-1] == "good" and f"Distillation added {added * 100:.1f} points over no-teacher" in rival_verdict(report, "student", "no-teacher")[-1][1]
    # A teacher no better than the rival: said, with what tends to help.
    tie = against_rival(rival, rival, rival)
    kind, line = rival_verdict(tie, "student", "no-teacher")[-1]
    assert kind == "warn" and "The teacher is not clearly better than no-teacher" in line and "more unlabelled text" in line
    assert tie["kept"] is None
    # A teacher that leads, a student that keeps none of it.
    kind, line = rival_verdict(against_rival(teacher, rival, rival), "student", "no-teacher")[-1]
    assert kind == "warn" and "student does not clearly beat no-teacher" in line
