"""Turn the workflows' outputs into reports/README.md and PNG plots.

Reads what exists of metrics/ (evaluate, benchmark; metrics/fast/ for the
accuracy-speed frontier), training/student/
metrics.json (loss curves), training/compare/*.json (methods, ablations),
training/selectors/selectors.json (Fig. 2),
training/assistants/assistants.json (Fig. 3) and training/budgets/budgets.json
(the budget curve); a missing part is listed as not run.

    python scripts/report.py --output reports
"""
import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from compare import markdown  # noqa: E402  (scripts/ is on the path)

STRATEGY_NAMES = {"dekd": "entropy", "select_lc": "least confidence", "select_margin": "margin", "select_random": "random"}


def read(path: Path) -> Optional[Any]:
    return json.loads(path.read_text()) if path.exists() else None


def models_section(out: Path) -> List[str]:
    bench = read(Path("metrics/benchmark.json"))
    if bench is None:
        return ["## Teacher, assistant, student\n\nNot run: `spacy project run distill`.\n"]
    rows, names, acc, speed, size = [], [], [], [], []
    for name, r in bench["results"].items():
        scores = read(Path(f"metrics/{name}.json")) or {}
        accuracy = scores.get("cats_accuracy")
        names.append(name)
        acc.append(100 * accuracy if accuracy is not None else float("nan"))
        speed.append(r["words_per_second"])
        size.append(r["size_mb"])
        rows.append(
            f"| {name} | {r['layers']} | {r['parameters'] / 1e6:.1f} M | {r['size_mb']:.0f} MB | "
            f"{r['words_per_second']:.0f} ({r['speedup']:.2f}×) | {acc[-1]:.1f} |"
        )
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(speed, acc, s=[max(30.0, s / 2) for s in size], alpha=0.6)
    for n, x, y, mb in zip(names, speed, acc, size):
        ax.annotate(f"{n} ({mb:.0f} MB)", (x, y), textcoords="offset points", xytext=(6, 6))
    ax.set_xlabel("words per second (nlp.pipe)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Size, speed and accuracy")
    fig.tight_layout()
    fig.savefig(out / "models.png", dpi=120)
    plt.close(fig)
    return [
        "## Teacher, assistant, student\n",
        "| model | layers | parameters | size on disk | words/s (vs teacher) | test accuracy |",
        "|---|---|---|---|---|---|",
        *rows,
        "\n![size, speed, accuracy](models.png)\n",
    ]


# The `fast` workflow's rivals: the same architecture trained on the labels alone.
def rivals() -> Dict[str, str]:
    """Each student's no-teacher rival, as the evaluate steps paired them
    (`--rival`, in their distillation.json).
    """
    pairs: Dict[str, str] = {}
    for path in (Path("metrics/distillation.json"), Path("metrics/fast/distillation.json")):
        students = (read(path) or {}).get("students") or {}
        pairs.update({name: report["rival"] for name, report in students.items() if isinstance(report, dict)})
    return pairs


