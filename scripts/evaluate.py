"""Score several pipelines on one test set, in one process, and say what
the teacher was worth.

`spacy evaluate` for each `name=path`, writing `OUTPUT_DIR/name.json` in its
format: the same scores and files as one `spacy evaluate` call per pipeline,
without starting Python, torch and transformers once per pipeline. The test
set is a `.spacy` file, or any file `spacy-dekd.DatasetCorpus.v1` reads
(csv, tsv, json(l), parquet; `--text-field`, `--label-field`). Ends with a
table of every pipeline's scores beside always answering the most frequent
class. `name?=path` is optional: skipped when nothing is at the path (the
workflow's assistant, which a student config without one never trains);
with nothing left to score it stops with an error. OUTPUT_DIR holds no
input and is none.

`--rival STUDENT=RIVAL` (exclusive classes) compares a student with the
same architecture trained on the labels alone, on the same texts: what the
teacher leads the rival by, what the student adds over it, each with a 95 %
paired bootstrap interval, and a plain line when the teacher or the student
is not clearly better. The figures go to `OUTPUT_DIR/distillation.json`,
and, with the test scores, into `OUTPUT_DIR/STUDENT-meta.json`: the
student's meta.json for `spacy package --meta-path`, so that its model card
shows them.

    python scripts/evaluate.py corpus/movies/test.spacy metrics \\
        teacher=training/teacher/model-best student=training/student/model-best \\
        no-teacher=training/no_teacher/model-best --rival student=no-teacher
"""
import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy
import spacy
import srsly
from spacy import util
from spacy.cli._util import setup_gpu
from spacy.scorer import Scorer
from spacy.tokens import DocBin
from spacy.training import Corpus, Example
from thinc.api import fix_random_seed
from wasabi import color, msg

from spacy_dekd.corpus import DatasetCorpus, write_docbin
from spacy_dekd.distill.teacher_check import against_rival, correct, majority_baseline, per_class_recall, rival_verdict
from spacy_dekd.files import OutputError, check_output


ICONS, COLORS = {"good": "✔", "warn": "⚠"}, {"good": "green", "warn": "yellow"}


class KeepingScorer(Scorer):
    """spaCy's scorer, keeping the examples it scored (their predictions)."""

    examples: List[Example] = []

    def score(self, examples, **kwargs):  # type: ignore[override]
        self.examples = list(examples)
        return super().score(self.examples, **kwargs)


def evaluate(path: str, data: Path, *, use_gpu: int = -1) -> Tuple[Dict[str, Any], numpy.ndarray]:
    """What `spacy evaluate PATH DATA` computes (and writes with --output),
    and whether each text's predicted class is right (exclusive classes).
    """
    fix_random_seed()
    setup_gpu(use_gpu, silent=True)
    nlp = util.load_model(path)
    scorer = KeepingScorer(nlp=nlp)
    scores = nlp.evaluate(list(Corpus(data)(nlp)), scorer=scorer)
    exclusive = all(sum(eg.reference.cats.values()) == 1 for eg in scorer.examples if eg.reference.cats)
    if not exclusive:
        return scores, numpy.array([])
    right = correct(scorer.examples)
    # spaCy's own textcat scorer has no accuracy (its micro F is the same number).
    scores.setdefault("cats_accuracy", float(right.mean()) if len(right) else None)
    return scores, right


