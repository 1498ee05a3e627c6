"""`spacy textcat-export` and `spacy textcat-quantize`: a trained
`transformer_textcat` outside spaCy, or int8 inside it.

    python -m spacy textcat-export PIPELINE OUTPUT [--format hf|onnx] [--component NAME] [--force]
    python -m spacy textcat-quantize PIPELINE OUTPUT [--threads N] [--per-tensor] [--component NAME] [--force]

Each writes into a staged sibling of OUTPUT and renames it into place when
all is written and checked: a failure leaves no half-written folder.
"""
import logging
import shutil
from pathlib import Path
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy
import srsly
from spacy import util
from spacy.cli._util import Arg, Opt, app
from spacy.language import Language
from wasabi import msg

from ..errors import fail
from ..files import OutputError, check_output, staged_folder
from ..models.classifier import SETTINGS_NAME, TransformerClassifierShim
from ..models.hf import export_hf
from ..models.onnx_model import ONNX_NAME, OnnxError, export_fused, export_onnx, input_names, quantize_int8, require_onnx
from ..pipeline.textcat import TransformerTextCategorizer
from ..registry import registry

# `--format NAME`: a short name for a shipped exporter, or any name in the
# dekd_exporters registry (one registered with --code, say).
FORMATS = {"hf": "spacy-dekd.HFExporter.v1", "onnx": "spacy-dekd.OnnxExporter.v1"}
ONNX_ARCHITECTURE = "spacy-dekd.OnnxTransformerClassifier.v1"
ONNX_REQUIREMENT = "onnxruntime>=1.17"


class ExportError(Exception):
    """The export cannot be done as asked; the message is one line."""


@app.command("textcat-export")
def textcat_export_cli(
    # fmt: off
    pipeline: str = Arg(..., help="Trained pipeline with a transformer_textcat: a directory or an installed package"),
    output_path: Path = Arg(..., help="Folder to create"),
    fmt: str = Opt("hf", "--format", "-f", help="hf (a Hugging Face folder) or onnx (model.onnx and the tokenizer)"),
    component: Optional[str] = Opt(None, "--component", "-c", help="The transformer_textcat to export, if there are several"),
    force: bool = Opt(False, "--force", "-F", help="Replace OUTPUT if it exists"),
    verbose: bool = Opt(False, "--verbose", "-V", help="Show the traceback of an error"),
    # fmt: on
) -> None:
    """Export a transformer_textcat as a plain Hugging Face folder (loads with
    AutoModelForSequenceClassification and trust_remote_code=True, no spaCy)
    or as ONNX.
    """
    _run(lambda: textcat_export(pipeline, output_path, fmt=fmt, component=component, force=force), verbose)


@app.command("textcat-quantize")
def textcat_quantize_cli(
    # fmt: off
    pipeline: str = Arg(..., help="Trained pipeline with a transformer_textcat: a directory or an installed package"),
    output_path: Path = Arg(..., help="Folder for the quantized pipeline"),
    threads: int = Opt(0, "--threads", "-t", help="ONNX Runtime threads of the quantized component; 0 for every core"),
    per_channel: bool = Opt(True, "--per-channel/--per-tensor", help="int8 scales per output channel or per weight matrix"),
    component: Optional[str] = Opt(None, "--component", "-c", help="The transformer_textcat to quantize, if there are several"),
    force: bool = Opt(False, "--force", "-F", help="Replace OUTPUT if it exists"),
    verbose: bool = Opt(False, "--verbose", "-V", help="Show the traceback of an error"),
    # fmt: on
) -> None:
    """Write a spaCy pipeline whose transformer_textcat runs an int8 ONNX
    model with ONNX Runtime: spacy.load, nlp.pipe and spacy package as before.
    """
    _run(lambda: textcat_quantize(pipeline, output_path, threads=threads, per_channel=per_channel, component=component, force=force), verbose)


def _run(job: Any, verbose: bool) -> None:
    if verbose:
        logging.getLogger("spacy_dekd").setLevel(logging.DEBUG)
    try:
        job()
    except (ExportError, OnnxError, OutputError) as err:
        if verbose:
            raise
        fail(str(err))


@dataclass
class Exporter:
    """A format `spacy textcat-export` writes.

    write (Callable): (component, folder) → what was written, as a dict;
        raises ValueError for a model it cannot export.
    done (Callable): (output path, that dict) → the lines to print.
    check (Callable): Run before the pipeline loads: what the format needs
        installed.
    """

    write: Callable[[TransformerTextCategorizer, Path], Dict[str, Any]]
    done: Callable[[Path, Dict[str, Any]], List[str]]
    check: Callable[[], None] = lambda: None


