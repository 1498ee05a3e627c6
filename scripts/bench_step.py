"""One `spacy distill` step against a plain PyTorch loop doing the same work.

Both sides start from the same student weights and see the same batches of
32 examples (each batch new to the teacher cache, so the teacher runs on both
sides): tokenize, student forward, teacher forward, CE + KL (vanilla KD,
configs/kd.cfg), backward, gradient clipping, AdamW and scheduler step.
The plain loop runs twice: padding each batch to its longest text, as a
plain loop usually does, and padding the same length-sorted pieces as the
component (`length_buckets`), the same arithmetic as ours. All three are
interleaved batch by batch; the ratio of median step times to the second is
the framework's overhead, to the first what the pieces save.

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

from spacy_dekd.distill import loop
from spacy_dekd.distill.console import Console
from spacy_dekd.distill.frozen import torch_module
from spacy_dekd.distill.parallel import World
from spacy_dekd.distill.prepare import prepare_run, resolve_distillation
from spacy_dekd.models.classifier import CPU_PIECE_TOKENS, length_buckets


def plain_forward(model, tokenizer, texts, *, max_length, max_tokens):
    """Logits of the texts, in pieces of at most `max_tokens` padded positions
    (None: one batch padded to its longest)."""
    encoded = tokenizer(texts, truncation=True, max_length=max_length)
    encoded = {k: v for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
    lengths = [len(ids) for ids in encoded["input_ids"]]
    pieces = [list(range(len(texts)))] if max_tokens is None else length_buckets(lengths, max_tokens)
    logits = []
    for rows in pieces:
        batch = tokenizer.pad({k: [v[i] for i in rows] for k, v in encoded.items()}, return_tensors="pt")
        logits.append(model(**batch).logits)
    order = torch.tensor([i for rows in pieces for i in rows])
    return torch.cat(logits)[torch.argsort(order)]


def plain_step(student, teacher, tokenizer, texts, gold, optimizer, scheduler, *, tau, max_length, max_tokens):
    student.train()
    logits = plain_forward(student, tokenizer, texts, max_length=max_length, max_tokens=max_tokens)
    with torch.inference_mode():
        teacher_logits = plain_forward(teacher, tokenizer, texts, max_length=max_length, max_tokens=max_tokens)
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
    run = prepare_run(nlp, teacher, None, T, world=World(), console=Console(), score_dev=False)
    pipe = run.student.pipe  # a transformer_textcat: the plain loops copy its torch module
    # Each plain loop gets its own copy of the same starting weights.
    plain_teacher = torch_module(run.teacher.pipe)
    plain = {}
    for name, max_tokens in (("plain PyTorch, one padded batch", None), ("plain PyTorch, same pieces", CPU_PIECE_TOKENS)):
        student = copy.deepcopy(pipe.shim.module)
        optimizer, scheduler = T["optimizer"].build(student.parameters(), run.total_steps)
        plain[name] = {"student": student, "optimizer": optimizer, "scheduler": scheduler, "max_tokens": max_tokens, "times": []}
    tau = float(nlp.config.interpolate()["distillation"]["temperature"])
    labels = list(pipe.labels)
    batch_size = 32
    ours = []
    for step in range(args.steps):
        ids = list(range(step * batch_size, (step + 1) * batch_size))
        texts = [run.examples[i].reference.text for i in ids]
        gold = torch.tensor([labels.index(max(run.examples[i].reference.cats, key=run.examples[i].reference.cats.get)) for i in ids])
        start = time.perf_counter()
        loop.step(run, ids, step)
        ours.append(time.perf_counter() - start)
        for p in plain.values():
            start = time.perf_counter()
            plain_step(p["student"], plain_teacher, pipe.shim.tokenizer, texts, gold, p["optimizer"], p["scheduler"],
                       tau=tau, max_length=pipe.shim.max_length, max_tokens=p["max_tokens"])
            p["times"].append(time.perf_counter() - start)
        print(f"  step {step}: spacy distill {ours[-1]:.3f}s, " + ", ".join(f"{n} {p['times'][-1]:.3f}s" for n, p in plain.items()), flush=True)
    # The first step of each pays for allocations and warm-up.
    ours_med = statistics.median(ours[1:])
    result = {"steps": args.steps, "batch_size": batch_size, "spacy_distill_s": ours_med, "plain": {}}
    print(f"\nmedian step: spacy distill {ours_med:.3f}s")
    for name, p in plain.items():
        med = statistics.median(p["times"][1:])
        result["plain"][name] = {"median_s": med, "ratio": ours_med / med}
        print(f"  {name}: {med:.3f}s, spacy distill / this = {ours_med / med:.3f}×")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
