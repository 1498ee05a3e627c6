"""A trace of each shipped objective on fixed random tensors: per step the
plan's rows, the total loss and its terms; then the random states, the
trained maps' sums and the query sizes. For a refactor that must not change
what an objective computes: run it at two commits and diff the outputs.

    python scripts/objective_trace.py [dekd dfa cfl ksm muki uhc kd select_random paper] > trace.txt
"""
import sys
from typing import List

import torch
from thinc.api import Config

from spacy_dekd.configs import config_text
from spacy_dekd.distill.types import TeacherOutput
from spacy_dekd.models.pytorch import ClassifierOutput
from spacy_dekd.registry import registry

NAMES = ["dekd", "dfa", "cfl", "ksm", "muki", "uhc", "kd", "select_random", "paper"]


def trace(name: str, head: torch.nn.Module, steps: int = 4) -> str:
    torch.manual_seed(0)
    config = Config().from_str(config_text(name), interpolate=False)
    block = Config({"o": config["distillation"]["objective"], "system": {"seed": 0}, "distillation": {"temperature": 2.0}})
    objective = registry.resolve({"o": block.interpolate()["o"]})["o"]
    objective.initialize(multilabel=False, n_student_layers=2, student_width=4, teacher_width=6, n_teacher_layers=3, assistant_width=6)
    lines = []
    for step in range(steps):
        logits = torch.randn(8, 3, requires_grad=True)
        student_hidden = [torch.randn(8, 4, requires_grad=True) for _ in range(3)]
        plan = objective.plan(logits)
        hidden = [torch.randn(8, 6) for _ in range(4)]
        t, a = plan.teacher_query, plan.assistant_query
        teacher = TeacherOutput(torch.randn(8, 3)[t], [h[t] for h in hidden], torch.rand(8)[t])
        assistant = TeacherOutput(torch.randn(8, 3)[a], [h[a] for h in hidden[:2]], torch.rand(8)[a]) if objective.uses_assistant else None
        gold = torch.nn.functional.one_hot(torch.randint(0, 3, (8,)), 3).float()
        out = objective(ClassifierOutput(logits, student_hidden), gold, plan, teacher, assistant, teacher_head=head)
        out.total.backward()
        objective.feedback(1.0 / (step + 1))
        lines.append(f"  step {step}: selected {plan.selected.tolist()} teacher {plan.teacher_rows.tolist()} "
                     f"total {float(out.total.detach()):.7f} terms {sorted(out.terms.items())}")
    rng = {k: v.sum().item() for k, v in objective.rng_state().items()}
    maps = objective.projections()
    sums = None if maps is None else sorted((k, round(float(v.float().sum()), 6)) for k, v in maps.state_dict().items())
    selected = objective.select_queries(torch.randn(20, 3), 20, 5)
    lines.append(f"  rng {rng} maps {sums} query_sizes {objective.query_sizes(100, 30)} "
                 f"teacher_query_size {objective.teacher_query_size(16)} select_queries {[s.tolist() for s in selected]}")
    return f"{name}\n" + "\n".join(lines)


def main(argv: List[str]) -> int:
    torch.manual_seed(1)
    head = torch.nn.Linear(6, 3)  # the teacher's head, for the logits layer score
    for name in argv or NAMES:
        print(trace(name, head))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
