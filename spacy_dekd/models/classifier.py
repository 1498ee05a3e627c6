"""The thinc model over a `TransformerClassifier`: docs in, logits out.

The model is built lazily, like spacy-transformers: constructing it reads
nothing, `initialize` loads the pretrained encoder named in the config, and
`from_disk` / `from_bytes` rebuild it from the saved `config.json`, tokenizer
and `model.safetensors` alone, so a saved pipeline needs neither the original
directory nor a network, and loading unpickles nothing.
"""
import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import srsly
import torch
from spacy.tokens import Doc
from spacy.util import registry
from thinc.api import Model, PyTorchGradScaler, PyTorchShim, get_torch_default_device, torch2xp, xp2torch
from thinc.types import Floats2d

from .pytorch import (
    ClassifierOutput,
    TransformerClassifier,
    check_layers,
    keep_layers,
    load_encoder,
)
from .types import TransformerClassifierT

WEIGHTS_NAME = "model.safetensors"
SETTINGS_NAME = "classifier.json"
ENCODER_CONFIG_NAME = "config.json"
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Padded positions per piece of a batch (see `length_buckets`). On a CPU small
# pieces cost nothing extra (MPNet, movie sentences, batch 64: 512 was the
# fastest of 256-2048 at inference, 1.6x the words/s of one piece); on a GPU
# pieces stay large, since there the number of kernel launches counts.
CPU_PIECE_TOKENS = 512
GPU_PIECE_TOKENS = 16384



def install_extensions() -> None:
    """`doc._.text_pair`: the second text of a sentence pair. Stored in
    `doc.user_data`, so it survives DocBin(store_user_data=True). Installed
    by the component and the readers, not on import.
    """
    if not Doc.has_extension("text_pair"):
        Doc.set_extension("text_pair", default=None)


@registry.architectures("spacy-dekd.TransformerClassifier.v1")
def build_transformer_classifier_v1(
    *,
    name: str,
    layers: Optional[List[int]] = None,
    pooling: str = "first",
    dropout: float = 0.1,
    max_length: int = 128,
    mixed_precision: bool = False,
    mixed_precision_dtype: str = "bfloat16",
    nO: Optional[int] = None,
) -> TransformerClassifierT:
    """A Hugging Face encoder with a linear head over its pooled last layer.

    name (str): A local directory holding a Hugging Face encoder (config,
        tokenizer, weights) or, where a hub is reachable, a hub id. Read at
        `initialize` only.
    layers (Optional[List[int]]): The encoder layers to keep (0-based,
        ascending), e.g. [0, 5, 11] for a 3-layer model from a 12-layer one.
        None keeps them all.
    pooling (str): "first" (the [CLS] / <s> vector) or "mean".
    dropout (float): Dropout before the head.
    max_length (int): Inputs are truncated to this many word pieces. In a
        student config of `spacy distill`, 0 takes the teacher's.
    mixed_precision (bool): Autocast: on a GPU in `mixed_precision_dtype`, on
        a CPU with bfloat16 instructions in bfloat16 (see `set_mixed_precision`).
    mixed_precision_dtype (str): "bfloat16" or "float16".
    nO (Optional[int]): The number of classes; set by the component.
    RETURNS (Model[List[Doc], Floats2d]): The model, returning logits (N, C).
    """
    if layers is not None:
        check_layers(layers, max(layers) + 1)
    if max_length < 1:
        raise ValueError(
            f"max_length must be 1 or more, got {max_length} (0 stands for the teacher's "
            "length in a student config of spacy distill, and nowhere else)."
        )
    if mixed_precision_dtype not in ("bfloat16", "float16"):
        raise ValueError(
            f"mixed_precision_dtype must be 'bfloat16' or 'float16', got '{mixed_precision_dtype}'."
        )
    shim = TransformerClassifierShim(
        None,
        name=name,
        layers=layers,
        pooling=pooling,
        dropout=dropout,
        max_length=max_length,
        mixed_precision=mixed_precision,
        mixed_precision_dtype=mixed_precision_dtype,
    )
    return Model(
        "transformer_classifier",
        forward,
        init=init,
        shims=[shim],
        dims={"nO": nO},
    )


def forward(
    model: TransformerClassifierT, docs: List[Doc], is_train: bool
) -> Tuple[Floats2d, Callable[[Floats2d], List[Doc]]]:
    shim = get_shim(model)
    output = shim.run(docs, is_train=is_train)
    logits = output.logits
    Y = torch2xp(logits.detach().float(), ops=model.ops)

    def backprop(dY: Floats2d) -> List[Doc]:
        shim.backward(logits, xp2torch(dY, device=logits.device).to(logits.dtype))
        return []

    return Y, backprop


