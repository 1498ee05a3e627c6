"""The sweeps of the `reproduce` workflow.

    python scripts/sweep.py selectors --ratios 0.1 0.3 0.5 0.7 1.0 --seeds 0 1 2
        Entropy, least-confidence, margin and random selection at each ratio (Fig. 2).
    python scripts/sweep.py assistants --sizes 4 6 9 11 --seeds 0 1 2
        An assistant of each size, then a DeKD student with it (Fig. 3).
    python scripts/sweep.py budgets --budgets 0.1 0.25 0.5 1.0 --seeds 0 1 2
        MiniLM students learning from the unlabelled sentences under each
        teacher budget: entropy selection (DeKD), random selection, vanilla KD.
    python scripts/sweep.py pools --variants 0 2 4 --answers 4534 --pool-sample 10000 --seeds 0 1 2
        MiniLM students from pools of the unlabelled sentences and N variants
        of every training sentence (scripts/augment_text.py), the teacher
        answering the same number of texts whatever the pool: entropy and
        random selection. A round scores `--pool-sample` texts of a larger pool.
"""
import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List

from compare import compare, run

SELECTOR_CONFIGS = ["dekd", "select_lc", "select_margin", "select_random"]
BUDGET_CONFIGS = ["dekd_minilm", "select_random_minilm", "kd_minilm"]
POOL_CONFIGS = ["dekd_minilm", "select_random_minilm"]
TEACHER = "training/teacher/model-best"
ASSISTANT = "training/assistant/model-best"
TEST = "corpus/movies/test.spacy"
TRAIN = "corpus/movies/train.jsonl"
UNLABELLED = "corpus/movies/unlabeled.txt"
ENCODER = "assets/all-mpnet-base-v2"


def count_lines(path: Path) -> int:
    with open(path, encoding="utf8") as f:
        return sum(1 for line in f if line.strip())


def pool_folder(n_variants: int, seed: int = 0) -> Path:
    """corpus/movies/pool{N}/: the unlabelled sentences, and N variants of
    every training sentence (labelled and unlabelled) beside them.
    """
    folder = Path(f"corpus/movies/pool{n_variants}")
    if not (folder / "unlabeled.txt").exists():
        folder.mkdir(parents=True, exist_ok=True)
        if n_variants > 0:  # the sentences copied last: a folder with them is whole
            subprocess.run([sys.executable, str(Path(__file__).parent / "augment_text.py"), TRAIN, UNLABELLED,
                            "--model", ENCODER, "--n", str(n_variants), "--seed", str(seed),
                            "--output", str(folder / "variants.txt"), "--copy", UNLABELLED], check=True)
        else:
            shutil.copyfile(UNLABELLED, folder / "unlabeled.txt")
    return folder


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", choices=["selectors", "assistants", "budgets", "pools"])
    parser.add_argument("--variants", nargs="+", type=int, default=[0, 2, 4], help="pools: variants of each sentence")
    parser.add_argument("--answers", type=int, default=4534, help="pools: teacher answers in every run")
    parser.add_argument("--pool-sample", type=int, default=10000, help="pools: texts a round scores")
    parser.add_argument("--budgets", nargs="+", type=float, default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--configs", nargs="+", default=None, help="budgets: the configs to compare")
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
    elif args.sweep == "budgets":
        root = Path("training/budgets")
        for budget in args.budgets:
            print(f"teacher budget {budget}", flush=True)
            results[str(budget)] = compare(
                TEACHER, TEST, args.configs or BUDGET_CONFIGS, args.seeds, root / f"b{budget}", name="budget",
                assistant=ASSISTANT, gpu_id=args.gpu_id,
                sets=[f"distillation.max_epochs={args.epochs}", f"distillation.teacher_budget={budget}"],
            )
    elif args.sweep == "pools":
        root = Path("training/pools")
        n_labelled = count_lines(Path(TRAIN))
        for n in args.variants:
            folder = pool_folder(n)
            n_pool = sum(count_lines(path) for path in folder.glob("*.txt"))
            budget = args.answers / (n_labelled + n_pool)
            print(f"pool of {n_pool} texts ({n} variants each): teacher budget {budget:.4f}", flush=True)
            sets = [f"distillation.max_epochs={args.epochs}", f"paths.unlabeled={folder}",
                    f"distillation.teacher_budget={budget}", "components.textcat.model.max_length=0"]
            if n_pool > args.pool_sample:
                sets.append(f"distillation.pool_sample={args.pool_sample}")
            summary = compare(TEACHER, TEST, args.configs or POOL_CONFIGS, args.seeds, root / f"v{n}-a{args.answers}", name="pool",
                              gpu_id=args.gpu_id, sets=sets)
            results[str(n)] = {"pool": n_pool, "answers": args.answers, "budget": budget, "summary": summary}
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
    if args.sweep == "budgets":
        table = budget_table(results)
        (root / "budgets.md").write_text(table)
        print(table, flush=True)
    return 0


def budget_table(results: dict) -> str:
    """Test accuracy (model-best, mean ± sd over seeds) of each config at
    each budget, with the teacher's forward passes."""
    budgets = list(results)
    configs = [s["config"] for s in results[budgets[0]]]
    lines = [
        "| config | " + " | ".join(f"budget {float(b):.0%}" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    for config in configs:
        cells = []
        for b in budgets:
            s = next(s for s in results[b] if s["config"] == config)
            cells.append(
                f"{100 * s['mean']:.2f} ± {100 * s['sd']:.2f} ({s['teacher_forward_passes']:.0f} teacher, "
                f"{s['assistant_forward_passes']:.0f} TA)"
            )
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
