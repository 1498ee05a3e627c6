"""`transformer_textcat`: a text classifier over any Hugging Face encoder.

It is spaCy's `textcat` / `textcat_multilabel` with the whole encoder
fine-tuned: exclusive classes (softmax) or multilabel (sigmoid) by one
setting, sentence pairs through `doc._.text_pair`, and weights saved as
safetensors. The teacher, assistant and student of DeKD are all instances.
"""
import contextlib
from itertools import islice
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy
import srsly
import torch
from spacy import util
from spacy.language import Language
from spacy.pipeline import TrainablePipe
from spacy.tokens import Doc
from spacy.training import Example, validate_examples, validate_get_examples
from spacy.vocab import Vocab
from thinc.api import Config, Model, Optimizer
from thinc.types import Floats2d

from ..models.classifier import TransformerClassifierShim, get_shim, install_extensions
from ..models.pytorch import ClassifierOutput, TransformerClassifier
from .scorer import score_transformer_textcat

DEFAULT_CONFIG_STR = """
[model]
@architectures = "spacy-dekd.TransformerClassifier.v1"
name = "sentence-transformers/all-mpnet-base-v2"
layers = null
pooling = "first"
dropout = 0.1
max_length = 128
mixed_precision = false
"""
DEFAULT_MODEL = Config().from_str(DEFAULT_CONFIG_STR)["model"]
CLASS_WEIGHTS = (None, "balanced")


@Language.factory(
    "transformer_textcat",
    assigns=["doc.cats"],
    default_config={
        "model": DEFAULT_MODEL,
        "exclusive_classes": True,
        "threshold": 0.5,
        "class_weights": None,
        "scorer": {"@scorers": "spacy-dekd.textcat_scorer.v1"},
    },
    default_score_weights={"cats_accuracy": 0.5, "cats_macro_auc": 0.5, "cats_score": 0.0},
)
def make_transformer_textcat(
    nlp: Language,
    name: str,
    model: Model[List[Doc], Floats2d],
    exclusive_classes: bool,
    threshold: float,
    class_weights: Optional[str],
    scorer: Optional[Callable],
) -> "TransformerTextCategorizer":
    return TransformerTextCategorizer(
        nlp.vocab,
        model,
        name,
        exclusive_classes=exclusive_classes,
        threshold=threshold,
        class_weights=class_weights,
        scorer=scorer,
    )


