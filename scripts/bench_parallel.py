"""Distillation throughput at 1 and N data-parallel processes (torchrun), on
this machine: samples per second over the steps of one epoch, start-up and
evaluation left out, the process counts alternating so that the machine's
noise falls on both. Prints each run, the medians and their ratio.

    python scripts/bench_parallel.py training/teacher/model-best configs/dekd_minilm.cfg \\
        [--assistant PATH] [--nproc 1 2] [--steps 20] [--warmup 4] [--repeats 3] [--gpu-id 0]

Each process of an N-process run on CPUs gets cores / N threads (torchrun's
OMP_NUM_THREADS), so every run uses the whole machine. Extra arguments
(`--distillation.x y`) go to `spacy distill`.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import List, Tuple


def run_once(args: argparse.Namespace, nproc: int, extra: List[str]) -> Tuple[float, int]:
    """Samples per second between the warm-up step and the last one."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out"
        cmd = [
            sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
            "-m", "spacy", "distill", args.teacher, args.config, "--output", str(out),
            "--distillation.max_steps", str(args.steps), "--distillation.eval_frequency", str(args.steps),
            # One epoch of labelled batches: no query round inside the timing.
            "--distillation.unlabeled_corpus", "null", "--distillation.teacher_budget", "null",
        ]
        if args.assistant:
            cmd += ["--assistant", args.assistant]
        if args.gpu_id >= 0:
            cmd += ["--gpu-id", str(args.gpu_id)]
        env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // nproc))}
        result = subprocess.run(cmd + extra, capture_output=True, text=True, env=env)
        if result.returncode != 0:
            sys.exit(f"spacy distill failed ({nproc} processes):\n{result.stderr[-2000:]}")
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf8"))
        history = metrics["history"]
        first, last = history[args.warmup - 1], history[-1]
        rows = batch_rows(args.config, extra) * (last["step"] - first["step"])
        return rows / (last["seconds"] - first["seconds"]), metrics["teacher_forward_passes"]


def batch_rows(config: str, extra: List[str]) -> int:
    """Rows per batch: the `batch_by_sequence` size of [distillation.batcher]."""
    from spacy.cli._util import parse_config_overrides
    from spacy.util import load_config

    batcher = load_config(config, overrides=parse_config_overrides(extra), interpolate=True)["distillation"]["batcher"]
    if batcher.get("@batchers") != "spacy.batch_by_sequence.v1":
        sys.exit("This benchmark counts rows with spacy.batch_by_sequence.v1 batches.")
    return int(batcher["size"])


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("config")
    parser.add_argument("--assistant", default=None)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--gpu-id", type=int, default=-1)
    args, extra = parser.parse_known_args(argv)
    if not 1 <= args.warmup < args.steps:
        parser.error("--warmup must be at least 1 and below --steps")
    rates = {n: [] for n in args.nproc}
    passes = {}
    for repeat in range(args.repeats):
        for n in args.nproc:
            rate, passes[n] = run_once(args, n, extra)
            rates[n].append(rate)
            print(f"repeat {repeat + 1}, {n} process(es): {rate:.1f} samples/s, {passes[n]} teacher passes", flush=True)
    base = statistics.median(rates[args.nproc[0]])
    print(f"\n{'processes':>9}  {'samples/s (median)':>18}  {'min-max':>13}  {'ratio':>6}  teacher passes")
    for n in args.nproc:
        median = statistics.median(rates[n])
        print(f"{n:>9}  {median:>18.1f}  {min(rates[n]):>6.1f}-{max(rates[n]):<6.1f}  {median / base:>6.2f}  {passes[n]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
