"""Data-parallel `spacy distill` under torchrun: two gloo processes on tiny
models give the one-process run, resume, and fail cleanly."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import spacy
import torch
from safetensors.torch import load_file
from thinc.api import Config

from spacy_dekd.distill.parallel import World

from ..conftest import toy_rows, write_jsonl
from .conftest import DEKD_CFG, overrides, student_config

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--monitor-interval", "0.5"]


def distill_cmd(models, cfg, out, over, *, nproc=None, extra=()):
    args = [f"--{k}={v}" for k, v in over.items()]
    spacy = ["-m", "spacy", "distill", str(models["teacher"]), str(cfg), "--assistant", str(models["assistant"]), "--output", str(out), *extra, *args]
    if nproc is None:
        return [sys.executable, *spacy]
    return [*TORCHRUN, "--nproc_per_node", str(nproc), *spacy]


def run(cmd, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def weights(out):
    return load_file(str(out / "model-last" / "textcat" / "model" / "model.safetensors"))


def probabilities(pipeline_dir, data):
    nlp = spacy.load(pipeline_dir)
    texts = [json.loads(line)["text"] for line in Path(data).read_text().splitlines()]
    return torch.tensor([[doc.cats[label] for label in sorted(doc.cats)] for doc in nlp.pipe(texts)])


@pytest.fixture(scope="module")
def parallel_setup(models, toy_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("parallel")
    cfg = student_config(root)
    # Dropout off: each rank draws its own masks (parallel.py), the one thing
    # that would part the two runs beyond rounding. 15-row batches split 8/7.
    over = overrides(toy_data, models["narrow"], **{
        "distillation.dropout": 0, "distillation.max_steps": 14, "distillation.eval_frequency": 7,
        "distillation.batcher.size": 15,
    })
    return cfg, over, root


def test_shards_cover_the_rows_in_order():
    for n in (0, 1, 2, 7, 15):
        for size in (1, 2, 3):
            rows = [i for rank in range(size) for i in range(n)[World(rank, size).shard(n)]]
            assert rows == list(range(n))


@pytest.fixture(scope="module")
def unlabelled_setup(parallel_setup, toy_data):
    """40 labelled sentences, 100 unlabelled ones, half the answers the
    teacher could give: query rounds select over gathered predictions.
    """
    _, over, root = parallel_setup
    config = Config().from_disk(DEKD_CFG, interpolate=False)
    config["paths"]["unlabeled"] = None
    config["corpora"]["unlabeled"] = {"@readers": "spacy.PlainTextCorpus.v1", "path": "${paths.unlabeled}"}
    cfg = root / "unlabelled.cfg"
    config.to_disk(cfg)
    unlabelled = root / "unlabelled.txt"
    unlabelled.write_text("".join(row["text"] + "\n" for row in toy_rows(100, seed=7)), encoding="utf8")
    over = {
        **over, "paths.train": str(write_jsonl(toy_rows(40, seed=8), root / "labelled.jsonl")),
        "paths.unlabeled": str(unlabelled), "distillation.unlabeled_corpus": "corpora.unlabeled",
        "distillation.teacher_budget": 0.5, "distillation.max_steps": 0,
    }
    return cfg, over, root


@pytest.mark.parametrize("setup", ["parallel_setup", "unlabelled_setup"])
def test_two_processes_equal_one(models, toy_data, request, setup):
    cfg, over, root = request.getfixturevalue(setup)
    one, two = root / f"{setup}-one", root / f"{setup}-two"
    result = run(distill_cmd(models, cfg, one, over))
    assert result.returncode == 0, result.stderr[-3000:]
    result = run(distill_cmd(models, cfg, two, over, nproc=2))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert result.stdout.count("Saved the student") == 1  # rank 0 alone reports
    m1, m2 = (json.loads((out / "metrics.json").read_text()) for out in (one, two))
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m2["teacher_forward_passes"] == m1["teacher_forward_passes"] > 0
    assert m2["assistant_forward_passes"] == m1["assistant_forward_passes"] > 0
    assert m2["query_rounds"] == m1["query_rounds"]
    s1 = [r["scores"]["cats_macro_auc"] for r in m1["history"] if "score" in r]
    s2 = [r["scores"]["cats_macro_auc"] for r in m2["history"] if "score" in r]
    assert s2 == pytest.approx(s1, abs=1e-4)
    losses1 = [r["loss"] for r in m1["history"]]
    assert [r["loss"] for r in m2["history"]] == pytest.approx(losses1, rel=1e-4, abs=1e-6)
    # The students agree on dev to float rounding. Their weights agree as
    # closely but for the attention key biases: softmax ignores them, their
    # true gradient is 0, and Adam scales the rounding left there up to
    # learning-rate-sized steps, unlike in either run.
    p1, p2 = (probabilities(out / "model-last", toy_data["dev"]) for out in (one, two))
    assert float((p1 - p2).abs().max()) < 1e-4
    w1, w2 = weights(one), weights(two)
    assert max(float((w1[k] - w2[k]).abs().max()) for k in w1 if not k.endswith("key.bias")) < 1e-5


def test_a_run_killed_under_torchrun_resumes_to_the_uninterrupted_end(models, parallel_setup, tmp_path):
    # Dropout on: every rank's random state must come back with the checkpoint.
    cfg, over, _ = parallel_setup
    over = {**over, "distillation.dropout": 0.1}
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    result = run(distill_cmd(models, cfg, whole, over, nproc=2))
    assert result.returncode == 0, result.stderr[-3000:]
    die = tmp_path / "die.py"
    die.write_text(
        "import os\n"
        "from spacy_dekd.distill.output import RunOutput\n"
        "save = RunOutput.save\n"
        "def save_then_die(self, run, state, *args):\n"
        "    save(self, run, state, *args)\n"
        "    if state.step == 7:\n"
        "        os._exit(9)  # killed right after the first evaluation's set\n"
        "RunOutput.save = save_then_die\n"
    )
    result = run(distill_cmd(models, cfg, cut, over, nproc=2, extra=["--code", str(die)]))
    assert result.returncode != 0
    result = run(distill_cmd(models, cfg, cut, over, nproc=2, extra=["--resume"]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Resuming at step 7" in result.stdout
    resumed, uninterrupted = (json.loads((out / "metrics.json").read_text()) for out in (cut, whole))
    assert [r["step"] for r in resumed["history"]] == list(range(1, 15))
    assert [r["loss"] for r in resumed["history"]] == [r["loss"] for r in uninterrupted["history"]]
    assert resumed["teacher_forward_passes"] == uninterrupted["teacher_forward_passes"]
    w1, w2 = weights(whole), weights(cut)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)


def rank_1_at_step_4(tmp_path, action):
    """A --code file whose training step does `action` on rank 1 at step 4."""
    code = tmp_path / "rank1.py"
    code.write_text(
        "import os\n"
        "import spacy_dekd.distill.loop as loop\n"
        "from spacy_dekd.errors import DistillationError\n"
        "step = loop.step\n"
        "def failing(run, batch_ids, i):\n"
        "    if i == 3 and os.environ.get('RANK') == '1':\n"
        f"        {action}\n"
        "    return step(run, batch_ids, i)\n"
        "loop.step = failing\n"
    )
    return code


def test_a_crashing_rank_fails_the_run(models, parallel_setup, tmp_path):
    cfg, over, _ = parallel_setup
    crash = rank_1_at_step_4(tmp_path, "raise DistillationError('rank 1 fails at step 4')")
    result = run(distill_cmd(models, cfg, tmp_path / "out", over, nproc=2, extra=["--code", str(crash)]), timeout=120)
    assert result.returncode != 0
    assert "[rank 1] rank 1 fails at step 4" in result.stderr


def test_a_rank_killed_is_named_in_one_line_by_the_others(models, parallel_setup, tmp_path):
    cfg, over, _ = parallel_setup
    kill = rank_1_at_step_4(tmp_path, "os._exit(9)")
    result = run(distill_cmd(models, cfg, tmp_path / "out", over, nproc=2, extra=["--code", str(kill)]), timeout=120)
    assert result.returncode != 0
    assert "[rank 0] Another process of the run stopped (" in result.stderr
    assert "spacy_dekd/distill" not in result.stderr  # no traceback through the package


def test_launch_errors_are_one_line(models, parallel_setup, tmp_path):
    cfg, over, _ = parallel_setup
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0"}
    cmd = distill_cmd(models, cfg, tmp_path / "out", over)
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 1
    assert "LOCAL_RANK, MASTER_ADDR, MASTER_PORT are not set: launch data-parallel runs with torchrun" in result.stderr
    assert "Traceback" not in result.stderr
    if torch.cuda.device_count() == 0:
        result = run(distill_cmd(models, cfg, tmp_path / "gpu", over, nproc=2, extra=["--gpu-id", "0"]), timeout=120)
        assert result.returncode != 0
        assert "torch sees none on this node: drop --gpu-id" in result.stderr
    assert not Path(tmp_path / "out").exists()


def test_spacys_textcat_student_runs_data_parallel(models, toy_data, unlabelled_setup, tmp_path):
    """Its thinc arrays are torch tensors sharing their memory: broadcast,
    gradient averaging and the optimizer's step reach the thinc model, and
    query rounds select over the predictions gathered from both ranks.
    """
    from .test_fast_students import fast_config

    _, over, _ = unlabelled_setup
    cfg = fast_config(tmp_path, "fast_bow")
    over = {**over, "distillation.optimizer.learn_rate": 0.01}
    one, two = tmp_path / "one", tmp_path / "two"
    for out, nproc in ((one, None), (two, 2)):
        result = run(distill_cmd(models, cfg, out, over, nproc=nproc))
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    m1, m2 = (json.loads((out / "metrics.json").read_text()) for out in (one, two))
    assert (m1["world_size"], m2["world_size"]) == (1, 2)
    assert m2["teacher_forward_passes"] == m1["teacher_forward_passes"] > 0
    assert m2["query_rounds"] == m1["query_rounds"]
    assert [r["loss"] for r in m2["history"]] == pytest.approx([r["loss"] for r in m1["history"]], rel=1e-4, abs=1e-6)
    p1, p2 = (probabilities(out / "model-last", toy_data["dev"]) for out in (one, two))
    assert float((p1 - p2).abs().max()) < 1e-4
