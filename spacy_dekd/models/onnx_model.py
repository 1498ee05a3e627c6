"""The classifier on ONNX Runtime: export with `torch.onnx` (the dynamo
exporter: batch and sequence dynamic), int8 dynamic quantisation, and the
thinc model a quantised pipeline runs it with.

onnx, onnxscript and onnxruntime are the `[onnx]` extra: importing this
module needs none of them; using it says which are missing.
"""
import contextlib
import copy
import importlib.util
import io
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy
import srsly
import torch
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, Shim, torch2xp
from thinc.types import Floats2d

from .classifier import CPU_PIECE_TOKENS, SETTINGS_NAME, ClassifierShim, restore_order, get_shim, length_buckets
from .pytorch import ClassifierOutput, TransformerClassifier, uses_token_types

ONNX_NAME = "model.onnx"
OPSET = 18
# What quantize_dynamic turns to int8: the weights of every matrix product
# and the embedding tables (kept in float32 these are half of a MiniLM-L6),
# in the plain graph or as the CPU fusions hold them.
QUANTIZED_OPS = ["MatMul", "Gemm", "Gather", "Attention", "EmbedLayerNormalization"]
# Texts of several lengths: the export traces with some, checks with others.
_EXAMPLE_TEXTS = ["a fine film", "the plot is thin , and the acting is not much better", "dull", "a long , slow and rather pointless story"]
_CHECK_TEXTS = ["an actor", "it is good", "x", "what a movie , start to end : every scene works and the cast is great", "bad", "so so"]


class OnnxError(ValueError):
    """Exporting or running ONNX failed; the message is one line."""


def require_onnx(*, export: bool) -> None:
    """Fail with one line naming what to install when the `[onnx]` extra is missing."""
    needed = ("onnx", "onnxscript", "onnxruntime") if export else ("onnxruntime",)
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        raise OnnxError(f"This needs {', '.join(missing)}, not installed: pip install 'spacy-dekd[onnx]'.")


def input_names(module: TransformerClassifier) -> List[str]:
    """The graph's inputs: token types only for encoders that read them."""
    return ["input_ids", "attention_mask"] + (["token_type_ids"] if uses_token_types(module.encoder) else [])


class _Logits(torch.nn.Module):
    """The classifier with tensors in and logits out, as the graph has it.
    Export it in eval mode: the TorchScript exporter gives the module back
    in the mode it found the wrapper in.
    """

    def __init__(self, module: TransformerClassifier) -> None:
        super().__init__()
        self.module = module

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.module(input_ids, attention_mask, token_type_ids).logits


def export_onnx(shim: Any, path: Path, *, atol: float = 1e-4) -> float:
    """Write the shim's classifier (float32, eval mode) as one ONNX file and
    check it against torch on texts of other lengths and another batch size.

    shim (TransformerClassifierShim): A trained classifier.
    path (Path): The .onnx file to write.
    atol (float): The largest logit difference from torch accepted.
    RETURNS (float): The largest logit difference found.
    """
    require_onnx(export=True)
    module = copy.deepcopy(shim.module).float().cpu().eval()
    names = input_names(module)
    example = _batch(shim, _EXAMPLE_TEXTS, names)
    batch, sequence = torch.export.Dim("batch"), torch.export.Dim("sequence")
    dynamic = {name: {0: batch, 1: sequence} for name in names}
    try:
        with _quiet("torch.onnx"):
            torch.onnx.export(
                _Logits(module).eval(), tuple(example[n] for n in names), str(path), input_names=names,
                output_names=["logits"], dynamic_shapes=dynamic, opset_version=OPSET, dynamo=True,
                external_data=False, verbose=False,
            )
    except Exception as err:  # the exporter raises many kinds
        raise OnnxError(
            f"Cannot export the {type(module.encoder).__name__} encoder to ONNX: {_first_line(err)}"
        ) from err
    diff = _diff_from_torch(shim, module, path.read_bytes())
    if diff > atol:
        raise OnnxError(f"The ONNX export differs from torch by {diff:.2g} in a logit (more than {atol:g}): not written.")
    return diff


