"""More transfer text from the text there is: variants of sentences for the
teacher to answer (TinyBERT's augmentation, with word-piece embeddings in
place of its masked language model).

A variant replaces some words by a neighbour in an encoder's input
embedding space (cosine, among whole-word pieces), drops some and swaps
some with the next word. A variant may not keep the sentence's label
("good" and "bad" are neighbours): it is unlabelled text, and the teacher
says what it is, under the budget, as for any other text of the pool.
"""
import random
import re
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Sequence

import torch

WORD = re.compile(r"[A-Za-z]+(?:'[a-z]+)?")


def embedding_neighbours(
    model_dir: Path, words: Iterable[str], *, k: int = 8, batch_size: int = 2048
) -> Dict[str, List[str]]:
    """For each word that is one whole-word piece of the encoder's
    vocabulary, its k nearest whole-word pieces by the cosine of their input
    embeddings (lower-cased; the word itself left out).
    """
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    embeddings = AutoModel.from_pretrained(str(model_dir)).get_input_embeddings().weight.detach()
    vocab = tokenizer.get_vocab()
    pieces = sorted((i, piece) for piece, i in vocab.items() if piece.isalpha() and piece.islower() and len(piece) > 1)
    ids = torch.tensor([i for i, _ in pieces])
    names = [piece for _, piece in pieces]
    table = torch.nn.functional.normalize(embeddings[ids].float(), dim=-1)
    row_of = {piece: row for row, piece in enumerate(names)}
    asked = sorted({w.lower() for w in words} & row_of.keys())
    result: Dict[str, List[str]] = {}
    for start in range(0, len(asked), batch_size):
        chunk = asked[start : start + batch_size]
        rows = torch.tensor([row_of[w] for w in chunk])
        similarity = table[rows] @ table.T
        similarity[torch.arange(len(chunk)), rows] = -2.0  # not the word itself
        nearest = similarity.topk(k, dim=-1).indices
        for word, found in zip(chunk, nearest.tolist()):
            result[word] = [names[j] for j in found]
    return result


def _cased_like(word: str, model: str) -> str:
    if model.isupper() and len(model) > 1:
        return word.upper()
    return word.capitalize() if model[:1].isupper() else word


def variant(
    text: str,
    neighbours: Dict[str, List[str]],
    rng: random.Random,
    *,
    substitute: float = 0.15,
    drop: float = 0.05,
    swap: float = 0.05,
) -> str:
    """One variant of the text: each word replaced by one of its neighbours
    with probability `substitute` (if it has any), or else dropped with
    probability `drop` (in a text of three words or more); then each
    remaining word swapped with the next one with probability `swap`.
    Punctuation and spacing between words are kept.
    """
    gaps = WORD.split(text)  # the text around the words: one more than the words
    words = WORD.findall(text)
    out: List[str] = []
    for word in words:
        choices = neighbours.get(word.lower())
        if choices and rng.random() < substitute:
            out.append(_cased_like(rng.choice(choices), word))
        elif rng.random() < drop and len(words) > 2:
            out.append("")
        else:
            out.append(word)
    kept = [i for i, word in enumerate(out) if word]
    for a, b in zip(kept, kept[1:]):
        if rng.random() < swap:
            out[a], out[b] = out[b], out[a]
    joined = gaps[0] + "".join(word + gap for word, gap in zip(out, gaps[1:]))
    return re.sub(r"\s+", " ", joined).strip()


def variants(
    texts: Sequence[str],
    neighbours: Dict[str, List[str]],
    *,
    n: int,
    seed: int = 0,
    substitute: float = 0.15,
    drop: float = 0.05,
    swap: float = 0.05,
) -> Iterator[str]:
    """n variants of each text, in order (text 0's, then text 1's...): each
    different from the text and from the other variants where the draws
    allow (a few tries each), from one generator seeded once.
    """
    rng = random.Random(seed)
    for text in texts:
        seen = {text}
        for _ in range(n):
            for _ in range(5):
                new = variant(text, neighbours, rng, substitute=substitute, drop=drop, swap=swap)
                if new not in seen:
                    break
            if new and new not in seen:
                seen.add(new)
                yield new
