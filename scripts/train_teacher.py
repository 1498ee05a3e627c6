"""Fine-tune the teacher with `spacy train`, its recipe chosen from the data.

    python scripts/train_teacher.py configs/teacher.cfg training/teacher \\
        [--epochs N] [--max-length L] [--check false] \\
        [any spacy train option or config override, e.g. --paths.train my.csv --gpu-id 0]

Before training it reads the training and dev data and says what it found:
the classes and their shares (a label column with one class, or a dev set
without a class of the training data, is an error), and the word-piece
lengths: `--max-length 0` picks the shortest multiple of 32 that holds 95 %
of the training texts (at most 256), and the texts cut at the chosen length
are counted.

The schedule, in steps of `[training.batcher] size` texts: spaCy scores the
teacher once an epoch (`eval_frequency`, 10 to 200 steps) and keeps the best
as model-best. The learning rate warms up over a tenth of the steps and
decays to 0 at the ceiling, MAX_EPOCHS epochs but at least MIN_STEPS steps:
small data needs many passes (800 texts are 25 steps an epoch; one epoch
left a teacher at the majority class on two of three tasks), and the
ceiling bounds the time. Training stops earlier once `patience` steps (two
evaluations, and never fewer than MIN_STEPS) bring no better dev score.
`--epochs N` trains N epochs instead, scored once an epoch, keeping the
best. Imbalanced classes are weighed in the loss by the config's
`class_weights = "balanced"`.

`spacy train` writes into a sibling folder, OUTPUT.partial. When it ends,
model-best is scored on dev once, the scores and a fingerprint of the dev
data go into its meta.json (`spacy distill` reuses them instead of scoring
the teacher again), and the new teacher is judged: one not worth distilling
(within 2 points of always answering the majority class, or below it, or a
class it (almost) never predicts) is moved to OUTPUT.rejected and the script
stops with an error; `--check false` keeps it anyway. Only a teacher that
passes replaces OUTPUT, whole: a run stopped, failed or rejected leaves the
teacher trained before it as it was. OUTPUT must be a new folder or one
`spacy train` wrote (model-best/, model-last/), and none of the inputs.
"""
import argparse
import math
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy
import spacy
import srsly
from spacy import util
from spacy.cli._util import parse_config_overrides
from spacy.training import Example

from spacy_dekd.distill.teacher_check import (
    dev_scores,
    gold_classes,
    per_class_recall,
    record_dev_scores,
    weak_teacher,
)
from spacy_dekd.files import OutputError, check_output, config_inputs, replace_folder

MIN_STEPS = 100
MAX_EPOCHS = 4
PATIENCE_EVALS = 2
LENGTH_COVER = 0.95
LENGTH_CAP = 256
# What `spacy train --output` writes: a folder holding anything else is not a teacher's.
TEACHER_PARTS = {"model-best", "model-last"}


class DataError(Exception):
    pass


def truth(value: str) -> bool:
    if value.lower() not in ("true", "false", "1", "0"):
        raise argparse.ArgumentTypeError(f"expected true or false, got '{value}'")
    return value.lower() in ("true", "1")


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


def read_corpora(config: Any) -> Tuple[List[Example], List[Example]]:
    nlp = spacy.blank(config["nlp"]["lang"])
    T = config["training"]
    train, dev = util.resolve_dot_names(config, [T["train_corpus"], T["dev_corpus"]])
    return list(train(nlp)), list(dev(nlp))


def describe_classes(name: str, examples: Sequence[Example], text_field: str) -> Counter:
    """Count the gold classes and the empty texts and say so in one line.
    RAISES DataError: Half the texts or more are empty.
    """
    counts = Counter(gold_classes(examples))
    n = sum(counts.values())
    shares = ", ".join(f"{count} {label} ({count / n:.0%})" for label, count in counts.most_common())
    n_empty = sum(not eg.text.strip() for eg in examples)
    empty = f"; {n_empty} empty, they teach nothing" if n_empty else ""
    print(f"ℹ {name}: {len(examples)} texts: {shares}{empty}")
    if examples and 2 * n_empty >= len(examples):
        raise DataError(
            f"{n_empty} of the {len(examples)} texts of the {name.lower()} are empty: check the text column "
            f"'{text_field}' (--vars.text_field) and the file."
        )
    return counts