class TransformerTextCategorizer(TrainablePipe):
    """Text classification with a fine-tuned transformer encoder.

    vocab (Vocab): The shared vocabulary.
    model (Model[List[Doc], Floats2d]): Returns logits (N, C), e.g.
        `spacy-dekd.TransformerClassifier.v1`.
    name (str): The component instance name.
    exclusive_classes (bool): Exactly one class per doc (softmax,
        cross-entropy) when True; independent classes (sigmoid, binary
        cross-entropy) when False.
    threshold (float): Multilabel cut-off used by the scorer.
    class_weights (Optional[str]): "balanced" weighs each class's examples in
        the training loss by n / (n_classes * n_class), counted in the
        training examples at `initialize` (exclusive classes), so that a
        minority class counts as much as the majority; None weighs every
        example alike. The weights are saved with the component.
    scorer (Optional[Callable]): The scoring method.
    """

    def __init__(
        self,
        vocab: Vocab,
        model: Model[List[Doc], Floats2d],
        name: str = "transformer_textcat",
        *,
        exclusive_classes: bool = True,
        threshold: float = 0.5,
        class_weights: Optional[str] = None,
        scorer: Optional[Callable] = score_transformer_textcat,
    ) -> None:
        install_extensions()
        if class_weights not in CLASS_WEIGHTS:
            raise ValueError(f"'{name}': class_weights must be one of {CLASS_WEIGHTS}, got {class_weights!r}.")
        if class_weights is not None and not exclusive_classes:
            raise ValueError(f"'{name}': class_weights = {class_weights!r} needs exclusive_classes = true.")
        self.vocab = vocab
        self.model = model
        self.name = name
        self.cfg: Dict[str, Any] = {
            "labels": [],
            "exclusive_classes": exclusive_classes,
            "threshold": threshold,
            "class_weights": class_weights,
            # Per label, in the order of `labels`; set by `initialize`.
            "label_weights": None,
        }
        self.scorer = scorer

    @property
    def labels(self) -> Tuple[str, ...]:
        """RETURNS (Tuple[str]): The labels, in the order of the logits."""
        return tuple(self.cfg["labels"])

    @property
    def label_data(self) -> List[str]:
        return list(self.labels)

    @property
    def exclusive_classes(self) -> bool:
        return bool(self.cfg["exclusive_classes"])

    @property
    def shim(self) -> TransformerClassifierShim:
        """The torch classifier (or, in a pipeline made by `spacy
        textcat-quantize`, the `OnnxClassifierShim` that stands in for it).
        """
        return get_shim(self.model)  # type: ignore[return-value]

    # What runs the classifier, as the distillation loop reads it: the same
    # members for the torch model and its ONNX copy, so that nothing outside
    # the component reaches into its shim.
    @property
    def runtime(self) -> str:
        """"torch" (trainable: hidden states, dropout) or "onnx" (logits alone)."""
        return self.shim.runtime

    @property
    def torch_module(self) -> Optional[TransformerClassifier]:
        """The torch classifier (its `n_layers`, `width`), None on ONNX Runtime."""
        return self.shim.module if self.runtime == "torch" else None

    @property
    def device(self) -> torch.device:
        return self.shim.device if self.runtime == "torch" else torch.device("cpu")

    @property
    def mixed_precision_dtype(self) -> Optional[str]:
        return self.shim.mixed_precision_dtype if self.runtime == "torch" else None

    def set_mixed_precision(self, enabled: bool) -> None:
        self.shim.set_mixed_precision(enabled)

    def load_model(self, path: Union[str, Path]) -> None:
        """The classifier saved in `path` (a `model/` folder), settings kept."""
        self.shim.from_disk(Path(path))

    def forward(
        self, docs: Sequence[Doc], *, is_train: bool, output_hidden_states: bool = False,
        mc_dropout: bool = False,
    ) -> ClassifierOutput:
        """Run the encoder once over the docs, in torch: logits (N, C) and,
        when asked, the first-token state of every layer. The distillation
        trainer uses this; spaCy's training loop goes through `update`.
        """
        return self.shim.run(docs, is_train=is_train, output_hidden_states=output_hidden_states, mc_dropout=mc_dropout)

    def predict(self, docs: Iterable[Doc]) -> Floats2d:
        """Class probabilities for a batch of docs, without modifying them.

        docs (Iterable[Doc]): The documents to predict.
        RETURNS (Floats2d): The probabilities, (N, C).
        """
        docs = list(docs)
        if not docs:
            return self.model.ops.alloc2f(0, len(self.labels))
        logits = self.model.predict(docs)
        return self.model.ops.asarray(self._probabilities_xp(logits))

    def _probabilities_xp(self, logits: Floats2d) -> Floats2d:
        xp = self.model.ops.xp
        if self.exclusive_classes:
            return self.model.ops.softmax(logits, axis=-1)
        return 1.0 / (1.0 + xp.exp(-logits))

    def set_annotations(self, docs: Iterable[Doc], scores: Floats2d) -> None:
        """Set `doc.cats` from the probabilities returned by `predict`."""
        for i, doc in enumerate(docs):
            for j, label in enumerate(self.labels):
                doc.cats[label] = float(scores[i, j])

    def update(
        self,
        examples: Iterable[Example],
        *,
        drop: float = 0.0,
        sgd: Optional[Optimizer] = None,
        losses: Optional[Dict[str, float]] = None,
    ) -> Dict[str, float]:
        """Learn from a batch of examples: one forward and backward pass of
        the whole encoder, and an optimizer step when `sgd` is given.

        drop (float): The dropout rate of every dropout layer of the encoder
            and head during this update (`[training] dropout` in spacy train).
        """
        if losses is None:
            losses = {}
        losses.setdefault(self.name, 0.0)
        examples = list(examples)
        validate_examples(examples, "TransformerTextCategorizer.update")
        validate_categories(self.name, self.labels, self.exclusive_classes, examples)
        with dropout_rate(self.shim.module, drop):
            logits, backprop = self.model.begin_update(docs_with_pairs(examples))
            loss, d_logits = self.get_loss(examples, logits)
            backprop(d_logits)
        if sgd is not None:
            self.finish_update(sgd)
        losses[self.name] += loss
        return losses

    def get_loss(self, examples: Iterable[Example], scores: Floats2d) -> Tuple[float, Floats2d]:
        """Cross-entropy (exclusive) or binary cross-entropy (multilabel) of
        the logits against the gold cats, averaged over docs, and its
        gradient with respect to the logits.

        scores (Floats2d): The logits, (N, C).
        RETURNS (Tuple[float, Floats2d]): The loss and d_loss/d_logits.
        """
        examples = list(examples)
        truths, not_missing = self.examples_to_truth(examples)
        probs = self._probabilities_xp(scores)
        xp = self.model.ops.xp
        eps = 1e-7
        n = max(len(examples), 1)
        if self.exclusive_classes:
            weights = self.cfg.get("label_weights")
            # Each row weighed by its gold class's weight; rows without gold are all 0.
            row_weights = (truths * xp.asarray(weights, dtype="f")).sum(-1, keepdims=True) if weights else not_missing
            loss = -(row_weights * truths * xp.log(probs + eps)).sum() / n
            d_logits = row_weights * (probs - truths) * not_missing / n
        else:
            bce = -(truths * xp.log(probs + eps) + (1 - truths) * xp.log(1 - probs + eps))
            loss = (bce * not_missing).sum() / n
            d_logits = (probs - truths) * not_missing / n
        return float(loss), d_logits.astype("float32")

    def examples_to_truth(self, examples: List[Example]) -> Tuple[Floats2d, Floats2d]:
        """The gold targets of a batch, (N, C), and where they are known
        (`gold_truth`). `update` and the distillation trainer both read the
        gold through this.
        """
        truths, not_missing = gold_truth(examples, self.labels, exclusive=self.exclusive_classes)
        ops = self.model.ops
        return ops.asarray(truths), ops.asarray(not_missing)

    def add_label(self, label: str) -> int:
        """Add a label before `initialize`. RETURNS (int): 0 if present, else 1."""
        if not isinstance(label, str):
            raise ValueError(f"Labels must be strings, got {label!r}.")
        if label in self.labels:
            return 0
        if self.shim.module is not None:
            raise ValueError(
                f"Cannot add label '{label}' to '{self.name}': the classifier is "
                "already initialized. Add all labels before nlp.initialize()."
            )
        self.cfg["labels"].append(label)
        self.vocab.strings.add(label)
        return 1

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        *,
        nlp: Optional[Language] = None,
        labels: Optional[Iterable[str]] = None,
    ) -> None:
        """Take the labels from the examples (or `labels`) and load the
        pretrained encoder named in the model config.

        get_examples (Callable[[], Iterable[Example]]): Training examples.
        nlp (Language): The pipeline.
        labels (Optional[Iterable[str]]): The labels, e.g. from `init labels`.
        """
        validate_get_examples(get_examples, "TransformerTextCategorizer.initialize")
        if labels is None:
            for example in get_examples():
                for cat in example.reference.cats:
                    self.add_label(cat)
        else:
            for label in labels:
                self.add_label(label)
        min_labels = 2 if self.exclusive_classes else 1
        if len(self.labels) < min_labels:
            raise ValueError(
                f"'{self.name}' needs at least {min_labels} label(s) to initialize, "
                f"found {list(self.labels)}: give the examples `doc.cats` or pass "
                "labels in [initialize.components]."
            )
        validate_categories(self.name, self.labels, self.exclusive_classes, islice(get_examples(), 100))
        if self.cfg["class_weights"] == "balanced":
            self.cfg["label_weights"] = balanced_weights(get_examples(), self.labels)
        self.model.set_dim("nO", len(self.labels))
        self.model.initialize()

    def to_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = util.SimpleFrozenList()
    ) -> None:
        """Save `cfg` and a `model/` folder: the encoder's `config.json` and
        tokenizer (Hugging Face format), `model.safetensors`, `classifier.json`.
        """
        serialize = {
            "cfg": lambda p: srsly.write_json(p, self.cfg),
            "model": lambda p: self.shim.to_disk(p),
        }
        util.to_disk(path, serialize, exclude)

    def from_disk(
        self, path: Union[str, Path], *, exclude: Iterable[str] = util.SimpleFrozenList()
    ) -> "TransformerTextCategorizer":
        path = util.ensure_path(path)
        for required in ("cfg", "model"):
            if not (path / required).exists():
                raise ValueError(
                    f"Cannot load '{self.name}' from '{path}': '{required}' is missing. "
                    "The pipeline directory is incomplete; train or package it again."
                )
        try:
            cfg = srsly.read_json(path / "cfg")
        except ValueError as err:
            raise ValueError(f"Cannot load '{self.name}': '{path / 'cfg'}' is not valid JSON.") from err
        self.shim.from_disk(path / "model")
        self.cfg.update(cfg)
        self.model.set_dim("nO", len(self.labels), force=True)
        return self

    def from_bytes(
        self, bytes_data: bytes, *, exclude: Iterable[str] = util.SimpleFrozenList()
    ) -> "TransformerTextCategorizer":
        msg = srsly.msgpack_loads(bytes_data)
        self.cfg.update(srsly.json_loads(msg["cfg"]))
        self.shim.from_bytes(msg["model"])
        self.model.set_dim("nO", len(self.labels), force=True)
        return self

    def to_bytes(self, *, exclude: Iterable[str] = util.SimpleFrozenList()) -> bytes:
        return srsly.msgpack_dumps(
            {"cfg": srsly.json_dumps(self.cfg), "model": self.shim.to_bytes()}
        )


