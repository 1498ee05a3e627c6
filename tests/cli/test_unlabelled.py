"""Unlabelled text, query rounds and the teacher budget, on tiny models."""
import json
import math
import os
import random
import subprocess
import sys

import pytest
import spacy
import torch
from thinc.api import Config

import spacy_dekd.distill.frozen as frozen_module
import spacy_dekd.distill.loop as loop_module
from spacy_dekd.cli.distill import distill
from spacy_dekd.corpus import DatasetCorpus
from spacy_dekd.distill.trainer import DistillationError

from ..conftest import toy_rows, write_jsonl
from .conftest import DEKD_CFG, accuracy, fail_line, overrides, scores_and_losses, spacy_cli, weights

SELECTORS = {
    "entropy": {"@dekd_selectors": "spacy-dekd.EntropySelector.v1", "ratio": 0.5},
    "margin": {"@dekd_selectors": "spacy-dekd.MarginSelector.v1", "ratio": 0.5},
    "least_confidence": {"@dekd_selectors": "spacy-dekd.LeastConfidenceSelector.v1", "ratio": 0.5},
    "random": {"@dekd_selectors": "spacy-dekd.RandomSelector.v1", "ratio": 0.5, "seed": 1},
    "all": {"@dekd_selectors": "spacy-dekd.AllSelector.v1", "seed": 1},
    "diverse": {"@dekd_selectors": "spacy-dekd.DiverseEntropySelector.v1", "ratio": 0.5, "seed": 1},
}


def config_with(tmp_path, *, selector="entropy", teacher_only=False, base=DEKD_CFG):
    """A student config with unlabelled text read by spaCy's PlainTextCorpus."""
    config = Config().from_disk(base, interpolate=False)
    config["paths"]["unlabeled"] = None
    config["corpora"]["unlabeled"] = {"@readers": "spacy.PlainTextCorpus.v1", "path": "${paths.unlabeled}"}
    config["distillation"]["objective"]["selector"] = SELECTORS[selector]
    if teacher_only:
        config["distillation"]["objective"]["teacher_assistant"]["router"] = {
            "@dekd_routers": "spacy-dekd.TeacherOnlyRouter.v1"
        }
    path = tmp_path / "student.cfg"
    config.to_disk(path)
    return path


def unlabelled_overrides(toy_data, models, texts, **extra):
    return overrides(
        toy_data, models["narrow"],
        **{"paths.train": str(texts["labelled"]), "paths.unlabeled": str(texts["unlabelled"]),
           "distillation.unlabeled_corpus": "corpora.unlabeled", **extra},
    )


def count_forwards(monkeypatch):
    """Texts each frozen model runs on, told apart by depth (teacher 4, assistant 2)."""
    seen = {"teacher": [], "assistant": []}
    original = frozen_module.teacher_forward

    def counting(pipe, docs, **kwargs):
        seen["teacher" if pipe.shim.module.n_layers == 4 else "assistant"].extend(doc.text for doc in docs)
        return original(pipe, docs, **kwargs)

    monkeypatch.setattr(frozen_module, "teacher_forward", counting)
    return seen


def test_unlabelled_text_from_a_plain_text_corpus_trains(models, toy_data, texts, tmp_path, monkeypatch):
    seen = count_forwards(monkeypatch)
    metrics = distill(
        str(models["teacher"]), config_with(tmp_path), tmp_path / "out", assistant_path=str(models["assistant"]),
        overrides=unlabelled_overrides(toy_data, models, texts),
    )
    assert metrics["labeled_examples"] == 40 and metrics["unlabeled_examples"] == 200
    rounds = metrics["query_rounds"]
    # Epoch 0 learns from the 40 labelled examples; epochs 1 and 2 start with
    # a round over the pool: r = 0.5 of the unanswered texts, split in halves.
    assert [r["epoch"] for r in rounds] == [1, 2]
    assert [r["candidates"] for r in rounds] == [200, 100]
    assert [(r["teacher"], r["assistant"]) for r in rounds] == [(50, 50), (25, 25)]
    assert len(seen["teacher"]) == metrics["teacher_forward_passes"]
    assert len(seen["assistant"]) == metrics["assistant_forward_passes"]
    # Answered texts joined the training set: more steps than 3 epochs of 40.
    assert metrics["steps"] == 3 * 3 + math.ceil(100 / 16) + math.ceil(150 / 16)
    student = spacy.load(tmp_path / "out" / "model-best")
    assert accuracy(student, toy_data["dev"]) >= 0.9


