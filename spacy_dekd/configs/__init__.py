"""The shipped configs: `dekd.cfg` and `teacher.cfg` are written by hand,
every other config is a small override file in `variants/` merged onto the
config it names as its base (`dekd`, `teacher`, or another variant).

Baselines and ablations are configurations of one objective, not code paths
(docs/DESIGN.md's table). `python -m spacy init distill-config OUTPUT --variant
NAME` writes one whole for an installed user; `scripts/make_configs.py` writes
all of them into the project's `configs/`, and a test keeps the two equal.

An override file: its first comment paragraph describes it; `[variant] base`
names the config it changes; every other section is merged onto the base:
a block naming a registered function (`@...`) replaces the base's block
whole, any other block sets its keys one by one, and `null` removes a
setting (so the function's default applies).
"""
import textwrap
from pathlib import Path
from typing import Any, Dict, List, Tuple

from thinc.api import Config

TEMPLATES = Path(__file__).parent
VARIANTS_DIR = TEMPLATES / "variants"
WRITTEN = ("teacher", "dekd")  # by hand; the variants are merged from variants/


def read(name: str) -> str:
    return (TEMPLATES / f"{name}.cfg").read_text(encoding="utf8")


def variant_names() -> List[str]:
    return sorted(path.stem for path in VARIANTS_DIR.glob("*.cfg"))


def read_variant(name: str) -> Tuple[str, str, Dict[str, Any]]:
    """An override file → (its description, its base, its settings)."""
    text = (VARIANTS_DIR / f"{name}.cfg").read_text(encoding="utf8")
    description = []
    for line in text.splitlines():
        if line.strip() in ("", "#") or not line.startswith("#"):
            break
        description.append(line[1:].strip())
    settings = Config().from_str(text, interpolate=False)
    base = settings.pop("variant")["base"]
    return " ".join(description), base, settings


def merge(node: Dict[str, Any], changes: Dict[str, Any]) -> None:
    """Merge an override's settings onto a config's, in place."""
    for key, value in changes.items():
        if value is None:
            node.pop(key, None)
        elif isinstance(value, dict) and not any(k.startswith("@") for k in value) and isinstance(node.get(key), dict):
            merge(node[key], value)
        else:
            node[key] = value


def _merged(name: str) -> Config:
    if name in WRITTEN:
        return Config().from_str(read(name), interpolate=False)
    _, base, settings = read_variant(name)
    config = _merged(base)
    merge(config, settings)
    return config


def render(name: str) -> str:
    description, _, _ = read_variant(name)
    header = "".join(f"# {line}\n" for line in textwrap.wrap(description, 78))
    header += f"# Generated: spacy_dekd/configs/variants/{name}.cfg merged onto its base (scripts/make_configs.py).\n"
    return header + _merged(name).to_str(interpolate=False)


def names() -> List[str]:
    return list(WRITTEN) + variant_names()


def root_of(name: str) -> str:
    """The hand-written config a shipped config is merged onto at last:
    `dekd` for a distillation config, `teacher` for a `spacy train` one.
    """
    while name not in WRITTEN:
        name = read_variant(name)[1]
    return name


def config_text(name: str) -> str:
    """The text of a shipped config: as written, or merged from variants/."""
    if name in WRITTEN:
        return read(name)
    if name not in variant_names():
        raise ValueError(f"Unknown config '{name}': choose one of {', '.join(names())}.")
    return render(name)
