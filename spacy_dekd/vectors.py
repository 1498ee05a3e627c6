"""Static word vectors from a transformer encoder, the way model2vec makes
them: each word of a vocabulary through the encoder on its own, its pieces'
last-layer states averaged, the table reduced by PCA and each row weighted
by how rare the word is. spaCy's own textcat reads them as any vectors table
(`[initialize] vectors`, `include_static_vectors = true`): a student with a
transformer's knowledge of words at a lookup's cost, whose package needs
neither torch nor transformers.

The vocabulary is the encoder's whole-word pieces and the words of the
texts given (spaCy's tokenizer), lower-cased; `spacy init encoder-vectors`
keys each row by the word as it is, capitalised and upper-cased.
The weight is SIF's, a / (a + p(word)), with p the word's share of the
texts' words (Arora et al. 2017; model2vec estimates p from the rank of a
piece in its vocabulary, which a text's own counts replace here); a word the
texts lack has the weight 1.
"""
from collections import Counter
from typing import Any, Dict, Iterable, List, Sequence, Tuple

import numpy
import torch

SIF_A = 1e-3
MAX_PIECES = 16  # pieces of one word the encoder reads; longer words are cut


def count_words(nlp: Any, texts: Iterable[str], batch_size: int = 1000) -> Counter:
    """How often each lower-cased word of the texts occurs (spaCy's tokenizer)."""
    counts: Counter = Counter()
    for doc in nlp.tokenizer.pipe(texts, batch_size=batch_size):
        counts.update(token.lower_ for token in doc if not token.is_space)
    return counts


def whole_words(tokenizer: Any) -> List[str]:
    """The entries of a word-piece vocabulary that are whole words: no
    continuation mark, no special token, at least one letter; lower-cased.
    """
    special = set(tokenizer.all_special_tokens)
    words = set()
    for piece in tokenizer.get_vocab():
        if piece in special or piece.startswith("##") or piece.startswith("[") or piece.startswith("<"):
            continue
        word = piece.lstrip("\u2581\u0120").lower()  # sentencepiece's and byte-level BPE's word start
        if any(char.isalpha() for char in word):
            words.add(word)
    return sorted(words)


def encode_words(
    encoder: torch.nn.Module, tokenizer: Any, words: Sequence[str], *, batch_size: int = 256, progress: Any = None
) -> numpy.ndarray:
    """Each word alone through the encoder: the mean of its pieces' states
    in the last layer (the special tokens left out). Words are batched by
    their number of pieces, so a batch pads little.
    RETURNS (numpy.ndarray): (len(words), hidden size), float32, in the
        order of `words`.
    """
    lengths = [len(ids) for ids in tokenizer(list(words), add_special_tokens=False)["input_ids"]]
    order = sorted(range(len(words)), key=lambda i: lengths[i])
    device = next(encoder.parameters()).device
    table = numpy.zeros((len(words), int(encoder.config.hidden_size)), dtype=numpy.float32)
    encoder.eval()
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [words[i] for i in rows], padding=True, truncation=True, max_length=MAX_PIECES + 2,
                return_special_tokens_mask=True, return_tensors="pt",
            )
            word_mask = (batch["attention_mask"] * (1 - batch["special_tokens_mask"])).float()
            states = encoder(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            states = states.last_hidden_state.float().cpu()
            means = (states * word_mask[..., None]).sum(1) / word_mask.sum(1, keepdim=True).clamp(min=1.0)
            table[rows] = means.numpy()
            if progress is not None:
                progress(min(start + batch_size, len(order)), len(order))
    return table


def pca(table: numpy.ndarray, width: int) -> numpy.ndarray:
    """The table's rows on its first `width` principal axes (centred)."""
    if width > min(table.shape):
        raise ValueError(f"width {width} is more than the table's {min(table.shape)} rows or columns.")
    centred = table - table.mean(axis=0, keepdims=True)
    # The axes from the covariance: (d, d), cheap for any number of words.
    values, axes = numpy.linalg.eigh(centred.T.astype(numpy.float64) @ centred)
    top = axes[:, numpy.argsort(values)[::-1][:width]]
    return (centred @ top).astype(numpy.float32)


def sif_weights(words: Sequence[str], counts: Dict[str, int], a: float = SIF_A) -> numpy.ndarray:
    """a / (a + p(word)) for each word, p its share of all counted words."""
    total = sum(counts.values()) or 1
    p = numpy.array([counts.get(word, 0) / total for word in words], dtype=numpy.float64)
    return (a / (a + p)).astype(numpy.float32)


def encoder_vectors(
    encoder: torch.nn.Module, tokenizer: Any, counts: Dict[str, int], *, width: int = 256, progress: Any = None
) -> Tuple[List[str], numpy.ndarray]:
    """The vocabulary (the encoder's whole words and the counted words) and
    its vectors: encoded, reduced to `width` and weighted.
    """
    words = sorted(set(whole_words(tokenizer)) | set(counts))
    table = encode_words(encoder, tokenizer, words, progress=progress)
    table = pca(table, width)
    table *= sif_weights(words, counts)[:, None]
    return words, table
