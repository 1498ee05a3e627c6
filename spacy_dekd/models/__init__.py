from .classifier import (
    TransformerClassifierShim,
    build_transformer_classifier_v1,
    get_shim,
)
from .pytorch import ClassifierOutput, TransformerClassifier, keep_layers, shrink_classifier

__all__ = [
    "ClassifierOutput",
    "TransformerClassifier",
    "TransformerClassifierShim",
    "build_transformer_classifier_v1",
    "get_shim",
    "keep_layers",
    "shrink_classifier",
]