def check_classes(train: Counter, dev: Counter, label_field: str) -> None:
    if not train:
        raise DataError("The training data has no labelled text: check the label column (--vars.label_field).")
    if len(train) < 2:
        (label,) = train
        raise DataError(
            f"The label column '{label_field}' of the training data holds one class only ('{label}'): "
            "a classifier needs two or more; check the column (--vars.label_field) and the file."
        )
    missing = sorted(set(train) - set(dev))
    if missing:
        raise DataError(
            f"The dev data has no text of class(es) {missing}: the teacher cannot be scored or chosen on "
            "them; put a share of each class into the dev file."
        )


def word_piece_lengths(config: Any, examples: Sequence[Example]) -> numpy.ndarray:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(config["components"]["textcat"]["model"]["name"]))
    encoded = tokenizer([eg.text for eg in examples], truncation=False, verbose=False)["input_ids"]
    return numpy.array([len(ids) for ids in encoded])


def choose_max_length(lengths: numpy.ndarray) -> int:
    """The shortest multiple of 32 holding LENGTH_COVER of the texts, at most LENGTH_CAP."""
    cover = float(numpy.percentile(lengths, LENGTH_COVER * 100))
    return int(min(LENGTH_CAP, max(32, 32 * math.ceil(cover / 32))))