def frontier_section(out: Path) -> List[str]:
    """Accuracy against words/s (log scale) of every tier, from the `fast`
    workflow's benchmark (every pipeline timed in one process, one thread
    each): each student beside its no-teacher rival, at the same speed.
    """
    bench = read(Path("metrics/fast/benchmark.json"))
    if bench is None:
        return ["## The accuracy-speed frontier\n\nNot run: `spacy project run fast`.\n"]

    def accuracy(name: str) -> Optional[float]:
        scores = read(Path(f"metrics/fast/{name}.json")) or read(Path(f"metrics/{name}.json")) or {}
        value = scores.get("cats_accuracy")
        return None if value is None else 100 * value

    teacher = bench["results"]["teacher"]["words_per_second"]
    rows, points = [], []
    pairs = rivals()
    for name, r in bench["results"].items():
        acc, rival = accuracy(name), pairs.get(name)
        rival_acc = accuracy(rival) if rival else None
        points.append((name, r["words_per_second"], acc, rival_acc))
        rows.append(
            f"| {name} | {r['parameters'] / 1e6:.1f} M | {r['size_mb']:.0f} MB | {r['words_per_second']:,.0f} | "
            f"{r['words_per_second'] / teacher:.1f}× | {acc:.1f} | " + (f"{rival_acc:.1f} |" if rival_acc is not None else "|")
        )
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, speed, acc, rival_acc in points:
        ax.scatter([speed], [acc], color="C0")
        ax.annotate(name, (speed, acc), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if rival_acc is not None:
            ax.scatter([speed], [rival_acc], facecolors="none", edgecolors="C3")
            ax.plot([speed, speed], [rival_acc, acc], color="0.7", linewidth=0.8, zorder=0)
    ax.scatter([], [], facecolors="none", edgecolors="C3", label="the same model on the labels alone")
    ax.set_xscale("log")
    threads = bench.get("threads")
    ax.set_xlabel(f"words per second (nlp.pipe, {'one thread' if threads == 1 else f'{threads} threads' if threads else 'every core'})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Accuracy against speed: distilled, and without a teacher")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "frontier.png", dpi=120)
    plt.close(fig)
    return [
        "## The accuracy-speed frontier\n",
        "| pipeline | parameters | size on disk | words/s | × the teacher | test accuracy | no teacher |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "\n![accuracy against speed](frontier.png)\n",
    ]


def loss_section(out: Path) -> List[str]:
    metrics = read(Path("training/student/metrics.json"))
    if metrics is None:
        return ["## Loss curves\n\nNot run: `spacy project run student`.\n"]
    history = metrics["history"]
    steps = [r["step"] for r in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    for term, label in (("loss", "total"), ("ce", "CE (Eq. 2)"), ("ta", "TA (Eq. 7)"), ("da", "DA (Eq. 9)")):
        values = [r.get(term) for r in history]
        if any(v is not None for v in values):
            ax.plot(steps, [v if v is not None else float("nan") for v in values], label=label, linewidth=1)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("Student loss terms")
    fig.tight_layout()
    fig.savefig(out / "losses.png", dpi=120)
    plt.close(fig)
    layers = [tuple(r["teacher_layers"]) for r in history if "teacher_layers" in r]
    picks = ""
    if layers:
        counts: Dict[tuple, int] = {}
        for pick in layers:
            counts[pick] = counts.get(pick, 0) + 1
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:3]
        picks = "Teacher layers picked for alignment (share of steps): " + ", ".join(
            f"{list(k)} {100 * v / len(layers):.0f}%" for k, v in top
        ) + "\n"
    return ["## Loss curves\n", "![loss terms](losses.png)\n", picks]


