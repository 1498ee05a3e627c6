"""The registries DeKD adds to spaCy's, one per role, created once with a guard.

After `import spacy_dekd`, `spacy.util.registry` knows them, so a config names
their functions as `@dekd_objectives = "spacy-dekd.DeKD.v1"` and so on. Each is
also an entry-point group (`spacy_dekd_losses`, ...), so other packages can
add to it.

    dekd_objectives       whole objectives: Eq. 10 and the multi-teacher rivals
    dekd_losses           loss terms (Eq. 1, 2, 7, 9) and what replaces Eq. 7
    dekd_selectors        instance selectors (Eq. 4-5, 11, 12)
    dekd_routers          routers: the teacher's rows and the assistant's (Eq. 6)
    dekd_layer_selectors  which teacher layers the student aligns to (Eq. 8)
    dekd_trainers         the trainer `spacy distill` runs
    dekd_exporters        what `spacy textcat-export --format` writes
    dekd_students         kinds of student: the components `spacy distill` can train

Routers and layer selectors were released in `dekd_selectors`, objectives in
`dekd_losses`: `alias_released_names` keeps those names resolving there, so
a config written for an earlier release still runs.
"""
from typing import Dict, Iterator, Tuple

import catalogue
from spacy.util import registry as spacy_registry

REGISTRY_NAMES = (
    "dekd_objectives", "dekd_losses", "dekd_selectors", "dekd_routers", "dekd_layer_selectors",
    "dekd_trainers", "dekd_exporters", "dekd_students",
)
# A registry split off by role → the registry its names were released in.
RELEASED_IN: Dict[str, str] = {
    "dekd_objectives": "dekd_losses",
    "dekd_routers": "dekd_selectors",
    "dekd_layer_selectors": "dekd_selectors",
}

for _name in REGISTRY_NAMES:
    if _name not in spacy_registry.get_registry_names():
        spacy_registry.create(_name, entry_points=True)


class registry(spacy_registry):
    """spaCy's registry, typed with the registries this package adds."""

    dekd_objectives: catalogue.Registry = getattr(spacy_registry, "dekd_objectives")
    dekd_losses: catalogue.Registry = getattr(spacy_registry, "dekd_losses")
    dekd_selectors: catalogue.Registry = getattr(spacy_registry, "dekd_selectors")
    dekd_routers: catalogue.Registry = getattr(spacy_registry, "dekd_routers")
    dekd_layer_selectors: catalogue.Registry = getattr(spacy_registry, "dekd_layer_selectors")
    dekd_trainers: catalogue.Registry = getattr(spacy_registry, "dekd_trainers")
    dekd_exporters: catalogue.Registry = getattr(spacy_registry, "dekd_exporters")
    dekd_students: catalogue.Registry = getattr(spacy_registry, "dekd_students")


def released_aliases() -> Iterator[Tuple[str, str, str]]:
    """(registry, name, the registry it was released in) for each of this
    package's functions in a registry split off by role.
    """
    for role, released_in in RELEASED_IN.items():
        for name in sorted(getattr(registry, role).get_all()):
            if name.startswith("spacy-dekd."):
                yield role, name, released_in


def alias_released_names() -> None:
    """Register each released name again where it was released (once all
    of the package's functions are registered).
    """
    for role, name, released_in in released_aliases():
        old = getattr(registry, released_in)
        if name not in old:
            old.register(name, func=getattr(registry, role).get(name))


__all__ = ["registry", "REGISTRY_NAMES", "RELEASED_IN", "alias_released_names", "released_aliases"]
