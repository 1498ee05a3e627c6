"""Split the movie-review sentences into train / dev / test, with a fixed seed,
and keep the rest of the training sentences as unlabelled text.

Positive score → "positive", negative → "negative", zeros dropped. The test
and dev partitions are fixed (the first 1,000 and the next 500 sentences
after shuffling with the seed) whatever the training size, so that runs of
different sizes are scored on the same sentences. Writes `{split}.jsonl`
(for `spacy-dekd.DatasetCorpus.v1`), `{split}.spacy` (for `spacy evaluate`
and `spacy benchmark`), and `unlabeled.txt`: the training sentences after the
first `--n-train`, one per line and without their labels (at most
`--n-unlabeled`), for `spacy.PlainTextCorpus.v1`.

    python scripts/build_corpus.py assets/movies corpus/movies --n-train 800
"""
import argparse
import json
import random
import sys
from pathlib import Path
from typing import Dict, List

import spacy

from spacy_dekd.corpus import DatasetCorpus, write_docbin

SOURCE = "movieReviewSnippets_GroundTruth.txt"
N_TEST = 1000
N_DEV = 500


def read_movies(path: Path) -> List[Dict[str, str]]:
    rows = []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip():
            continue
        _, score, text = line.split("\t", 2)
        value = float(score)
        if value == 0:
            continue
        rows.append({"text": text.strip(), "label": "positive" if value > 0 else "negative"})
    return rows


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="folder holding " + SOURCE)
    parser.add_argument("output", type=Path)
    parser.add_argument("--n-train", type=int, default=0, help="0: all the rest")
    parser.add_argument("--n-unlabeled", type=int, default=0, help="0: every training sentence after --n-train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    source = args.source / SOURCE
    if not source.is_file():
        print(f"✘ {source} not found: run `python scripts/fetch_assets.py --only movies`", file=sys.stderr)
        return 1
    rows = read_movies(source)
    random.Random(args.seed).shuffle(rows)
    splits = {
        "test": rows[:N_TEST],
        "dev": rows[N_TEST : N_TEST + N_DEV],
        "train": rows[N_TEST + N_DEV :],
    }
    unlabeled = []
    if args.n_train:
        splits["train"], unlabeled = splits["train"][: args.n_train], splits["train"][args.n_train :]
    if args.n_unlabeled:
        unlabeled = unlabeled[: args.n_unlabeled]
    args.output.mkdir(parents=True, exist_ok=True)
    nlp = spacy.blank("en")
    for name, split in splits.items():
        jsonl = args.output / f"{name}.jsonl"
        tmp = jsonl.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(row) + "\n" for row in split), encoding="utf8")
        tmp.replace(jsonl)
        corpus = DatasetCorpus(jsonl, labels=["negative", "positive"])
        write_docbin(corpus(nlp), args.output / f"{name}.spacy")
        n_pos = sum(row["label"] == "positive" for row in split)
        print(f"✔ {name}: {len(split)} sentences ({n_pos} positive) → {jsonl}")
    text = args.output / "unlabeled.txt"
    tmp = text.with_suffix(".txt.tmp")
    tmp.write_text("".join(row["text"] + "\n" for row in unlabeled), encoding="utf8")
    tmp.replace(text)
    print(f"✔ unlabeled: {len(unlabeled)} sentences, labels dropped → {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