def selectors_section(out: Path) -> List[str]:
    data = read(Path("training/selectors/selectors.json"))
    if data is None:
        return ["## Selection strategies (Fig. 2)\n\nNot run: `spacy project run compare-selectors`.\n"]
    ratios = sorted(data, key=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = ["| ratio | " + " | ".join(STRATEGY_NAMES.values()) + " |", "|---" * (len(STRATEGY_NAMES) + 1) + "|"]
    by_config: Dict[str, List[float]] = {c: [] for c in STRATEGY_NAMES}
    for ratio in ratios:
        row = {s["config"]: s for s in data[ratio]}
        lines.append(f"| {ratio} | " + " | ".join(
            f"{100 * row[c]['mean']:.2f} ± {100 * row[c]['sd']:.2f}" if c in row else "-" for c in STRATEGY_NAMES
        ) + " |")
        for c in STRATEGY_NAMES:
            by_config[c].append(100 * row[c]["mean"] if c in row else float("nan"))
    for config, values in by_config.items():
        ax.plot([float(r) for r in ratios], values, marker="o", label=STRATEGY_NAMES[config])
    ax.set_xlabel("selection ratio r")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    ax.set_title("Accuracy vs selection ratio")
    fig.tight_layout()
    fig.savefig(out / "selectors.png", dpi=120)
    plt.close(fig)
    return ["## Selection strategies (Fig. 2)\n", *lines, "\n![accuracy vs ratio](selectors.png)\n"]


def assistants_section(out: Path) -> List[str]:
    data = read(Path("training/assistants/assistants.json"))
    if data is None:
        return ["## Assistant sizes (Fig. 3)\n\nNot run: `spacy project run compare-assistants`.\n"]
    sizes = sorted(data, key=int)
    student = [100 * data[s]["student"]["mean"] for s in sizes]
    assistant = [100 * data[s]["assistant_accuracy"] for s in sizes]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([int(s) for s in sizes], student, marker="o", label="student (DeKD)")
    ax.plot([int(s) for s in sizes], assistant, marker="s", label="assistant")
    ax.set_xlabel("assistant layers")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    ax.set_title("Accuracy vs assistant size")
    fig.tight_layout()
    fig.savefig(out / "assistants.png", dpi=120)
    plt.close(fig)
    lines = ["| assistant layers | assistant accuracy | student accuracy |", "|---|---|---|"]
    for s, a in zip(sizes, assistant):
        lines.append(f"| {s} | {a:.2f} | {100 * data[s]['student']['mean']:.2f} ± {100 * data[s]['student']['sd']:.2f} |")
    return ["## Assistant sizes (Fig. 3)\n", *lines, "\n![accuracy vs assistant size](assistants.png)\n"]


def budgets_section(out: Path) -> List[str]:
    data = read(Path("training/budgets/budgets.json"))
    if data is None:
        return ["## Teacher budgets\n\nNot run: `spacy project run compare-budgets`.\n"]
    budgets = sorted(data, key=float)
    configs = [s["config"] for s in data[budgets[0]]]
    fig, ax = plt.subplots(figsize=(6, 4))
    lines = ["| config | " + " | ".join(f"budget {100 * float(b):g}%" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for config in configs:
        rows = [next((s for s in data[b] if s["config"] == config), None) for b in budgets]
        lines.append(f"| {config} | " + " | ".join(
            f"{100 * r['mean']:.2f} ± {100 * r['sd']:.2f} ({r['teacher_forward_passes']:.0f} teacher)" if r else "-" for r in rows
        ) + " |")
        ax.errorbar(
            [100 * float(b) for b in budgets], [100 * r["mean"] if r else float("nan") for r in rows],
            yerr=[100 * r["sd"] if r else 0 for r in rows], marker="o", capsize=3, label=config,
        )
    ax.set_xlabel("teacher budget (% of all examples)")
    ax.set_ylabel("test accuracy (%)")
    ax.legend()
    ax.set_title("Accuracy vs teacher budget")
    fig.tight_layout()
    fig.savefig(out / "budgets.png", dpi=120)
    plt.close(fig)
    return ["## Teacher budgets\n", *lines, "\n![accuracy vs teacher budget](budgets.png)\n"]


def compare_sections() -> List[str]:
    parts = []
    for name, title in (("methods", "Methods (Tables 3 and 5)"), ("ablations", "Ablations (Table 4)"), ("compare", "DeKD vs baselines")):
        data = read(Path(f"training/compare/{name}.json"))
        if data is not None:
            parts += [f"## {title}\n", markdown(data["summary"], data["summary"][0]["config"]), ""]
    return parts or ["## Methods and ablations\n\nNot run: `spacy project run compare-methods`.\n"]


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=Path("reports"))
    args = parser.parse_args(argv)
    args.output.mkdir(parents=True, exist_ok=True)
    sections = ["# DeKD report\n", "Generated by `python scripts/report.py` from this machine's runs.\n"]
    for section in (models_section(args.output), frontier_section(args.output), compare_sections(), selectors_section(args.output),
                    assistants_section(args.output), budgets_section(args.output), loss_section(args.output)):
        sections += section
    (args.output / "README.md").write_text("\n".join(sections) + "\n", encoding="utf8")
    print(f"✔ {args.output / 'README.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
