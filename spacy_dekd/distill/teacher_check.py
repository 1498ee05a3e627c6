"""Is a teacher worth distilling? Its dev scores against always answering
the majority class.

A teacher can rank examples better than chance (macro AUC well above 0.5)
and still answer the majority class for nearly every text: on small,
imbalanced data a short fine-tuning run ends there. A student distilled from
it learns to do the same. `weak_teacher` names that case in one line: dev
accuracy or macro F within `margin` of the majority-class baseline, or a
class the teacher (almost) never predicts.

The teacher's dev scores are computed once, when it is trained
(scripts/train_teacher.py writes them into its meta.json with a fingerprint
of the dev data); `spacy distill` reuses them when its dev data has the
same fingerprint.
"""
from collections import Counter
from typing import Any, Dict, Iterable, List, Optional, Sequence

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
        return (
            f"it scores {accuracy:.1%} accuracy and {macro_f * 100:.1f} macro F on dev, within "
            f"{margin * 100:.0f} points of always answering '{base['label']}' "
            f"({base['accuracy']:.1%}, {base['macro_f'] * 100:.1f})"
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
