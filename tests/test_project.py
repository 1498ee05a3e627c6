"""project.yml as weasel reads it: every step of the `distill` workflow finds
its dependencies, with the default data and with a user's own files."""
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
def test_distill_workflow_deps_come_from_earlier_steps(overrides):
    config = load_project_config(ROOT, overrides=overrides)
    commands = {cmd["name"]: cmd for cmd in config["commands"]}
    user_files = set(overrides.values())
    produced = set()
    for name in config["workflows"]["distill"]:
        cmd = commands[name]
        for dep in cmd.get("deps", []):
            assert ", " not in dep, f"'{name}': two paths read as one: {dep}"
            assert dep in produced or dep in user_files or tracked(dep), f"'{name}' needs {dep}, which no earlier step writes"
        produced.update(cmd.get("outputs", []))