def init(
    model: TransformerClassifierT, X: Optional[List[Doc]] = None, Y: Optional[Floats2d] = None
) -> None:
    if Y is not None and not model.has_dim("nO"):
        model.set_dim("nO", Y.shape[1])
    shim = get_shim(model)
    if shim.module is None:
        shim.load_pretrained(model.get_dim("nO"))


def length_buckets(lengths: Sequence[int], max_tokens: int) -> List[List[int]]:
    """Row indices grouped by length for padding: shortest first, each group
    as large as fits `max_tokens` padded positions (at least one row).

    lengths (Sequence[int]): The length of each row.
    max_tokens (int): Rows x longest row allowed in one group.
    RETURNS (List[List[int]]): The groups; every row in exactly one.
    """
    buckets: List[List[int]] = []
    for i in sorted(range(len(lengths)), key=lengths.__getitem__):
        if buckets and (len(buckets[-1]) + 1) * lengths[i] <= max_tokens:
            buckets[-1].append(i)
        else:
            buckets.append([i])
    return buckets


def restore_order(pieces: List[ClassifierOutput], buckets: List[List[int]]) -> ClassifierOutput:
    """One output from the outputs of `length_buckets` groups, rows in their
    original order."""
    if len(pieces) == 1 and buckets[0] == sorted(buckets[0]):
        return pieces[0]
    order = torch.tensor([i for rows in buckets for i in rows], device=pieces[0].logits.device)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(len(order), device=order.device)
    hidden = None
    if pieces[0].hidden_states is not None:
        hidden = [
            torch.cat([piece.hidden_states[layer] for piece in pieces])[inverse]
            for layer in range(len(pieces[0].hidden_states))
        ]
    logits = torch.cat([piece.logits for piece in pieces])[inverse]
    return ClassifierOutput(logits=logits, hidden_states=hidden)


def get_shim(model: Model) -> "ClassifierShim":
    shim = model.shims[0]
    if not isinstance(shim, ClassifierShim):
        raise TypeError(f"Expected a transformer classifier shim, got {type(shim).__name__}.")
    return shim


class ClassifierShim:
    """What the torch classifier and its ONNX export share: word pieces from
    docs, and serialization as msgpack of the files `to_disk` writes.
    """

    tokenizer: Any
    max_length: int
    # What runs the model: "torch" (trainable, hidden states, dropout) or
    # "onnx" (logits alone).
    runtime = "torch"

    def encode(self, docs: Sequence[Doc]) -> Dict[str, List[List[int]]]:
        """Word pieces of the docs (and of their `doc._.text_pair`), truncated
        at `max_length`, unpadded: one list of ids per doc.
        """
        install_extensions()
        texts = [doc.text for doc in docs]
        pairs = [doc._.text_pair for doc in docs]
        if any(pair is not None for pair in pairs):
            if not all(pair is not None for pair in pairs):
                raise ValueError(
                    "A batch mixes docs with and without `doc._.text_pair`: set it "
                    "on every doc of a sentence-pair task."
                )
            encoded = self.tokenizer(
                texts, pairs, truncation="longest_first", max_length=self.max_length
            )
        else:
            encoded = self.tokenizer(texts, truncation=True, max_length=self.max_length)
        return {k: v for k, v in encoded.items() if k in _MODEL_INPUTS}

    def to_disk(self, path: Path) -> None:
        raise NotImplementedError

    def from_disk(self, path: Path) -> "ClassifierShim":
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            self.to_disk(Path(tmp))
            files = {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file()}
        return srsly.msgpack_dumps(files)

    def from_bytes(self, bytes_data: bytes) -> "ClassifierShim":
        files = srsly.msgpack_loads(bytes_data)
        with tempfile.TemporaryDirectory() as tmp:
            for name, data in files.items():
                (Path(tmp) / name).write_bytes(data)
            return self.from_disk(Path(tmp))


