"""The shipped configs: the project's configs/ match the package's source,
every one passes `spacy debug config`, and every [distillation] block
resolves to the parts docs/DESIGN.md's table names."""
from pathlib import Path

import pytest
from spacy import util
from spacy.cli.debug_config import debug_config

from spacy_dekd.cli.init_config import distill_config
from spacy_dekd.configs import config_text, names, read_variant, root_of, variant_names
from spacy_dekd.distill.types import Objective
from spacy_dekd.registry import registry

ROOT = Path(__file__).parent.parent
STUDENT_CONFIGS = [name for name in names() if root_of(name) == "dekd"]


@pytest.mark.parametrize("name", names())
def test_project_configs_are_the_packages(name):
    assert (ROOT / "configs" / f"{name}.cfg").read_text(encoding="utf8") == config_text(name), (
        f"configs/{name}.cfg is stale: run python scripts/make_configs.py"
    )


@pytest.mark.parametrize("name", names())
def test_every_config_passes_spacy_debug_config(name, capsys):
    debug_config(ROOT / "configs" / f"{name}.cfg", overrides={})  # exits on an invalid config
    assert "Config is valid" in capsys.readouterr().out


def test_init_distill_config_sets_the_encoder():
    text = distill_config("dekd_minilm", encoder="/models/minilm")
    assert 'encoder = "/models/minilm"' in text and text.count("encoder = ") == 1
    with pytest.raises(ValueError, match="Unknown config 'nope'"):
        distill_config("nope")


def resolve(name):
    config = util.load_config(ROOT / "configs" / f"{name}.cfg", interpolate=True)
    return registry.resolve(config["distillation"], validate=True)


@pytest.mark.parametrize("name", STUDENT_CONFIGS)
def test_distillation_block_resolves(name):
    T = resolve(name)
    # The loop reads an objective through its declared interface alone.
    assert isinstance(T["objective"], Objective)
    assert callable(T["student_init"]) and callable(T["trainer"])


@pytest.mark.parametrize(
    "name,uses_assistant,aligns,ratio_one",
    [
        ("dekd", True, True, False),
        ("paper", True, True, False),
        ("kd", False, False, True),
        ("pkd", False, True, True),
        ("takd", True, False, True),
        ("wo_ds", True, True, True),
        ("wo_ta", False, True, False),
        ("wo_doa", True, False, False),
        ("dekd_minilm", False, True, False),
        ("dekd_minilm_ta", True, True, False),
        ("kd_minilm", False, False, True),
        ("select_random_minilm", False, True, False),
        ("uhc", True, False, True),
        ("muki", True, False, True),
        ("dfa", True, True, True),
        ("cfl", True, True, True),
        ("ksm", True, True, True),
    ],
)
def test_design_table(name, uses_assistant, aligns, ratio_one):
    import torch

    objective = resolve(name)["objective"]
    assert objective.uses_assistant == uses_assistant
    assert objective.needs_hidden_states == aligns
    selected = objective.selector(torch.randn(10, 2))
    assert (len(selected) == 10) == ratio_one


def test_paper_config_keeps_the_literal_readings():
    config = util.load_config(ROOT / "configs" / "paper.cfg", interpolate=True)["distillation"]
    assert config["objective"]["alignment"]["reduction"] == "sum"
    assert config["objective"]["alignment"]["layer_selector"]["score"] == "hidden"
    assert [config["objective"][k] for k in ("ce_weight", "ta_weight", "alignment_weight")] == [0.5, 0.3, 0.2]
    assert config["temperature"] == 5.0 and config["objective"]["selector"]["ratio"] == 0.5
    assert config["optimizer"]["learn_rate"] == 2e-5


@pytest.mark.parametrize("name", ["dekd_minilm", "dekd_minilm_ta", "kd_minilm", "select_random_minilm"])
def test_minilm_configs_read_unlabelled_text_under_a_budget(name):
    config = util.load_config(ROOT / "configs" / f"{name}.cfg", interpolate=True)
    assert config["distillation"]["unlabeled_corpus"] == "corpora.unlabeled"
    assert config["corpora"]["unlabeled"]["@readers"] == "spacy.PlainTextCorpus.v1"
    assert config["distillation"]["teacher_budget"] == 0.5
    assert config["distillation"]["student_init"]["@misc"] == "spacy-dekd.StudentFromPretrained.v1"


def test_an_override_merges_onto_its_base():
    from spacy_dekd.configs import merge

    base = {
        "objective": {"@f": "A", "weight": 1.0, "rows": "selected", "part": {"@g": "B", "x": 1}, "sub": {"y": 2, "z": 3}},
    }
    merge(base, {"objective": {"weight": 0.5, "rows": None, "part": {"@g": "C"}, "sub": {"z": 4}}})
    # keys set one by one, null removes one, a function block replaces the base's whole
    assert base == {"objective": {"@f": "A", "weight": 0.5, "part": {"@g": "C"}, "sub": {"y": 2, "z": 4}}}


@pytest.mark.parametrize("name", variant_names())
def test_each_variant_is_a_small_override_of_a_shipped_config(name):
    description, base, settings = read_variant(name)
    assert description and base in names() and base != name
    text = (Path(__import__("spacy_dekd").__file__).parent / "configs" / "variants" / f"{name}.cfg").read_text(encoding="utf8")
    settings_lines, section = [], ""
    for line in text.splitlines():
        if line.startswith("["):
            section = line
        elif line.strip() and line[0] != "#" and not section.startswith("[components.textcat.model"):
            settings_lines.append(line)
    # What changes, not a copy of the base; a student architecture of its
    # own (spaCy's textcat, its tok2vec) is a change however many lines.
    assert len(settings_lines) <= 20
