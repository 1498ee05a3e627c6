"""Tiny encoders and corpora built in code: the tests need no network."""
import json
import os
import random
from pathlib import Path
from typing import Dict, List

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a test of a minute or more; .ci/run runs it too")

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
POSITIVE = ["good", "great", "fine", "lovely", "superb", "fun"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak"]
NEUTRAL = ["the", "a", "movie", "film", "plot", "was", "is", "very", "and", "story", "acting", "this"]
VOCAB = SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + list("abcdefghijklmnopqrstuvwxyz")


def write_tiny_encoder(
    path: Path, model_type: str = "bert", *, n_layers: int = 2, hidden: int = 32, seed: int = 0,
    words: List[str] = VOCAB,
) -> Path:
    """A randomly initialised encoder and a WordPiece tokenizer over `words`
    (VOCAB by default), saved in Hugging Face format.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import AutoModel, BertConfig, MPNetConfig, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(words)}
    tok = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=512,
    )
    common = dict(
        vocab_size=len(words),
        hidden_size=hidden,
        num_hidden_layers=n_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=256,
        pad_token_id=0,
    )
    if model_type == "bert":
        config = BertConfig(**common)
    elif model_type == "mpnet":
        config = MPNetConfig(**common)
    else:
        raise ValueError(model_type)
    torch.manual_seed(seed)
    path.mkdir(parents=True, exist_ok=True)
    AutoModel.from_config(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


def toy_rows(n: int, seed: int = 0) -> List[Dict]:
    """Sentences whose label is told by one sentiment word among fillers."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        word = rng.choice(POSITIVE if label else NEGATIVE)
        words = rng.sample(NEUTRAL, 4)
        words.insert(rng.randrange(len(words) + 1), word)
        rows.append({"text": " ".join(words), "label": "positive" if label else "negative"})
    return rows


def write_jsonl(rows: List[Dict], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf8")
    return path


@pytest.fixture(scope="session")
def bert_dir(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("bert"), "bert")


@pytest.fixture(scope="session")
def mpnet_dir(tmp_path_factory) -> Path:
    return write_tiny_encoder(tmp_path_factory.mktemp("mpnet"), "mpnet")


@pytest.fixture(scope="session")
def teacher_encoder_dir(tmp_path_factory) -> Path:
    """A 4-layer encoder, for tests that pick layers."""
    return write_tiny_encoder(tmp_path_factory.mktemp("bert4"), "bert", n_layers=4)


@pytest.fixture(scope="session")
def toy_data(tmp_path_factory) -> Dict[str, Path]:
    root = tmp_path_factory.mktemp("toy")
    return {
        "train": write_jsonl(toy_rows(160, seed=1), root / "train.jsonl"),
        "dev": write_jsonl(toy_rows(40, seed=2), root / "dev.jsonl"),
    }