def export_fused(shim: Any, path: Path, *, atol: float = 1e-4) -> float:
    """Write the classifier as ONNX Runtime's transformer optimizer fuses it
    for the CPU: each layer's attention one `Attention` op (which int8
    quantisation takes as one matrix product for Q, K and V, and whose
    masking and softmax run inside it), the embeddings with their LayerNorm,
    bias with GELU, residual with LayerNorm. The optimizer's patterns match
    the graph that torch's TorchScript exporter writes of eager attention,
    not the dynamo exporter's, so this one exports that way (where a later
    torch no longer has that exporter, this raises and the plain graph
    serves).

    shim (TransformerClassifierShim): A trained classifier.
    path (Path): The .onnx file to write.
    atol (float): The largest logit difference from torch accepted.
    RETURNS (float): The largest logit difference found.
    RAISES (OnnxError): Where not every layer's attention fuses (an encoder
        the optimizer does not know), or the fused graph is not within atol
        of torch; then nothing is written, and the plain export serves.
    """
    require_onnx(export=True)
    from onnxruntime.transformers.optimizer import optimize_model

    module = copy.deepcopy(shim.module).float().cpu().eval()
    config = module.encoder.config
    encoder = type(module.encoder).__name__
    names = input_names(module)
    example = _batch(shim, _EXAMPLE_TEXTS, names)
    dynamic = {name: {0: "batch", 1: "sequence"} for name in names}
    dynamic["logits"] = {0: "batch"}
    with tempfile.TemporaryDirectory() as tmp, _quiet("torch.onnx", "onnxruntime.transformers"):
        traced = Path(tmp) / "traced.onnx"
        try:
            module.encoder.set_attn_implementation("eager")
            torch.onnx.export(
                _Logits(module).eval(), tuple(example[n] for n in names), str(traced), input_names=names,
                output_names=["logits"], dynamic_axes=dynamic, opset_version=OPSET, dynamo=False,
            )
            fused = optimize_model(
                str(traced), model_type="bert", num_heads=int(config.num_attention_heads),
                hidden_size=int(config.hidden_size), opt_level=0,
            )
        except Exception as err:  # the exporter and the optimizer raise many kinds
            raise OnnxError(f"{encoder} does not fuse: {_first_line(err)}") from err
        n_fused = sum(node.op_type == "Attention" for node in fused.model.graph.node)
        if n_fused != module.n_layers:
            raise OnnxError(f"{encoder} does not fuse: attention fused in {n_fused} of {module.n_layers} layers")
        data = fused.model.SerializeToString()
    diff = _diff_from_torch(shim, module, data)
    if diff > atol:
        raise OnnxError(f"{encoder} does not fuse: the fused graph differs from torch by {diff:.2g} in a logit")
    path.write_bytes(data)
    return diff


def quantize_int8(source: Path, target: Path, *, per_channel: bool = True) -> None:
    """Dynamic int8 quantisation with ONNX Runtime: int8 weights for every
    op in `QUANTIZED_OPS` (per output channel by default), activations
    quantised on the fly. The source is a plain or a fused export.
    """
    require_onnx(export=True)
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_dynamic(
            str(prepared), str(target), weight_type=QuantType.QInt8, per_channel=per_channel,
            op_types_to_quantize=QUANTIZED_OPS,
            # Shape inference leaves the outputs of fused ops untyped: they are float32.
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )


