#!/usr/bin/env python
from pathlib import Path

from setuptools import find_packages, setup

about: dict = {}
exec((Path(__file__).parent / "spacy_dekd" / "about.py").read_text(), about)

ONNX_REQUIRES = ["onnx>=1.15", "onnxscript>=0.3", "onnxruntime>=1.17"]

setup(
    name="spacy-dekd",
    version=about["__version__"],
    description=(
        "Data-efficient knowledge distillation (DeKD) of transformer text "
        "classifiers for spaCy"
    ),
    long_description=(Path(__file__).parent / "README.md").read_text(encoding="utf8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.9",
    packages=find_packages(exclude=["tests", "tests.*"]),
    package_data={"spacy_dekd": ["py.typed", "configs/*.cfg", "configs/variants/*.cfg"]},
    install_requires=[
        "spacy>=3.8.0,<3.9.0",
        "thinc>=8.3.0,<8.4.0",
        # The CPU wheel is installed first by the README and CI: an unpinned
        # torch would pull a multi-GB CUDA build on a machine without a GPU.
        "torch>=2.1",
        "transformers>=4.40,<6",
        "datasets>=2.14",
        "safetensors>=0.4",
        "catalogue>=2.0.10,<2.1",
        "confection>=0.1.4,<1.4",
    ],
    extras_require={
        # textcat-export --format onnx, textcat-quantize, and running a quantized pipeline
        "onnx": ONNX_REQUIRES,
        "test": ["pytest>=7", *ONNX_REQUIRES],
        "report": ["matplotlib>=3.5", "scipy>=1.9"],
    },
    entry_points={
        "spacy_factories": [
            "transformer_textcat = spacy_dekd.pipeline.textcat:make_transformer_textcat",
        ],
        "spacy_architectures": [
            "spacy-dekd.TransformerClassifier.v1 = spacy_dekd.models.classifier:build_transformer_classifier_v1",
            "spacy-dekd.OnnxTransformerClassifier.v1 = spacy_dekd.models.onnx_model:build_onnx_transformer_classifier_v1",
        ],
        "spacy_readers": [
            "spacy-dekd.DatasetCorpus.v1 = spacy_dekd.corpus:create_dataset_corpus_v1",
            "spacy-dekd.DocBinCorpus.v1 = spacy_dekd.corpus:create_docbin_corpus_v1",
        ],
        "spacy_loggers": [
            "spacy-dekd.ProgressLogger.v1 = spacy_dekd.loggers:progress_logger_v1",
        ],
        "spacy_scorers": [
            "spacy-dekd.textcat_scorer.v1 = spacy_dekd.pipeline.scorer:make_textcat_scorer_v1",
        ],
        "spacy_cli": [
            "distill = spacy_dekd.cli.distill:distill_cli",
            "init_distill_config = spacy_dekd.cli.init_config:init_distill_config_cli",
            "init_encoder_vectors = spacy_dekd.cli.vectors:init_encoder_vectors_cli",
            "textcat_export = spacy_dekd.cli.export:textcat_export_cli",
            "textcat_quantize = spacy_dekd.cli.export:textcat_quantize_cli",
        ],
    },
    classifiers=[
        "Framework :: spaCy",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
