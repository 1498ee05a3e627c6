from .classifier import (
    TransformerClassifierShim,
    build_transformer_classifier_v1,
    get_shim,
)
from .onnx_model import OnnxClassifierShim, build_onnx_transformer_classifier_v1
from .pytorch import ClassifierOutput, TransformerClassifier, keep_layers, shrink_classifier

__all__ = [
    "ClassifierOutput",
    "TransformerClassifier",
    "TransformerClassifierShim",
    "OnnxClassifierShim",
    "build_onnx_transformer_classifier_v1",
    "build_transformer_classifier_v1",
    "get_shim",
    "keep_layers",
    "shrink_classifier",
]
