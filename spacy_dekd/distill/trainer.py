"""Algorithm 1: distil a teacher (and an assistant) into a student pipeline.

`DistillTrainer` is what `spacy distill` runs (`[distillation] trainer`
names it in `dekd_trainers`). It knows the order of things, not how each is
done: prepare the run (prepare.py), open the output folder and resume from
it (output.py), run the loop (loop.py), write the last metrics.
"""
import sys
from pathlib import Path
from typing import IO, Any, Dict, Optional, Tuple

from spacy.language import Language

from ..errors import DistillationError
from ..registry import registry
from .console import Console
from .frozen import teacher_forward
from .loop import distill_loop, metrics
from .output import DIR_CHECKPOINT, DistillState, RunOutput
from .parallel import World
from .prepare import CHANCE_AUC, Run, prepare_run, resolve_distillation

__all__ = [
    "CHANCE_AUC", "DIR_CHECKPOINT", "DistillTrainer", "DistillationError", "Run", "resolve_distillation", "teacher_forward",
]


class DistillTrainer:
    """Algorithm 1 over spaCy pipelines.

    student (Language): The student pipeline; its `transformer_textcat`
        component named in `student_to_teacher` is trained.
    teacher (Language): The trained teacher pipeline.
    assistant (Optional[Language]): The trained assistant, if the router uses one.
    T (Dict[str, Any]): The resolved `[distillation]` block.
    output_path (Optional[Path]): Where each evaluation's set is saved.
    world (World): The processes of a data-parallel run (parallel.py); one
        process by default.
    """

    def __init__(
        self,
        student: Language,
        teacher: Language,
        assistant: Optional[Language],
        T: Dict[str, Any],
        *,
        output_path: Optional[Path] = None,
        stdout: IO = sys.stdout,
        world: World = World(),
    ) -> None:
        self.nlp = student
        self.teacher_nlp = teacher
        self.assistant_nlp = assistant
        self.T = T
        self.output = RunOutput(output_path)
        self.world = world
        self.console = Console(stdout, quiet=not world.is_main)

    def __call__(self, *, resume: bool = False) -> Tuple[Language, Dict[str, Any]]:
        run = prepare_run(self.nlp, self.teacher_nlp, self.assistant_nlp, self.T, world=self.world, console=self.console)
        # Rank 0 alone writes; the others wait until the output folder
        # holds one whole set before they read a checkpoint.
        if self.world.is_main:
            self.output.open()
            if not resume:
                self.output.start()
        self.world.barrier()
        try:
            state = self.output.resume(run) if resume else DistillState()
            _print_header(run)
            state = distill_loop(run, state, self.output)
            result = metrics(run, state)
            if self.world.is_main:
                self.output.write_metrics(result, state.step)
            self.world.barrier()
        finally:
            self.output.close()
        return self.nlp, result


def _print_header(run: Run) -> None:
    n_unlabelled = len(run.examples) - run.n_labelled
    examples = f"{run.n_labelled} labelled examples" + (f" and {n_unlabelled} unlabelled texts" if n_unlabelled else "")
    budget = "" if run.budget.answers is None else f", the teacher answering at most {run.budget.answers} of them"
    run.console.info(f"Distilling into '{run.student.name}': {examples}, {run.total_steps} steps{budget}")
    if run.world.distributed:
        import torch

        per_rank = "each batch split across them, rank 0 evaluating and saving"
        run.console.info(f"Data-parallel over {run.world.size} processes ({torch.distributed.get_backend()}), {per_rank}")
    run.console.info(f"Student: {run.student.describe()}, from {run.student_source}")


@registry.dekd_trainers("spacy-dekd.DistillTrainer.v1")
def make_distill_trainer_v1() -> type:
    """Algorithm 1 (`DistillTrainer`): the loop `spacy distill` runs."""
    return DistillTrainer
