"""Variants of sentences as more unlabelled text (spacy_dekd/augment.py)."""
import random
import subprocess
import sys
from pathlib import Path

import numpy
import pytest
import spacy
import torch
from spacy.training.corpus import PlainTextCorpus
from transformers import AutoModel

from spacy_dekd.augment import embedding_neighbours, variant, variants

from .conftest import NEUTRAL, VOCAB, write_jsonl, write_tiny_encoder

REPO = Path(__file__).parent.parent


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    path = write_tiny_encoder(tmp_path_factory.mktemp("augment"), "bert")
    model = AutoModel.from_pretrained(str(path))
    table = model.get_input_embeddings().weight
    # "film" a near copy of "movie": each other's nearest neighbour.
    vocab = {w: i for i, w in enumerate(VOCAB)}
    with torch.no_grad():
        table[vocab["film"]] = table[vocab["movie"]] * 1.5 + 1e-3
    model.save_pretrained(str(path))
    return path


def test_neighbours_are_the_nearest_whole_words_by_cosine(encoder):
    found = embedding_neighbours(encoder, ["Movie", "plot", "zzz"], k=3)
    assert set(found) == {"movie", "plot"}  # "zzz" is no piece of the vocabulary
    assert found["movie"][0] == "film"
    # Against numpy, over the same candidate pieces (lower-case words of two letters or more).
    from transformers import AutoTokenizer

    vocab = AutoTokenizer.from_pretrained(str(encoder)).get_vocab()
    table = AutoModel.from_pretrained(str(encoder)).get_input_embeddings().weight.detach().numpy()
    names = [w for w in vocab if w.isalpha() and w.islower() and len(w) > 1]
    unit = table[[vocab[w] for w in names]]
    unit = unit / numpy.linalg.norm(unit, axis=1, keepdims=True)
    for word in ("movie", "plot"):
        cos = unit @ unit[names.index(word)]
        order = [names[i] for i in numpy.argsort(-cos) if names[i] != word][:3]
        assert found[word] == order


def test_a_variant_keeps_punctuation_and_the_words_it_does_not_touch():
    rng = random.Random(0)
    text = "The plot, at least, is dull."
    assert variant(text, {}, rng, substitute=0, drop=0, swap=0) == text
    out = variant(text, {"plot": ["story"], "dull": ["flat"]}, rng, substitute=1, drop=0, swap=0)
    assert out == "The story, at least, is flat."


def test_variants_are_seeded_and_differ_from_their_text():
    texts = [" ".join(NEUTRAL[i : i + 6]) for i in range(5)]
    neighbours = {w: [v for v in NEUTRAL if v != w][:3] for w in NEUTRAL}
    first = list(variants(texts, neighbours, n=3, seed=1))
    assert first == list(variants(texts, neighbours, n=3, seed=1))
    assert first != list(variants(texts, neighbours, n=3, seed=2))
    assert len(first) == 15 and not set(first) & set(texts)


def test_the_script_writes_the_variants_whole(encoder, tmp_path):
    train = write_jsonl([{"text": "the movie was very good", "label": "positive"}], tmp_path / "train.jsonl")
    pool = tmp_path / "pool.txt"
    pool.write_text("a dull plot\n\nthis film is bad\n", encoding="utf8")
    out = tmp_path / "more" / "variants.txt"
    args = [sys.executable, str(REPO / "scripts" / "augment_text.py"), str(train), str(pool), "--model", str(encoder), "--n", "2", "--output", str(out)]
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = out.read_text(encoding="utf8").splitlines()
    assert 1 <= len(lines) <= 6 and all(line.strip() for line in lines)
    assert not (tmp_path / "more" / "variants.txt.partial").exists()
    # Bad input: one line, nothing written.
    done = subprocess.run(args[:2] + [str(tmp_path / "missing.txt")] + args[4:], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "missing.txt" in done.stderr


def test_the_script_copies_the_pool_beside_the_variants(encoder, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_text("a dull plot\nthis film is bad\n", encoding="utf8")
    out = tmp_path / "more" / "variants.txt"
    args = [sys.executable, str(REPO / "scripts" / "augment_text.py"), str(pool), "--model", str(encoder), "--n", "2", "--output", str(out)]
    done = subprocess.run(args + ["--copy", str(pool)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "more" / "pool.txt").read_text(encoding="utf8") == pool.read_text(encoding="utf8")
    assert sorted(p.name for p in (tmp_path / "more").iterdir()) == ["pool.txt", "variants.txt"]
    # The folder is one pool: spaCy's plain-text reader takes both files.
    nlp = spacy.blank("en")
    texts = [eg.reference.text for eg in PlainTextCorpus(tmp_path / "more")(nlp)]
    assert set(pool.read_text(encoding="utf8").split("\n")[:2]) <= set(texts) and len(texts) > 2
    # A copy that would land on the variants (or on itself): one line, nothing new.
    clash = tmp_path / "variants.txt"
    clash.write_text("x\n", encoding="utf8")
    done = subprocess.run(args[:-1] + [str(tmp_path / "again.txt"), "--copy", str(clash)], capture_output=True, text=True)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "--copy" in done.stderr
    assert not (tmp_path / "again.txt").exists()