@pytest.mark.parametrize("selector", sorted(SELECTORS))
@pytest.mark.parametrize("budget", [0.25, 0.6])
def test_the_teacher_budget_is_never_exceeded(models, toy_data, texts, tmp_path, monkeypatch, selector, budget):
    seen = count_forwards(monkeypatch)
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.teacher_budget": budget})
    metrics = distill(
        str(models["teacher"]), config_with(tmp_path, selector=selector), tmp_path / "out",
        assistant_path=str(models["assistant"]), overrides=over,
    )
    cap = math.ceil(budget * 240)
    assert metrics["teacher_budget_passes"] == cap
    assert len(seen["teacher"]) == metrics["teacher_forward_passes"] <= cap
    # The rounds spend what the labelled batches leave, not less: the budget
    # is the limit, and there are texts enough to spend it on.
    answered = sum(r["teacher"] for r in metrics["query_rounds"])
    labelled_queries = metrics["teacher_forward_passes"] - answered
    assert answered >= cap - labelled_queries - 40


def test_entropy_rounds_ask_about_the_texts_the_student_is_unsure_of(models, toy_data, texts, tmp_path, monkeypatch):
    # With the teacher only and a budget of one text for the round, the round
    # asks about the pool's most uncertain text by the student's prediction.
    seen = count_forwards(monkeypatch)
    scored, asked = [], []
    original_predict = loop_module.predict
    original_round = loop_module.query_round

    def predict(run, examples, batch_size=1024, **kwargs):
        chunks = list(original_predict(run, examples, batch_size, **kwargs))
        logits = torch.cat(chunks)
        entropy = -(logits.softmax(-1) * logits.log_softmax(-1)).sum(-1)
        scored.append(examples[int(entropy.argmax())].text)
        yield from chunks

    def query_round(run, epoch):
        before = len(seen["teacher"])
        original_round(run, epoch)
        asked.append(seen["teacher"][before:])

    monkeypatch.setattr(loop_module, "predict", predict)
    monkeypatch.setattr(loop_module, "query_round", query_round)
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.max_epochs": 2})
    over["distillation.objective.alignment_weight"] = 0
    # Batches of 16, 16 and 8 labelled examples, half of each asked: 20 an
    # epoch, all 40 over two; one more for the single round.
    over["distillation.teacher_budget"] = 41 / 240
    distill(str(models["teacher"]), config_with(tmp_path, teacher_only=True), tmp_path / "out", overrides=over)
    assert asked == [[scored[0]]]


@pytest.mark.parametrize("selector", ["entropy", "diverse"])
def test_a_diverse_round_asks_once_about_copies_of_a_text(models, toy_data, texts, tmp_path, monkeypatch, selector):
    # A pool of 50 texts, each 4 times: the round may ask 12. Entropy asks
    # about the copies of the few texts the student is least sure of; the
    # diverse selector (4 candidates an answer: 12 texts' copies) about 12
    # different texts.
    pool = tmp_path / "copies.txt"
    lines = [row["text"] for row in toy_rows(50, seed=9)]
    pool.write_text("".join(line + "\n" for line in lines * 4), encoding="utf8")
    seen = count_forwards(monkeypatch)
    asked = []
    original_round = loop_module.query_round

    def query_round(run, epoch):
        before = len(seen["teacher"])
        original_round(run, epoch)
        asked.extend(seen["teacher"][before:])

    monkeypatch.setattr(loop_module, "query_round", query_round)
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.max_epochs": 2, "paths.unlabeled": str(pool)})
    over["distillation.objective.alignment_weight"] = 0
    # 40 labelled examples asked over two epochs, 12 for the round.
    over["distillation.teacher_budget"] = 52 / 240
    cfg = config_with(tmp_path, selector=selector, teacher_only=True)
    distill(str(models["teacher"]), cfg, tmp_path / "out", overrides=over)
    assert len(asked) == 12
    if selector == "diverse":
        assert len(set(asked)) == 12
    else:
        assert len(set(asked)) <= 6


