"""The transformer_textcat component on tiny encoders built by the tests."""
import random
import shutil

import numpy
import pytest
import spacy
import torch
from spacy.tokens import DocBin
from spacy.training import Example
from thinc.api import Adam

from spacy_dekd.corpus import DatasetCorpus, make_docs
from spacy_dekd.models import get_shim
from spacy_dekd.models import classifier
from spacy_dekd.models.classifier import length_buckets
from spacy_dekd.models.pytorch import layer_list

from ..conftest import write_jsonl


def make_nlp(encoder_dir, **cfg):
    nlp = spacy.blank("en")
    model = {"name": str(encoder_dir), **cfg.pop("model", {})}
    nlp.add_pipe("transformer_textcat", name="textcat", config={"model": model, **cfg})
    return nlp


def train(nlp, examples, *, epochs=6, lr=1e-3, batch=16, seed=0):
    random.seed(seed)
    torch.manual_seed(seed)
    optimizer = nlp.initialize(lambda: examples, sgd=Adam(lr))
    examples = list(examples)
    for _ in range(epochs):
        random.shuffle(examples)
        for i in range(0, len(examples), batch):
            nlp.update(examples[i : i + batch], sgd=optimizer)
    return nlp


@pytest.fixture(scope="module")
def trained(bert_dir, toy_data):
    nlp = make_nlp(bert_dir)
    examples = list(DatasetCorpus(toy_data["train"])(nlp))
    return train(nlp, examples)


@pytest.mark.parametrize("encoder", ["bert_dir", "mpnet_dir"])
def test_training_reaches_high_accuracy(encoder, request, toy_data):
    nlp = make_nlp(request.getfixturevalue(encoder))
    train(nlp, list(DatasetCorpus(toy_data["train"])(nlp)))
    dev = list(DatasetCorpus(toy_data["dev"])(nlp))
    scores = nlp.evaluate(dev)
    assert scores["cats_accuracy"] >= 0.9
    assert "cats_score" in scores and "cats_macro_auc" in scores


def test_cats_are_set_like_spacy_textcat(trained):
    doc = trained("the film was great")
    assert set(doc.cats) == {"negative", "positive"}
    assert sum(doc.cats.values()) == pytest.approx(1.0, abs=1e-5)
    assert doc.cats["positive"] > 0.5


