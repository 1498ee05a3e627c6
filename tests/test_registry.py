"""Every registered name resolves, from spaCy's registry, after `import spacy_dekd`."""
from pathlib import Path

import pytest
from spacy.util import registry

import spacy_dekd  # noqa: F401

README = Path(__file__).parent.parent / "README.md"


def registered_names():
    """Every `spacy-dekd.*` name in every spaCy registry, read from the registries."""
    names = []
    for registry_name in registry.get_registry_names():
        functions = getattr(registry, registry_name).get_all()
        names.extend((registry_name, name) for name in sorted(functions) if name.startswith("spacy-dekd."))
    return names


def readme_table():
    """The README's registry table: registry → the text of its row."""
    rows = {}
    for line in README.read_text(encoding="utf8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 2:
            rows[cells[0].strip("`")] = cells[1]
    return rows


def test_the_registries_hold_the_released_names():
    names = {name for _, name in registered_names()}
    assert len(names) >= 32
    for released in ("spacy-dekd.DeKD.v1", "spacy-dekd.EntropySelector.v1", "spacy-dekd.DistillTrainer.v1", "spacy-dekd.AdamW.v1"):
        assert released in names


@pytest.mark.parametrize("registry_name,func_name", registered_names())
def test_every_registered_name_resolves_and_is_in_the_readme(registry_name, func_name):
    assert callable(registry.get(registry_name, func_name))
    row = readme_table().get(registry_name, "")
    short = func_name[len("spacy-dekd."):]
    assert f"`{func_name}`" in row or f"`{short}`" in row, f"{func_name} is missing from the README's `{registry_name}` row"


def test_factory_is_registered():
    from spacy.language import Language

    assert Language.has_factory("transformer_textcat")


def test_entry_points_are_declared():
    from importlib.metadata import entry_points

    eps = entry_points()
    for group in ("spacy_factories", "spacy_architectures", "spacy_readers", "spacy_scorers", "spacy_cli"):
        selected = eps.select(group=group) if hasattr(eps, "select") else eps.get(group, [])
        assert any(ep.value.startswith("spacy_dekd") for ep in selected), group
