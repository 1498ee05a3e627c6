"""Is a teacher worth distilling? Its dev scores against always answering
the majority class.

A teacher can rank examples better than chance (macro AUC well above 0.5)
and still answer the majority class for nearly every text: on small,
imbalanced data a short fine-tuning run ends there. A student distilled from
it learns to do the same. `weak_teacher` names that case in one line: dev
accuracy or macro F below the majority-class baseline or within `margin`
of it, or a class the teacher (almost) never predicts.

The teacher's dev scores are computed once, when it is trained
(scripts/train_teacher.py writes them into its meta.json with a fingerprint
of the dev data); `spacy distill` reuses them when its dev data has the
same fingerprint.

After distillation the question is the user's own: is the student better
than the same architecture trained on the labels alone (the rival)?
`against_rival` compares teacher, student and rival on the same test texts,
each difference with a paired bootstrap interval, and `rival_verdict` says
in plain lines whether the teacher was worth its cost.
"""
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy

from spacy.language import Language
from spacy.training import Example

from .checkpoint import corpus_fingerprint

# How far above the majority-class baseline (accuracy and macro F, as
# fractions) a teacher must score, and the dev recall below which a class
# counts as never predicted.
MIN_MARGIN = 0.02
MIN_RECALL = 0.05
META_KEY = "spacy_dekd"


def gold_classes(examples: Iterable[Example]) -> List[str]:
    """The gold class of each exclusive-class example that has one."""
    return [max(eg.reference.cats, key=eg.reference.cats.get) for eg in examples if eg.reference.cats]


def majority_baseline(examples: Iterable[Example], labels: Sequence[str]) -> Dict[str, Any]:
    """Accuracy and macro F (over `labels`) of always answering the most
    frequent gold class of the examples.
    """
    counts = Counter(gold_classes(examples))
    n = sum(counts.values())
    label, count = counts.most_common(1)[0] if counts else (labels[0], 0)
    share = count / n if n else 0.0
    return {"label": label, "accuracy": share, "macro_f": (2 * share / (1 + share)) / max(len(labels), 1)}


def dev_fingerprint(examples: Sequence[Example]) -> Dict[str, Any]:
    return corpus_fingerprint((eg.text for eg in examples), (eg.reference.cats for eg in examples))


def dev_scores(nlp: Language, examples: Sequence[Example]) -> Dict[str, Any]:
    """The pipeline's textcat scores on the examples, as `nlp.evaluate` gives
    them, with the fingerprint of the examples.
    """
    scores = nlp.evaluate(examples)
    keep = {key: value for key, value in scores.items() if key.startswith("cats_")}
    return {"fingerprint": dev_fingerprint(examples), "scores": keep}


def stored_dev_scores(nlp: Language, examples: Sequence[Example]) -> Optional[Dict[str, Any]]:
    """The scores `record_dev_scores` saved in the pipeline's meta, if they
    were computed on these very examples (same texts and labels).
    """
    stored = nlp.meta.get(META_KEY, {}).get("dev")
    if not stored or stored.get("fingerprint") != dev_fingerprint(examples):
        return None
    return stored.get("scores")


def record_dev_scores(nlp: Language, record: Dict[str, Any]) -> None:
    nlp.meta.setdefault(META_KEY, {})["dev"] = record


def weak_teacher(
    scores: Dict[str, Any],
    examples: Sequence[Example],
    labels: Sequence[str],
    *,
    margin: float = MIN_MARGIN,
    min_recall: float = MIN_RECALL,
) -> Optional[str]:
    """Why a teacher with these dev scores is not worth distilling, in one
    clause, or None. Exclusive classes only (None for multilabel scores).
    """
    accuracy, macro_f = scores.get("cats_accuracy"), scores.get("cats_macro_f")
    if accuracy is None or macro_f is None:
        return None
    base = majority_baseline(examples, labels)
    if accuracy - base["accuracy"] < margin or macro_f - base["macro_f"] < margin:
        below = accuracy < base["accuracy"] or macro_f < base["macro_f"]
        where = "below" if below else f"within {margin * 100:.0f} points of"
        return (
            f"it scores {accuracy:.1%} accuracy and {macro_f * 100:.1f} macro F on dev, {where} "
            f"always answering '{base['label']}' ({base['accuracy']:.1%}, {base['macro_f'] * 100:.1f})"
        )
    present = Counter(gold_classes(examples))
    per_type = scores.get("cats_f_per_type") or {}
    rare = [
        (label, values["r"])
        for label, values in per_type.items()
        if present.get(label) and values.get("r") is not None and values["r"] < min_recall
    ]
    if rare:
        named = ", ".join(f"'{label}' (recall {recall:.2f})" for label, recall in rare)
        return f"it (almost) never predicts {named} on dev"
    return None