def test_to_disk_and_load_give_identical_cats(trained, tmp_path):
    trained.to_disk(tmp_path / "pipe")
    files = {p.name for p in (tmp_path / "pipe" / "textcat" / "model").iterdir()}
    assert {"config.json", "model.safetensors", "classifier.json", "tokenizer.json"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    loaded = spacy.load(tmp_path / "pipe")
    texts = ["the film was great", "a dull plot", "this story is very awful"]
    for a, b in zip(trained.pipe(texts), loaded.pipe(texts)):
        assert a.cats == pytest.approx(b.cats, abs=1e-6)


def test_bytes_round_trip(trained, bert_dir):
    data = trained.to_bytes()
    fresh = make_nlp(bert_dir)
    fresh.from_bytes(data)
    assert fresh.get_pipe("textcat").labels == trained.get_pipe("textcat").labels
    assert fresh("a lovely movie").cats == pytest.approx(trained("a lovely movie").cats, abs=1e-6)


def test_long_and_empty_docs(trained):
    long_doc = trained("good film " * 10_000)  # 100,000 characters
    assert len(long_doc.text) >= 100_000 and set(long_doc.cats) == {"negative", "positive"}
    empty = trained("")
    assert sum(empty.cats.values()) == pytest.approx(1.0, abs=1e-5)
    docs = list(trained.pipe(["", "bad", "good " * 2000]))
    assert all(len(doc.cats) == 2 for doc in docs)


def test_sentence_pairs(bert_dir, tmp_path):
    # The label is told by the second text alone: the model can only learn it
    # if the pair reaches the encoder.
    rows = []
    rng = random.Random(0)
    for i in range(120):
        label = i % 2
        noise = rng.choice(["good", "bad", "fun", "dull"])
        word = rng.choice(["great", "lovely"] if label else ["awful", "poor"])
        rows.append({"premise": f"the movie was {noise}", "hypothesis": f"the film is {word}", "label": label})
    path = write_jsonl(rows, tmp_path / "pairs.jsonl")
    nlp = make_nlp(bert_dir)
    corpus = DatasetCorpus(path, text_field="premise", pair_field="hypothesis", labels=["no", "yes"])
    examples = list(corpus(nlp))
    assert examples[0].predicted._.text_pair == rows[0]["hypothesis"]
    train(nlp, examples, epochs=8)
    assert nlp.evaluate(examples)["cats_accuracy"] >= 0.9
    # The pair survives DocBin and reaches the model.
    db = DocBin(store_user_data=True, docs=[eg.reference for eg in examples[:4]])
    docs = list(DocBin(store_user_data=True).from_bytes(db.to_bytes()).get_docs(nlp.vocab))
    assert [d._.text_pair for d in docs] == [eg.reference._.text_pair for eg in examples[:4]]
    shim = get_shim(nlp.get_pipe("textcat").model)
    batch = shim.tokenize(make_docs(nlp, ["good"], ["bad"]))
    sep = shim.tokenizer.sep_token_id
    assert int((batch["input_ids"][0] == sep).sum()) == 2  # [CLS] good [SEP] bad [SEP]


def test_multilabel(bert_dir, tmp_path):
    rows = []
    rng = random.Random(1)
    for _ in range(160):
        labels = [name for name in ("fun", "dull") if rng.random() < 0.5]
        words = ["the", "movie"] + labels + ["was", "very"]
        rng.shuffle(words)
        rows.append({"text": " ".join(words), "labels": labels})
    path = write_jsonl(rows, tmp_path / "multi.jsonl")
    nlp = make_nlp(bert_dir, exclusive_classes=False)
    corpus = DatasetCorpus(path, label_field="labels", labels=["fun", "dull"], multilabel=True)
    examples = list(corpus(nlp))
    train(nlp, examples, epochs=12)
    scores = nlp.evaluate(examples)
    assert scores["cats_accuracy"] >= 0.9
    doc = nlp("the movie was fun and dull")
    assert doc.cats["fun"] > 0.5 and doc.cats["dull"] > 0.5  # independent sigmoids


def test_layer_subsetting_keeps_the_teacher_weights(teacher_encoder_dir, toy_data):
    full = make_nlp(teacher_encoder_dir)
    small = make_nlp(teacher_encoder_dir, model={"layers": [0, 3]})
    for nlp in (full, small):
        nlp.initialize(lambda: list(DatasetCorpus(toy_data["train"], limit=4)(nlp)))
    full_module = get_shim(full.get_pipe("textcat").model).module
    small_module = get_shim(small.get_pipe("textcat").model).module
    assert small_module.n_layers == 2 and len(layer_list(small_module.encoder)) == 2
    for mine, theirs in zip(layer_list(small_module.encoder), [layer_list(full_module.encoder)[i] for i in (0, 3)]):
        for (name, a), (_, b) in zip(mine.state_dict().items(), theirs.state_dict().items()):
            assert torch.equal(a, b), name
    out = small.get_pipe("textcat").forward(list(small.pipe(["good movie"])), is_train=False, output_hidden_states=True)
    assert len(out.hidden_states) == 2 and out.hidden_states[0].shape == (1, 32)


def test_forward_returns_logits_and_hidden_states_in_one_pass(trained):
    pipe = trained.get_pipe("textcat")
    module = pipe.shim.module
    calls = []
    handle = module.encoder.register_forward_hook(lambda *args: calls.append(1))
    out = pipe.forward(make_docs(trained, ["good", "bad movie"]), is_train=False, output_hidden_states=True)
    handle.remove()
    assert len(calls) == 1
    assert out.logits.shape == (2, 2)
    assert len(out.hidden_states) == module.n_layers


def test_length_buckets():
    lengths = [9, 3, 30, 4, 3, 10, 64]
    buckets = length_buckets(lengths, 30)
    # Shortest first, each as large as fits 30 padded positions.
    assert buckets == [[1, 4, 3], [0, 5], [2], [6]]
    assert sorted(i for rows in buckets for i in rows) == list(range(len(lengths)))
    assert all(len(rows) == 1 or len(rows) * max(lengths[i] for i in rows) <= 30 for rows in buckets)
    assert length_buckets([], 30) == []


def test_inference_in_length_pieces_equals_one_padded_batch(trained, monkeypatch):
    # Rows of very different lengths, so a small budget cuts the batch into
    # several pieces; logits and hidden states come back in the docs' order.
    texts = ["good", "a very long and rather dull plot " * 6, "bad movie", "great", "the film was great fun"]
    docs = make_docs(trained, texts)
    shim = get_shim(trained.get_pipe("textcat").model)
    shim.module.eval()
    with torch.inference_mode():
        whole = shim.module(**shim.tokenize(docs), output_hidden_states=True)
    monkeypatch.setattr(classifier, "CPU_PIECE_TOKENS", 16)
    calls = []
    handle = shim.module.encoder.register_forward_hook(lambda *args: calls.append(1))
    pieces = shim.run(docs, is_train=False, output_hidden_states=True)
    handle.remove()
    assert len(calls) > 2
    torch.testing.assert_close(pieces.logits, whole.logits, atol=1e-5, rtol=1e-4)
    for a, b in zip(pieces.hidden_states, whole.hidden_states):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_training_in_length_pieces_gives_the_gradient_of_one_batch(bert_dir, toy_data, monkeypatch):
    nlp = make_nlp(bert_dir)
    nlp.initialize(lambda: DatasetCorpus(toy_data["train"])(nlp))
    shim = get_shim(nlp.get_pipe("textcat").model)
    for module in shim.module.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0  # the same forward twice
    docs = make_docs(nlp, ["good", "a very long and rather dull plot " * 6, "bad movie", "great fun"])
    weights = torch.tensor([1.0, -2.0, 3.0, 0.5])

    def gradient():
        shim.module.zero_grad()
        output = shim.run(docs, is_train=True, output_hidden_states=True)
        loss = (output.logits[:, 1] * weights).sum() + output.hidden_states[0].pow(2).sum()
        loss.backward()
        return [p.grad.clone() for p in shim.module.parameters() if p.grad is not None]

    whole = gradient()
    monkeypatch.setattr(classifier, "CPU_PIECE_TOKENS", 16)
    pieces = gradient()
    assert len(pieces) == len(whole) > 0
    for a, b in zip(pieces, whole):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


# Bad input


def test_missing_encoder_names_the_assets_step(tmp_path):
    nlp = make_nlp(tmp_path / "no-such-encoder")
    examples = [Example.from_dict(nlp.make_doc("good"), {"cats": {"a": 1.0, "b": 0.0}})]
    with pytest.raises(ValueError, match="fetch_assets"):
        nlp.initialize(lambda: examples)


def test_no_labels_at_initialize(bert_dir):
    nlp = make_nlp(bert_dir)
    examples = [Example.from_dict(nlp.make_doc("good"), {})]
    with pytest.raises(ValueError, match="at least 2 label"):
        nlp.initialize(lambda: examples)


def test_unknown_label_in_data(trained):
    eg = Example.from_dict(trained.make_doc("good"), {"cats": {"positive": 0.0, "negative": 0.0, "neutral": 1.0}})
    with pytest.raises(ValueError, match="does not know the label"):
        trained.update([eg])


def test_corrupt_pipeline_directory(trained, tmp_path):
    trained.to_disk(tmp_path / "pipe")
    weights = tmp_path / "pipe" / "textcat" / "model" / "model.safetensors"
    weights.write_bytes(b"not a safetensors file")
    before = sorted(p.name for p in (tmp_path / "pipe" / "textcat" / "model").iterdir())
    with pytest.raises(ValueError, match="Cannot load the transformer classifier"):
        spacy.load(tmp_path / "pipe")
    assert sorted(p.name for p in (tmp_path / "pipe" / "textcat" / "model").iterdir()) == before
    assert weights.read_bytes() == b"not a safetensors file"
    shutil.rmtree(tmp_path / "pipe" / "textcat" / "model")
    with pytest.raises(ValueError, match="incomplete"):
        spacy.load(tmp_path / "pipe")


def test_docs_without_gold_give_no_gradient(trained):
    pipe = trained.get_pipe("textcat")
    docs = [trained.make_doc("good"), trained.make_doc("bad")]
    examples = [Example.from_dict(docs[0], {"cats": {"positive": 1.0, "negative": 0.0}}), Example(docs[1], docs[1].copy())]
    scores = pipe.model.ops.asarray([[0.0, 1.0], [2.0, -1.0]], dtype="f")
    _, d_logits = pipe.get_loss(examples, scores)
    assert d_logits[1].tolist() == [0.0, 0.0]
    assert abs(float(d_logits[0].sum())) < 1e-6 and float(abs(d_logits[0]).sum()) > 0


def test_gold_labels_the_model_lacks_are_an_error_when_scoring(trained):
    # Counted as the model's first label, they would score as right or wrong by chance.
    doc = trained.make_doc("a good film")
    reference = doc.copy()
    reference.cats = {"positive": 0.0, "negative": 0.0, "neutral": 1.0}
    with pytest.raises(ValueError, match=r"label\(s\) \['neutral'\] the model does not know"):
        trained.evaluate([Example(doc, reference)])


def test_update_honours_drop_and_restores_the_model_dropout(trained, monkeypatch):
    module = trained.get_pipe("textcat").shim.module
    before = [m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)]
    seen = []
    original = module.forward

    def forward(*args, **kwargs):
        seen.append({m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)})
        return original(*args, **kwargs)

    monkeypatch.setattr(module, "forward", forward)
    eg = Example.from_dict(trained.make_doc("a good film"), {"cats": {"positive": 1.0, "negative": 0.0}})
    trained.update([eg], drop=0.3)
    assert seen and all(rates == {0.3} for rates in seen)
    assert [m.p for m in module.modules() if isinstance(m, torch.nn.Dropout)] == before


