"""spacy_dekd: data-efficient knowledge distillation of transformer text
classifiers (DeKD, Xu et al.) for spaCy.

Importing the package registers the `transformer_textcat` factory, the
`spacy-dekd.*` architectures, readers and scorers, and the `dekd_*`
registries with their functions (registry.py). The same names are exposed as
entry points, so `spacy.load` needs no import.
"""
from .about import __version__
from .registry import alias_released_names, registry
from . import corpus, distill, loggers, models, pipeline  # noqa: F401  (registers functions)
from .pipeline import TransformerTextCategorizer

alias_released_names()

__all__ = ["__version__", "registry", "TransformerTextCategorizer"]
