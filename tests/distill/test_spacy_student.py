"""spaCy's own textcat as the student (spacy_student.py): its logits, and
gradients that back-propagate through each output layer as the losses say,
checked against numerical derivatives."""
import numpy
import pytest
import spacy
import torch
from spacy.pipeline import TextCategorizer
from spacy.training import Example
from thinc.api import Relu, chain

from spacy_dekd.distill.losses import kl_divergence
from spacy_dekd.distill.spacy_student import SpacyTextcatStudent, initialize_textcat, output_layer
from spacy_dekd.distill.student import make_student
from spacy_dekd.errors import DistillationError

LABELS = ["negative", "neutral", "positive"]
TEXTS = ["a fine film", "dull and far too long", "the cast is great but the script is not", "what a mess", "meh"]
TOK2VEC = {
    "@architectures": "spacy.Tok2Vec.v2",
    "embed": {"@architectures": "spacy.MultiHashEmbed.v2", "width": 8, "attrs": ["NORM", "SHAPE"], "rows": [50, 10],
              "include_static_vectors": False},
    "encode": {"@architectures": "spacy.MaxoutWindowEncoder.v2", "width": 8, "depth": 1, "window_size": 1, "maxout_pieces": 2},
}


def bow(exclusive):
    return {"@architectures": "spacy.TextCatBOW.v3", "exclusive_classes": exclusive, "ngram_size": 2, "no_output_layer": False, "length": 1024}


ARCHITECTURES = {
    # name: (factory, model config, the output layer spaCy builds it with)
    "bow": ("textcat", bow(True), "softmax_activation"),
    "bow multilabel": ("textcat_multilabel", bow(False), "logistic"),
    "bow no output layer": ("textcat", {**bow(True), "no_output_layer": True}, "sparse_linear"),
    "ensemble": ("textcat", {"@architectures": "spacy.TextCatEnsemble.v2", "tok2vec": TOK2VEC, "linear_model": bow(True)}, "softmax"),
    "ensemble multilabel": (
        "textcat_multilabel", {"@architectures": "spacy.TextCatEnsemble.v2", "tok2vec": TOK2VEC, "linear_model": bow(False)}, "logistic",
    ),
    "attention": ("textcat", {"@architectures": "spacy.TextCatParametricAttention.v1", "tok2vec": TOK2VEC, "exclusive_classes": True}, "softmax"),
    "reduce": (
        "textcat", {"@architectures": "spacy.TextCatReduce.v1", "tok2vec": TOK2VEC, "exclusive_classes": True, "use_reduce_first": False,
                    "use_reduce_last": False, "use_reduce_max": True, "use_reduce_mean": True}, "softmax",
    ),
}


def make_textcat(name, seed=0):
    factory, model, _ = ARCHITECTURES[name]
    nlp = spacy.blank("en")
    pipe = nlp.add_pipe(factory, config={"model": model})
    spacy.util.fix_random_seed(seed)
    initialize_textcat(pipe, LABELS, exclusive=factory == "textcat")
    # The output layers start at zero: give them a spread, so that their
    # inputs' gradients are not zero too.
    rng = numpy.random.default_rng(seed)
    for node in pipe.model.walk():
        for param in node.param_names:
            if node.has_param(param) and not node.get_param(param).any():
                array = node.get_param(param)
                array += rng.normal(0, 0.3, array.shape).astype(array.dtype)
    return nlp, pipe


def teacher_logits(n):
    return torch.tensor(numpy.random.default_rng(7).normal(0, 2, (n, len(LABELS))), dtype=torch.float32)