def session(model: bytes, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session; threads 0 takes torch's thread count
    (OMP_NUM_THREADS where it is set, else every core), so that one setting
    holds for the whole pipeline.
    """
    require_onnx(export=False)
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    return onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def _batch(shim: Any, texts: Sequence[str], names: List[str]) -> Dict[str, torch.Tensor]:
    encoded = shim.tokenizer(list(texts), truncation=True, max_length=shim.max_length)
    padded = shim.tokenizer.pad({k: encoded[k] for k in names if k in encoded}, padding="longest", return_tensors="pt")
    if "token_type_ids" in names and "token_type_ids" not in padded:
        padded["token_type_ids"] = torch.zeros_like(padded["input_ids"])
    return {k: padded[k].long() for k in names}


def _diff_from_torch(shim: Any, module: TransformerClassifier, model: bytes) -> float:
    """The largest logit difference of a graph from torch, on texts of other
    lengths and another batch size than the export traced.
    """
    names = input_names(module)
    check = _batch(shim, _CHECK_TEXTS, names)
    with torch.inference_mode():
        expected = module(*(check[n] for n in names)).logits.numpy()
    got = session(model).run(["logits"], {n: check[n].numpy() for n in names})[0]
    return float(numpy.abs(got - expected).max())


@contextlib.contextmanager
def _quiet(*loggers: str) -> Iterator[None]:
    """The exporters' and optimizer's notes on their own internals (warnings,
    log lines and progress on stdout) kept off the user's terminal; errors
    still raise.
    """
    levels = {name: logging.getLogger(name).level for name in loggers}
    for name in loggers:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _first_line(err: Exception) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


@registry.architectures("spacy-dekd.OnnxTransformerClassifier.v1")
def build_onnx_transformer_classifier_v1(*, threads: int = 0, nO: Optional[int] = None) -> Model[List[Doc], Floats2d]:
    """A transformer classifier exported to ONNX and run by ONNX Runtime on
    the CPU, for inference: `spacy textcat-quantize` makes it from a trained
    `spacy-dekd.TransformerClassifier.v1`, and its weights come with the
    pipeline (`from_disk`).

    threads (int): ONNX Runtime's intra-op threads; 0 for every core.
    nO (Optional[int]): The number of classes; set by the component.
    """
    return Model(
        "onnx_transformer_classifier", _onnx_forward, init=_onnx_init,
        shims=[OnnxClassifierShim(threads=threads)], dims={"nO": nO},
    )


def _onnx_forward(model: Model, docs: List[Doc], is_train: bool) -> Tuple[Floats2d, Callable]:
    logits = get_shim(model).run(docs, is_train=is_train).logits
    return torch2xp(logits, ops=model.ops), _no_backprop


def _no_backprop(dY: Floats2d) -> List[Doc]:
    raise ValueError("An ONNX classifier cannot be trained: train the torch pipeline it was made from.")


def _onnx_init(model: Model, X: Any = None, Y: Any = None) -> None:
    if get_shim(model).session is None:
        raise ValueError(
            "An ONNX transformer classifier cannot be initialized from scratch: make one from a "
            "trained pipeline with `python -m spacy textcat-quantize`."
        )


class OnnxClassifierShim(ClassifierShim, Shim):
    """Holds the ONNX model (bytes and session), the tokenizer and settings,
    saved as `model.onnx`, the tokenizer's files and `classifier.json`.
    """

    runtime = "onnx"

    def __init__(self, *, threads: int = 0) -> None:
        super().__init__(None)
        self.threads = threads
        self.model_bytes: Optional[bytes] = None
        self.session: Any = None
        self.tokenizer: Any = None
        self.max_length = 128
        self.info: Dict[str, Any] = {}

    @property
    def module(self) -> None:
        """No torch module: the weights live in the ONNX graph."""
        return None

    def set_model(self, model_bytes: bytes, tokenizer: Any, info: Dict[str, Any]) -> None:
        """info: classifier.json's settings: max_length, n_labels, inputs,
        and what the source model was (layers, width, parameters).
        """
        self.model_bytes = model_bytes
        self.session = session(model_bytes, self.threads)
        self.tokenizer = tokenizer
        self.max_length = int(info["max_length"])
        self.info = dict(info)

    def run(
        self, docs: Sequence[Doc], *, is_train: bool, output_hidden_states: bool = False, mc_dropout: bool = False,
    ) -> ClassifierOutput:
        """Logits for the docs, in length pieces as the torch classifier runs
        them. The torch classifier's signature; training, hidden states and
        Monte Carlo dropout are refused: the graph computes logits alone.
        """
        if is_train or output_hidden_states or mc_dropout:
            raise ValueError(
                "An ONNX classifier runs inference only (logits alone: no training, hidden states or "
                "dropout): train or distil the torch pipeline it was made from."
            )
        if self.session is None:
            raise ValueError("The ONNX classifier has no model: load a pipeline made by `spacy textcat-quantize`.")
        if not docs:
            return ClassifierOutput(logits=torch.zeros((0, int(self.info["n_labels"]))))
        encoded = self.encode(docs)
        buckets = length_buckets([len(ids) for ids in encoded["input_ids"]], CPU_PIECE_TOKENS)
        names = self.info["inputs"]
        pieces = []
        for rows in buckets:
            batch = self.tokenizer.pad({k: [encoded[k][i] for i in rows] for k in encoded}, padding="longest", return_tensors="np")
            if "token_type_ids" in names and "token_type_ids" not in batch:
                batch["token_type_ids"] = numpy.zeros_like(batch["input_ids"])
            logits = self.session.run(["logits"], {k: batch[k].astype(numpy.int64) for k in names})[0]
            pieces.append(ClassifierOutput(logits=torch.from_numpy(logits)))
        return restore_order(pieces, buckets)

    def to_disk(self, path: Path) -> None:
        if self.model_bytes is None:
            raise ValueError("Cannot save an ONNX classifier without a model.")
        path.mkdir(parents=True, exist_ok=True)
        (path / ONNX_NAME).write_bytes(self.model_bytes)
        self.tokenizer.save_pretrained(str(path))
        srsly.write_json(path / SETTINGS_NAME, {**self.info, "format": "onnx"})

    def from_disk(self, path: Path) -> "OnnxClassifierShim":
        from transformers import AutoTokenizer

        for required in (ONNX_NAME, SETTINGS_NAME):
            if not (path / required).is_file():
                raise ValueError(f"Cannot load the ONNX classifier from '{path}': '{required}' is missing.")
        info = srsly.read_json(path / SETTINGS_NAME)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(path))
            self.set_model((path / ONNX_NAME).read_bytes(), tokenizer, info)
        except OnnxError:
            raise
        except Exception as err:  # onnxruntime raises its own kinds
            raise ValueError(f"Cannot load the ONNX classifier from '{path}': {_first_line(err)}") from err
        return self
