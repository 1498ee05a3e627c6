"""project.yml as weasel reads it: every step of a workflow finds its
dependencies, with the default data and with a user's own files."""
import itertools
from pathlib import Path

import pytest
from weasel.util import load_project_config

ROOT = Path(__file__).parent.parent


def tracked(path: str) -> bool:
    return (ROOT / path).exists() and not path.startswith(("assets/all-", "corpus/", "training/"))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {
            "vars.train": "mine/train.csv",
            "vars.dev": "mine/dev.csv",
            "vars.test": "mine/test.csv",
            "vars.unlabeled": "mine/texts.txt",
        },
    ],
)
@pytest.mark.parametrize("workflow", ["distill", "more-text", "fast", "reproduce"])
def test_workflow_deps_come_from_earlier_steps(overrides, workflow):
    config = load_project_config(ROOT, overrides=overrides)
    commands = {cmd["name"]: cmd for cmd in config["commands"]}
    user_files = set(overrides.values())
    produced = set()
    for name in config["workflows"][workflow]:
        cmd = commands[name]
        for dep in cmd.get("deps", []):
            assert ", " not in dep, f"'{name}': two paths read as one: {dep}"
            assert dep in produced or dep in user_files or tracked(dep), f"'{name}' needs {dep}, which no earlier step writes"
        produced.update(cmd.get("outputs", []))


ROOTS = ("scripts/", "configs/", "corpus/", "assets/", "training/")
# What a command reads on purpose without depending on it, and why.
NOT_DEPS = {
    # A student config without an assistant never trains one; the assistant
    # step skips it, and spacy distill reads --assistant only when used.
    ("student", "training/assistant/model-best"),
    ("evaluate", "training/assistant/model-best"),
    ("benchmark", "training/assistant/model-best"),
    # The same for the `more-text` workflow's student and scores.
    ("student-more-text", "training/assistant/model-best"),
    ("evaluate-more-text", "training/student/model-best"),
    # The `fast` workflow times the transformer students beside its own where their steps ran.
    ("benchmark-fast", "training/student/model-best"),
    ("benchmark-fast", "training/student-int8"),
    # The teacher's answers the fast students share: a cache they read and
    # add to, by teacher (a new teacher starts its own); no input to rerun on.
    ("student-fast-cnn", "training/teacher_answers"),
    ("student-fast-bow", "training/teacher_answers"),
    ("student-static", "training/teacher_answers"),
}


def paths_read(cmd):
    """Repository paths a command's script names, but what it writes: the
    script files, configs (also those `--configs NAME ...` names), corpora,
    assets and trained pipelines.
    """
    written = [*cmd.get("outputs", [])]
    read = []
    for line in cmd.get("script", []):
        tokens = line.replace('"', " ").split()
        for i, token in enumerate(tokens):
            if i > 0 and tokens[i - 1] == "--output":
                written.append(token)
                continue
            value = token.split("=", 1)[-1]
            if value.startswith(ROOTS):
                read.append(value)
        if "--configs" in tokens:
            for name in itertools.takewhile(lambda t: not t.startswith("--"), tokens[tokens.index("--configs") + 1 :]):
                read.append(f"configs/{name}.cfg")
    written_dirs = tuple(w.rstrip("/") + "/" for w in written)
    # A folder the command writes into (its outputs are inside) is no input.
    return [p for p in read if p not in written and not p.startswith(written_dirs) and not any(w.startswith(p.rstrip("/") + "/") for w in written)]


@pytest.mark.parametrize("overrides", [{}, {"vars.train": "mine/train.csv", "vars.test": "mine/test.csv"}])
def test_every_command_depends_on_what_its_script_reads(overrides):
    config = load_project_config(ROOT, overrides=overrides)
    missing = []
    for cmd in config["commands"]:
        deps = set(cmd.get("deps", []))
        for path in paths_read(cmd):
            # A folder is a dep through a file in it (a model's weights).
            inside = any(dep.startswith(path.rstrip("/") + "/") for dep in deps)
            if path not in deps and not inside and (cmd["name"], path) not in NOT_DEPS:
                missing.append(f"{cmd['name']}: {path}")
    assert not missing, missing
