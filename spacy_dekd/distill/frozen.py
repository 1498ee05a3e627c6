"""The frozen models of a run (teacher, assistant): their answers, cached.

A frozen model answers the rows of a batch that the objective's plan names;
each example is run through it at most once per run (cache.py), split
across the ranks of a data-parallel run (parallel.py). Any spaCy text
classifier can answer with logits; a torch `transformer_textcat` also with
hidden states and Monte Carlo dropout uncertainty.
"""
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import torch
from spacy.pipeline.textcat_multilabel import MultiLabel_TextCategorizer

from ..errors import DistillationError, Errors
from ..models.pytorch import ClassifierOutput
from ..pipeline.textcat import TransformerTextCategorizer
from .cache import OutputCache
from .examples import RunExamples
from .parallel import World
from .types import TeacherOutput


# Texts a frozen model answers in one go. Larger than a batch or the
# default workflow's rounds (~1,900 answers), which it leaves one call, as
# before: the length pieces are cut from the call's texts.
ANSWER_CHUNK = 4096


def torch_module(pipe: Any) -> Optional[torch.nn.Module]:
    """The torch classifier behind a `transformer_textcat`; None for an
    ONNX one (`spacy textcat-quantize`) and any other spaCy component.
    """
    if not isinstance(pipe, TransformerTextCategorizer):
        return None
    return pipe.torch_module


def exclusive(pipe: Any) -> bool:
    """Whether a text classifier has exclusive classes (spaCy's textcat does)."""
    if isinstance(pipe, TransformerTextCategorizer):
        return pipe.exclusive_classes
    return not isinstance(pipe, MultiLabel_TextCategorizer)


def teacher_forward(pipe: Any, docs: Sequence, *, hidden: bool, mc_samples: int = 0) -> TeacherOutput:
    """Outputs of a frozen pipe: a `transformer_textcat` gives logits (and,
    in torch, hidden states); any other spaCy text classifier gives the
    logits its probabilities stand for: log p for exclusive classes
    (softmax(log p) = p), log p - log(1 - p) per label for
    `textcat_multilabel` (sigmoid of it = p). With `mc_samples`, also each
    row's uncertainty: the entropy of its mean prediction over that many
    passes with dropout on (Monte Carlo dropout).
    """
    check_can_answer(pipe, hidden=hidden, mc_samples=mc_samples)
    if isinstance(pipe, TransformerTextCategorizer):
        out = pipe.forward(docs, is_train=False, output_hidden_states=hidden)
        uncertainty = None
        if mc_samples > 0:
            with torch.no_grad():
                samples = [pipe.forward(docs, is_train=False, mc_dropout=True).logits.float() for _ in range(mc_samples)]
            uncertainty = mc_dropout_entropy(torch.stack(samples), multilabel=not pipe.exclusive_classes)
        return TeacherOutput(logits=out.logits.float(), hidden_states=out.hidden_states, uncertainty=uncertainty)
    probs = torch.as_tensor(pipe.model.ops.to_numpy(pipe.predict(docs))).float().clamp(1e-7, 1 - 1e-7)
    if isinstance(pipe, MultiLabel_TextCategorizer):
        return TeacherOutput(logits=probs.log() - (1 - probs).log())
    return TeacherOutput(logits=probs.log())


def check_can_answer(pipe: Any, *, hidden: bool, mc_samples: int, role: str = "teacher") -> None:
    """Hidden states and Monte Carlo dropout need a torch `transformer_textcat`:
    an ONNX one or another spaCy classifier gives logits alone.
    """
    if torch_module(pipe) is not None:
        return
    kind = "an ONNX transformer_textcat" if isinstance(pipe, TransformerTextCategorizer) and pipe.runtime == "onnx" else f"a {type(pipe).__name__}"
    if hidden:
        raise DistillationError(Errors.D009.format(role=role, name=pipe.name, kind=kind))
    if mc_samples > 0:
        raise DistillationError(Errors.D010.format(role=role, name=pipe.name, kind=kind))


def mc_dropout_entropy(samples: torch.Tensor, *, multilabel: bool) -> torch.Tensor:
    """(K, n, C) logits of K dropout passes → (n,) entropy of the mean
    prediction (summed binary entropies per label for multilabel).
    """
    if multilabel:
        p = torch.sigmoid(samples).mean(0).clamp(1e-7, 1 - 1e-7)
        return -(p * p.log() + (1 - p) * (1 - p).log()).sum(-1)
    p = torch.softmax(samples, dim=-1).mean(0).clamp(min=1e-12)
    return -(p * p.log()).sum(-1)


