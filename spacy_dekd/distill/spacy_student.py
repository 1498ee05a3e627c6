"""spaCy's own `textcat` as the student: its thinc model inside torch's autograd.

The loop trains torch parameters; spaCy's textcat keeps thinc ones (numpy
arrays). Each array is seen as a torch `Parameter` sharing its memory
(`torch.from_numpy`), so the loop's optimizer, clipping, checkpoints and
data-parallel averaging work on the thinc model in place. `ThincLogits` is
the autograd function between the two: its forward runs the model's
`begin_update` and gives torch the logits; its backward hands their gradient
to thinc's backprop and returns what thinc accumulated for each parameter.

The logits. spaCy's textcat models end in one of three output layers, each
with its own backprop:

- thinc's `Softmax` (TextCatEnsemble, TextCatParametricAttention,
  TextCatReduce, TextCatCNN with exclusive classes): an affine layer and a
  softmax, whose backprop takes the gradient *before* the softmax, of the
  affine output;
- `softmax_activation` (TextCatBOW, exclusive) and `Logistic` (every
  multilabel architecture): no parameters, a backprop that applies their
  Jacobian to the gradient of the probabilities.

spaCy's own `get_loss` hands `p - y` to both kinds, which is a different loss
for each. Here, while the student runs, the output layer runs without its
activation (`Softmax` as its affine part, the other two as the identity):
the model gives the logits and its backprop takes their gradient, which is
what the distillation losses give, for every kind alike. A model whose last
layer is linear (`no_output_layer`) gives logits already; any other output
layer is refused in one line. The pipeline itself, saved and loaded as
spaCy does, still ends in its activation.

It trains on the CPU (thinc's numpy ops), gives logits alone (no layer
states), and cannot listen to a shared `tok2vec`: each is refused in one
line before the first step.
"""
import contextlib
import hashlib
from pathlib import Path
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple

import numpy
import torch
from spacy.pipeline import TextCategorizer
from spacy.pipeline.textcat_multilabel import MultiLabel_TextCategorizer
from spacy.tokens import Doc
from spacy.training import Example
from thinc.api import Model, NumpyOps, set_dropout_rate

from ..errors import DistillationError, Errors
from ..models.pytorch import ClassifierOutput
from ..pipeline.textcat import gold_truth

# Output layers by thinc name: how each gives logits instead of probabilities.
ACTIVATIONS = ("softmax_activation", "logistic")
LINEAR = ("linear", "sparse_linear")


def output_layer(model: Model) -> Model:
    """The layer whose output is the model's: the last of each chain."""
    node = model
    while node.layers:
        node = node.layers[-1]
    return node


def _identity(model: Model, X: Any, is_train: bool) -> Tuple[Any, Callable]:
    return X, lambda dY: dY


def _affine(model: Model, X: Any, is_train: bool) -> Tuple[Any, Callable]:
    """thinc's `Softmax` without the softmax: its logits, and the backprop
    the layer has for them (the same as its own).
    """
    W, b = model.get_param("W"), model.get_param("b")
    temperature = model.attrs.get("softmax_temperature", 1.0)
    Y = model.ops.affine(X, W, b) / temperature

    def backprop(dY: Any) -> Any:
        dY = dY / temperature
        model.inc_grad("b", dY.sum(axis=0))
        model.inc_grad("W", model.ops.gemm(dY, X, trans1=True))
        return model.ops.gemm(dY, W)

    return Y, backprop


class ThincLogits(torch.autograd.Function):
    """(student, docs, *parameters) → the (N, C) logits, differentiable in
    the parameters (the torch views of the thinc model's arrays).
    """

    @staticmethod
    def forward(ctx: Any, student: "SpacyTextcatStudent", docs: Sequence[Doc], *params: torch.Tensor) -> torch.Tensor:
        with student.logits_out():
            Y, backprop = student.model.begin_update(list(docs))
        ctx.student, ctx.backprop = student, backprop
        return torch.tensor(student.model.ops.to_numpy(Y), dtype=torch.float32)

    @staticmethod
    def backward(ctx: Any, d_logits: torch.Tensor) -> Tuple[Optional[torch.Tensor], ...]:
        student = ctx.student
        ctx.backprop(student.model.ops.asarray2f(d_logits.detach().cpu().numpy()))
        ctx.backprop = None
        return (None, None, *student.take_gradients())


