"""Throughput, size and accuracy of pipelines, side by side in one process.

Each pipeline runs `nlp.pipe` over the same texts: a warm-up, then
`--repeats` rounds that time every pipeline once in turn; the best pass of
each counts. Words/s counts spaCy tokens. Prints a
table with the ratio of each pipeline's words/s to the first one's, and the
spread of that ratio over the rounds (each round's pass against the first
pipeline's pass of the same round: median [min-max]). Pipelines of
spaCy's own components (a `textcat` student) are timed the same way.
`--threads 1` times every pipeline on one thread, as a server runs one
worker per core. `--rotate` turns the order every round, so that each
pipeline follows each other one; `--pause` sleeps between passes, so that
one pipeline's threads have parked before the next one runs.

    python scripts/benchmark.py corpus/movies/test.spacy \\
        teacher=training/teacher/model-best student=training/student/model-best \\
        --output metrics/benchmark.json
"""
import argparse
import json
import os
import sys
import statistics
import time
from pathlib import Path
from typing import Any, Dict, List

# --threads N reaches the BLAS of numpy (spaCy's own models) only when set
# before numpy loads; torch and ONNX Runtime take it in main().
if "--threads" in sys.argv[:-1]:
    for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[variable] = sys.argv[sys.argv.index("--threads") + 1]

import spacy  # noqa: E402

from spacy_dekd.corpus import read_texts
from spacy_dekd.files import check_output

from evaluate import named_pipelines, one_line_errors  # scripts/ is on the path


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(nlp) -> Dict[str, Any]:
    """Layers, width and parameters of the pipeline's transformer_textcat:
    from its torch module, or, for a quantized pipeline, from what the
    export recorded; for a pipeline of spaCy's own components, the
    parameters of their thinc models (layers and width None).
    """
    pipe = next((pipe for _, pipe in nlp.pipeline if hasattr(pipe, "shim")), None)
    if pipe is None:
        nodes = {node.id: node for _, component in nlp.pipeline if hasattr(component, "model") for node in component.model.walk()}
        n = sum(node.get_param(name).size for node in nodes.values() for name in node.param_names if node.has_param(name))
        return {"layers": None, "width": None, "parameters": int(n)}
    module = pipe.shim.module
    if module is None:
        info = pipe.shim.info
        return {"layers": info["n_layers"], "width": info["width"], "parameters": info["n_parameters"]}
    return {"layers": module.n_layers, "width": module.width, "parameters": sum(p.numel() for p in module.parameters())}


def time_pass(nlp, texts: List[str], *, batch_size: int) -> float:
    start = time.perf_counter()
    for _ in nlp.pipe(texts, batch_size=batch_size):
        pass
    return time.perf_counter() - start


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, help=".spacy file with the texts, or a csv/tsv/json(l)/parquet file")
    parser.add_argument("--text-field", default="text", help="for a file other than .spacy")
    parser.add_argument("pipelines", nargs="+", help="name=path (name?=path: skipped if missing), the first is the reference")
    parser.add_argument("--n-texts", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rotate", action="store_true", help="turn the order of the pipelines every round")
    parser.add_argument("--pause", type=float, default=0.0, help="seconds to sleep before each pass")
    parser.add_argument("--gpu-id", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=0, help="CPU threads of every pipeline (torch, ONNX Runtime, BLAS); 0: as they are")
    parser.add_argument("--output", type=Path)
    parser.add_argument("-V", "--verbose", action="store_true", help="show the traceback of an error")
    args = parser.parse_args(argv)
    return one_line_errors(lambda: benchmark(args), verbose=args.verbose)


def benchmark(args: argparse.Namespace) -> int:
    named, error = named_pipelines(args.pipelines)
    if error:
        raise ValueError(error)
    if not named:
        raise ValueError(f"Nothing to benchmark: no pipeline is at the paths given ({', '.join(args.pipelines)}).")
    if args.output is not None:
        check_output(args.output, [args.data, *(path for _, path in named)], folder=False, option="--output")
    if not args.data.exists():
        raise ValueError(f"No file at '{args.data}': pass the test set (a .spacy, csv, tsv, json(l) or parquet file).")
    if args.gpu_id >= 0:
        spacy.require_gpu(args.gpu_id)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)  # ONNX Runtime sessions follow torch's count
    texts = [text for text in read_texts(args.data, args.text_field) if text.strip()][: args.n_texts]
    if not texts:
        raise ValueError(f"'{args.data}' holds no text to time: pass the test set.")
    pipelines = {}
    results: Dict[str, Dict] = {}
    for name, path in named:
        nlp = spacy.load(path)
        pipelines[name] = nlp
        results[name] = {"path": path, **describe(nlp), "size_mb": dir_size(Path(path)) / 1e6}
        list(nlp.pipe(texts[: args.batch_size * 2], batch_size=args.batch_size))  # warm-up
    n_words = sum(len(doc) for doc in spacy.blank("en").tokenizer.pipe(texts))
    # Round robin: every repeat times each pipeline once, so all of them see
    # the same machine conditions; the best pass of each counts.
    names = list(pipelines)
    passes: Dict[str, List[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[: repeat % len(names)] if args.rotate else names
        for name in order:
            time.sleep(args.pause)
            passes[name].append(time_pass(pipelines[name], texts, batch_size=args.batch_size))
        print(f"  round {repeat + 1} ({', '.join(order)}): "
              + ", ".join(f"{n} {n_words / passes[n][-1]:.0f}" for n in names) + " words/s", flush=True)
    for name in names:
        results[name]["words_per_second"] = n_words / min(passes[name])
        results[name]["pass_seconds"] = passes[name]
        ratios = [ref / own for ref, own in zip(passes[names[0]], passes[name])]
        results[name]["round_speedup"] = {
            "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
        }
    reference = results[next(iter(results))]["words_per_second"]
    print("\n| pipeline | layers | parameters | size on disk | words/s | speed-up | per round |\n|---|---|---|---|---|---|---|")
    for name, r in results.items():
        r["speedup"] = r["words_per_second"] / reference
        print(f"| {name} | {r['layers'] or '-'} | {r['parameters'] / 1e6:.1f} M | {r['size_mb']:.0f} MB | "
              f"{r['words_per_second']:.0f} | {r['speedup']:.2f}× | "
              f"{r['round_speedup']['median']:.2f}× [{r['round_speedup']['min']:.2f}-{r['round_speedup']['max']:.2f}] |")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        partial = args.output.with_name(args.output.name + ".partial")
        partial.write_text(json.dumps({"texts": len(texts), "threads": args.threads or None, "results": results}, indent=2))
        partial.replace(args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
