"""Split scored snippets into train / dev / test, with a fixed seed, and keep
the rest of the training snippets as unlabelled text.

Three tasks from the scored files of scripts/fetch_assets.py: `movies`
(Rotten Tomatoes sentences) and `amazon` (product review snippets), positive
score → "positive", negative → "negative", zeros dropped; `tweets`, three
classes: score < -1 → "negative", > 1 → "positive", the rest "neutral". The test
and dev partitions are fixed (the first 1,000 and the next 500 sentences
after shuffling with the seed) whatever the training size, so that runs of
different sizes are scored on the same sentences. Writes `{split}.jsonl`
(for `spacy-dekd.DatasetCorpus.v1`), `{split}.spacy` (for `spacy evaluate`
and `spacy benchmark`), and `unlabeled.txt`: the training sentences after the
first `--n-train`, one per line and without their labels (at most
`--n-unlabeled`), for `spacy.PlainTextCorpus.v1`.

    python scripts/build_corpus.py assets/movies corpus/movies --n-train 800
    python scripts/build_corpus.py assets/tweets corpus/tweets --task tweets --n-train 800

Given `--own-data TRAIN DEV TEST` (the workflow passes its `vars`), it
builds nothing when TRAIN lies outside the output folder: that run is on
your data, and it checks that your files are there (and `--unlabeled`,
unless `--unlabeled-corpus null`) before hours go into a teacher.
"""
import argparse
import html
import json
import random
import sys
from pathlib import Path
from typing import Callable, Dict, List, NamedTuple, Optional

import spacy

from spacy_dekd.corpus import DatasetCorpus, write_docbin

N_TEST = 1000
N_DEV = 500


class Task(NamedTuple):
    source: str
    labels: List[str]
    label: Callable[[float], Optional[str]]  # score → label, None drops the snippet
    # HTML entities (&amp;) decoded; the movie corpus keeps them as it always had.
    unescape: bool = True


def by_sign(score: float) -> Optional[str]:
    return None if score == 0 else "positive" if score > 0 else "negative"


def by_band(score: float) -> str:
    return "negative" if score < -1 else "positive" if score > 1 else "neutral"


TASKS = {
    "movies": Task("movieReviewSnippets_GroundTruth.txt", ["negative", "positive"], by_sign, unescape=False),
    "amazon": Task("amazonReviewSnippets_GroundTruth.txt", ["negative", "positive"], by_sign),
    "tweets": Task("tweets_GroundTruth.txt", ["negative", "neutral", "positive"], by_band),
}


def read_snippets(path: Path, task: Task) -> List[Dict[str, str]]:
    """`id TAB score TAB text` lines → {"text", "label"} rows."""
    rows = []
    for line in path.read_text(encoding="utf8").splitlines():
        if not line.strip():
            continue
        _, score, text = line.split("\t", 2)
        label = task.label(float(score))
        if label is not None:
            text = text.strip()
            rows.append({"text": html.unescape(text) if task.unescape else text, "label": label})
    return rows


def check_own_data(args: argparse.Namespace) -> int:
    """Your files, not the task's: each must be there."""
    files = dict(zip(("train", "dev", "test"), args.own_data))
    if args.unlabeled_corpus not in ("null", "None", ""):
        files["unlabeled"] = args.unlabeled
    for var, path in files.items():
        hint = " (or none: --vars.unlabeled_corpus null --vars.teacher_budget null)" if var == "unlabeled" else ""
        if path is None or not path.is_file():
            print(f"✘ vars.{var}: '{path}' is not a file: point --vars.{var} at your data{hint}", file=sys.stderr)
            return 1
        if args.output.resolve() in path.resolve().parents:
            print(f"✘ vars.{var} is the {args.task} corpus's ('{path}') while vars.train is yours: point --vars.{var} at your data{hint}", file=sys.stderr)
            return 1
    print(f"ℹ Your own data ({', '.join(f'{var} {path}' for var, path in files.items())}): no {args.task} corpus is built")
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="the task's asset folder (scripts/fetch_assets.py)")
    parser.add_argument("output", type=Path)
    parser.add_argument("--task", choices=sorted(TASKS), default="movies")
    parser.add_argument("--own-data", type=Path, nargs=3, default=None, metavar=("TRAIN", "DEV", "TEST"), help="the workflow's data: TRAIN outside OUTPUT builds nothing")
    parser.add_argument("--unlabeled", type=Path, default=None, help="with --own-data: the unlabelled text")
    parser.add_argument("--unlabeled-corpus", default="null", help="with --own-data: null if the student reads no unlabelled text")
    parser.add_argument("--n-train", type=int, default=0, help="0: all the rest")
    parser.add_argument("--n-unlabeled", type=int, default=0, help="0: every training sentence after --n-train")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.own_data is not None and args.output.resolve() not in args.own_data[0].resolve().parents:
        return check_own_data(args)
    task = TASKS[args.task]
    source = args.source / task.source
    if not source.is_file():
        print(f"✘ {source} not found: run `python scripts/fetch_assets.py --only {args.task}`", file=sys.stderr)
        return 1
    rows = read_snippets(source, task)
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
        corpus = DatasetCorpus(jsonl, labels=task.labels)
        write_docbin(corpus(nlp), args.output / f"{name}.spacy")
        counts = ", ".join(f"{sum(row['label'] == label for row in split)} {label}" for label in task.labels)
        print(f"✔ {name}: {len(split)} texts ({counts}) → {jsonl}")
    text = args.output / "unlabeled.txt"
    tmp = text.with_suffix(".txt.tmp")
    tmp.write_text("".join(row["text"] + "\n" for row in unlabeled), encoding="utf8")
    tmp.replace(text)
    print(f"✔ unlabeled: {len(unlabeled)} texts, labels dropped → {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