class SpacyTextcatStudent:
    """spaCy's `textcat` or `textcat_multilabel`, any architecture whose
    output layer is one of thinc's softmax, softmax activation, logistic or
    a linear layer, as the student: logits alone.
    """

    gives_states = False
    n_layers: Optional[int] = None
    width: Optional[int] = None
    device = torch.device("cpu")
    float16 = False

    def __init__(self, pipe: TextCategorizer, architecture: str = "") -> None:
        self.pipe = pipe
        self.model: Model = pipe.model
        self.architecture = architecture  # its registered name, for the run's header
        if not isinstance(self.model.ops, NumpyOps):
            raise DistillationError(Errors.D042.format(name=pipe.name))
        listener = next((node for node in self.model.walk() if node.name == "tok2vec-listener"), None)
        if listener is not None:
            upstream = getattr(listener, "upstream_name", None) or "tok2vec"
            raise DistillationError(Errors.D043.format(name=pipe.name, upstream=upstream))
        self.output = output_layer(self.model)
        if self.output.name not in ("softmax", *ACTIVATIONS, *LINEAR):
            raise DistillationError(Errors.D044.format(name=pipe.name, layer=self.output.name))
        self._refs: List[Tuple[Model, str]] = []
        self._params: List[torch.nn.Parameter] = []

    @property
    def name(self) -> str:
        return self.pipe.name

    @property
    def labels(self) -> Sequence[str]:
        return self.pipe.labels

    @property
    def multilabel(self) -> bool:
        return isinstance(self.pipe, MultiLabel_TextCategorizer)

    def set_mixed_precision(self, enabled: bool) -> None:
        """Autocast is for torch models on a GPU: nothing to do here."""

    @contextlib.contextmanager
    def logits_out(self) -> Iterator[None]:
        """The model's output layer without its activation, for a while."""
        layer = self.output
        if layer.name in LINEAR:
            yield
            return
        func = layer._func
        layer._func = _affine if layer.name == "softmax" else _identity
        try:
            yield
        finally:
            layer._func = func

    def forward(self, docs: Sequence[Doc], *, is_train: bool, hidden: bool = False) -> ClassifierOutput:
        if hidden:
            raise DistillationError(Errors.D045.format(name=self.name))
        if not docs:
            return self.empty_output()
        if is_train:
            return ClassifierOutput(logits=ThincLogits.apply(self, docs, *self.parameters()))
        with self.logits_out():
            logits = self.model.predict(list(docs))
        return ClassifierOutput(logits=torch.tensor(self.model.ops.to_numpy(logits), dtype=torch.float32))

    def empty_output(self, *, hidden: bool = False) -> ClassifierOutput:
        return ClassifierOutput(logits=torch.zeros((0, len(self.labels))))

    def parameters(self) -> List[torch.nn.Parameter]:
        """Torch views of the model's arrays, made anew when the arrays
        changed (after `load`, or spaCy's own initialize).
        """
        refs = []
        seen = set()
        for node in self.model.walk():
            for name in node.param_names:
                if node.has_param(name) and (node.id, name) not in seen:
                    seen.add((node.id, name))
                    refs.append((node, name))
        arrays = [node.get_param(name) for node, name in refs]
        stale = len(refs) != len(self._params) or any(
            p.data_ptr() != array.__array_interface__["data"][0] for p, array in zip(self._params, arrays)
        )
        if stale:
            self._refs = refs
            self._params = [torch.nn.Parameter(torch.from_numpy(array)) for array in arrays]
        return self._params

    def take_gradients(self) -> List[torch.Tensor]:
        """What thinc's backprop accumulated for each parameter, in the
        order of `parameters()`; thinc's own are zeroed for the next step.
        """
        grads = []
        for (node, name), param in zip(self._refs, self._params):
            if node.has_grad(name):
                grad = node.get_grad(name)
                grads.append(torch.from_numpy(numpy.array(grad, dtype=numpy.float32)).view_as(param))
                grad.fill(0)
            else:
                grads.append(torch.zeros_like(param))
        return grads

    def set_dropout(self, rate: Optional[float]) -> None:
        if rate is not None:
            set_dropout_rate(self.model, float(rate))

    def examples_to_truth(self, examples: Sequence[Example]) -> Tuple[torch.Tensor, torch.Tensor]:
        truths, known = gold_truth(examples, self.labels, exclusive=not self.multilabel)
        return torch.from_numpy(truths), torch.from_numpy(known)

    def load(self, path: Path) -> None:
        self.model.from_bytes((path / self.name / "model").read_bytes())

    def digest(self) -> str:
        digest = hashlib.sha256()
        for param in self.parameters():
            digest.update(param.detach().numpy().tobytes())
        return digest.hexdigest()

    def describe(self) -> str:
        n = sum(p.numel() for p in self.parameters())
        factory = "textcat_multilabel" if self.multilabel else "textcat"
        architecture = f"{self.architecture}, " if self.architecture else ""
        return f"spaCy's {factory} ({architecture}{n:,} parameters), logits from its {self.output.name} layer"


def initialize_textcat(pipe: TextCategorizer, labels: Sequence[str], *, exclusive: bool) -> None:
    """spaCy's textcat with the teacher's labels and fresh weights, its
    shapes inferred from a few docs (the labels' own names).
    """
    if exclusive == isinstance(pipe, MultiLabel_TextCategorizer):
        kind = "exclusive" if exclusive else "multilabel"
        factory = "textcat" if exclusive else "textcat_multilabel"
        raise ValueError(f"The teacher's classes are {kind}: make the student a spaCy {factory}.")
    labels = list(labels)
    examples = []
    for label in labels:
        doc = Doc(pipe.vocab, words=label.split() or ["x"])
        examples.append(Example.from_dict(doc, {"cats": {other: float(other == label) for other in labels}}))
    pipe.initialize(lambda: examples, labels=labels)
