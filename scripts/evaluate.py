"""Score several pipelines on one test set, in one process.

`spacy evaluate` for each `name=path`, writing `OUTPUT_DIR/name.json` in its
format: the same scores and files as one `spacy evaluate` call per pipeline,
without starting Python, torch and transformers once per pipeline. The test
set is a `.spacy` file, or any file `spacy-dekd.DatasetCorpus.v1` reads
(csv, tsv, json(l), parquet; `--text-field`, `--label-field`).

    python scripts/evaluate.py corpus/movies/test.spacy metrics \\
        teacher=training/teacher/model-best student=training/student/model-best
"""
import argparse
import sys
from pathlib import Path
from typing import List

import spacy
from spacy.cli.evaluate import evaluate
from wasabi import msg

from spacy_dekd.corpus import DatasetCorpus, write_docbin


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help=".spacy file with the gold docs, or a csv/tsv/json(l)/parquet file")
    parser.add_argument("output_dir", type=Path, help="folder for NAME.json")
    parser.add_argument("pipelines", nargs="+", help="name=path")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--text-field", default="text", help="for a file other than .spacy")
    parser.add_argument("--label-field", default="label", help="for a file other than .spacy")
    args = parser.parse_args(argv)
    pipelines = [item.partition("=")[::2] for item in args.pipelines]
    for name, path in pipelines:
        if not name or not path:
            print(f"✘ Expected name=path, got '{name or path}'", file=sys.stderr)
            return 1
        if not Path(path).is_dir():
            print(f"✘ No pipeline at '{path}' (for '{name}'): train it first", file=sys.stderr)
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
    for name, path in pipelines:
        msg.divider(name)
        evaluate(path, data, output=args.output_dir / f"{name}.json", use_gpu=args.gpu_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