class ScalerDouble:
    """thinc's PyTorchGradScaler's interface (it needs a GPU when enabled)."""

    def __init__(self, scale, overflow=False):
        self.factor, self.overflow = scale, overflow

    def scale(self, tensors, inplace=False):
        return tensors * self.factor

    def unscale(self, tensors):
        for tensor in tensors:
            tensor.div_(self.factor)
        return self.overflow


def test_backprop_goes_through_the_shims_grad_scaler(bert_dir, toy_data):
    # float16 autocast needs the gradient scaled and unscaled, as thinc's
    # PyTorchShim does: scaled, the gradients come out the same; on an
    # overflow they are zeroed (and finish_update skips the step).
    grads = []
    for scaler in (ScalerDouble(1.0), ScalerDouble(1024.0), ScalerDouble(1024.0, overflow=True)):
        nlp = spacy.blank("en")
        nlp.add_pipe("transformer_textcat", name="textcat", config={"model": {"name": str(bert_dir), "dropout": 0.0}})
        examples = list(DatasetCorpus(toy_data["train"])(nlp))[:8]
        torch.manual_seed(0)
        nlp.initialize(lambda: examples)
        shim = get_shim(nlp.get_pipe("textcat").model)
        shim._grad_scaler = scaler
        nlp.get_pipe("textcat").update(examples, drop=0.0)
        grads.append([p.grad.clone() for p in shim.module.parameters() if p.grad is not None])
    plain, scaled, overflow = grads
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(plain, scaled))
    assert all(not g.any() for g in overflow) and any(g.any() for g in plain)