def per_class_recall(scores: Dict[str, Any]) -> str:
    """'negative 0.81, positive 0.93': each class's dev recall."""
    per_type = scores.get("cats_f_per_type") or {}
    return ", ".join(f"{label} {values['r']:.2f}" for label, values in per_type.items() if values.get("r") is not None)


# The rival: what distillation added over training on the labels alone.
N_BOOTSTRAP = 10_000
LEVEL = 0.95


def correct(examples: Sequence[Example]) -> numpy.ndarray:
    """Whether the predicted class (the highest score) of each example with
    an exclusive gold class is that class.
    """
    return numpy.array(
        [max(eg.predicted.cats, key=eg.predicted.cats.get) == max(eg.reference.cats, key=eg.reference.cats.get)
         for eg in examples if eg.reference.cats]
    )


def paired_difference(a: numpy.ndarray, b: numpy.ndarray, *, seed: int = 0) -> Tuple[float, float, float]:
    """Accuracy of a minus accuracy of b on the same texts, with its LEVEL
    paired bootstrap interval (N_BOOTSTRAP resamples of the texts).

    Only the per-text differences (-1, 0, +1) matter, so a resample is a
    draw of how many texts fall in each: one multinomial draw, the same
    distribution as resampling the texts themselves.
    """
    a, b = numpy.asarray(a, dtype=bool), numpy.asarray(b, dtype=bool)
    n = len(a)
    if n == 0 or len(b) != n:
        raise ValueError(f"paired_difference needs two non-empty arrays of one length, got {len(a)} and {len(b)}")
    counts = [int((~a & b).sum()), int((a == b).sum()), int((a & ~b).sum())]  # b alone right, same, a alone right
    draws = numpy.random.default_rng(seed).multinomial(n, numpy.array(counts) / n, size=N_BOOTSTRAP)
    diffs = (draws[:, 2] - draws[:, 0]) / n
    tail = (1 - LEVEL) / 2
    low, high = numpy.quantile(diffs, [tail, 1 - tail])
    return (counts[2] - counts[0]) / n, float(low), float(high)


def against_rival(teacher: numpy.ndarray, student: numpy.ndarray, rival: numpy.ndarray) -> Dict[str, Any]:
    """Teacher, student and rival (each one's `correct` on the same texts):
    their accuracies, what the teacher leads the rival by and what the
    student adds over it (each `[difference, low, high]`), and the share
    of the teacher's lead the student keeps (None where there is no lead).
    """
    over_teacher = paired_difference(teacher, rival)
    over_student = paired_difference(student, rival)
    kept = over_student[0] / over_teacher[0] if over_teacher[0] > 0 else None
    return {
        "texts": len(rival), "level": LEVEL,
        "accuracy": {"teacher": float(numpy.mean(teacher)), "student": float(numpy.mean(student)), "rival": float(numpy.mean(rival))},
        "teacher_over_rival": list(over_teacher), "student_over_rival": list(over_student), "kept": kept,
        "teacher_beats_rival": over_teacher[1] > 0, "student_beats_rival": over_student[1] > 0,
    }


def rival_verdict(report: Dict[str, Any], student: str, rival: str) -> List[Tuple[str, str]]:
    """What the comparison says, as (kind, line) pairs; kind is "good",
    "warn" or "text", for wasabi's printer.
    """

    def points(diff: List[float]) -> str:
        return f"{diff[0] * 100:+.1f} points (95 % interval {diff[1] * 100:+.1f} to {diff[2] * 100:+.1f})"

    teacher_lead, added = report["teacher_over_rival"], report["student_over_rival"]
    lines = [
        ("text", f"{student} against {rival} (the same architecture on the labels alone), {report['texts']} test texts:"),
        ("text", f"  the teacher leads {rival} by {points(teacher_lead)}"),
        ("text", f"  {student} adds {points(added)}"
                 + (f": {report['kept']:.0%} of the teacher's lead" if report["kept"] is not None else "")),
    ]
    helps = "a stronger teacher, more unlabelled text of the same kind, or its variants (the more-text workflow) tend to help"
    if not report["teacher_beats_rival"]:
        lines.append(("warn", f"The teacher is not clearly better than {rival}: there was little for distillation to add; {helps}."))
    elif not report["student_beats_rival"]:
        lines.append(("warn", f"{student} does not clearly beat {rival}, which is cheaper to train: {helps}."))
    else:
        lines.append(("good", f"Distillation added {added[0] * 100:.1f} points over {rival}."))
    return lines
