"""The workflow's assistant step: distil the teacher assistant only when the
student's config routes examples to one.

    python scripts/distill_assistant.py STUDENT_CONFIG TEACHER ASSISTANT_CONFIG \\
        --output training/assistant [any spacy distill option or override]

With a student config whose router asks the teacher alone (the default
`dekd_minilm`), nothing is trained: the assistant would cost the step's time
and teach the student nothing.
"""
import subprocess
import sys
from pathlib import Path
from typing import List

from spacy import util

from spacy_dekd.registry import registry


def uses_assistant(config_path: Path) -> bool:
    config = util.load_config(config_path, interpolate=True)
    objective = registry.resolve({"objective": config["distillation"]["objective"]})["objective"]
    return bool(objective.uses_assistant)


def main(argv: List[str]) -> int:
    if len(argv) < 3:
        print(__doc__, file=sys.stderr)
        return 1
    student_config, teacher, assistant_config, *rest = argv
    try:
        needed = uses_assistant(Path(student_config))
    except (OSError, ValueError, KeyError) as err:
        print(f"✘ Cannot read '{student_config}': {str(err).splitlines()[0]}", file=sys.stderr)
        return 1
    if not needed:
        print(f"ℹ {student_config} asks the teacher alone: no assistant is distilled")
        return 0
    return subprocess.call([sys.executable, "-m", "spacy", "distill", teacher, assistant_config, *rest])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