def test_a_dataset_corpus_without_a_label_column_is_unlabelled_text(tmp_path):
    path = write_jsonl([{"text": "a good film"}, {"text": "a dull plot"}], tmp_path / "texts.jsonl")
    examples = list(DatasetCorpus(path, label_field=None)(spacy.blank("en")))
    assert [eg.reference.text for eg in examples] == ["a good film", "a dull plot"]
    assert all(eg.reference.cats == {} for eg in examples)


def test_labels_in_the_unlabelled_corpus_are_ignored_with_one_warning(models, toy_data, texts, tmp_path):
    cfg = config_with(tmp_path)
    config = Config().from_disk(cfg, interpolate=False)
    config["corpora"]["unlabeled"] = {"@readers": "spacy-dekd.DatasetCorpus.v1", "path": str(texts["labelled"])}
    config.to_disk(cfg)
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.max_epochs": 2})
    args = [f"--{k}={v}" for k, v in over.items() if k != "paths.unlabeled"]
    result = spacy_cli("distill", str(models["teacher"]), str(cfg), "--assistant", str(models["assistant"]), *args)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    warnings = [line for line in result.stdout.splitlines() if "have labels" in line]
    assert len(warnings) == 1 and "40 of 40" in warnings[0] and "ignored" in warnings[0]


# Bad input: one line naming the setting, exit 1, nothing written.


def distill_cli_args(models, over):
    return [str(models["teacher"]), "--assistant", str(models["assistant"]), *[f"--{k}={v}" for k, v in over.items()]]


@pytest.mark.parametrize("budget", [0, -0.5, 1.5])
def test_budget_outside_unit_interval(models, toy_data, texts, tmp_path, budget):
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.teacher_budget": budget})
    out = tmp_path / "out"
    result = spacy_cli("distill", *distill_cli_args(models, over)[:1], str(config_with(tmp_path)), *distill_cli_args(models, over)[1:], "--output", str(out))
    line = fail_line(result)
    assert "teacher_budget" in line and "(0, 1]" in line and "Traceback" not in result.stdout + result.stderr
    assert not (out / "model-last").exists()


def test_budget_below_what_the_labelled_set_needs(models, toy_data, texts, tmp_path):
    # Vanilla KD asks the teacher about each of the 40 labelled examples.
    cfg = config_with(tmp_path, selector="all", teacher_only=True, base=DEKD_CFG.parent / "kd.cfg")
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.teacher_budget": 0.1})
    result = spacy_cli("distill", str(models["teacher"]), str(cfg), *[f"--{k}={v}" for k, v in over.items()])
    line = fail_line(result)
    assert "teacher_budget = 0.1 allows 24" in line and "need up to 40" in line and "at least 0.167" in line


