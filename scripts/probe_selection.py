"""What a query round's selectors pick from a pool, scored by a trained student.

    python scripts/probe_selection.py STUDENT POOL [POOL ...] [--k 450] [--sample 10000]
        [--prefilters 2 4 10] [--seed 0] [--overlap 0.5]

Draws `--sample` non-blank lines of the pool files (seeded), has the student
(a pipeline with the transformer textcat) score them as a query round does
(its logits and last-layer first-token states), and picks k of them with the
entropy selector, the diverse entropy selector at each prefilter, and at
random. For each it prints the share of picks that are near-duplicates of
another pick (word sets with Jaccard overlap >= `--overlap`: a sentence and
its variants), the picks' mean scaled entropy, and how many picks it shares
with entropy. One process; nothing is written.
"""
import argparse
import random
import sys
from pathlib import Path
from typing import List, Sequence

import spacy
import torch

from spacy_dekd.distill.selectors import (
    entropy_score,
    make_diverse_entropy_selector_v1,
    make_entropy_selector_v1,
    make_random_selector_v1,
)


def near_duplicate_share(texts: Sequence[str], threshold: float) -> float:
    """The share of texts whose word set overlaps another's by Jaccard >= threshold."""
    words = [set(text.lower().split()) for text in texts]
    dup = sum(
        any(len(a & b) / max(1, len(a | b)) >= threshold for j, b in enumerate(words) if j != i)
        for i, a in enumerate(words)
    )
    return dup / max(1, len(texts))


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("student", type=Path)
    parser.add_argument("pool", type=Path, nargs="+")
    parser.add_argument("--k", type=int, default=450, help="picks a round makes")
    parser.add_argument("--sample", type=int, default=10000, help="lines drawn from the pool")
    parser.add_argument("--prefilters", type=float, nargs="+", default=[2.0, 4.0, 10.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overlap", type=float, default=0.5)
    args = parser.parse_args(argv)
    lines = [line.strip() for path in args.pool for line in path.read_text(encoding="utf8").splitlines()]
    lines = [line for line in lines if line]
    texts = random.Random(args.seed).sample(lines, min(args.sample, len(lines)))
    nlp = spacy.load(args.student)
    pipe = nlp.get_pipe("textcat")
    logits, states = [], []
    with torch.no_grad():
        for start in range(0, len(texts), 256):
            out = pipe.forward([nlp.make_doc(t) for t in texts[start : start + 256]], is_train=False, output_hidden_states=True)
            logits.append(out.logits.float())
            states.append(out.hidden_states[-1].float())
    logits_all, states_all = torch.cat(logits), torch.cat(states)
    scores = entropy_score(logits_all)
    entropy = make_entropy_selector_v1(0.5)(logits_all, k=args.k)
    picks = {"entropy": entropy}
    for prefilter in args.prefilters:
        selector = make_diverse_entropy_selector_v1(prefilter=prefilter, seed=args.seed)
        picks[f"diverse, prefilter {prefilter:g}"] = selector.select_states([(logits_all, states_all)], args.k)[0]
    picks["random"] = make_random_selector_v1(0.5, seed=args.seed)(logits_all, k=args.k)
    print(f"{len(texts)} texts drawn from {len(lines)}; {args.k} picks; near-duplicates: word Jaccard >= {args.overlap}")
    print(f"{'selector':24s} {'near-duplicates':>16s} {'mean entropy':>13s} {'shared with entropy':>20s}")
    for name, rows in picks.items():
        share = near_duplicate_share([texts[i] for i in rows.tolist()], args.overlap)
        shared = len(set(rows.tolist()) & set(entropy.tolist()))
        print(f"{name:24s} {share:16.3f} {float(scores[rows].mean()):13.3f} {shared:20d}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