@registry.dekd_exporters("spacy-dekd.HFExporter.v1")
def make_hf_exporter_v1() -> Exporter:
    """A Hugging Face folder: AutoModelForSequenceClassification loads it
    with trust_remote_code=True, no spaCy needed.
    """

    def write(pipe: TransformerTextCategorizer, folder: Path) -> Dict[str, Any]:
        shim = pipe.shim
        export_hf(shim.module, shim.tokenizer, pipe.labels, folder, exclusive_classes=pipe.exclusive_classes, max_length=shim.max_length)
        return {"format": "hf"}

    def done(output: Path, info: Dict[str, Any]) -> List[str]:
        return [f"Wrote a Hugging Face folder to {output}", "Load it with AutoModelForSequenceClassification.from_pretrained(PATH, trust_remote_code=True)"]

    return Exporter(write, done)


@registry.dekd_exporters("spacy-dekd.OnnxExporter.v1")
def make_onnx_exporter_v1() -> Exporter:
    """model.onnx (logits from word-piece ids), the tokenizer's files and
    classifier.json, checked against torch.
    """

    def write(pipe: TransformerTextCategorizer, folder: Path) -> Dict[str, Any]:
        diff = export_onnx(pipe.shim, folder / ONNX_NAME)
        pipe.shim.tokenizer.save_pretrained(str(folder))
        srsly.write_json(folder / SETTINGS_NAME, _settings(pipe))
        return {"format": "onnx", "max_abs_diff": diff}

    def done(output: Path, info: Dict[str, Any]) -> List[str]:
        return [f"Wrote an ONNX model to {output}", f"Largest logit difference from torch: {info['max_abs_diff']:.2g}"]

    return Exporter(write, done, check=lambda: require_onnx(export=True))


def textcat_export(pipeline: str, output: Path, *, fmt: str = "hf", component: Optional[str] = None, force: bool = False) -> Dict[str, Any]:
    """Export the component in a registered format (`dekd_exporters`).
    RETURNS (Dict[str, Any]): What was written: format, files and, for ONNX,
        the largest logit difference from torch.
    """
    exporter = _exporter(fmt)
    _check_output(output, pipeline, force)
    exporter.check()
    nlp = _load(pipeline)
    pipe = _component(nlp, pipeline, component)
    with staged_folder(output) as tmp:
        try:
            info = exporter.write(pipe, tmp)
        except ValueError as err:
            if isinstance(err, OnnxError):
                raise
            raise ExportError(str(err)) from err
    first, *rest = exporter.done(output, info)
    msg.good(first)
    for line in rest:
        msg.text(line)
    return info


def _exporter(fmt: str) -> Exporter:
    name = FORMATS.get(fmt, fmt)
    if not registry.has("dekd_exporters", name):
        known = [*FORMATS, *(n for n in registry.dekd_exporters.get_all() if n not in FORMATS.values())]
        raise ExportError(f"Unknown --format '{fmt}': use one of {', '.join(known)}.")
    return registry.get("dekd_exporters", name)()


def textcat_quantize(
    pipeline: str, output: Path, *, threads: int = 0, per_channel: bool = True,
    component: Optional[str] = None, force: bool = False,
) -> Dict[str, Any]:
    """Copy the pipeline with the component's torch model replaced by an int8
    ONNX model run by ONNX Runtime (`spacy-dekd.OnnxTransformerClassifier.v1`).
    What is quantised is the graph with ONNX Runtime's CPU fusions where the
    encoder's layers take them (BERT-shaped ones: `export_fused`), else the
    plain export.
    RETURNS (Dict[str, Any]): The sizes of the two models on disk, the fp32
        export's largest logit difference from torch, which graph was
        quantised ("fused" or "plain"), and how often the int8 model's argmax
        agrees with torch's on the check texts.
    """
    if threads < 0:
        raise ExportError(f"--threads must be 0 (every core) or more, got {threads}.")
    _check_output(output, pipeline, force)
    require_onnx(export=True)
    nlp = _load(pipeline)
    pipe = _component(nlp, pipeline, component)
    name = pipe.name
    with staged_folder(output) as tmp:
        nlp.to_disk(tmp)
        model_dir = tmp / name / "model"
        fp32_size = sum(p.stat().st_size for p in model_dir.iterdir())
        shutil.rmtree(model_dir)
        model_dir.mkdir()
        fp32 = tmp / "fp32.onnx"
        try:
            diff = export_fused(pipe.shim, fp32)
            graph, why_plain = "fused", ""
        except OnnxError as err:
            diff = export_onnx(pipe.shim, fp32)
            graph, why_plain = "plain", f" ({err})"
        quantize_int8(fp32, model_dir / ONNX_NAME, per_channel=per_channel)
        fp32.unlink()
        pipe.shim.tokenizer.save_pretrained(str(model_dir))
        settings = {**_settings(pipe), "format": "onnx", "graph": graph, "quantization": "int8-dynamic", "per_channel": per_channel}
        srsly.write_json(model_dir / SETTINGS_NAME, settings)
        config = nlp.config.copy()
        config["components"][name]["model"] = {"@architectures": ONNX_ARCHITECTURE, "threads": threads, "nO": len(pipe.labels)}
        config.to_disk(tmp / "config.cfg")
        meta = srsly.read_json(tmp / "meta.json")
        meta["requirements"] = sorted(set(meta.get("requirements", [])) | {ONNX_REQUIREMENT})
        srsly.write_json(tmp / "meta.json", meta)
        int8_size = sum(p.stat().st_size for p in model_dir.iterdir())
        agreement = _argmax_agreement(nlp, util.load_model(tmp), name)
    info = {"fp32_bytes": fp32_size, "int8_bytes": int8_size, "max_abs_diff_fp32": diff, "graph": graph, "argmax_agreement": agreement}
    msg.good(f"Wrote the int8 pipeline to {output}")
    msg.text(
        f"'{name}': {fp32_size / 1e6:.1f} MB -> {int8_size / 1e6:.1f} MB ({int8_size / fp32_size:.2f}x); "
        f"{graph} fp32 graph within {diff:.2g} of torch{why_plain}; "
        f"int8 argmax agrees with torch on {100 * agreement:.0f} % of the check texts"
    )
    return info