class TransformerClassifierShim(ClassifierShim, PyTorchShim):
    """Holds the `TransformerClassifier`, its tokenizer and settings, and
    saves them as files: `config.json` and the tokenizer's files (Hugging
    Face format), `model.safetensors` (encoder and head) and
    `classifier.json` (pooling, dropout, max_length, labels count).
    """

    def __init__(
        self,
        module: Optional[TransformerClassifier],
        *,
        name: str,
        layers: Optional[Sequence[int]],
        pooling: str,
        dropout: float,
        max_length: int,
        mixed_precision: bool,
        mixed_precision_dtype: str,
        tokenizer: Any = None,
    ) -> None:
        # Loss scaling is for float16 on a GPU alone: bfloat16 (and a CPU,
        # where thinc's scaler refuses to run) needs none.
        scaling = mixed_precision and mixed_precision_dtype == "float16" and get_torch_default_device().type == "cuda"
        super().__init__(module, mixed_precision=mixed_precision, grad_scaler=PyTorchGradScaler(enabled=scaling))
        self.name = name
        self.layers = list(layers) if layers is not None else None
        self.pooling = pooling
        self.dropout = dropout
        self.max_length = max_length
        self.mixed_precision_dtype = mixed_precision_dtype
        self.tokenizer = tokenizer

    @property
    def module(self) -> Optional[TransformerClassifier]:
        return self._model

    def set_module(self, module: TransformerClassifier, tokenizer: Any) -> None:
        """Replace the module and tokenizer, e.g. by a student built from a
        teacher's layers, and move it to this shim's device.
        """
        self._model = module.to(self.device)
        self.tokenizer = tokenizer

    @property
    def device(self) -> torch.device:
        if self._model is not None:
            return next(self._model.parameters()).device
        return get_torch_default_device()

    def load_pretrained(self, n_labels: int) -> None:
        from transformers import AutoTokenizer

        path = Path(self.name)
        if not path.is_dir() and _hub_unreachable():
            raise ValueError(
                f"Encoder '{self.name}' is not a directory and no model hub is "
                "reachable. Fetch the encoders with `python scripts/fetch_assets.py` "
                "(or `spacy project run assets`) and point `name` at a directory "
                "under assets/."
            )
        try:
            encoder = load_encoder(self.name)
            tokenizer = AutoTokenizer.from_pretrained(str(self.name))
        except OSError as err:
            raise ValueError(
                f"Cannot load encoder '{self.name}': {err}. Fetch the encoders with "
                "`python scripts/fetch_assets.py` or point `name` at a Hugging Face "
                "model directory."
            ) from err
        if self.layers is not None:
            keep_layers(encoder, self.layers)
        module = TransformerClassifier(
            encoder, n_labels, pooling=self.pooling, dropout=self.dropout
        )
        self.set_module(module, tokenizer)

    def pad(
        self, encoded: Dict[str, List[List[int]]], rows: Optional[Sequence[int]] = None
    ) -> Dict[str, torch.Tensor]:
        """Tensors of the encoded rows (all by default), padded to the
        longest of them, on this shim's device.
        """
        if rows is not None:
            encoded = {k: [v[i] for i in rows] for k, v in encoded.items()}
        batch = self.tokenizer.pad(encoded, padding="longest", return_tensors="pt")
        device = self.device
        return {k: v.to(device) for k, v in batch.items()}

    def tokenize(self, docs: Sequence[Doc]) -> Dict[str, torch.Tensor]:
        """Word pieces of the docs, padded to the longest member of the batch."""
        return self.pad(self.encode(docs))

    def run(
        self, docs: Sequence[Doc], *, is_train: bool, output_hidden_states: bool = False,
        mc_dropout: bool = False,
    ) -> ClassifierOutput:
        """One forward pass over the docs: logits and, when asked, every layer's
        first-token state, with gradients when `is_train`.

        The batch is cut into pieces of similar length (`length_buckets`),
        each padded to its own longest, and the rows come back in order. The
        encoder's cost follows the padded positions, and short texts of mixed
        lengths padded to one longest waste half of it (the movie sentences:
        2.0 padded positions per real one in batches of 64). The rows of a
        transformer encoder do not interact, so this changes no output and,
        in training, no gradient: the loss still sees the whole batch.
        """
        if self._model is None:
            raise ValueError(
                "The transformer classifier is not initialized: call "
                "nlp.initialize() or load a trained pipeline."
            )
        module = self._model
        module.train(is_train or mc_dropout)  # MC dropout: dropout on, no gradient
        encoded = self.encode(docs)
        max_tokens = CPU_PIECE_TOKENS if self.device.type == "cpu" else GPU_PIECE_TOKENS
        buckets = length_buckets([len(ids) for ids in encoded["input_ids"]], max_tokens)
        grad = torch.enable_grad() if is_train else torch.inference_mode()
        with grad, self.autocast():
            pieces = [
                module(**self.pad(encoded, rows), output_hidden_states=output_hidden_states)
                for rows in buckets
            ]
            output = restore_order(pieces, buckets)
        output.logits = output.logits.float()
        return output

    def backward(self, output: torch.Tensor, d_output: torch.Tensor) -> None:
        """Backprop as `PyTorchShim.begin_update`'s callback does: the
        gradient scaled by the shim's grad scaler (float16 autocast on a GPU
        needs it), the parameters' gradients unscaled, and zeroed on an
        overflow, which `finish_update` then skips.
        """
        torch.autograd.backward(output, grad_tensors=self._grad_scaler.scale(d_output))
        grads = [p.grad for p in self._model.parameters() if p.grad is not None]
        if self._grad_scaler.unscale(grads):
            for grad in grads:
                grad.zero_()

    def set_mixed_precision(self, enabled: bool) -> None:
        """Autocast forward passes: on a GPU in `mixed_precision_dtype`, on a
        CPU in bfloat16 where it has bfloat16 instructions (AVX512-BF16 or
        AMX); elsewhere the CPU stays in float32, which is faster there.
        """
        self._mixed_precision = enabled

    def autocast(self) -> contextlib.AbstractContextManager:
        if not self._mixed_precision:
            return contextlib.nullcontext()
        if self.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=getattr(torch, self.mixed_precision_dtype))
        if self.device.type == "cpu" and cpu_has_bf16():
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    # Serialization: a folder of files, or msgpack of the same files.

    def settings(self) -> Dict[str, Any]:
        return {
            "name": self.name,
            "layers": self.layers,
            "pooling": self.pooling,
            "dropout": self.dropout,
            "max_length": self.max_length,
            "n_labels": self._model.n_labels if self._model is not None else None,
        }

    def to_disk(self, path: Path) -> None:
        if self._model is None:
            raise ValueError("Cannot save an uninitialized transformer classifier.")
        from safetensors.torch import save_file

        path.mkdir(parents=True, exist_ok=True)
        self._model.encoder.config.save_pretrained(str(path))
        self.tokenizer.save_pretrained(str(path))
        state = {k: v.detach().contiguous().cpu() for k, v in self._model.state_dict().items()}
        save_file(state, str(path / WEIGHTS_NAME))
        # safetensors writes 0600: readable by others under the umask, as
        # every other file of a saved pipeline is.
        umask = os.umask(0)
        os.umask(umask)
        (path / WEIGHTS_NAME).chmod(0o666 & ~umask)
        srsly.write_json(path / SETTINGS_NAME, self.settings())

    def from_disk(self, path: Path) -> "TransformerClassifierShim":
        from safetensors import SafetensorError
        from safetensors.torch import load_file
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        for required in (ENCODER_CONFIG_NAME, WEIGHTS_NAME, SETTINGS_NAME):
            if not (path / required).is_file():
                raise ValueError(
                    f"Cannot load the transformer classifier from '{path}': "
                    f"'{required}' is missing. Is this a pipeline saved by spacy_dekd?"
                )
            if not os.access(path / required, os.R_OK):
                raise ValueError(
                    f"Cannot load the transformer classifier from '{path}': permission denied "
                    f"to read '{required}' (mode {(path / required).stat().st_mode & 0o777:o}): "
                    "ask its owner to make it readable (chmod a+r)."
                )
        try:
            settings = srsly.read_json(path / SETTINGS_NAME)
            config = AutoConfig.from_pretrained(str(path))
            encoder = AutoModel.from_config(config)
            module = TransformerClassifier(
                encoder,
                settings["n_labels"],
                pooling=settings["pooling"],
                dropout=settings["dropout"],
            )
            module.load_state_dict(load_file(str(path / WEIGHTS_NAME)))
            tokenizer = AutoTokenizer.from_pretrained(str(path))
        except (OSError, ValueError, RuntimeError, KeyError, SafetensorError) as err:
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
            raise ValueError(
                f"Cannot load the transformer classifier from '{path}': {first_line}"
            ) from err
        self.name = settings["name"]
        self.layers = settings["layers"]
        self.pooling = settings["pooling"]
        self.dropout = settings["dropout"]
        self.max_length = settings["max_length"]
        self.set_module(module, tokenizer)
        return self

def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively; emulated, it is slower
    than float32.
    """
    cpu = getattr(torch, "cpu", None)
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(bool(getattr(cpu, name, lambda: False)()) for name in checks)


def _hub_unreachable() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