def schedule(n_rows: int, batch_size: int, epochs: float) -> Dict[str, int]:
    """max_steps, eval_frequency, patience and warmup for `spacy train`."""
    per_epoch = math.ceil(n_rows / batch_size)
    if epochs:  # as many epochs as asked, scored once an epoch and at the end
        max_steps = max(1, math.ceil(epochs * per_epoch))
        every = min(per_epoch, max_steps)
        while max_steps % every:
            every -= 1
        return {"max_steps": max_steps, "eval_frequency": every, "patience": 0, "warmup_steps": max(6, max_steps // 10)}
    every = min(max(per_epoch, 10), 200)
    max_steps = max(MAX_EPOCHS * per_epoch, MIN_STEPS)
    max_steps = every * math.ceil(max_steps / every)  # the last step is scored
    # spaCy stops at best step + patience: never before MIN_STEPS.
    patience = max(PATIENCE_EVALS * every, MIN_STEPS)
    return {"max_steps": max_steps, "eval_frequency": every, "patience": patience, "warmup_steps": max(6, max_steps // 10)}


def check_output_folder(output: Path, config_path: Path, config: Any) -> None:
    """OUTPUT is replaced whole: refuse one that is an input, a file, or a
    folder holding more than a teacher.
    RAISES OutputError: The one-line reason.
    """
    check_output(output, [config_path, *config_inputs(config)])
    other = sorted(p.name for p in output.iterdir() if p.name not in TEACHER_PARTS) if output.is_dir() else []
    if other:
        shown = ", ".join(other[:3]) + (", ..." if len(other) > 3 else "")
        raise OutputError(
            f"The output '{output}' holds files that are not a teacher's ({shown}): the teacher replaces the folder "
            "whole; choose a new folder."
        )


def run_spacy_train(cmd: List[str], partial: Path) -> int:
    """Run `spacy train` in a session of its own, so that Ctrl-C reaches
    this script alone: it stops the run, drops OUTPUT.partial and says so.
    """
    proc = subprocess.Popen(cmd, start_new_session=True)
    try:
        code = proc.wait()
    except BaseException:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if code != 0:
        shutil.rmtree(partial, ignore_errors=True)
    return code


def check_teacher(output: Path, config: Any, dev: List[Example]) -> Tuple[Dict[str, Any], Any]:
    """Score model-best on dev once, record it in its meta.json."""
    best = output / "model-best"
    nlp = spacy.load(best)
    record = dev_scores(nlp, dev)
    record_dev_scores(nlp, record)
    meta_path = best / "meta.json"
    meta = srsly.read_json(meta_path)
    meta["spacy_dekd"] = nlp.meta["spacy_dekd"]
    tmp = meta_path.with_suffix(".json.tmp")
    srsly.write_json(tmp, meta)
    tmp.replace(meta_path)
    return record["scores"], nlp.get_pipe("textcat").labels


def main(argv: List[str]) -> int:
    try:
        return run(argv)
    except KeyboardInterrupt:
        print("✘ Interrupted: spacy train stopped, the output folder is as it was.", file=sys.stderr)
        return 130


def run(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--epochs", type=float, default=0, help="train this many epochs; 0 (default): until dev stops improving")
    parser.add_argument("--max-length", type=int, default=None, help="word pieces; 0: chosen from the data; default: the config's")
    parser.add_argument("--check", type=truth, default=True, help="false: keep a teacher no better than the majority class")
    args, rest = parser.parse_known_args(argv)
    if args.epochs < 0 or not math.isfinite(args.epochs):
        print(f"✘ --epochs must be 0 (until dev stops improving) or more, got {args.epochs:g}.", file=sys.stderr)
        return 1
    if args.max_length is not None and args.max_length < 0:
        print(f"✘ --max-length must be 0 (chosen from the data) or a number of word pieces, got {args.max_length}.", file=sys.stderr)
        return 1
    overrides = parse_config_overrides(config_overrides(rest))
    try:
        config = util.load_config(args.config, overrides=overrides, interpolate=True)
        check_output_folder(args.output, args.config, config)
        text_field = config["corpora"]["train"].get("text_field", "text")
        train, dev = read_corpora(config)
        train_counts = describe_classes("Training data", train, text_field)
        dev_counts = describe_classes("Dev data", dev, text_field)
        label_field = config["corpora"]["train"].get("label_field", "label")
        check_classes(train_counts, dev_counts, label_field)
        lengths = word_piece_lengths(config, train)
    except (OSError, ValueError, DataError, OutputError) as err:
        print(f"✘ {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    if args.max_length == 0:
        max_length, how = choose_max_length(lengths), f"chosen to hold {LENGTH_COVER:.0%} of them, at most {LENGTH_CAP}"
    else:
        max_length = args.max_length or config["components"]["textcat"]["model"]["max_length"]
        how = "as set"
    cut = int((lengths > max_length).sum())
    print(
        f"ℹ Lengths: median {numpy.median(lengths):.0f}, 95th percentile {numpy.percentile(lengths, 95):.0f}, "
        f"longest {lengths.max()} word pieces; max_length {max_length} ({how}) cuts {cut} of {len(lengths)} texts"
    )
    size = config["training"]["batcher"]["size"]
    if not isinstance(size, int):
        print("✘ Use a fixed batcher size (spacy.batch_by_sequence.v1 with an int size) to count steps.", file=sys.stderr)
        return 1
    plan = schedule(len(train), size, args.epochs)
    if plan["patience"]:
        print(
            f"ℹ Teacher: {math.ceil(len(train) / size)} steps an epoch, scored every {plan['eval_frequency']}; at most "
            f"{plan['max_steps']} steps, fewer once {plan['patience']} steps bring no better dev score",
            flush=True,
        )
    else:
        print(f"ℹ Teacher: {plan['max_steps']} steps ({args.epochs:g} epochs), scored every {plan['eval_frequency']}", flush=True)
    partial = args.output.with_name(args.output.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cmd = [
        sys.executable, "-m", "spacy", "train", str(args.config), "--output", str(partial), *rest,
        "--components.textcat.model.max_length", str(max_length),
        "--training.max_epochs", "0", "--training.max_steps", str(plan["max_steps"]),
        "--training.eval_frequency", str(plan["eval_frequency"]), "--training.patience", str(plan["patience"]),
        "--training.optimizer.learn_rate.warmup_steps", str(plan["warmup_steps"]),
    ]
    code = run_spacy_train(cmd, partial)
    if code != 0:
        return code
    scores, labels = check_teacher(partial, config, dev)
    print(
        f"ℹ Teacher on dev: accuracy {scores['cats_accuracy']:.3f}, macro F {scores['cats_macro_f']:.3f}, "
        f"macro AUC {scores['cats_macro_auc']:.3f}; recall {per_class_recall(scores)}"
    )
    exclusive = config["components"]["textcat"].get("exclusive_classes", True)
    problem = weak_teacher(scores, dev, labels) if exclusive else None
    if problem and args.check:
        rejected = args.output.with_name(args.output.name + ".rejected")
        replace_folder(partial, rejected)
        kept = f"'{args.output}' is as it was" if args.output.exists() else f"nothing was written to '{args.output}'"
        print(
            f"✘ The teacher is not worth distilling: {problem}; it is in '{rejected}', {kept}. Give it more "
            "epochs (--epochs N; the workflow's --vars.teacher_epochs N), check the labels and class balance, "
            "or keep it anyway with --check false (--vars.check_teacher false).",
            file=sys.stderr,
        )
        return 1
    replace_folder(partial, args.output)
    if problem:
        print(f"⚠ The teacher is kept although {problem} (--check false).")
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a kill stops spacy train too
    sys.exit(main(sys.argv[1:]))