def empty_output(pipe: Any, *, hidden: bool) -> ClassifierOutput:
    """What a pipe answers for no docs: a rank whose share of a small batch
    is empty still joins the gather with tensors of the right shape.
    """
    module = torch_module(pipe)
    device = module.head.weight.device if module is not None else torch.device("cpu")
    logits = torch.zeros((0, len(pipe.labels)), device=device)
    states = [torch.zeros((0, module.width), device=device) for _ in range(module.n_layers)] if hidden and module is not None else None
    return ClassifierOutput(logits=logits, hidden_states=states)


@dataclass
class FrozenModel:
    """A frozen pipe (teacher or assistant), its cache of answers, and what
    each answer holds.

    pipe: The frozen component.
    cache (OutputCache): Its answers by corpus id.
    hidden (bool): Whether answers carry hidden states (alignment).
    mc_samples (int): Dropout passes per answer on top of the plain one (MUKI).
    """

    pipe: Any
    cache: OutputCache
    hidden: bool = False
    mc_samples: int = 0

    @classmethod
    def create(cls, pipe: Any, n_examples: int, *, hidden: bool, mc_samples: int, role: str) -> "FrozenModel":
        check_can_answer(pipe, hidden=hidden, mc_samples=mc_samples, role=role)
        cache = OutputCache(n_examples, with_hidden=hidden, with_uncertainty=mc_samples > 0)
        return cls(pipe, cache, hidden, mc_samples)

    @property
    def n_answers(self) -> int:
        """Distinct examples the model has answered, run or from the store."""
        return self.cache.n_forward + self.cache.n_stored

    @property
    def passes(self) -> int:
        """Forward passes paid for the answers: 1 + mc_samples each (none
        for the answers taken from a store)."""
        return self.cache.n_forward * (1 + self.mc_samples)

    @property
    def head(self) -> Optional[torch.nn.Module]:
        """The classification head of a torch model (the `logits` layer score)."""
        module = torch_module(self.pipe)
        return None if module is None else module.head

    def answer(
        self, examples: RunExamples, ids: torch.Tensor, rows: torch.Tensor, like: torch.Tensor, world: World,
        progress: Optional[Callable[[int, int, float], None]] = None,
    ) -> TeacherOutput:
        """Its outputs for some rows of a batch of corpus ids, from the cache.
        No rows (TAKD's teacher, a batch routed wholly to one side) is no
        query: empty logits shaped and placed as `like`'s (the student's).
        progress: Told (answered, to answer, seconds so far) after each
            chunk of a long call (a query round's), on each rank.
        """
        if rows.numel() == 0:
            return TeacherOutput(logits=like.detach().new_zeros((0, like.shape[1])))

        def forward(corpus_ids: torch.Tensor) -> TeacherOutput:
            # Each rank answers its share of the missing rows; every cache gets all.
            share = corpus_ids[world.shard(corpus_ids.numel())]
            if share.numel() == 0:
                empty = empty_output(self.pipe, hidden=self.hidden)
                uncertainty = empty.logits.new_zeros((0,)) if self.mc_samples else None
                out = TeacherOutput(empty.logits, empty.hidden_states, uncertainty)
            else:
                out = self._forward_in_chunks(examples, share, progress)
            uncertainty = None if out.uncertainty is None else world.gather(out.uncertainty)
            return TeacherOutput(world.gather(out.logits), world.gather_list(out.hidden_states), uncertainty)

        return self.cache.get(ids[rows.cpu()], forward)

    def _forward_in_chunks(
        self, examples: RunExamples, ids: torch.Tensor, progress: Optional[Callable[[int, int, float], None]] = None,
    ) -> TeacherOutput:
        """Its outputs for many corpus ids (a query round's answers), the
        Docs of `ANSWER_CHUNK` of them made, run and dropped at a time: a
        Doc costs kilobytes, and a round over a large pool answers tens of
        thousands of texts.
        """
        chunks = []
        started = time.perf_counter()
        for start in range(0, ids.numel(), ANSWER_CHUNK):
            docs = examples.docs(ids[start : start + ANSWER_CHUNK].tolist())[:]
            chunks.append(teacher_forward(self.pipe, docs, hidden=self.hidden, mc_samples=self.mc_samples))
            del docs
            if progress is not None and ids.numel() > ANSWER_CHUNK:
                progress(min(start + ANSWER_CHUNK, ids.numel()), ids.numel(), time.perf_counter() - started)
        if len(chunks) == 1:
            return chunks[0]
        hidden = None
        if chunks[0].hidden_states is not None:
            hidden = [torch.cat(layer) for layer in zip(*(c.hidden_states for c in chunks))]
        uncertainty = None if chunks[0].uncertainty is None else torch.cat([c.uncertainty for c in chunks])
        return TeacherOutput(torch.cat([c.logits for c in chunks]), hidden, uncertainty)
