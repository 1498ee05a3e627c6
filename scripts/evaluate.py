"""Score several pipelines on one test set, in one process.

`spacy evaluate` for each `name=path`, writing `OUTPUT_DIR/name.json` in its
format: the same scores and files as one `spacy evaluate` call per pipeline,
without starting Python, torch and transformers once per pipeline.

    python scripts/evaluate.py corpus/movies/test.spacy metrics \\
        teacher=training/teacher/model-best student=training/student/model-best
"""
import argparse
import sys
from pathlib import Path
from typing import List

from spacy.cli.evaluate import evaluate
from wasabi import msg


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help=".spacy file with the gold docs")
    parser.add_argument("output_dir", type=Path, help="folder for NAME.json")
    parser.add_argument("pipelines", nargs="+", help="name=path")
    parser.add_argument("--gpu-id", type=int, default=-1)
    args = parser.parse_args(argv)
    pipelines = [item.partition("=")[::2] for item in args.pipelines]
    for name, path in pipelines:
        if not name or not path:
            print(f"✘ Expected name=path, got '{name or path}'", file=sys.stderr)
            return 1
        if not Path(path).is_dir():
            print(f"✘ No pipeline at '{path}' (for '{name}'): train it first", file=sys.stderr)
            return 1
    args.output_dir.mkdir(parents=True, exist_ok=True)
    for name, path in pipelines:
        msg.divider(name)
        evaluate(path, args.data, output=args.output_dir / f"{name}.json", use_gpu=args.gpu_id)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
