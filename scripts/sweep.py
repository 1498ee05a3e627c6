"""The sweeps of the `reproduce` workflow.

    python scripts/sweep.py selectors --ratios 0.1 0.3 0.5 0.7 1.0 --seeds 0 1 2
        Entropy, least-confidence, margin and random selection at each ratio (Fig. 2).
    python scripts/sweep.py assistants --sizes 4 6 9 11 --seeds 0 1 2
        An assistant of each size, then a DeKD student with it (Fig. 3).
"""
import argparse
import json
import sys
from pathlib import Path
from typing import List

from compare import compare, run

SELECTOR_CONFIGS = ["dekd", "select_lc", "select_margin", "select_random"]
TEACHER = "training/teacher/model-best"
ASSISTANT = "training/assistant/model-best"
TEST = "corpus/movies/test.spacy"


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", choices=["selectors", "assistants"])
    parser.add_argument("--ratios", nargs="+", type=float, default=[0.1, 0.3, 0.5, 0.7, 1.0])
    parser.add_argument("--sizes", nargs="+", type=int, default=[4, 6, 9, 11])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--student-layers", type=int, default=3)
    parser.add_argument("--gpu-id", type=int, default=-1)
    args = parser.parse_args(argv)
    sets = [f"distillation.max_epochs={args.epochs}", f"distillation.student_init.n_layers={args.student_layers}"]
    results = {}
    if args.sweep == "selectors":
        root = Path("training/selectors")
        for ratio in args.ratios:
            print(f"ratio {ratio}", flush=True)
            results[str(ratio)] = compare(
                TEACHER, TEST, SELECTOR_CONFIGS, args.seeds, root / f"r{ratio}", name="selectors",
                assistant=ASSISTANT, gpu_id=args.gpu_id,
                sets=sets + [f"distillation.objective.selector.ratio={ratio}"],
            )
    else:
        root = Path("training/assistants")
        for size in args.sizes:
            print(f"assistant of {size} layers", flush=True)
            out = root / f"ta{size}"
            assistant = out / "assistant"
            if not (assistant / "model-best").exists():
                run([sys.executable, "-m", "spacy", "distill", TEACHER, "configs/assistant.cfg",
                     "--output", str(assistant), "--gpu-id", str(args.gpu_id),
                     "--distillation.student_init.n_layers", str(size)])
            test_path = assistant / "test.json"
            if not test_path.exists():
                run([sys.executable, "-m", "spacy", "evaluate", str(assistant / "model-best"), TEST,
                     "--output", str(test_path), "--gpu-id", str(args.gpu_id)])
            summary = compare(
                TEACHER, TEST, ["dekd"], args.seeds, out, name="students",
                assistant=str(assistant / "model-best"), gpu_id=args.gpu_id, sets=sets,
            )
            results[str(size)] = {
                "assistant_accuracy": json.loads(test_path.read_text())["cats_accuracy"],
                "student": summary[0],
            }
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{args.sweep}.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
