"""One `spacy distill` step against a plain PyTorch loop doing the same work.

Both sides start from the same student weights and see the same batches of
32 examples (each batch new to the teacher cache, so the teacher runs on both
sides): tokenize, student forward, teacher forward, CE + KL (vanilla KD,
configs/kd.cfg), backward, gradient clipping, AdamW and scheduler step. The
two are interleaved batch by batch; the ratio of median step times is the
framework's overhead.

    python scripts/bench_step.py training/teacher/model-best --steps 6
"""
import argparse
import copy
import json
import statistics
import sys
import time
from pathlib import Path
from typing import List

import spacy
import torch
import torch.nn.functional as F
from spacy import util

from spacy_dekd.distill.trainer import DistillTrainer, resolve_distillation


def plain_step(student, teacher, tokenizer, texts, gold, optimizer, scheduler, *, tau, max_length):
    batch = tokenizer(texts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    batch = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
    student.train()
    logits = student(**batch).logits
    with torch.inference_mode():
        teacher_logits = teacher(**batch).logits
    ce = F.cross_entropy(logits, gold)
    kl = F.kl_div(F.log_softmax(logits / tau, -1), F.log_softmax(teacher_logits / tau, -1), reduction="batchmean", log_target=True)
    loss = 0.5 * ce + 0.5 * kl * tau * tau
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(student.parameters(), 1.0)
    optimizer.step()
    scheduler.step()
    return float(loss.detach())


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher")
    parser.add_argument("--config", type=Path, default=Path("configs/kd.cfg"))
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--set", action="append", default=[], help="config override, key=value")
    args = parser.parse_args(argv)
    overrides = {}
    for setting in args.set:
        key, _, value = setting.partition("=")
        overrides[key] = util.srsly.json_loads(value) if value[:1] in "[{0123456789" else value
    teacher = spacy.load(args.teacher)
    config = util.load_config(args.config, overrides=overrides, interpolate=False)
    nlp = util.load_model_from_config(config, auto_fill=True, validate=True)
    T = resolve_distillation(nlp)
    trainer = DistillTrainer(nlp, teacher, None, T)
    run = trainer.prepare()
    pipe = trainer.student_pipe
    # The plain loop gets its own copy of the same starting weights.
    plain_student = copy.deepcopy(pipe.shim.module)
    plain_teacher = trainer.teacher_pipe.shim.module
    optimizer, scheduler = T["optimizer"].build(plain_student.parameters(), run.total_steps)
    tau = float(nlp.config.interpolate()["distillation"]["temperature"])
    labels = list(pipe.labels)
    batch_size = 32
    ours, plain = [], []
    for step in range(args.steps):
        ids = list(range(step * batch_size, (step + 1) * batch_size))
        texts = [run.examples[i].reference.text for i in ids]
        gold = torch.tensor([labels.index(max(run.examples[i].reference.cats, key=run.examples[i].reference.cats.get)) for i in ids])
        start = time.perf_counter()
        trainer.step(run, ids, step)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        plain_step(plain_student, plain_teacher, pipe.shim.tokenizer, texts, gold, optimizer, scheduler, tau=tau, max_length=pipe.shim.max_length)
        plain.append(time.perf_counter() - start)
        print(f"  step {step}: spacy distill {ours[-1]:.3f}s, plain PyTorch {plain[-1]:.3f}s", flush=True)
    # The first step of each pays for allocations and warm-up.
    ours_med, plain_med = statistics.median(ours[1:]), statistics.median(plain[1:])
    result = {"steps": args.steps, "batch_size": batch_size, "spacy_distill_s": ours_med, "plain_pytorch_s": plain_med, "ratio": ours_med / plain_med}
    print(f"\nmedian step: spacy distill {ours_med:.3f}s, plain PyTorch {plain_med:.3f}s, ratio {result['ratio']:.3f}×")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
