"""Fine-tune the teacher with `spacy train`, its schedule set by the size of
the training data: `--epochs` passes over it, counted in steps, so that the
last step is the one scored and saved as model-best (spaCy's loop scores
every eval_frequency steps, and an epoch that ends between two evaluations
is never scored), with a linear warmup over the first tenth (6 steps at least).

    python scripts/train_teacher.py configs/teacher.cfg training/teacher --epochs 1 \\
        [any spacy train option or config override, e.g. --paths.train my.csv --gpu-id 0]

About one epoch fits a teacher to a few thousand sentences on a CPU; more
epochs help small data sets most (800 movie sentences: 87.8 % test after one).
"""
import argparse
import math
import subprocess
import sys
from pathlib import Path
from typing import List

import spacy
from spacy import util
from spacy.cli._util import parse_config_overrides

import spacy_dekd  # noqa: F401  (its readers)


def count_steps(config_path: Path, overrides: dict, epochs: float) -> int:
    config = util.load_config(config_path, overrides=overrides, interpolate=True)
    nlp = spacy.blank(config["nlp"]["lang"])
    corpus = util.resolve_dot_names(config, [config["training"]["train_corpus"]])[0]
    rows = sum(1 for _ in corpus(nlp))
    if rows == 0:
        raise ValueError(f"The training corpus of '{config_path}' is empty.")
    size = config["training"]["batcher"]["size"]
    if not isinstance(size, int):
        raise ValueError("Use a fixed batcher size (spacy.batch_by_sequence.v1 with an int size) to count steps.")
    return max(1, math.ceil(epochs * math.ceil(rows / size)))


def config_overrides(args: List[str]) -> List[str]:
    """The `--section.key value` pairs among spacy train's other options."""
    out, i = [], 0
    while i < len(args):
        if args[i].startswith("--") and "." in args[i].split("=")[0]:
            take = 1 if "=" in args[i] else 2
            out.extend(args[i : i + take])
            i += take
        else:
            i += 1
    return out


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=float, default=1.0, help="passes over the training data (default 1)")
    args, rest = parser.parse_known_args(argv)
    overrides = parse_config_overrides(config_overrides(rest))
    try:
        steps = count_steps(args.config, overrides, args.epochs)
    except (OSError, ValueError) as err:
        print(f"✘ {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    print(f"ℹ Teacher: {steps} steps ({args.epochs:g} epochs), scored after the last", flush=True)
    cmd = [
        sys.executable, "-m", "spacy", "train", str(args.config), "--output", str(args.output), *rest,
        "--training.max_epochs", "0", "--training.max_steps", str(steps), "--training.eval_frequency", str(steps),
        # 6 warmup steps at least (the 25-step default teacher's), a tenth of longer runs.
        "--training.optimizer.learn_rate.warmup_steps", str(max(6, steps // 10)),
    ]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
