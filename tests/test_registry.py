"""Every registered name resolves, from spaCy's registry, after `import spacy_dekd`."""
from pathlib import Path

import pytest
from spacy.util import registry

import spacy_dekd  # noqa: F401
from spacy_dekd.registry import REGISTRY_NAMES, released_aliases

README = Path(__file__).parent.parent / "README.md"


def registered_names():
    """Every `spacy-dekd.*` name in every spaCy registry, read from the
    registries: each in the registry of its role (not where it was released).
    """
    aliases = {(released_in, name) for _, name, released_in in released_aliases()}
    names = []
    for registry_name in registry.get_registry_names():
        functions = getattr(registry, registry_name).get_all()
        names.extend(
            (registry_name, name) for name in sorted(functions)
            if name.startswith("spacy-dekd.") and (registry_name, name) not in aliases
        )
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


def test_each_role_has_its_registry_and_every_name_one_home():
    for role in ("dekd_objectives", "dekd_losses", "dekd_selectors", "dekd_routers", "dekd_layer_selectors"):
        assert role in REGISTRY_NAMES and role in registry.get_registry_names()
    names = [name for _, name in registered_names()]
    assert len(names) == len(set(names))
    assert registry.has("dekd_routers", "spacy-dekd.EntropySplitRouter.v1")
    assert registry.has("dekd_objectives", "spacy-dekd.DeKD.v1") and registry.has("dekd_losses", "spacy-dekd.KLDivergence.v1")


@pytest.mark.parametrize("role,name,released_in", list(released_aliases()))
def test_a_name_released_in_another_registry_still_resolves_there(role, name, released_in):
    assert registry.get(released_in, name) is registry.get(role, name)


def test_a_config_written_with_the_released_registries_still_resolves():
    config = {
        "objective": {
            "@dekd_losses": "spacy-dekd.DeKD.v1",
            "selector": {"@dekd_selectors": "spacy-dekd.EntropySelector.v1", "ratio": 0.5},
            "cross_entropy": {"@dekd_losses": "spacy-dekd.CrossEntropy.v1"},
            "teacher_assistant": {
                "@dekd_losses": "spacy-dekd.TeacherAssistantKL.v1",
                "router": {"@dekd_selectors": "spacy-dekd.EntropySplitRouter.v1"},
                "kl": {"@dekd_losses": "spacy-dekd.KLDivergence.v1"},
            },
            "alignment": {
                "@dekd_losses": "spacy-dekd.LayerAlignment.v1",
                "layer_selector": {"@dekd_selectors": "spacy-dekd.EntropyLayerSelector.v1"},
            },
        }
    }
    objective = registry.resolve(config)["objective"]
    assert objective.uses_assistant and objective.needs_hidden_states


def test_factory_is_registered():
    from spacy.language import Language

    assert Language.has_factory("transformer_textcat")


def test_entry_points_are_declared():
    from importlib.metadata import entry_points

    eps = entry_points()
    for group in ("spacy_factories", "spacy_architectures", "spacy_readers", "spacy_scorers", "spacy_cli"):
        selected = eps.select(group=group) if hasattr(eps, "select") else eps.get(group, [])
        assert any(ep.value.startswith("spacy_dekd") for ep in selected), group
