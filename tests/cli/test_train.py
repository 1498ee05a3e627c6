"""`spacy train` fine-tunes the component through spaCy's own CLI, and the
result works with `spacy evaluate` and `spacy.load` in a fresh process."""
import json
import subprocess
import sys
from pathlib import Path

from spacy_dekd.corpus import DatasetCorpus, write_docbin

ROOT = Path(__file__).parents[2]


def run(*args, cwd=None):
    result = subprocess.run([sys.executable, "-m", "spacy", *args], capture_output=True, text=True, cwd=cwd)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result


def test_spacy_train_evaluate_and_load(bert_dir, toy_data, tmp_path):
    out = tmp_path / "teacher"
    run(
        "train", str(ROOT / "configs" / "teacher.cfg"), "--output", str(out),
        "--paths.train", str(toy_data["train"]), "--paths.dev", str(toy_data["dev"]),
        "--paths.encoder", str(bert_dir), "--training.max_epochs", "6",
        "--training.eval_frequency", "20", "--training.batcher.size", "16",
        "--training.optimizer.learn_rate.initial_rate", "0.001",
        "--training.optimizer.learn_rate.total_steps", "60",
    )
    assert (out / "model-best" / "textcat" / "model" / "model.safetensors").exists()
    import spacy

    nlp = spacy.blank("en")
    write_docbin(DatasetCorpus(toy_data["dev"])(nlp), tmp_path / "dev.spacy")
    run("evaluate", str(out / "model-best"), str(tmp_path / "dev.spacy"), "--output", str(tmp_path / "scores.json"))
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["cats_accuracy"] >= 0.9
    # spacy.load in a process that never imports spacy_dekd itself.
    code = f"import spacy; print(spacy.load({str(out / 'model-best')!r})('a great film').cats['positive'])"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert float(result.stdout.strip().splitlines()[-1]) > 0.5


def test_your_own_csv_through_the_workflow_scripts(bert_dir, toy_data, tmp_path):
    """scripts/train_teacher.py sets the teacher's steps from the data (its
    last step is the one scored), and scripts/evaluate.py scores a csv, with
    columns and labels of the user's own."""
    import csv

    def to_csv(jsonl, path):
        rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
        with path.open("w", newline="") as file_:
            writer = csv.writer(file_)
            writer.writerow(["sentence", "sentiment"])
            writer.writerows([row["text"], "pos" if row["label"] == "positive" else "neg"] for row in rows)
        return path

    train, dev = to_csv(toy_data["train"], tmp_path / "train.csv"), to_csv(toy_data["dev"], tmp_path / "dev.csv")
    columns = []
    for split in ("train", "dev"):
        columns += [f"--corpora.{split}.text_field", "sentence", f"--corpora.{split}.label_field", "sentiment"]
    out = tmp_path / "teacher"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "train_teacher.py"), str(ROOT / "configs" / "teacher.cfg"), str(out),
         "--epochs", "6", "--paths.train", str(train), "--paths.dev", str(dev), "--paths.encoder", str(bert_dir),
         "--training.batcher.size", "16", "--training.optimizer.learn_rate.initial_rate", "0.001", *columns],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "60 steps (6 epochs)" in result.stdout  # 160 rows in batches of 16
    metrics = tmp_path / "metrics"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), str(dev), str(metrics), f"teacher={out / 'model-best'}",
         "--text-field", "sentence", "--label-field", "sentiment"],
        capture_output=True, text=True,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    scores = json.loads((metrics / "teacher.json").read_text())
    assert scores["cats_accuracy"] >= 0.9 and set(scores["cats_f_per_type"]) == {"neg", "pos"}
