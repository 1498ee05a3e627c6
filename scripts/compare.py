"""Distil with several configs and seeds; report test accuracy (mean ± sd),
teacher and assistant forward passes, wall time, and a two-sided t-test of
each config against the first (Table 5 of the paper). Accuracy is that of
`model-best` (the best dev score under the config's `[training.score_weights]`,
spaCy's convention), with `model-last`'s beside it.

    python scripts/compare.py training/teacher/model-best corpus/movies/test.spacy \\
        --assistant training/assistant/model-best --configs dekd kd paper \\
        --seeds 0 1 2 --output training/compare [--set distillation.max_epochs=3]

Each run is `python -m spacy distill` in its own process, then
`scripts/evaluate.py` (spacy evaluate) of model-best and model-last in one
more; a run whose output already has metrics.json and test.json is not run
again (a missing test-last.json is still written). A scored run keeps
model-best, metrics.json and the scores; `--keep` keeps model-last and
checkpoint/ too.
"""
import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence


def run(cmd: List[str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = (result.stdout + result.stderr).strip().splitlines()[-3:]
        raise SystemExit(f"✘ {' '.join(cmd[:5])} ... failed: {' | '.join(tail)}")


def distill_and_test(
    teacher: str, test: str, config: str, seed: int, output: Path, *,
    assistant: Optional[str] = None, configs_dir: Path = Path("configs"),
    gpu_id: int = -1, sets: Sequence[str] = (), keep: bool = False,
) -> Dict:
    out = output / f"{config}-s{seed}"
    metrics_path, test_path, last_path = out / "metrics.json", out / "test.json", out / "test-last.json"
    if not (metrics_path.exists() and test_path.exists()):
        cmd = [sys.executable, "-m", "spacy", "distill", teacher, str(configs_dir / f"{config}.cfg"),
               "--output", str(out), "--system.seed", str(seed), "--gpu-id", str(gpu_id)]
        if assistant:
            cmd += ["--assistant", assistant]
        for setting in sets:
            key, _, value = setting.partition("=")
            cmd += [f"--{key}", value]
        started = time.perf_counter()
        run(cmd)
        print(f"  {config} seed {seed}: distilled in {time.perf_counter() - started:.0f}s", flush=True)
    if not (test_path.exists() and last_path.exists()):
        # spacy evaluate of model-best and model-last, in one process (scripts/evaluate.py).
        evaluate = str(Path(__file__).parent / "evaluate.py")
        run([sys.executable, evaluate, test, str(out), f"test={out / 'model-best'}",
             f"test-last={out / 'model-last'}", "--gpu-id", str(gpu_id)])
    if not keep:
        # A scored run needs neither what --resume reads nor model-last: a sweep
        # of 3-layer MPNet students would otherwise keep ~0.75 GB a run.
        for part in ("checkpoint", "model-last"):
            shutil.rmtree(out / part, ignore_errors=True)
    metrics = json.loads(metrics_path.read_text())
    scores = json.loads(test_path.read_text())
    return {
        "config": config,
        "seed": seed,
        "test_accuracy": scores["cats_accuracy"],
        "test_accuracy_last": json.loads(last_path.read_text())["cats_accuracy"],
        "teacher_forward_passes": metrics["teacher_forward_passes"],
        "assistant_forward_passes": metrics["assistant_forward_passes"],
        "baseline_teacher_forward_passes": metrics["baseline_teacher_forward_passes"],
        "wall_time_s": metrics["wall_time_s"],
    }


def compare(
    teacher: str, test: str, configs: Sequence[str], seeds: Sequence[int], output: Path, *,
    name: str = "compare", **kwargs,
) -> List[Dict]:
    """Run every config with every seed; write {name}.json and {name}.md."""
    output.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in seeds:  # seeds outermost: a partial run has every config
        for config in configs:
            rows.append(distill_and_test(teacher, test, config, seed, output, **kwargs))
    summary = summarize(rows, list(configs))
    (output / f"{name}.json").write_text(json.dumps({"runs": rows, "summary": summary}, indent=2))
    table = markdown(summary, configs[0])
    (output / f"{name}.md").write_text(table)
    print(table, flush=True)
    return summary


def t_test(a: List[float], b: List[float]) -> Optional[float]:
    """Two-sided p-value of Welch's t-test (scipy), None without scipy or data."""
    try:
        from scipy.stats import ttest_ind
    except ImportError:
        return None
    if len(a) < 2 or len(b) < 2:
        return None
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def summarize(rows: List[Dict], configs: List[str]) -> List[Dict]:
    summary = []
    for config in configs:
        mine = [r for r in rows if r["config"] == config]
        entry = {"config": config, "seeds": [r["seed"] for r in mine]}
        for suffix, key in (("", "test_accuracy"), ("_last", "test_accuracy_last")):
            acc = [r[key] for r in mine]
            reference = [r[key] for r in rows if r["config"] == configs[0]]
            entry["accuracy" + suffix] = acc
            entry["mean" + suffix] = statistics.mean(acc)
            entry["sd" + suffix] = statistics.stdev(acc) if len(acc) > 1 else 0.0
            entry[f"p_vs_{configs[0]}{suffix}"] = None if config == configs[0] else t_test(acc, reference)
        summary.append({
            **entry,
            "teacher_forward_passes": statistics.mean(r["teacher_forward_passes"] for r in mine),
            "assistant_forward_passes": statistics.mean(r["assistant_forward_passes"] for r in mine),
            "teacher_forward_ratio_vs_every_example": statistics.mean(
                r["teacher_forward_passes"] / r["baseline_teacher_forward_passes"] for r in mine
            ),
            "wall_time_s": statistics.mean(r["wall_time_s"] for r in mine),
        })
    return summary


def markdown(summary: List[Dict], reference: str) -> str:
    lines = [
        f"| config | test accuracy, model-best (mean ± sd) | p vs {reference} | model-last | p vs {reference} | "
        "seeds | teacher fwd | TA fwd | teacher fwd / (N·epochs) | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def accuracy(s: Dict, suffix: str) -> str:
        if f"mean{suffix}" not in s:  # a summary written before model-last was scored
            return "- | -"
        p = s.get(f"p_vs_{reference}{suffix}")
        return f"{100 * s['mean' + suffix]:.2f} ± {100 * s['sd' + suffix]:.2f} | {'-' if p is None else f'{p:.3f}'}"

    for s in summary:
        lines.append(
            f"| {s['config']} | {accuracy(s, '')} | {accuracy(s, '_last')} | "
            f"{len(s['seeds'])} | {s['teacher_forward_passes']:.0f} | "
            f"{s['assistant_forward_passes']:.0f} | {s['teacher_forward_ratio_vs_every_example']:.2f} | {s['wall_time_s']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("test", help=".spacy file to score on")
    parser.add_argument("--assistant")
    parser.add_argument("--configs", nargs="+", default=["dekd", "kd"])
    parser.add_argument("--configs-dir", type=Path, default=Path("configs"))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--output", type=Path, default=Path("training/compare"))
    parser.add_argument("--name", default="compare", help="name of the summary files")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--set", action="append", default=[], help="config override, key=value")
    parser.add_argument("--keep", action="store_true", help="keep each run's model-last and checkpoint/")
    args = parser.parse_args(argv)
    compare(
        args.teacher, args.test, args.configs, args.seeds, args.output, name=args.name,
        assistant=args.assistant, configs_dir=args.configs_dir, gpu_id=args.gpu_id, sets=args.set,
        keep=args.keep,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