def named_pipelines(items: List[str]) -> Tuple[List[Tuple[str, str]], Optional[str]]:
    """`name=path` items → (name, path) pairs, dropping a missing optional
    `name?=path`; or an error line.
    """
    pipelines = []
    for item in items:
        name, _, path = item.partition("=")
        optional = name.endswith("?")
        name = name.rstrip("?")
        if not name or not path:
            return [], f"Expected name=path, got '{item}'"
        if not Path(path).is_dir():
            if optional:
                msg.info(f"No '{name}' at '{path}': skipped")
                continue
            return [], f"No pipeline at '{path}' (for '{name}'): train it first"
        pipelines.append((name, path))
    return pipelines, None


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help=".spacy file with the gold docs, or a csv/tsv/json(l)/parquet file")
    parser.add_argument("output_dir", type=Path, help="folder for NAME.json")
    parser.add_argument("pipelines", nargs="+", help="name=path")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--text-field", default="text", help="for a file other than .spacy")
    parser.add_argument("--label-field", default="label", help="for a file other than .spacy")
    parser.add_argument("--teacher", default="teacher", help="the teacher's name among the pipelines, for --rival")
    parser.add_argument("--rival", action="append", default=[], metavar="STUDENT=RIVAL",
                        help="compare a student with the same architecture trained on the labels alone (repeatable)")
    parser.add_argument("-V", "--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: evaluate_all(args), verbose=args.verbose)


def one_line_errors(job: Callable[[], int], *, verbose: bool) -> int:
    """Run a script's job; a user's mistake (a file, a path, a value) is one
    line on stderr and exit 1, its traceback only with -V.
    """
    try:
        return job()
    except (OSError, ValueError, OutputError) as err:
        if verbose:
            raise
        print(f"✘ {str(err).strip().splitlines()[0]}", file=sys.stderr)
        return 1


def evaluate_all(args: argparse.Namespace) -> int:
    pipelines, error = named_pipelines(args.pipelines)
    if error:
        raise ValueError(error)
    if not pipelines:
        raise ValueError(f"Nothing was evaluated: no pipeline is at the paths given ({', '.join(args.pipelines)}).")
    rivals = parse_rivals(args.rival, [name for name, _ in pipelines], args.teacher)
    check_output(args.output_dir, [args.data, *(path for _, path in pipelines)], option="output folder")
    if not args.data.exists():
        raise ValueError(f"No test set at '{args.data}': pass a .spacy, csv, tsv, json(l) or parquet file.")
    data = args.data
    if data.suffix != ".spacy":  # convert once, next to the scores
        corpus = DatasetCorpus(data, text_field=args.text_field, label_field=args.label_field)
        data = args.output_dir / f"{data.stem}.spacy"
        examples = list(corpus(spacy.blank("en")))
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_docbin(examples, data)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows, right = [], {}
    for name, path in pipelines:
        msg.divider(name)
        scores, right[name] = evaluate(path, data, use_gpu=args.gpu_id)
        srsly.write_json(args.output_dir / f"{name}.json", scores)
        rows.append((name, scores))
    print_table(rows, data)
    if rivals:
        compare_rivals(rivals, dict(pipelines), dict(rows), right, args.teacher, args.output_dir)
    return 0


def parse_rivals(items: List[str], names: List[str], teacher: str) -> List[Tuple[str, str]]:
    """`--rival STUDENT=RIVAL` items → pairs; one whose pipeline was skipped
    (an optional one not there) is dropped with a line saying so.
    """
    pairs = []
    for item in items:
        student, _, rival = item.partition("=")
        if not student or not rival:
            raise ValueError(f"Expected --rival STUDENT=RIVAL, got '{item}'.")
        missing = [name for name in (teacher, student, rival) if name not in names]
        if missing:
            msg.info(f"No {' or '.join(repr(name) for name in missing)} to compare: --rival {item} skipped")
            continue
        pairs.append((student, rival))
    return pairs


def compare_rivals(
    rivals: List[Tuple[str, str]], paths: Dict[str, str], scores: Dict[str, Dict[str, Any]],
    right: Dict[str, numpy.ndarray], teacher: str, output_dir: Path,
) -> None:
    """What the teacher added to each student over its rival: printed,
    in distillation.json, and in the student's meta for `spacy package`.
    """
    if not len(right[teacher]):
        msg.info("The rival comparison covers exclusive classes: skipped for multilabel data")
        return
    reports = {}
    for student, rival in rivals:
        report = reports[student] = {"rival": rival, **against_rival(right[teacher], right[student], right[rival])}
        msg.divider(f"What the teacher is worth to {student}")
        for kind, line in rival_verdict(report, student, rival):
            # One line each, unwrapped: wasabi's printer folds long ones.
            print(line if kind == "text" else color(f"{ICONS[kind]} {line}", fg=COLORS[kind]))
        meta = srsly.read_json(Path(paths[student]) / "meta.json")
        meta["performance"] = {
            **{key: value for key, value in scores[student].items() if key.startswith("cats_")},
            "dekd_rival_acc": report["accuracy"]["rival"],
            "dekd_teacher_acc": report["accuracy"]["teacher"],
            "dekd_student_over_rival": report["student_over_rival"][0],
            "dekd_teacher_over_rival": report["teacher_over_rival"][0],
            "dekd_against_rival": report,
        }
        srsly.write_json(output_dir / f"{student}-meta.json", meta)
    srsly.write_json(output_dir / "distillation.json", {"teacher": teacher, "students": reports})


def print_table(rows: List[Tuple[str, dict]], data: Path) -> None:
    nlp = spacy.blank("en")
    gold = [Example(doc, doc) for doc in DocBin().from_disk(data).get_docs(nlp.vocab)]
    labels = sorted({label for eg in gold for label in eg.reference.cats})
    msg.divider(f"{len(gold)} texts of {data}")
    table = []
    for name, scores in rows:
        table.append((
            name, f"{scores['cats_accuracy'] * 100:.1f}", f"{scores['cats_macro_f'] * 100:.1f}",
            f"{scores['cats_macro_auc']:.3f}" if scores.get("cats_macro_auc") is not None else "-",
            per_class_recall(scores),
        ))
    if labels and all(sum(eg.reference.cats.values()) == 1 for eg in gold):
        base = majority_baseline(gold, labels)
        table.append((f"always '{base['label']}'", f"{base['accuracy'] * 100:.1f}", f"{base['macro_f'] * 100:.1f}", "0.500", ""))
    msg.table(table, header=("pipeline", "accuracy", "macro F", "macro AUC", "recall per class"), divider=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
