"""The registries DeKD adds to spaCy's, created once with a guard.

After `import spacy_dekd`, `spacy.util.registry` knows `dekd_losses`,
`dekd_selectors`, `dekd_trainers` and `dekd_exporters`, so a config can name their functions
with `@dekd_losses = "spacy-dekd.KLDivergence.v1"` and so on. Each is also an
entry-point group (`spacy_dekd_losses`, ...), so other packages can add to it.
"""
import catalogue
from spacy.util import registry as spacy_registry

REGISTRY_NAMES = ("dekd_losses", "dekd_selectors", "dekd_trainers", "dekd_exporters")

for _name in REGISTRY_NAMES:
    if _name not in spacy_registry.get_registry_names():
        spacy_registry.create(_name, entry_points=True)


class registry(spacy_registry):
    """spaCy's registry, typed with the registries this package adds."""

    dekd_losses: catalogue.Registry = getattr(spacy_registry, "dekd_losses")
    dekd_selectors: catalogue.Registry = getattr(spacy_registry, "dekd_selectors")
    dekd_trainers: catalogue.Registry = getattr(spacy_registry, "dekd_trainers")
    dekd_exporters: catalogue.Registry = getattr(spacy_registry, "dekd_exporters")


__all__ = ["registry", "REGISTRY_NAMES"]