def loss_of(student, docs, target, *, is_train):
    logits = student.forward(docs, is_train=is_train).logits
    return kl_divergence(logits, target, temperature=2.0, multilabel=student.multilabel)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_logits_give_the_pipelines_own_probabilities(name):
    nlp, pipe = make_textcat(name)
    student = make_student(pipe)
    assert isinstance(student, SpacyTextcatStudent) and output_layer(pipe.model).name == ARCHITECTURES[name][2]
    docs = [nlp.make_doc(text) for text in TEXTS]
    student.set_dropout(0.0)
    for is_train in (True, False):
        logits = student.forward(docs, is_train=is_train).logits
        expected = torch.tensor(pipe.predict(docs))
        if name == "bow no output layer":
            got = logits  # its scores are its logits
        else:
            got = logits.sigmoid() if student.multilabel else logits.softmax(-1)
        assert torch.allclose(got, expected, atol=1e-5), (is_train, got, expected)
    # The pipeline still ends in its activation afterwards.
    assert output_layer(pipe.model)._func.__module__.startswith("thinc.layers")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_gradient_is_the_losses_along_random_directions(name):
    """⟨∂L/∂θ, v⟩ from the autograd bridge against (L(θ + εv) - L(θ - εv)) / 2ε
    for each parameter array θ outside the tok2vec, with L the distillation
    loss on the logits: right for every output layer (spaCy's own get_loss
    would give another loss for each). Maxout layers are piecewise linear,
    and central differences cross their kinks: theirs and the tok2vec's
    arrays (before a maxout) are checked to receive a gradient."""
    nlp, pipe = make_textcat(name)
    student = make_student(pipe)
    student.set_dropout(0.0)
    docs = [nlp.make_doc(text) for text in TEXTS]
    target = teacher_logits(len(docs))
    params = student.parameters()
    loss_of(student, docs, target, is_train=True).backward()
    tok2vec = {node.id for node in pipe.model.get_ref("tok2vec").walk()} if pipe.model.has_ref("tok2vec") else set()
    rng = numpy.random.default_rng(3)
    eps = 1e-3
    checked = 0
    for (node, _), param in zip(student._refs, params):
        assert param.grad is not None and param.grad.abs().sum() > 0, node.name
        if node.id in tok2vec or node.name == "maxout":
            continue
        direction = torch.tensor(rng.normal(0, 1, param.shape), dtype=torch.float32)
        analytic = float((param.grad.double() * direction.double()).sum())
        losses = []
        for sign in (1, -1):
            with torch.no_grad():
                param += sign * eps * direction  # in place: the thinc array moves with it
                losses.append(float(loss_of(student, docs, target, is_train=False)))
                param -= sign * eps * direction
        numeric = (losses[0] - losses[1]) / (2 * eps)
        assert numeric == pytest.approx(analytic, rel=1e-2, abs=1e-3), (name, node.name, numeric, analytic)
        checked += 1
    assert checked >= 2


def test_torch_updates_reach_the_thinc_model_and_the_thinc_gradients_are_cleared():
    nlp, pipe = make_textcat("ensemble")
    student = make_student(pipe)
    docs = [nlp.make_doc(text) for text in TEXTS]
    before = pipe.predict(docs).copy()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    loss_of(student, docs, teacher_logits(len(docs)), is_train=True).backward()
    optimizer.step()
    assert not numpy.allclose(pipe.predict(docs), before)
    for node in pipe.model.walk():
        for name in node.param_names:
            if node.has_grad(name):
                assert not node.get_grad(name).any()
    # Loading weights sets new arrays: the views follow them.
    digest = student.digest()
    pipe.model.from_bytes(pipe.model.to_bytes())
    params = student.parameters()
    assert student.digest() == digest
    with torch.no_grad():
        params[-1] += 1.0
    node, name = student._refs[-1]
    assert numpy.array_equal(node.get_param(name), params[-1].detach().numpy())


def test_what_a_spacy_student_cannot_do_is_one_line():
    nlp, pipe = make_textcat("bow")
    bad = TextCategorizer(nlp.vocab, chain(pipe.model, Relu(nO=3, nI=3)), name="relu", threshold=0.0)
    with pytest.raises(DistillationError, match=r"\[D044\] The student component 'relu' ends in a 'relu' layer"):
        make_student(bad)
    listening = spacy.blank("en")
    listening.add_pipe("tok2vec")
    textcat = listening.add_pipe("textcat", config={"model": {
        "@architectures": "spacy.TextCatReduce.v1", "exclusive_classes": True, "use_reduce_first": False, "use_reduce_last": False,
        "use_reduce_max": False, "use_reduce_mean": True,
        "tok2vec": {"@architectures": "spacy.Tok2VecListener.v1", "width": 96, "upstream": "tok2vec"}}})
    with pytest.raises(DistillationError, match=r"\[D043\] The student component 'textcat' listens to the pipeline's 'tok2vec'"):
        make_student(textcat)
    student = make_student(pipe)
    with pytest.raises(DistillationError, match=r"\[D045\]"):
        student.forward([nlp.make_doc("a")], is_train=True, hidden=True)
    with pytest.raises(ValueError, match="The teacher's classes are multilabel: make the student a spaCy textcat_multilabel"):
        initialize_textcat(spacy.blank("en").add_pipe("textcat"), LABELS, exclusive=False)


def test_gold_rows_without_cats_are_unknown():
    nlp, pipe = make_textcat("bow")
    student = make_student(pipe)
    examples = [
        Example.from_dict(nlp.make_doc("good"), {"cats": {"negative": 0.0, "neutral": 0.0, "positive": 1.0}}),
        Example(nlp.make_doc("unlabelled"), nlp.make_doc("unlabelled")),
    ]
    truths, known = student.examples_to_truth(examples)
    assert truths.tolist() == [[0, 0, 1], [0, 0, 0]] and known.tolist() == [[1, 1, 1], [0, 0, 0]]
