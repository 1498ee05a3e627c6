from typing import Any, Callable, Dict, Iterable, Optional

from spacy.scorer import Scorer
from spacy.training import Example
from spacy.util import registry

from ..errors import Errors, UserError


def score_transformer_textcat(
    examples: Iterable[Example],
    *,
    labels: Iterable[str] = (),
    exclusive_classes: bool = True,
    threshold: Optional[float] = None,
    **cfg: Any,
) -> Dict[str, Any]:
    """spaCy's textcat scores (`cats_score`, per-label P/R/F, AUC) plus
    `cats_accuracy`, the share of docs whose predicted classes all match the
    gold ones: the paper reports accuracy.

    examples (Iterable[Example]): The examples to score.
    labels (Iterable[str]): The component's labels.
    exclusive_classes (bool): Whether exactly one class is true per doc.
    threshold (Optional[float]): Multilabel cut-off; 0.5 when None.
    RETURNS (Dict[str, Any]): The scores.
    """
    examples = list(examples)
    labels = list(labels)
    check_gold_labels(examples, labels)
    scores = Scorer.score_cats(
        examples,
        "cats",
        labels=labels,
        multi_label=not exclusive_classes,
        threshold=threshold,
        **cfg,
    )
    scores["cats_accuracy"] = cats_accuracy(
        examples, labels, exclusive_classes=exclusive_classes, threshold=threshold
    )
    return scores


def check_gold_labels(examples: Iterable[Example], labels: Iterable[str]) -> None:
    """Gold labels the model does not have cannot be scored: the gold class
    of such a doc would count as the model's first label.
    """
    known = set(labels)
    unknown = sorted({label for eg in examples for label, value in eg.reference.cats.items() if label not in known and value})
    if unknown and known:
        raise UserError(Errors.D039.format(unknown=unknown, known=sorted(known)))


def cats_accuracy(
    examples: Iterable[Example],
    labels: Iterable[str],
    *,
    exclusive_classes: bool = True,
    threshold: Optional[float] = None,
) -> Optional[float]:
    """Exact-match accuracy over the docs that have gold cats."""
    labels = list(labels)
    cut = 0.5 if threshold is None else threshold
    n_correct = n_total = 0
    for eg in examples:
        gold = eg.reference.cats
        if not gold:
            continue
        pred = eg.predicted.cats
        n_total += 1
        if exclusive_classes:
            gold_label = max(labels, key=lambda label: gold.get(label, 0.0))
            pred_label = max(labels, key=lambda label: pred.get(label, 0.0))
            n_correct += gold_label == pred_label
        else:
            n_correct += all(
                (pred.get(label, 0.0) >= cut) == (gold.get(label, 0.0) >= 0.5)
                for label in labels
                if label in gold
            )
    return n_correct / n_total if n_total else None


@registry.scorers("spacy-dekd.textcat_scorer.v1")
def make_textcat_scorer_v1() -> Callable[..., Dict[str, Any]]:
    return score_transformer_textcat