def gold_truth(examples: Iterable[Example], labels: Sequence[str], *, exclusive: bool) -> Tuple[numpy.ndarray, numpy.ndarray]:
    """The gold targets of a batch, (N, C), and where they are known: a
    whole row is unknown for a doc without gold cats (unlabelled text),
    single labels for multilabel docs that leave them out. (spaCy's own
    textcat counts a row without cats as known, all zeros, for exclusive
    classes: it would pull a cross-entropy mean towards nothing.)
    """
    examples = list(examples)
    truths = numpy.zeros((len(examples), len(labels)), dtype="f")
    not_missing = numpy.ones((len(examples), len(labels)), dtype="f")
    for i, eg in enumerate(examples):
        if exclusive and not eg.reference.cats:
            not_missing[i] = 0.0  # no gold class: no gradient from this doc
        for j, label in enumerate(labels):
            if label in eg.reference.cats:
                truths[i, j] = eg.reference.cats[label]
            elif not exclusive:
                not_missing[i, j] = 0.0
    return truths, not_missing


def validate_categories(name: str, labels: Sequence[str], exclusive: bool, examples: Iterable[Example]) -> None:
    """Every gold label known, and exactly one 1.0 per doc for exclusive classes."""
    known = set(labels)
    for eg in examples:
        unknown = set(eg.reference.cats) - known
        if unknown:
            raise ValueError(
                f"'{name}' does not know the label(s) {sorted(unknown)} found "
                f"in the data (it has {sorted(known)}): add them before "
                "initialize, or fix the data."
            )
        if exclusive:
            values = list(eg.reference.cats.values())
            if values and values.count(1.0) != 1:
                raise ValueError(
                    f"'{name}' has exclusive classes but a doc has cats "
                    f"{eg.reference.cats}: exactly one must be 1.0, or set "
                    "exclusive_classes = false for multilabel data."
                )


