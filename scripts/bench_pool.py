"""What a pool of unlabelled text costs: whole runs as it grows, and memory.

    python scripts/bench_pool.py scale --sizes 10000 100000 1000000 [--budget 0.1] [--output F]
    python scripts/bench_pool.py memory corpus/movies/unlabeled.txt --texts 20000 --repeats 3

`scale`: `spacy distill` with configs/dekd_minilm.cfg on the tests' tiny
models (a 4-layer teacher, a 2-layer width-16 student), 160 labelled toy
sentences and N unlabelled ones of 15 words, teacher budget b: epoch 0, the
first query round, 20 steps, one save; then `--resume` for one step. Prints
each run's peak RSS (the process's, from wait4), startup (process start to
the first step), the round's time (the gap between epoch 0's last step and
epoch 1's first, less a step), the size of checkpoint/ and of the appended
answers/, and the resume's startup; then the RSS a text adds and each
figure's growth exponent.

`memory`: reads N texts (the movie sentences, repeated to N) through spaCy's
`PlainTextCorpus` as `spacy distill` does, and measures with tracemalloc
(one process, one after the other, repeated) what holding them costs: as
spaCy Examples (how the pool was kept before) and as the run keeps it now
(`RunExamples`: the texts, an Example made when used). Then the teacher's
answers under a budget: the cache with a row per answered example against
one sized for every example (how it was before), for the shipped student's
answers (logits and 13 first-token states of width 768).

"""
import argparse
import gc
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Callable, Dict, List

import spacy
import torch
from spacy.training import PlainTextCorpus

from spacy_dekd.distill.cache import OutputCache
from spacy_dekd.distill.examples import RunExamples, texts_of
from spacy_dekd.distill.types import TeacherOutput

ROOT = Path(__file__).parent.parent


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


# ---- scale: whole `spacy distill` runs on tiny models ----

CLOCK = '''
import time
from pathlib import Path

from spacy_dekd.registry import registry


@registry.misc("bench_pool.Clock.v1")
def make_clock(path: str):
    """before_update: the wall time each step starts at, a line a step."""
    handle = Path(path).open("a", encoding="utf8")

    def before_update(nlp, info):
        handle.write(f"{info['epoch']} {info['step']} {time.time():.4f}\\n")
        handle.flush()

    return before_update
'''


def tiny_models(root: Path) -> Dict[str, Path]:
    """The tests' tiny models: a 4-layer teacher trained on toy sentences
    and a 2-layer, width-16 student encoder (tests/conftest.py)."""
    sys.path.insert(0, str(ROOT))
    from tests.cli.conftest import train_classifier
    from tests.conftest import toy_rows, write_jsonl, write_tiny_encoder

    data = {"train": write_jsonl(toy_rows(160, seed=1), root / "train.jsonl"), "dev": write_jsonl(toy_rows(40, seed=2), root / "dev.jsonl")}
    teacher = train_classifier(write_tiny_encoder(root / "bert4", "bert", n_layers=4), data["train"], root / "teacher")
    student = write_tiny_encoder(root / "narrow", "bert", n_layers=2, hidden=16, seed=3)
    return {"teacher": teacher, "student": student, **data}


def write_pool(path: Path, n: int, seed: int = 0) -> None:
    """n sentences of 15 words from the tiny tokenizer's vocabulary."""
    sys.path.insert(0, str(ROOT))
    from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE

    rng = random.Random(seed)
    words = NEUTRAL + POSITIVE + NEGATIVE
    with path.open("w", encoding="utf8") as f:
        for _ in range(n):
            f.write(" ".join(rng.choices(words, k=15)) + "\n")


