"""`spacy textcat-export` (Hugging Face, ONNX) and `spacy textcat-quantize`
(int8 ONNX Runtime inside a pipeline) on tiny BERT- and MPNet-shaped models."""
import json
import subprocess
import sys

import numpy
import pytest
import spacy
import torch
from transformers import BertConfig

from spacy_dekd.cli.export import ExportError, textcat_export, textcat_quantize
from spacy_dekd.corpus import DatasetCorpus
from spacy_dekd.models import onnx_model
from spacy_dekd.models.hf import export_hf
from spacy_dekd.models.onnx_model import OnnxError

from ..pipeline.test_textcat import make_nlp, train
from .conftest import fail_line, spacy_cli


@pytest.fixture(scope="module", params=[("bert_dir", "first"), ("mpnet_dir", "mean")], ids=["bert-first", "mpnet-mean"])
def pipeline(request, toy_data, tmp_path_factory):
    encoder, pooling = request.param
    nlp = make_nlp(request.getfixturevalue(encoder), model={"pooling": pooling, "max_length": 32})
    train(nlp, list(DatasetCorpus(toy_data["train"])(nlp)))
    path = tmp_path_factory.mktemp("export") / "pipeline"
    nlp.to_disk(path)
    return path


def texts(toy_data):
    return [json.loads(line)["text"] for line in toy_data["dev"].read_text().splitlines()]


def is_bert(path):
    return spacy.load(path).get_pipe("textcat").shim.module.encoder.config.model_type == "bert"


def torch_logits(path, batch):
    nlp = spacy.load(path)
    pipe = nlp.get_pipe("textcat")
    return pipe.forward([nlp.make_doc(t) for t in batch], is_train=False).logits


HF_LOAD = """
import json, sys
sys.modules["spacy"] = sys.modules["spacy_dekd"] = None  # neither may be imported
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
path, texts = sys.argv[1], json.loads(sys.argv[2])
model = AutoModelForSequenceClassification.from_pretrained(path, trust_remote_code=True).eval()
tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
with torch.no_grad():
    logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
print(json.dumps({"logits": logits.tolist(), "id2label": model.config.id2label}))
"""


