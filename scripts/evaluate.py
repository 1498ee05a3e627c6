"""Score several pipelines on one test set, in one process.

`spacy evaluate` for each `name=path`, writing `OUTPUT_DIR/name.json` in its
format: the same scores and files as one `spacy evaluate` call per pipeline,
without starting Python, torch and transformers once per pipeline. The test
set is a `.spacy` file, or any file `spacy-dekd.DatasetCorpus.v1` reads
(csv, tsv, json(l), parquet; `--text-field`, `--label-field`). Ends with a
table of every pipeline's scores beside always answering the most frequent
class. `name?=path` is optional: skipped when nothing is at the path (the
workflow's assistant, which a student config without one never trains).

    python scripts/evaluate.py corpus/movies/test.spacy metrics \\
        teacher=training/teacher/model-best student=training/student/model-best
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import spacy
from spacy.cli.evaluate import evaluate
from spacy.tokens import DocBin
from spacy.training import Example
from wasabi import msg

from spacy_dekd.corpus import DatasetCorpus, write_docbin
from spacy_dekd.distill.teacher_check import majority_baseline, per_class_recall


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
    args = parser.parse_args(argv)
    pipelines, error = named_pipelines(args.pipelines)
    if error:
        print(f"✘ {error}", file=sys.stderr)
        return 1
    data = args.data
    if data.suffix != ".spacy":  # convert once, next to the scores
        corpus = DatasetCorpus(data, text_field=args.text_field, label_field=args.label_field)
        data = args.output_dir / f"{data.stem}.spacy"
        try:
            examples = list(corpus(spacy.blank("en")))
        except ValueError as err:
            print(f"✘ {str(err).splitlines()[0]}", file=sys.stderr)
            return 1
        args.output_dir.mkdir(parents=True, exist_ok=True)
        write_docbin(examples, data)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name, path in pipelines:
        msg.divider(name)
        output = args.output_dir / f"{name}.json"
        evaluate(path, data, output=output, use_gpu=args.gpu_id)
        rows.append((name, json.loads(output.read_text(encoding="utf8"))))
    print_table(rows, data)
    return 0


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