def _settings(pipe: TransformerTextCategorizer) -> Dict[str, Any]:
    """classifier.json of an exported model: what runs it and what it came from."""
    module = pipe.shim.module
    return {
        "max_length": pipe.shim.max_length,
        "n_labels": len(pipe.labels),
        "labels": list(pipe.labels),
        "inputs": input_names(module),
        "pooling": module.pooling,
        "n_layers": module.n_layers,
        "width": module.width,
        "n_parameters": sum(p.numel() for p in module.parameters()),
        "encoder": type(module.encoder).__name__,
    }


CHECK_TEXTS = [
    "a fine film", "dull and far too long", "the cast is great but the script is not", "what a mess",
    "i liked it", "not bad at all", "an actor", "two hours i will not get back", "warm , funny and sharp", "meh",
]


def _argmax_agreement(torch_nlp: Language, onnx_nlp: Language, name: str) -> float:
    """The quantized component's argmax against torch's, on a few texts: a
    check that it loads and runs, not a measure of accuracy.
    """
    expected = torch_nlp.get_pipe(name).predict([torch_nlp.make_doc(t) for t in CHECK_TEXTS])
    got = onnx_nlp.get_pipe(name).predict([onnx_nlp.make_doc(t) for t in CHECK_TEXTS])
    return float((numpy.asarray(expected).argmax(1) == numpy.asarray(got).argmax(1)).mean())


def _check_output(output: Path, pipeline: str, force: bool) -> None:
    """The output neither is, holds nor lies in the pipeline it is made
    from, and replaces a folder only with --force.
    """
    try:
        check_output(output, [pipeline])
    except OutputError as err:
        raise ExportError(str(err)) from err
    if output.exists() and not force:
        raise ExportError(f"The output '{output}' exists: choose a new folder, or pass --force to replace it.")
    if not output.parent.exists():
        raise ExportError(f"The folder '{output.parent}' for the output does not exist: create it first.")


def _load(pipeline: str) -> Language:
    if not (Path(pipeline).is_dir() or util.is_package(pipeline)):
        raise ExportError(f"The pipeline '{pipeline}' is neither a directory nor an installed package.")
    try:
        return util.load_model(pipeline)
    except (OSError, ValueError) as err:
        raise ExportError(f"Cannot load the pipeline '{pipeline}': {str(err).strip().splitlines()[0]}") from err


def _component(nlp: Language, pipeline: str, name: Optional[str]) -> TransformerTextCategorizer:
    """The torch transformer_textcat to export: the named one, or the only one."""
    found = [
        pipe_name for pipe_name, pipe in nlp.pipeline
        if isinstance(pipe, TransformerTextCategorizer) and isinstance(pipe.model.shims[0], TransformerClassifierShim)
    ]
    if name is not None:
        if name not in found:
            raise ExportError(
                f"The pipeline '{pipeline}' has no torch transformer_textcat named '{name}' "
                f"(its components: {nlp.pipe_names}; transformer_textcat: {found})."
            )
        return nlp.get_pipe(name)
    if not found:
        raise ExportError(
            f"The pipeline '{pipeline}' has no torch transformer_textcat component (it has {nlp.pipe_names}): "
            "export a pipeline trained with spacy train or spacy distill."
        )
    if len(found) > 1:
        raise ExportError(f"The pipeline '{pipeline}' has several transformer_textcat components {found}: choose one with --component.")
    return nlp.get_pipe(found[0])

