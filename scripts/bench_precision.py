"""float32 against bfloat16 autocast on this machine, side by side in one
process: the teacher's answers (inference, as `teacher_mixed_precision`
runs them) and the student's training steps (as `mixed_precision` runs
them), each timed in alternating rounds; prints seconds, the ratio and how
far the teacher's logits move.

    python scripts/bench_precision.py training/teacher/model-best assets/all-MiniLM-L6-v2 \\
        corpus/movies/dev.jsonl [--texts 256] [--rounds 3]
"""
import argparse
import json
import sys
import time
from pathlib import Path
from typing import List

import spacy
import torch

import spacy_dekd  # noqa: F401
from spacy_dekd.models.classifier import cpu_has_bf16


def main(argv: List[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("teacher", help="a trained pipeline with a transformer_textcat")
    parser.add_argument("student_encoder", help="a Hugging Face encoder folder for the student")
    parser.add_argument("texts", type=Path, help=".jsonl with a text field")
    parser.add_argument("--texts-n", "--texts", dest="n", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    print(f"CPU bfloat16 instructions: {cpu_has_bf16()}; torch threads: {torch.get_num_threads()}")
    texts = [json.loads(line)["text"] for line in args.texts.read_text(encoding="utf8").splitlines()][: args.n]
    teacher = spacy.load(args.teacher).get_pipe("textcat").shim
    nlp = spacy.blank("en")
    student = nlp.add_pipe("transformer_textcat", config={"model": {"name": args.student_encoder, "pooling": "mean", "max_length": 64}})
    for label in ("negative", "positive"):
        student.add_label(label)
    student.model.set_dim("nO", 2)
    student.model.initialize()
    shim = student.shim
    optimizer = torch.optim.AdamW(shim.module.parameters(), lr=1e-4)
    docs = [nlp.make_doc(text) for text in texts]

    def answer(bf16: bool):
        teacher.set_mixed_precision(bf16)
        start = time.perf_counter()
        logits = teacher.run(docs, is_train=False).logits
        return time.perf_counter() - start, logits

    def train(bf16: bool) -> float:
        shim.set_mixed_precision(bf16)
        start = time.perf_counter()
        for i in range(0, len(docs), 32):
            loss = shim.run(docs[i : i + 32], is_train=True).logits.logsumexp(-1).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return (time.perf_counter() - start) / max(1, len(docs) // 32)

    for r in range(args.rounds):
        (t32, l32), (t16, l16) = answer(False), answer(True)
        s32, s16 = train(False), train(True)
        agree = (l32.argmax(-1) == l16.argmax(-1)).float().mean()
        print(
            f"round {r + 1}: teacher answers {t32:.2f} s vs {t16:.2f} s ({t32 / t16:.2f}x), "
            f"max |logit difference| {(l32 - l16).abs().max():.3f}, same argmax {agree:.3f}; "
            f"student step {s32:.3f} s vs {s16:.3f} s ({s32 / s16:.2f}x)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