def distill_run(args: argparse.Namespace, models: Dict[str, Path], pool: Path, out: Path, max_steps: int, resume: bool) -> Dict[str, float]:
    """One `spacy distill` process: its peak RSS, and when each step began."""
    clock = out.parent / f"{out.name}.clock"  # one path: the config, and so the fingerprint, stays the same
    clock.unlink(missing_ok=True)
    code = out.parent / "clock.py"
    code.write_text(CLOCK, encoding="utf8")
    cmd = [
        sys.executable, "-m", "spacy", "distill", str(models["teacher"]), str(ROOT / "configs" / "dekd_minilm.cfg"),
        "--output", str(out), "--code", str(code),
        "--paths.train", str(models["train"]), "--paths.dev", str(models["dev"]), "--paths.encoder", str(models["student"]),
        "--paths.unlabeled", str(pool), "--distillation.teacher_budget", str(args.budget),
        "--distillation.max_epochs", str(args.epochs), "--distillation.max_steps", str(max_steps),
        "--distillation.eval_frequency", "1000000", "--distillation.mixed_precision", "false",
        "--distillation.before_update", json.dumps({"@misc": "bench_pool.Clock.v1", "path": str(clock)}),
    ]
    if args.pool_sample:
        cmd += ["--distillation.pool_sample", str(args.pool_sample)]
    if resume:
        cmd.append("--resume")
    started = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    if status != 0:
        raise SystemExit(f"✘ spacy distill failed at {pool}: {output.strip().splitlines()[-1]}")
    steps = [line.split() for line in clock.read_text().splitlines()] if clock.exists() else []
    if not steps:
        raise SystemExit(f"✘ spacy distill took no step at {pool}: {' | '.join(output.strip().splitlines()[-4:])}")
    times = [float(t) for _, _, t in steps]
    epochs = [int(e) for e, _, _ in steps]
    step_s = statistics.median(b - a for a, b in zip(times, times[1:])) if len(times) > 1 else 0.0
    # The first round runs between epoch 0's last step and epoch 1's first.
    first_of_1 = epochs.index(1) if 1 in epochs else None
    round_s = times[first_of_1] - times[first_of_1 - 1] - step_s if first_of_1 else float("nan")
    return {"rss_mib": usage.ru_maxrss / 1024, "startup_s": times[0] - started, "round_s": round_s, "steps": len(times)}


def scale(args: argparse.Namespace) -> int:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        models = tiny_models(root / "models")
        labelled_batches = math.ceil(160 / 32)
        for n in args.sizes:
            pool = root / f"pool-{n}.txt"
            write_pool(pool, n)
            out = root / f"out-{n}"
            # Epoch 0 (the labelled batches), the first query round, then 20 steps.
            run = distill_run(args, models, pool, out, labelled_batches + 20, resume=False)
            checkpoint, answers = (sum(f.stat().st_size for f in (out / part).rglob("*") if f.is_file()) for part in ("checkpoint", "answers"))
            resumed = distill_run(args, models, pool, out, labelled_batches + 21, resume=True)
            row = {
                "texts": n, **run, "checkpoint_mb": checkpoint / 1e6, "answers_mb": answers / 1e6,
                "resume_startup_s": resumed["startup_s"], "resume_rss_mib": resumed["rss_mib"],
            }
            rows.append(row)
            print(
                f"{n:>9,} texts: peak RSS {row['rss_mib']:,.0f} MiB, startup {row['startup_s']:.1f} s, round {row['round_s']:.1f} s, "
                f"checkpoint {row['checkpoint_mb']:.1f} MB + answers {row['answers_mb']:.1f} MB, resume startup {row['resume_startup_s']:.1f} s",
                flush=True,
            )
            shutil.rmtree(out, ignore_errors=True)
            pool.unlink()
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = (last["rss_mib"] - first["rss_mib"]) * 2**20 / (last["texts"] - first["texts"])
        print(f"RSS beyond the fixed cost: {growth:.0f} bytes a text (from {first['texts']:,} to {last['texts']:,})")
        for key in ("rss_mib", "startup_s", "round_s", "checkpoint_mb", "resume_startup_s"):
            exponent = math.log(last[key] / first[key]) / math.log(last["texts"] / first["texts"])
            print(f"  growth exponent of {key}: {exponent:.2f}")
    if args.output:
        args.output.write_text(json.dumps({"budget": args.budget, "epochs": args.epochs, "pool_sample": args.pool_sample, "rows": rows}, indent=2))
    return 0


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    scaling = commands.add_parser("scale", help="whole runs on tiny models")
    scaling.add_argument("--sizes", nargs="+", type=int, default=[10_000, 100_000, 1_000_000])
    scaling.add_argument("--budget", type=float, default=0.1)
    scaling.add_argument("--epochs", type=int, default=10, help="planned: the runs stop 20 steps into epoch 1")
    scaling.add_argument("--pool-sample", type=int, default=None)
    scaling.add_argument("--output", type=Path)
    memory_cmd = commands.add_parser("memory", help="the pool and the teacher cache in memory")
    memory_cmd.add_argument("texts_file", type=Path)
    memory_cmd.add_argument("--texts", type=int, default=20000)
    memory_cmd.add_argument("--repeats", type=int, default=3)
    memory_cmd.add_argument("--pool", type=int, default=1_000_000, help="pool size for the cache figures")
    memory_cmd.add_argument("--budget", type=float, default=0.05, help="teacher budget for the cache figures")
    memory_cmd.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    return scale(args) if args.command == "scale" else memory(args)


def memory(args: argparse.Namespace) -> int:
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
