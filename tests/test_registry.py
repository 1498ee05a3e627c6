"""Every registered name resolves, from spaCy's registry, after `import spacy_dekd`."""
import pytest
from spacy.util import registry

import spacy_dekd  # noqa: F401

NAMES = [
    ("architectures", "spacy-dekd.TransformerClassifier.v1"),
    ("readers", "spacy-dekd.DatasetCorpus.v1"),
    ("readers", "spacy-dekd.DocBinCorpus.v1"),
    ("scorers", "spacy-dekd.textcat_scorer.v1"),
    ("optimizers", "spacy-dekd.AdamW.v1"),
    ("misc", "spacy-dekd.StudentFromTeacher.v1"),
    ("misc", "spacy-dekd.StudentFromPretrained.v1"),
    ("dekd_losses", "spacy-dekd.KLDivergence.v1"),
    ("dekd_losses", "spacy-dekd.CrossEntropy.v1"),
    ("dekd_losses", "spacy-dekd.TeacherAssistantKL.v1"),
    ("dekd_losses", "spacy-dekd.LayerAlignment.v1"),
    ("dekd_losses", "spacy-dekd.DeKD.v1"),
    ("dekd_selectors", "spacy-dekd.EntropySelector.v1"),
    ("dekd_selectors", "spacy-dekd.LeastConfidenceSelector.v1"),
    ("dekd_selectors", "spacy-dekd.MarginSelector.v1"),
    ("dekd_selectors", "spacy-dekd.RandomSelector.v1"),
    ("dekd_selectors", "spacy-dekd.EntropySplitRouter.v1"),
    ("dekd_selectors", "spacy-dekd.TeacherOnlyRouter.v1"),
    ("dekd_selectors", "spacy-dekd.AssistantOnlyRouter.v1"),
    ("dekd_selectors", "spacy-dekd.EntropyLayerSelector.v1"),
    ("dekd_selectors", "spacy-dekd.UniformLayerSelector.v1"),
    ("dekd_selectors", "spacy-dekd.LastLayerSelector.v1"),
    ("dekd_trainers", "spacy-dekd.DistillTrainer.v1"),
]


@pytest.mark.parametrize("registry_name,func_name", NAMES)
def test_registered(registry_name, func_name):
    assert registry.has(registry_name, func_name)
    assert callable(registry.get(registry_name, func_name))


def test_factory_is_registered():
    from spacy.language import Language

    assert Language.has_factory("transformer_textcat")


def test_entry_points_are_declared():
    from importlib.metadata import entry_points

    eps = entry_points()
    for group in ("spacy_factories", "spacy_architectures", "spacy_readers", "spacy_scorers", "spacy_cli"):
        selected = eps.select(group=group) if hasattr(eps, "select") else eps.get(group, [])
        assert any(ep.value.startswith("spacy_dekd") for ep in selected), group
