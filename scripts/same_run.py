"""Whether two `spacy distill` runs are the same run: every step's loss and
terms, the teacher's layers and queries, the dev scores, the query rounds,
the forward-pass counts, model-best's weights (bit for bit) and, when both
were scored, the test scores. For a change that must not change results:
run the same command at two commits and compare the outputs.

    python scripts/same_run.py OUTPUT_A OUTPUT_B [OUTPUT_A2 OUTPUT_B2 ...]

Exits 1, naming the first difference of each pair, when a pair differs.
"""
import json
import sys
from pathlib import Path
from typing import Any, List, Optional

from safetensors.torch import load_file

TIMES = {"seconds", "wall_time_s", "speed"}  # what a run may differ in: the clock
COUNTS = (
    "steps", "examples", "labeled_examples", "unlabeled_examples", "best_score", "teacher_forward_passes",
    "assistant_forward_passes", "teacher_requests", "assistant_requests", "query_rounds",
)


def without_times(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_times(v) for k, v in value.items() if k not in TIMES}
    if isinstance(value, list):
        return [without_times(v) for v in value]
    return value


def first_difference(a: Path, b: Path) -> Optional[str]:
    ma, mb = (json.loads((out / "metrics.json").read_text()) for out in (a, b))
    for key in COUNTS:
        if ma.get(key) != mb.get(key):
            return f"{key}: {ma.get(key)} != {mb.get(key)}"
    for i, (ra, rb) in enumerate(zip(ma["history"], mb["history"])):
        if without_times(ra) != without_times(rb):
            return f"step {ra.get('step', i + 1)}: {without_times(ra)} != {without_times(rb)}"
    weights = [load_file(str(p)) for p in (next((out / "model-best").glob("*/model/model.safetensors")) for out in (a, b))]
    if sorted(weights[0]) != sorted(weights[1]):
        return "model-best holds other tensors"
    for name in sorted(weights[0]):
        if not (weights[0][name].shape == weights[1][name].shape and (weights[0][name] == weights[1][name]).all()):
            return f"model-best's {name} differs"
    tests = [out / "test.json" for out in (a, b)]
    if all(t.exists() for t in tests) and without_times(json.loads(tests[0].read_text())) != without_times(json.loads(tests[1].read_text())):
        return "test scores differ"
    return None


def main(argv: List[str]) -> int:
    if len(argv) < 2 or len(argv) % 2:
        print(__doc__)
        return 2
    same = True
    for a, b in zip(argv[::2], argv[1::2]):
        difference = first_difference(Path(a), Path(b))
        history = json.loads((Path(a) / "metrics.json").read_text())["history"]
        n_weights = len(load_file(str(next((Path(a) / "model-best").glob("*/model/model.safetensors")))))
        if difference is None:
            print(f"✔ {a} = {b}: {len(history)} steps, {n_weights} weight tensors")
        else:
            print(f"✘ {a} != {b}: {difference}")
            same = False
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