def test_empty_unlabelled_corpus(models, toy_data, texts, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf8")
    over = unlabelled_overrides(toy_data, models, texts, **{"paths.unlabeled": str(empty)})
    with pytest.raises(DistillationError, match=r"unlabelled corpus 'corpora.unlabeled' .*unlabeled_corpus.* is empty"):
        distill(str(models["teacher"]), config_with(tmp_path), tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over)
    assert not (tmp_path / "out" / "model-last").exists()


def test_resume_keeps_what_the_rounds_answered(models, toy_data, texts, tmp_path):
    over = unlabelled_overrides(toy_data, models, texts, **{"distillation.eval_frequency": 4, "distillation.max_steps": 8})
    cfg = config_with(tmp_path)
    first = distill(str(models["teacher"]), cfg, tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over)
    assert len(first["query_rounds"]) == 1
    over["distillation.max_steps"] = 0
    second = distill(str(models["teacher"]), cfg, tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over, resume=True)
    assert [r["epoch"] for r in second["query_rounds"]] == [1, 2]
    assert second["query_rounds"][0] == first["query_rounds"][0]
    state = json.loads((tmp_path / "out" / "checkpoint" / "state.json").read_text())
    assert state["rounds_done"] == 2


@pytest.mark.parametrize("selector", ["entropy", "random", "diverse"])
def test_a_run_killed_in_the_middle_of_a_round_resumes_bit_identical(models, toy_data, texts, tmp_path, monkeypatch, selector):
    # The teacher answers a round 8 texts at a time; the kill comes at its
    # third call of the second round: the round's student pass is done and
    # some answers are made, none saved. Dropout on, so the random states
    # must come back too.
    monkeypatch.setattr(frozen_module, "ANSWER_CHUNK", 8)
    over = unlabelled_overrides(
        toy_data, models, texts, **{"distillation.eval_frequency": 2, "distillation.dropout": 0.1}
    )
    cfg = config_with(tmp_path, selector=selector)
    teacher, assistant = str(models["teacher"]), str(models["assistant"])
    whole = distill(teacher, cfg, tmp_path / "whole", assistant_path=assistant, overrides=over)
    assert len(whole["query_rounds"]) == 2

    seen = {"round": 0, "calls": 0}
    original_round, original_forward = loop_module.query_round, frozen_module.teacher_forward

    def counted_round(run, epoch):
        seen["round"] += 1
        original_round(run, epoch)

    def dying_forward(pipe, docs, **kwargs):
        if seen["round"] == 2 and pipe.shim.module.n_layers == 4:
            seen["calls"] += 1
            if seen["calls"] == 3:
                raise KeyboardInterrupt
        return original_forward(pipe, docs, **kwargs)

    monkeypatch.setattr(loop_module, "query_round", counted_round)
    monkeypatch.setattr(frozen_module, "teacher_forward", dying_forward)
    with pytest.raises(KeyboardInterrupt):
        distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over)
    assert seen["calls"] == 3
    monkeypatch.setattr(frozen_module, "teacher_forward", original_forward)
    seen["round"] = 0
    steps, original_step = [], loop_module.step
    monkeypatch.setattr(loop_module, "step", lambda run, ids, i: steps.append(i) or original_step(run, ids, i))
    resumed = distill(teacher, cfg, tmp_path / "cut", assistant_path=assistant, overrides=over, resume=True)
    # It went on from the last set saved before the round, and ran that round again.
    assert seen["round"] == 1 and 0 < steps[0] < whole["steps"]
    assert scores_and_losses(resumed) == scores_and_losses(whole)
    assert resumed["query_rounds"] == whole["query_rounds"]
    assert resumed["teacher_forward_passes"] == whole["teacher_forward_passes"]
    assert weights(tmp_path / "cut" / "model-last") == weights(tmp_path / "whole" / "model-last")


def test_a_pool_sample_scores_part_of_the_pool_within_the_budget(models, toy_data, texts, tmp_path, monkeypatch):
    seen = count_forwards(monkeypatch)
    over = unlabelled_overrides(
        toy_data, models, texts, **{"distillation.teacher_budget": 0.25, "distillation.pool_sample": 50}
    )
    cfg = config_with(tmp_path)
    metrics = distill(str(models["teacher"]), cfg, tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over)
    assert [r["candidates"] for r in metrics["query_rounds"]] == [50, 50]
    assert len(seen["teacher"]) == metrics["teacher_forward_passes"] <= math.ceil(0.25 * 240)
    again = distill(str(models["teacher"]), cfg, tmp_path / "again", assistant_path=str(models["assistant"]), overrides=over)
    assert again["query_rounds"] == metrics["query_rounds"]  # the draws are seeded


@pytest.mark.parametrize("content,message", [
    ("good line\ncafé\n".encode("latin-1"), "is not UTF-8: line 2, byte 0xe9 at column 4"),
    (b"text\n\x00\x01\x02\n", "is not a text file: line 2 holds a NUL byte"),
])
def test_a_pool_file_that_is_not_text_is_refused_in_one_line(models, toy_data, texts, tmp_path, content, message):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(content)
    over = unlabelled_overrides(toy_data, models, texts, **{"paths.unlabeled": str(bad)})
    out = tmp_path / "out"
    result = spacy_cli("distill", str(models["teacher"]), str(config_with(tmp_path)), "--output", str(out),
                       "--assistant", str(models["assistant"]), *[f"--{k}={v}" for k, v in over.items()])
    line = fail_line(result)
    assert "[D031] Cannot read the corpus 'corpora.unlabeled'" in line and message in line
    assert "Traceback" not in result.stdout + result.stderr and not out.exists()


