"""Install a `spacy package` build into a fresh virtual environment and load it.

The environment starts empty: it gets torch (the CPU build, pinned), the
pipeline package, and spacy-dekd from the wheel in `--find-links`; then a
new interpreter loads the pipeline by name and classifies a text: the first
of `--text-from` (any file spacy-dekd.DatasetCorpus.v1 reads), or `--text`.

`--without torch transformers` checks a package that needs neither (a
spaCy textcat student): torch is not installed first, and the packages
named must be absent from the environment after the install, whatever the
package asked for.

    python scripts/check_package.py packages/en_dekd_textcat-0.1.0 --find-links packages/wheels \\
        --text-from corpus/movies/test.jsonl
"""
import argparse
import subprocess
import sys
import tempfile
import venv
from pathlib import Path
from typing import List

TORCH = "torch==2.13.0"


def first_text(path: Path, text_field: str) -> str:
    import spacy

    from spacy_dekd.corpus import DatasetCorpus

    corpus = DatasetCorpus(path, text_field=text_field, label_field=None, limit=1)
    return next(iter(corpus(spacy.blank("en")))).reference.text


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("package_dir", type=Path, help="the folder `spacy package` wrote")
    parser.add_argument("--find-links", type=Path, required=True, help="folder with the spacy-dekd wheel")
    parser.add_argument("--text", default="A warm, funny and moving film.", help="the text to classify")
    parser.add_argument("--text-from", type=Path, default=None, help="classify the first text of this file instead")
    parser.add_argument("--text-field", default="text", help="with --text-from")
    parser.add_argument("--without", nargs="+", default=[], metavar="PACKAGE",
                        help="import names that must not be installed with the package (torch is then not installed first)")
    args = parser.parse_args(argv)
    text = args.text
    if args.text_from is not None:
        text = first_text(args.text_from, args.text_field)
    dist = args.package_dir / "dist"
    # A wheel installs as it is; an sdist is built into one first.
    archives = sorted(dist.glob("*.whl")) or sorted(dist.glob("*.tar.gz"))
    if not archives:
        print(f"✘ No wheel or sdist in {dist}: run `spacy package` first", file=sys.stderr)
        return 1
    name = args.package_dir.name.rsplit("-", 1)[0]
    with tempfile.TemporaryDirectory() as tmp:
        venv.create(tmp, with_pip=True)
        python = str(Path(tmp) / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q", "--no-compile", "--disable-pip-version-check"]
        absent = ", ".join(repr(module) for module in args.without)
        steps = [
            *([] if args.without else [pip + [TORCH]]),
            pip + ["--find-links", str(args.find_links.resolve()), str(archives[-1].resolve())],
            [python, "-c", "import importlib.util, spacy; "
                           f"found = [m for m in [{absent}] if importlib.util.find_spec(m)]; "
                           "assert not found, f'installed with the package: {found}'; "
                           f"nlp = spacy.load({name!r}); doc = nlp({text!r}); "
                           "print(nlp.pipe_names, {k: round(v, 3) for k, v in doc.cats.items()})"],
        ]
        for cmd in steps:
            result = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
            if result.returncode != 0:
                tail = (result.stdout + result.stderr).strip().splitlines()[-1:]
                print(f"✘ {' '.join(cmd[3:6])}: {' '.join(tail)}", file=sys.stderr)
                return 1
        without = f", without {', '.join(args.without)}" if args.without else ""
        print(f"✔ {name} installs and loads in a fresh virtual environment{without}: {result.stdout.strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
