"""The classifier as a plain Hugging Face folder: config, weights, tokenizer
and the class that runs them, for `AutoModelForSequenceClassification`
without spaCy or spacy-dekd.

No stock `*ForSequenceClassification` head is this classifier's: BERT's and
ALBERT's put the pooler (a dense layer and tanh) before the output layer,
RoBERTa's and MPNet's a dense layer and tanh, DistilBERT's a dense layer and
ReLU, and none pools by the mean. Mapping onto one would change the logits,
so the folder carries its class, `modeling_spacy_dekd.py` (the encoder,
first-token or mean pooling, dropout and one linear layer, as
`TransformerClassifier`), registered through `auto_map`: it loads with
`trust_remote_code=True`. Its `model_type` is its own ("spacy_dekd_bert",
say), with a config class in the same file: without `trust_remote_code`,
`from_pretrained` refuses the folder instead of building the stock class of
the encoder's type with an untrained head.
"""
import copy
import json
from pathlib import Path
from typing import Any, Sequence

import transformers
from safetensors.torch import save_file

from .pytorch import TransformerClassifier

MODELING_NAME = "modeling_spacy_dekd.py"
CLASS_NAME = "DekdForSequenceClassification"
CONFIG_NAME = "DekdConfig"

MODELING_TEMPLATE = '''"""A text classifier exported by spacy-dekd (`spacy textcat-export --format hf`).

The encoder, a pooling of its last layer ("first": the first token's state;
"mean": the mean over unmasked tokens), dropout and one linear layer: the
logits of spacy-dekd's `transformer_textcat`. Load it with

    AutoModelForSequenceClassification.from_pretrained(PATH, trust_remote_code=True)
"""
from typing import Optional

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers import {config_class} as EncoderConfig
from transformers import {encoder_class} as Encoder
from transformers.modeling_outputs import SequenceClassifierOutput


class {config_name}(EncoderConfig):
    model_type = "{model_type}"


class {class_name}(PreTrainedModel):
    config_class = {config_name}
    base_model_prefix = "encoder"

    def __init__(self, config: {config_name}) -> None:
        super().__init__(config)
        self.encoder = Encoder(config)
        self.dropout = nn.Dropout(config.dekd_dropout)
        self.head = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(
        self,
        input_ids: Optional[torch.Tensor] = None,
        attention_mask: Optional[torch.Tensor] = None,
        token_type_ids: Optional[torch.Tensor] = None,
        labels: Optional[torch.Tensor] = None,
        output_hidden_states: Optional[bool] = None,
        **kwargs,
    ) -> SequenceClassifierOutput:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs = {{"input_ids": input_ids, "attention_mask": attention_mask}}
        if token_type_ids is not None and int(getattr(self.config, "type_vocab_size", 0) or 0) > 1:
            inputs["token_type_ids"] = token_type_ids
        out = self.encoder(**inputs, output_hidden_states=output_hidden_states, return_dict=True)
        last = out.last_hidden_state  # (N, T, d)
        if self.config.dekd_pooling == "first":
            pooled = last[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(last.dtype)
            pooled = (last * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        logits = self.head(self.dropout(pooled))  # (N, C)
        loss = None
        if labels is not None:
            if self.config.problem_type == "multi_label_classification":
                loss = nn.functional.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype))
            else:
                loss = nn.functional.cross_entropy(logits, labels)
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)
'''


def export_hf(module: TransformerClassifier, tokenizer: Any, labels: Sequence[str], path: Path, *, exclusive_classes: bool, max_length: int) -> None:
    """Write the classifier into `path` (which must exist and be empty).

    labels (Sequence[str]): The component's labels, in the order of the logits.
    exclusive_classes (bool): softmax classes (single-label) or sigmoid (multi-label).
    max_length (int): Word pieces the component truncates at; written as the
        tokenizer's `model_max_length`, so that `truncation=True` matches.
    """
    config = copy.deepcopy(module.encoder.config)
    config_class, encoder_class = type(config).__name__, type(module.encoder).__name__
    for name, cls in ((config_class, type(config)), (encoder_class, type(module.encoder))):
        if getattr(transformers, name, None) is not cls:
            raise ValueError(
                f"The encoder's class {name} is not one of transformers': only encoders "
                "that transformers ships can be exported."
            )
    model_type = f"spacy_dekd_{config.model_type}"
    module_name = MODELING_NAME[:-3]
    config.architectures = [CLASS_NAME]
    config.auto_map = {
        "AutoConfig": f"{module_name}.{CONFIG_NAME}",
        "AutoModelForSequenceClassification": f"{module_name}.{CLASS_NAME}",
    }
    config.id2label = dict(enumerate(labels))
    config.label2id = {label: i for i, label in enumerate(labels)}
    config.problem_type = "single_label_classification" if exclusive_classes else "multi_label_classification"
    config.dekd_pooling = module.pooling
    config.dekd_dropout = float(module.dropout.p)
    settings = config.to_dict()
    settings["model_type"] = model_type  # the stock type would load a stock class
    (path / "config.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n", encoding="utf8")
    state = {k: v.detach().float().contiguous().cpu() for k, v in module.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.model_max_length = max_length
    tokenizer.save_pretrained(str(path))
    (path / MODELING_NAME).write_text(
        MODELING_TEMPLATE.format(
            config_class=config_class, encoder_class=encoder_class, config_name=CONFIG_NAME,
            model_type=model_type, class_name=CLASS_NAME,
        ),
        encoding="utf8",
    )