def test_hf_export_loads_without_spacy_and_gives_the_component_logits(pipeline, toy_data, tmp_path):
    out = tmp_path / "hf"
    textcat_export(str(pipeline), out, fmt="hf")
    batch = texts(toy_data)[:12] + ["good " * 40]  # one past max_length: truncated alike
    result = subprocess.run([sys.executable, "-c", HF_LOAD, str(out), json.dumps(batch)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    expected = torch_logits(pipeline, batch)
    assert float((torch.tensor(loaded["logits"]) - expected).abs().max()) <= 1e-5
    assert loaded["id2label"] == {"0": "negative", "1": "positive"}


def test_hf_export_without_trust_remote_code_refuses_to_load(pipeline, tmp_path):
    """Its model_type is its own: no stock class with an untrained head."""
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "hf"
    textcat_export(str(pipeline), out, fmt="hf")
    assert json.loads((out / "config.json").read_text())["model_type"].startswith("spacy_dekd_")
    with pytest.raises(ValueError, match="trust_remote_code"):
        AutoModelForSequenceClassification.from_pretrained(str(out))


def test_onnx_export_equals_torch_at_any_batch_and_length(pipeline, toy_data, tmp_path):
    from transformers import AutoTokenizer

    out = tmp_path / "onnx"
    info = textcat_export(str(pipeline), out, fmt="onnx")
    assert info["max_abs_diff"] <= 1e-4
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    for batch in (texts(toy_data)[:1], texts(toy_data)[:17]):
        got = onnx_logits(str(out / "model.onnx"), tokenizer, batch)
        assert float(numpy.abs(got - torch_logits(pipeline, batch).numpy()).max()) <= 1e-4


def onnx_logits(model, tokenizer, batch):
    import onnxruntime

    session = onnxruntime.InferenceSession(model)
    names = [i.name for i in session.get_inputs()]
    encoded = tokenizer(batch, padding=True, truncation=True, max_length=32, return_tensors="np")
    feed = {n: encoded[n] if n in encoded else numpy.zeros_like(encoded["input_ids"]) for n in names}
    return session.run(["logits"], {n: v.astype(numpy.int64) for n, v in feed.items()})[0]


def test_the_fused_graph_equals_torch_where_attention_fuses(pipeline, toy_data, tmp_path):
    """BERT's layers fuse (one Attention op a layer); MPNet's relative
    attention does not, and then nothing is written: the plain export serves.
    """
    import onnx

    pipe = spacy.load(pipeline).get_pipe("textcat")
    path = tmp_path / "fused.onnx"
    if not is_bert(pipeline):
        with pytest.raises(OnnxError, match=r"^MPNetModel does not fuse: attention fused in 0 of 2 layers$"):
            onnx_model.export_fused(pipe.shim, path)
        assert not path.exists()
        return
    onnx_model.export_fused(pipe.shim, path)
    ops = [node.op_type for node in onnx.load(str(path)).graph.node]
    assert ops.count("Attention") == pipe.shim.module.n_layers and "EmbedLayerNormalization" in ops
    for batch in (texts(toy_data)[:1], texts(toy_data)[:17], ["good " * 40, "bad"]):
        got = onnx_logits(str(path), pipe.shim.tokenizer, batch)
        assert float(numpy.abs(got - torch_logits(pipeline, batch).numpy()).max()) <= 1e-4


def test_a_graph_the_optimizer_cannot_fuse_falls_back_to_the_plain_export(pipeline, tmp_path, monkeypatch):
    from onnxruntime.transformers import optimizer

    def unknown(*args, **kwargs):
        raise NotImplementedError("no fusion for this encoder")

    monkeypatch.setattr(optimizer, "optimize_model", unknown)
    pipe = spacy.load(pipeline).get_pipe("textcat")
    with pytest.raises(OnnxError, match=r"Model does not fuse: no fusion for this encoder$"):
        onnx_model.export_fused(pipe.shim, tmp_path / "fused.onnx")
    assert list(tmp_path.iterdir()) == []
    info = textcat_quantize(str(pipeline), tmp_path / "int8", threads=1)
    assert info["graph"] == "plain"
    assert json.loads((tmp_path / "int8" / "textcat" / "model" / "classifier.json").read_text())["graph"] == "plain"


def test_the_int8_pipeline_loads_runs_saves_and_agrees(pipeline, toy_data, tmp_path):
    out = tmp_path / "int8"
    info = textcat_quantize(str(pipeline), out, threads=1)
    assert info["max_abs_diff_fp32"] <= 1e-4
    assert info["graph"] == ("fused" if is_bert(pipeline) else "plain")
    nlp = spacy.load(out)
    pipe = nlp.get_pipe("textcat")
    assert nlp.config["components"]["textcat"]["model"]["@architectures"] == "spacy-dekd.OnnxTransformerClassifier.v1"
    assert pipe.shim.module is None and pipe.shim.threads == 1
    assert "onnxruntime>=1.17" in nlp.meta["requirements"]
    batch = texts(toy_data)
    reference = spacy.load(pipeline)
    expected = [max(doc.cats, key=doc.cats.get) for doc in reference.pipe(batch)]
    got = [max(doc.cats, key=doc.cats.get) for doc in nlp.pipe(batch, batch_size=7)]
    assert numpy.mean([a == b for a, b in zip(expected, got)]) >= 0.95
    assert nlp.evaluate(list(DatasetCorpus(toy_data["dev"])(nlp)))["cats_accuracy"] >= 0.9
    # Saved and loaded again (also from bytes): the same cats.
    nlp.to_disk(tmp_path / "again")
    again = spacy.load(tmp_path / "again", config={"components": {"textcat": {"model": {"threads": 2}}}})
    assert again.get_pipe("textcat").shim.threads == 2
    first = [doc.cats for doc in nlp.pipe(batch[:5])]
    assert [doc.cats for doc in again.pipe(batch[:5])] == first
    from_bytes = spacy.load(out)
    from_bytes.get_pipe("textcat").from_bytes(pipe.to_bytes())
    assert [doc.cats for doc in from_bytes.pipe(batch[:5])] == first
    assert nlp("").cats.keys() == {"negative", "positive"}
    with pytest.raises(ValueError, match="cannot be trained|runs inference only"):
        nlp.update(list(DatasetCorpus(toy_data["dev"])(nlp))[:2])


def test_bad_input_is_one_line_and_writes_nothing(pipeline, tmp_path):
    blank = spacy.blank("en")
    bow = blank.add_pipe("textcat")
    bow.add_label("x")
    bow.add_label("y")
    blank.initialize()
    blank.to_disk(tmp_path / "bow")
    cases = [
        (["textcat-export", str(tmp_path / "bow"), str(tmp_path / "a")], "has no torch transformer_textcat component"),
        (["textcat-export", str(pipeline), str(tmp_path / "b"), "--format", "tflite"], "Unknown --format 'tflite': use one of hf, onnx."),
        (["textcat-quantize", str(tmp_path / "missing"), str(tmp_path / "c")], "is neither a directory nor an installed package"),
        (["textcat-quantize", str(pipeline), str(tmp_path / "bow")], "exists: choose a new folder, or pass --force"),
        (["textcat-quantize", str(pipeline), str(tmp_path / "d"), "--threads", "-1"], "--threads must be 0"),
    ]
    for args, message in cases:
        result = spacy_cli(*args)
        assert result.returncode == 1, args
        assert message in fail_line(result)
        assert "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bow"]  # nothing else written, no staged folder


def test_missing_onnxruntime_is_named(pipeline, tmp_path, monkeypatch):
    real = onnx_model.importlib.util.find_spec
    monkeypatch.setattr(onnx_model.importlib.util, "find_spec", lambda name: None if name == "onnxruntime" else real(name))
    with pytest.raises(OnnxError, match=r"needs onnxruntime, not installed: pip install 'spacy-dekd\[onnx\]'"):
        textcat_quantize(str(pipeline), tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


def test_a_failed_export_leaves_no_folder(pipeline, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::something")

    monkeypatch.setattr(onnx_model.torch.onnx, "export", broken)
    with pytest.raises(OnnxError, match="Cannot export the .* encoder to ONNX: unsupported operator"):
        textcat_export(str(pipeline), tmp_path / "onnx", fmt="onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_encoder_transformers_does_not_ship_is_refused(pipeline, tmp_path):
    class HomeMadeConfig(BertConfig):
        pass

    pipe = spacy.load(pipeline).get_pipe("textcat")
    module = pipe.shim.module
    module.encoder.config = HomeMadeConfig(**module.encoder.config.to_dict())
    with pytest.raises(ValueError, match="class HomeMadeConfig is not one of transformers'"):
        export_hf(module, pipe.shim.tokenizer, pipe.labels, tmp_path, exclusive_classes=True, max_length=32)


def test_force_replaces_an_existing_output(pipeline, tmp_path):
    out = tmp_path / "hf"
    out.mkdir()
    (out / "old.txt").write_text("old")
    with pytest.raises(ExportError, match="exists"):
        textcat_export(str(pipeline), out)
    textcat_export(str(pipeline), out, force=True)
    assert not (out / "old.txt").exists() and (out / "modeling_spacy_dekd.py").exists()


def test_an_output_that_would_lose_the_pipeline_is_refused(pipeline, tmp_path):
    """quantize PIPE PIPE --force once replaced the float pipeline with its
    int8 copy; an output inside the pipeline, or under a file, is refused too."""
    before = {p: p.read_bytes() for p in sorted(pipeline.rglob("*")) if p.is_file()}
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    cases = [
        (textcat_quantize, pipeline, "is one of the inputs"),
        (textcat_quantize, pipeline / "int8", "is inside the input"),
        (textcat_export, pipeline.parent, "holds the input"),
        (textcat_export, notes, "is a file: a folder is written there"),
        (textcat_export, notes / "hf", "is a file, not a directory"),
    ]
    for job, output, message in cases:
        with pytest.raises(ExportError, match=message):
            job(str(pipeline), output, force=True)
    assert {p: p.read_bytes() for p in sorted(pipeline.rglob("*")) if p.is_file()} == before
    assert notes.read_text() == "mine" and sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
