"""Write variants of training sentences as more unlabelled text for the
teacher to answer (spacy_dekd/augment.py: neighbours in an encoder's
word-piece embeddings, dropped and swapped words).

Reads the texts of each input (a `.txt` file a text a line, or a
csv/tsv/json(l)/parquet file with a text field), writes `--n` variants of
each to OUTPUT, a text a line, in one go (a temporary file renamed at the
end: an interrupted run leaves no half-written file). `--copy` puts text
files beside it, last, so that OUTPUT's folder is a whole pool to read as
unlabelled text (`--paths.unlabeled FOLDER`): the unlabelled sentences and
the variants.

    python scripts/augment_text.py corpus/movies/train.jsonl corpus/movies/unlabeled.txt \\
        --model assets/all-mpnet-base-v2 --n 4 --output corpus/more_text/variants.txt \\
        --copy corpus/movies/unlabeled.txt
"""
import argparse
import os
import shutil
import sys
import time
from pathlib import Path
from typing import List

from spacy_dekd.augment import WORD, embedding_neighbours, variants
from spacy_dekd.corpus import read_texts
from spacy_dekd.files import OutputError, check_output


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", nargs="+", type=Path)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--model", type=Path, required=True, help="a Hugging Face encoder folder (its input embeddings)")
    parser.add_argument("--n", type=int, default=4, help="variants of each text")
    parser.add_argument("--neighbours", type=int, default=8)
    parser.add_argument("--substitute", type=float, default=0.15)
    parser.add_argument("--drop", type=float, default=0.05)
    parser.add_argument("--swap", type=float, default=0.05)
    parser.add_argument("--text-field", default="text")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--copy", nargs="+", type=Path, default=[], help="text files to copy beside OUTPUT, last")
    args = parser.parse_args(argv)
    missing = [str(p) for p in [*args.inputs, *args.copy, args.model] if not p.exists()]
    if missing:
        print(f"✘ Not found: {', '.join(missing)}. Run the `assets` and `corpus` steps first, or pass your own files.", file=sys.stderr)
        return 1
    if args.n < 1 or not all(0 <= p <= 1 for p in (args.substitute, args.drop, args.swap)):
        print("✘ --n must be at least 1, and --substitute, --drop and --swap probabilities in [0, 1].", file=sys.stderr)
        return 1
    try:
        check_output(args.output, [*args.inputs, *args.copy, args.model], folder=False, option="--output")
    except OutputError as err:
        print(f"✘ {err}", file=sys.stderr)
        return 1
    copies = [args.output.parent / p.name for p in args.copy]
    clashes = [str(p) for p, to in zip(args.copy, copies) if to == args.output or to.resolve() == p.resolve()]
    if clashes or len(set(copies)) < len(copies):
        print(f"✘ --copy {' '.join(map(str, args.copy))}: a file copied beside {args.output} must come from another "
              "folder, and share its name with neither the output nor another copy.", file=sys.stderr)
        return 1
    start = time.perf_counter()
    try:
        texts = [text for path in args.inputs for text in read_texts(path, args.text_field)]
    except ValueError as err:
        print(f"✘ {err}", file=sys.stderr)
        return 1
    words = {word for text in texts for word in WORD.findall(text)}
    neighbours = embedding_neighbours(args.model, words, k=args.neighbours)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    partial = args.output.with_name(args.output.name + ".partial")
    n_written = 0
    with open(partial, "w", encoding="utf8") as f:
        for text in variants(texts, neighbours, n=args.n, seed=args.seed,
                             substitute=args.substitute, drop=args.drop, swap=args.swap):
            f.write(text + "\n")
            n_written += 1
    os.replace(partial, args.output)
    for path, to in zip(args.copy, copies):
        shutil.copyfile(path, to.with_name(to.name + ".partial"))
        os.replace(to.with_name(to.name + ".partial"), to)
    print(f"✔ {n_written:,} variants of {len(texts):,} texts ({len(neighbours):,} words with neighbours) "
          f"→ {args.output} in {time.perf_counter() - start:.0f} s" + "".join(f"; {p} beside it" for p in args.copy))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