def test_balanced_class_weights_weigh_the_loss_by_class(bert_dir):
    """n / (n_classes * n_class), counted at initialize and saved; the loss
    and its gradient are those of cross-entropy with each row weighed."""
    nlp = make_nlp(bert_dir, class_weights="balanced")
    rows = [("a good film", "positive")] * 6 + [("a bad film", "negative")] * 2
    examples = [
        Example.from_dict(nlp.make_doc(text), {"cats": {"positive": float(label == "positive"), "negative": float(label == "negative")}})
        for text, label in rows
    ]
    nlp.initialize(lambda: examples)
    pipe = nlp.get_pipe("textcat")
    weights = dict(zip(pipe.labels, pipe.cfg["label_weights"]))
    assert weights == pytest.approx({"positive": 8 / (2 * 6), "negative": 8 / (2 * 2)})
    batch = [examples[0], examples[-1]]  # one positive, one negative
    logits = [[0.3, -0.2], [1.0, 0.5]]
    loss, d_logits = pipe.get_loss(batch, pipe.model.ops.asarray(logits, dtype="f"))
    index = {label: i for i, label in enumerate(pipe.labels)}
    torch_logits = torch.tensor(logits, requires_grad=True)
    target = torch.tensor([index["positive"], index["negative"]])
    expected = torch.nn.functional.cross_entropy(
        torch_logits, target, weight=torch.tensor(pipe.cfg["label_weights"]), reduction="sum"
    ) / 2
    expected.backward()
    assert loss == pytest.approx(expected.item(), rel=1e-5)
    assert numpy.allclose(d_logits, torch_logits.grad.numpy(), atol=1e-6)
    copy = make_nlp(bert_dir, class_weights="balanced")
    copy.get_pipe("textcat").from_bytes(pipe.to_bytes())
    assert copy.get_pipe("textcat").cfg["label_weights"] == pytest.approx(pipe.cfg["label_weights"])


def test_class_weights_settings(bert_dir):
    with pytest.raises(ValueError, match="class_weights must be one of"):
        make_nlp(bert_dir, class_weights="inverse")
    with pytest.raises(ValueError, match="needs exclusive_classes = true"):
        make_nlp(bert_dir, class_weights="balanced", exclusive_classes=False)


def test_mixed_precision_trains_on_a_cpu(bert_dir, toy_data):
    """spacy train with mixed_precision = true (the MiniLM configs set it)
    on a CPU: no float16 loss scaling, which thinc's scaler refuses there."""
    nlp = make_nlp(bert_dir, model={"mixed_precision": True})
    examples = list(DatasetCorpus(toy_data["train"])(nlp))[:8]
    nlp.initialize(lambda: examples)
    losses = nlp.get_pipe("textcat").update(examples, sgd=Adam(1e-3))
    assert losses["textcat"] > 0
