"""What a pool of unlabelled text costs in memory, before the first step.

Reads N texts (the movie sentences, repeated to N) through spaCy's
`PlainTextCorpus` as `spacy distill` does, and measures with tracemalloc
(one process, one after the other, repeated) what holding them costs: as
spaCy Examples (how the pool was kept before) and as the run keeps it now
(`RunExamples`: the texts, an Example made when used). Then the teacher's
answers under a budget: the cache with a row per answered example against
one sized for every example (how it was before), for the shipped student's
answers (logits and 13 first-token states of width 768).

    python scripts/bench_pool.py corpus/movies/unlabeled.txt --texts 20000 --repeats 3
"""
import argparse
import gc
import json
import statistics
import sys
import tempfile
import tracemalloc
from pathlib import Path
from typing import Callable, List

import spacy
import torch
from spacy.training import PlainTextCorpus

from spacy_dekd.distill.cache import OutputCache
from spacy_dekd.distill.examples import RunExamples, texts_of
from spacy_dekd.distill.types import TeacherOutput


def traced(build: Callable[[], object]) -> int:
    """Bytes still allocated by what `build` returns, once it has returned."""
    gc.collect()
    tracemalloc.start()
    held = build()
    gc.collect()
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del held
    return size


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("texts_file", type=Path)
    parser.add_argument("--texts", type=int, default=20000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pool", type=int, default=1_000_000, help="pool size for the cache figures")
    parser.add_argument("--budget", type=float, default=0.05, help="teacher budget for the cache figures")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    lines = [line for line in args.texts_file.read_text(encoding="utf8").splitlines() if line.strip()]
    nlp = spacy.blank("en")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pool.txt"
        path.write_text("\n".join(lines[i % len(lines)] for i in range(args.texts)) + "\n", encoding="utf8")
        corpus = PlainTextCorpus(path)
        as_examples, as_texts = [], []
        for _ in range(args.repeats):
            as_examples.append(traced(lambda: list(corpus(nlp))))
            as_texts.append(traced(lambda: RunExamples(nlp, [], texts_of(corpus(nlp)))))
    before, now = statistics.median(as_examples), statistics.median(as_texts)
    print(f"{args.texts} texts, median of {args.repeats} (min-max):")
    print(f"  as spaCy Examples: {before / args.texts / 1024:.2f} KiB a text ({min(as_examples) / 2**20:.1f}-{max(as_examples) / 2**20:.1f} MiB)")
    print(f"  as the run keeps them: {now / args.texts / 1024:.2f} KiB a text ({min(as_texts) / 2**20:.1f}-{max(as_texts) / 2**20:.1f} MiB)")
    print(f"  ratio: {before / now:.1f}x less")
    answers = int(args.pool * args.budget)
    per_row = 2 * 4 + 13 * 768 * 4
    cache = OutputCache(args.pool, with_hidden=True)
    ids = torch.randperm(args.pool, generator=torch.Generator().manual_seed(0))[:answers]

    def forward(batch: torch.Tensor) -> TeacherOutput:
        n = batch.numel()
        return TeacherOutput(logits=torch.zeros(n, 2), hidden_states=[torch.zeros(n, 768) for _ in range(13)])

    for start in range(0, answers, 4096):
        cache.get(ids[start : start + 4096], forward)
    every = args.pool * per_row
    index = cache.slot.numel() * cache.slot.element_size()
    print(f"teacher cache, a pool of {args.pool} texts, budget {args.budget} ({answers} answers):")
    print(f"  sized for every example: {every / 2**30:.2f} GiB")
    print(f"  a row per answer: {(cache.nbytes + index) / 2**30:.2f} GiB ({cache.nbytes / 2**30:.2f} answers + {index / 2**20:.0f} MiB index)")
    print(f"  ratio: {every / (cache.nbytes + index):.1f}x less")
    if args.output:
        args.output.write_text(json.dumps({
            "texts": args.texts, "repeats": args.repeats, "example_bytes_per_text": as_examples, "run_bytes_per_text": as_texts,
            "pool": args.pool, "budget": args.budget, "cache_every_example_bytes": every, "cache_per_answer_bytes": cache.nbytes + index,
        }, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