def test_blank_lines_are_skipped_counted_and_never_sent_to_the_teacher(models, toy_data, texts, tmp_path, monkeypatch, capsys):
    seen = count_forwards(monkeypatch)
    pool = tmp_path / "blanks.txt"
    pool.write_text("\n   \n".join(row["text"] for row in toy_rows(30, seed=9)) + "\n\n\t\n", encoding="utf8")
    over = unlabelled_overrides(toy_data, models, texts, **{"paths.unlabeled": str(pool), "distillation.teacher_budget": 0.6})
    metrics = distill(str(models["teacher"]), config_with(tmp_path), tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over)
    assert metrics["unlabeled_examples"] == 30
    assert "31 blank texts in the unlabelled corpus 'corpora.unlabeled' are skipped" in capsys.readouterr().out
    assert all(text.strip() for text in seen["teacher"] + seen["assistant"])


def test_a_pool_that_changes_under_resume_is_refused(models, toy_data, texts, tmp_path):
    pool = tmp_path / "pool.txt"
    pool.write_bytes(texts["unlabelled"].read_bytes())
    over = unlabelled_overrides(toy_data, models, texts, **{"paths.unlabeled": str(pool), "distillation.max_steps": 4, "distillation.eval_frequency": 4})
    cfg = config_with(tmp_path)
    distill(str(models["teacher"]), cfg, tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over)
    with pool.open("a", encoding="utf8") as f:
        f.write("one more text\n")
    over["distillation.max_steps"] = 8
    with pytest.raises(DistillationError, match=r"Cannot resume the run in .*: corpus\.pool\.\w+.* from when it started"):
        distill(str(models["teacher"]), cfg, tmp_path / "out", assistant_path=str(models["assistant"]), overrides=over, resume=True)


def test_a_pool_rewritten_while_the_run_reads_it_stops_the_run(models, toy_data, texts, tmp_path):
    """The pool file rewritten after its first evaluation: the run stops in
    one line at the next check, and the evaluation saved before stays whole."""
    pool = tmp_path / "pool.txt"
    pool.write_bytes(texts["unlabelled"].read_bytes())

    @spacy.registry.callbacks("test.rewrite_pool.v1")
    def rewrite_pool():
        def after_step(nlp, record):
            if record["step"] == 3:
                pool.write_text("".join(row["text"][::-1] + "\n" for row in toy_rows(50, seed=3)), encoding="utf8")
        return after_step

    over = unlabelled_overrides(toy_data, models, texts, **{
        "paths.unlabeled": str(pool), "distillation.max_steps": 6, "distillation.eval_frequency": 2,
        "distillation.after_step": {"@callbacks": "test.rewrite_pool.v1"},
    })
    out = tmp_path / "out"
    with pytest.raises(DistillationError, match=r"\[D040\] The unlabelled text '.*pool.txt' was changed on disk while the run read it"):
        distill(str(models["teacher"]), config_with(tmp_path, teacher_only=True), out, overrides=over)
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["history"][-1]["step"] == 2  # saved before the file changed, nothing after
    assert spacy.load(out / "model-last").get_pipe("textcat").labels == ("negative", "positive")


@pytest.mark.parametrize("name,found", [("pool.csv", "is not a .txt file"), ("folder", "holds no .txt file"), ("none.txt.gz", "does not exist")])
def test_a_pool_that_is_not_text_files_is_named_so(models, toy_data, texts, tmp_path, name, found):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
        (path / "pool.csv").write_text("text\na film\n", encoding="utf8")
    elif name.endswith(".csv"):
        path.write_text("text\na film\n", encoding="utf8")
    over = unlabelled_overrides(toy_data, models, texts, **{"paths.unlabeled": str(path)})
    with pytest.raises(DistillationError, match=f"reads .txt files, a text a line, and '.*{name}' {found}"):
        distill(str(models["teacher"]), config_with(tmp_path, teacher_only=True), tmp_path / "out", overrides=over)
    assert not (tmp_path / "out").exists()


