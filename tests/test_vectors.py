"""Static vectors from an encoder (spacy_dekd/vectors.py, `spacy init
encoder-vectors`): the math against numbers computed another way, the
command end to end on a tiny encoder, and its refusals."""
import numpy
import pytest
import spacy
import torch
from transformers import AutoModel, AutoTokenizer

from spacy_dekd.cli.vectors import init_encoder_vectors
from spacy_dekd.files import OutputError
from spacy_dekd.vectors import count_words, encode_words, pca, sif_weights, whole_words

from .conftest import POSITIVE, toy_rows, write_jsonl, write_tiny_encoder


def test_pca_is_the_projection_on_the_top_singular_vectors():
    rng = numpy.random.default_rng(0)
    table = rng.normal(size=(50, 6)).astype(numpy.float32) * numpy.array([5, 4, 3, 2, 1, 0.5], dtype=numpy.float32)
    reduced = pca(table, 3)
    centred = table - table.mean(0)
    _, _, vt = numpy.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:3].T
    # Each axis is found up to its sign.
    signs = numpy.sign((reduced * expected).sum(0))
    numpy.testing.assert_allclose(reduced * signs, expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="width 7 is more than"):
        pca(table, 7)


def test_sif_weights_by_hand():
    counts = {"the": 6, "good": 3, "superb": 1}  # 10 words
    weights = sif_weights(["the", "good", "superb", "unseen"], counts, a=0.1)
    numpy.testing.assert_allclose(weights, [0.1 / 0.7, 0.1 / 0.4, 0.1 / 0.2, 1.0], rtol=1e-6)


def test_whole_words_are_the_vocabularys_words_without_pieces_or_specials(tmp_path):
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film", "##s", "##ing", "42", "!", "x"]
    tokenizer = AutoTokenizer.from_pretrained(str(write_tiny_encoder(tmp_path / "enc", words=words)))
    assert whole_words(tokenizer) == ["film", "good", "x"]


def test_each_word_is_encoded_alone_whatever_its_batch(bert_dir):
    encoder, tokenizer = AutoModel.from_pretrained(str(bert_dir)), AutoTokenizer.from_pretrained(str(bert_dir))
    words = ["good", "superb", "filmgood", "the", "abc"]  # one to three pieces each
    batched = encode_words(encoder, tokenizer, words, batch_size=2)
    with torch.inference_mode():
        for word, row in zip(words, batched):
            pieces = tokenizer.encode(word, add_special_tokens=False)
            ids = torch.tensor([[tokenizer.cls_token_id, *pieces, tokenizer.sep_token_id]])
            states = encoder(input_ids=ids).last_hidden_state[0, 1:-1]
            numpy.testing.assert_allclose(row, states.mean(0).numpy(), rtol=1e-4, atol=1e-5)


def test_count_words_lowercases_spacys_tokens():
    counts = count_words(spacy.blank("en"), ["Good film, good!", "GOOD"])
    assert counts["good"] == 3 and counts[","] == 1 and counts["film"] == 1


def test_the_command_writes_vectors_spacy_reads_in_any_casing(bert_dir, tmp_path):
    texts = write_jsonl(toy_rows(30) + [{"text": "Zorblax GOOD", "label": "positive"}], tmp_path / "texts.jsonl")
    out = tmp_path / "vectors"
    rows, width = init_encoder_vectors(str(bert_dir), out, [texts], width=8)
    nlp = spacy.load(out)
    vectors = nlp.vocab.vectors
    assert vectors.shape == (rows, width) == (rows, 8)
    # The encoder's whole words and the texts' words ("zorblax" is only in the
    # texts), each in three casings on one row.
    for word in [*POSITIVE, "zorblax"]:
        found = {vectors.find(key=form) for form in (word, word.capitalize(), word.upper())}
        assert len(found) == 1 and found.pop() >= 0
    assert nlp("Good")[0].has_vector and not nlp("gOOd")[0].has_vector
    # The most frequent word of the texts weighs least (SIF).
    norms = {word: numpy.linalg.norm(vectors[nlp.vocab.strings[word]]) for word in ("the", "zorblax")}
    assert norms["the"] < norms["zorblax"]


def test_the_command_refuses_before_writing(bert_dir, tmp_path):
    texts = write_jsonl(toy_rows(10), tmp_path / "texts.jsonl")
    out = tmp_path / "vectors"
    out.mkdir()
    (out / "mine.txt").write_text("kept")
    with pytest.raises(ValueError, match="exists: choose a new folder, or pass --force"):
        init_encoder_vectors(str(bert_dir), out, [texts], width=8)
    with pytest.raises(OutputError, match="is one of the inputs"):
        init_encoder_vectors(str(bert_dir), texts, [texts], width=8, force=True)
    with pytest.raises(ValueError, match="Not found: .*missing.txt"):
        init_encoder_vectors(str(bert_dir), tmp_path / "new", [tmp_path / "missing.txt"], width=8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a pipeline nor a Hugging Face encoder folder"):
        init_encoder_vectors(str(tmp_path / "empty"), tmp_path / "new", [texts], width=8)
    assert (out / "mine.txt").read_text() == "kept" and texts.exists() and not (tmp_path / "new").exists()
