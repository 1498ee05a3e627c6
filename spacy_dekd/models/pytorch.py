"""Plain PyTorch modules: a Hugging Face encoder with a classification head.

Nothing here knows spaCy or thinc; `classifier.py` wraps this for a pipeline.
"""
import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

POOLINGS = ("first", "mean")


@dataclass
class ClassifierOutput:
    """What one forward pass of a `TransformerClassifier` returns.

    logits (torch.Tensor): The class scores, shape (N, C).
    hidden_states (Optional[List[torch.Tensor]]): The first-token state of every
        transformer layer, embeddings excluded, each (N, d). None unless asked.
    """

    logits: torch.Tensor
    hidden_states: Optional[List[torch.Tensor]] = None


class TransformerClassifier(nn.Module):
    """A Hugging Face encoder, a pooling of its last layer, dropout and a
    linear head.

    encoder (transformers.PreTrainedModel): The encoder (`AutoModel`).
    n_labels (int): The number of classes.
    pooling (str): "first" (the [CLS] / <s> vector) or "mean" over tokens.
    dropout (float): Dropout before the head.
    """

    def __init__(
        self, encoder: nn.Module, n_labels: int, *, pooling: str = "first", dropout: float = 0.1
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"Unknown pooling '{pooling}': use one of {POOLINGS}.")
        self.encoder = encoder
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, n_labels)

    @property
    def n_layers(self) -> int:
        return int(self.encoder.config.num_hidden_layers)

    @property
    def width(self) -> int:
        return int(self.encoder.config.hidden_size)

    @property
    def n_labels(self) -> int:
        return int(self.head.out_features)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: Optional[torch.Tensor] = None,
        *,
        output_hidden_states: bool = False,
    ) -> ClassifierOutput:
        kwargs: Dict[str, torch.Tensor] = {}
        if token_type_ids is not None and uses_token_types(self.encoder):
            kwargs["token_type_ids"] = token_type_ids
        out = self.encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **kwargs,
        )
        last = out.last_hidden_state  # (N, T, d)
        if self.pooling == "first":
            pooled = last[:, 0]  # (N, d)
        else:
            mask = attention_mask.unsqueeze(-1).to(last.dtype)  # (N, T, 1)
            pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (N, d)
        logits = self.head(self.dropout(pooled))  # (N, C)
        hidden = None
        if output_hidden_states:
            # hidden_states[0] is the embedding output, which is never aligned.
            hidden = [h[:, 0] for h in out.hidden_states[1:]]  # L x (N, d)
        return ClassifierOutput(logits=logits, hidden_states=hidden)


def uses_token_types(encoder: nn.Module) -> bool:
    # MPNet and RoBERTa-style models have no (useful) token type embeddings.
    return int(getattr(encoder.config, "type_vocab_size", 0) or 0) > 1


def layer_list(encoder: nn.Module) -> nn.ModuleList:
    """Find the stack of transformer layers of a Hugging Face encoder.

    BERT, RoBERTa and MPNet keep it at `encoder.layer`, DistilBERT at
    `transformer.layer`; anything else is found as the ModuleList whose length
    is the config's `num_hidden_layers`.
    """
    n_layers = encoder.config.num_hidden_layers
    for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers"):
        module: Optional[nn.Module] = encoder
        for part in path.split("."):
            module = getattr(module, part, None)
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    for module in encoder.modules():
        if isinstance(module, nn.ModuleList) and len(module) == n_layers:
            return module
    raise ValueError(
        f"Cannot find the transformer layers of {type(encoder).__name__}: "
        "no ModuleList of length num_hidden_layers."
    )


def keep_layers(encoder: nn.Module, layers: Sequence[int]) -> nn.Module:
    """Keep only the given transformer layers of an encoder, in place.

    encoder (transformers.PreTrainedModel): The encoder to shrink.
    layers (Sequence[int]): Indices of the layers to keep, 0-based, ascending.
    RETURNS (transformers.PreTrainedModel): The same encoder, with
        `config.num_hidden_layers == len(layers)`.
    """
    stack = layer_list(encoder)
    n_layers = len(stack)
    check_layers(layers, n_layers)
    kept = nn.ModuleList([stack[i] for i in layers])
    parent = _parent_of(encoder, stack)
    for name, child in parent.named_children():
        if child is stack:
            setattr(parent, name, kept)
            break
    encoder.config.num_hidden_layers = len(kept)
    # Some architectures record per-layer settings in the config.
    if isinstance(getattr(encoder.config, "layer_types", None), list):
        encoder.config.layer_types = [encoder.config.layer_types[i] for i in layers]
    return encoder


def check_layers(layers: Sequence[int], n_layers: int) -> None:
    if not layers:
        raise ValueError("The layer list is empty: keep at least one layer.")
    bad = [i for i in layers if not 0 <= i < n_layers]
    if bad:
        raise ValueError(
            f"Layers {bad} are out of range: the encoder has {n_layers} layers "
            f"(0..{n_layers - 1})."
        )
    if list(layers) != sorted(set(layers)):
        raise ValueError(f"Layers must be distinct and ascending, got {list(layers)}.")


def _parent_of(root: nn.Module, target: nn.Module) -> nn.Module:
    for module in root.modules():
        for child in module.children():
            if child is target:
                return module
    raise ValueError("Module not found in encoder")


def shrink_classifier(
    teacher: TransformerClassifier, layers: Sequence[int]
) -> TransformerClassifier:
    """A copy of a classifier that keeps only the given transformer layers,
    with the teacher's embeddings, those layers' weights and its head.
    """
    student = copy.deepcopy(teacher)
    keep_layers(student.encoder, layers)
    return student


def load_encoder(name: Union[str, Path]) -> nn.Module:
    """Load a pretrained encoder from a local directory or, where a hub is
    reachable, a hub id.
    """
    from transformers import AutoModel

    return AutoModel.from_pretrained(str(name))