def peak_rss_mib(args):
    """Peak RSS of one `python -m spacy ...` process, from wait4."""
    proc = subprocess.Popen([sys.executable, "-m", "spacy", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    assert status == 0, output[-2000:]
    return usage.ru_maxrss / 1024


def test_a_large_pool_costs_bytes_a_text_not_its_docs(models, toy_data, texts, tmp_path):
    # 50,000 texts as spaCy Examples would take ~1.3 GB (27 KiB each); on
    # disk the pool adds 16 bytes a text, and a round's transient arrays
    # some more. Asserted loosely: under 2 KiB a text beyond a 500-text run.
    rng = random.Random(0)
    words = [word for row in toy_rows(50, seed=3) for word in row["text"].split()]
    rss = {}
    for n in (500, 50_000):
        pool = tmp_path / f"pool-{n}.txt"
        pool.write_text("".join(" ".join(rng.choices(words, k=15)) + "\n" for _ in range(n)), encoding="utf8")
        over = unlabelled_overrides(toy_data, models, texts, **{
            "paths.unlabeled": str(pool), "distillation.teacher_budget": 0.01 if n > 500 else 0.5,
            "distillation.max_epochs": 2, "distillation.max_steps": 12,
        })
        cfg = config_with(tmp_path, teacher_only=True)
        rss[n] = peak_rss_mib(["distill", str(models["teacher"]), str(cfg), "--output", str(tmp_path / f"out-{n}"),
                               *[f"--{k}={v}" for k, v in over.items()]])
    assert (rss[50_000] - rss[500]) * 2**20 / 49_500 < 2048, rss


@pytest.mark.parametrize("mc_samples", [0, 2])
def test_a_round_answers_its_texts_a_chunk_of_docs_at_a_time(models, texts, monkeypatch, mc_samples):
    # The same answers (logits, hidden states, uncertainty) whether a round's
    # texts run in one call or in chunks; no call sees more than a chunk.
    from spacy_dekd.distill.examples import RunExamples
    from spacy_dekd.distill.frozen import FrozenModel
    from spacy_dekd.distill.parallel import World

    teacher = spacy.load(models["teacher"]).get_pipe("textcat")
    pool = [line for line in texts["unlabelled"].read_text(encoding="utf8").splitlines() if line.strip()]
    examples = RunExamples(spacy.blank("en"), [], [(text, None) for text in pool])
    ids = torch.arange(0, len(pool), 3)
    original = frozen_module.teacher_forward

    def answers(chunk):
        monkeypatch.setattr(frozen_module, "ANSWER_CHUNK", chunk)
        sizes = []

        def sized(pipe, docs, **kwargs):
            sizes.append(len(docs))
            return original(pipe, docs, **kwargs)

        monkeypatch.setattr(frozen_module, "teacher_forward", sized)
        torch.manual_seed(0)
        frozen = FrozenModel.create(teacher, len(examples), hidden=True, mc_samples=mc_samples, role="teacher")
        out = frozen.answer(examples, ids, torch.arange(ids.numel()), torch.zeros((0, 2)), World())
        return out, sizes

    whole, whole_sizes = answers(4096)
    chunked, sizes = answers(7)
    assert whole_sizes == [ids.numel()] and max(sizes) <= 7 and sum(sizes) == ids.numel()
    assert torch.allclose(chunked.logits, whole.logits, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(chunked.hidden_states, whole.hidden_states))
    if mc_samples:
        assert chunked.uncertainty.shape == (ids.numel(),)
    else:
        assert chunked.uncertainty is None and whole.uncertainty is None


def test_a_long_answer_reports_its_progress_chunk_by_chunk(models, texts, monkeypatch):
    from spacy_dekd.distill.examples import RunExamples, TextPool
    from spacy_dekd.distill.frozen import FrozenModel
    from spacy_dekd.distill.parallel import World

    monkeypatch.setattr(frozen_module, "ANSWER_CHUNK", 8)
    teacher = spacy.load(models["teacher"])
    examples = RunExamples(teacher, [], TextPool.read([texts["unlabelled"]]))
    frozen = FrozenModel.create(teacher.get_pipe("textcat"), len(examples), hidden=False, mc_samples=0, role="teacher")
    heard = []
    ids = torch.arange(20)
    out = frozen.answer(examples, ids, torch.arange(20), torch.zeros((0, 2)), World(), progress=lambda *args: heard.append(args))
    assert out.logits.shape == (20, 2) and [(done, total) for done, total, _ in heard] == [(8, 20), (16, 20), (20, 20)]
    assert all(seconds >= 0 for _, _, seconds in heard)
    heard.clear()
    frozen.answer(examples, torch.arange(20, 26), torch.arange(6), torch.zeros((0, 2)), World(), progress=lambda *args: heard.append(args))
    assert heard == []  # one chunk: nothing to report