def balanced_weights(examples: Iterable[Example], labels: Sequence[str]) -> List[float]:
    """n / (n_classes * n_class) for each label, counted over the gold
    classes of the examples; a label without examples weighs 1.
    """
    counts = dict.fromkeys(labels, 0)
    for eg in examples:
        for label, value in eg.reference.cats.items():
            if value and label in counts:
                counts[label] += 1
    total = sum(counts.values())
    return [total / (len(labels) * counts[label]) if counts[label] else 1.0 for label in labels]


@contextlib.contextmanager
def dropout_rate(module: Optional[torch.nn.Module], rate: float) -> Iterator[None]:
    """Set every dropout layer of a module to `rate`, and back after."""
    layers = [m for m in module.modules() if isinstance(m, torch.nn.Dropout)] if module is not None else []
    saved = [layer.p for layer in layers]
    for layer in layers:
        layer.p = rate
    try:
        yield
    finally:
        for layer, p in zip(layers, saved):
            layer.p = p


def docs_with_pairs(examples: Iterable[Example]) -> List[Doc]:
    """The predicted docs of the examples, with the gold doc's
    `doc._.text_pair` copied over where the reader did not set it (spaCy's
    own corpus readers rebuild the predicted doc from the text alone).
    """
    docs = []
    for eg in examples:
        if eg.predicted._.text_pair is None and eg.reference._.text_pair is not None:
            eg.predicted._.text_pair = eg.reference._.text_pair
        docs.append(eg.predicted)
    return docs
