"""The student: the component `spacy distill` trains, seen through the
`Student` seam (types.py), and how it gets its first weights, in
`[distillation.student_init]`.

`make_student` wraps the student component in the first kind of student
registered in `dekd_students` that takes it: a torch `transformer_textcat`
(`TransformerStudent`: logits and every layer's states) or spaCy's own
`textcat` / `textcat_multilabel` with any architecture spaCy registers
(spacy_student.py: logits alone). A kind is a function (component,
architecture) → a `Student`, or None for a component it does not take; a
component no kind takes is refused in one line.

`spacy-dekd.StudentFromTeacher.v1` copies the teacher's embeddings, some of
its layers (a list, or a strategy) and its head; `spacy-dekd.StudentFromPretrained.v1`
(alias `spacy-dekd.StudentFromConfig.v1`) builds the student as its own
config says: the pretrained encoder it names, or, for spaCy's textcat, its
architecture with fresh weights. Either way the labels come from the
teacher.
"""
from pathlib import Path
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from spacy.pipeline import TextCategorizer

from ..errors import DistillationError, Errors
from ..models.pytorch import ClassifierOutput, shrink_classifier
from ..pipeline.textcat import TransformerTextCategorizer
from ..registry import registry
from .checkpoint import module_sha256
from .frozen import empty_output, exclusive
from .selectors import first_layers, last_layers, spread_layers
from .spacy_student import SpacyTextcatStudent, initialize_textcat
from .types import Student

# (student, teacher) -> a description of where the weights came from.
StudentInit = Callable[[Any, Any], str]

LAYER_STRATEGIES = {"uniform": spread_layers, "first": first_layers, "last": last_layers}


def make_student(pipe: Any, architecture: str = "") -> Student:
    """The seam over the student component: the first kind of student in
    the `dekd_students` registry that takes it. `architecture` is its
    model's registered name, for the run's header.
    RAISES DistillationError: a component no kind of student takes.
    """
    for kind in registry.dekd_students.get_all().values():
        student = kind(pipe, architecture)
        if student is not None:
            return student
    raise DistillationError(Errors.D026.format(student_name=pipe.name, kind=f"a {type(pipe).__name__}"))


@registry.dekd_students("spacy-dekd.TransformerStudent.v1")
def transformer_student(pipe: Any, architecture: str = "") -> Optional[Student]:
    """A torch `transformer_textcat`: logits and every layer's states."""
    if not isinstance(pipe, TransformerTextCategorizer):
        return None
    if pipe.runtime != "torch":
        raise DistillationError(Errors.D026.format(student_name=pipe.name, kind="an ONNX transformer_textcat (it cannot train)"))
    return TransformerStudent(pipe)


@registry.dekd_students("spacy-dekd.SpacyTextcatStudent.v1")
def spacy_textcat_student(pipe: Any, architecture: str = "") -> Optional[Student]:
    """spaCy's own `textcat` or `textcat_multilabel`: logits alone."""
    if not isinstance(pipe, TextCategorizer):  # textcat_multilabel too
        return None
    return SpacyTextcatStudent(pipe, architecture)


class TransformerStudent:
    """A torch `transformer_textcat` as the student: its logits and the
    first-token state of every layer, its torch parameters.
    """

    gives_states = True

    def __init__(self, pipe: TransformerTextCategorizer) -> None:
        self.pipe = pipe

    @property
    def name(self) -> str:
        return self.pipe.name

    @property
    def labels(self) -> Sequence[str]:
        return self.pipe.labels

    @property
    def multilabel(self) -> bool:
        return not self.pipe.exclusive_classes

    @property
    def n_layers(self) -> Optional[int]:
        return self.pipe.torch_module.n_layers

    @property
    def width(self) -> Optional[int]:
        return self.pipe.torch_module.width

    @property
    def device(self) -> torch.device:
        return self.pipe.device

    @property
    def float16(self) -> bool:
        """Whether it runs autocast in float16 (its loss is then scaled)."""
        return self.device.type == "cuda" and self.pipe.mixed_precision_dtype == "float16"

    def set_mixed_precision(self, enabled: bool) -> None:
        self.pipe.set_mixed_precision(enabled)

    def forward(self, docs: Sequence[Any], *, is_train: bool, hidden: bool = False) -> ClassifierOutput:
        return self.pipe.forward(docs, is_train=is_train, output_hidden_states=hidden)

    def empty_output(self, *, hidden: bool = False) -> ClassifierOutput:
        return empty_output(self.pipe, hidden=hidden)

    def parameters(self) -> List[torch.nn.Parameter]:
        return list(self.pipe.torch_module.parameters())

    def set_dropout(self, rate: Optional[float]) -> None:
        if rate is None:
            return
        for module in self.pipe.torch_module.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = float(rate)

    def examples_to_truth(self, examples: Sequence[Any]) -> Tuple[torch.Tensor, torch.Tensor]:
        truths, known = self.pipe.examples_to_truth(list(examples))
        to_numpy = self.pipe.model.ops.to_numpy
        return torch.as_tensor(to_numpy(truths), device=self.device), torch.as_tensor(to_numpy(known), device=self.device)

    def load(self, path: Path) -> None:
        self.pipe.load_model(path / self.name / "model")

    def digest(self) -> str:
        return module_sha256(self.pipe)

    def describe(self) -> str:
        return f"{self.n_layers} layers, width {self.width}"


def copy_labels(student: TransformerTextCategorizer, teacher: TransformerTextCategorizer) -> None:
    """Give the student the teacher's labels and class mode, or fail if it
    already has others.
    """
    if student.labels and list(student.labels) != list(teacher.labels):
        raise ValueError(
            f"Teacher labels {list(teacher.labels)} differ from student labels "
            f"{list(student.labels)}: the student must predict the teacher's classes."
        )
    teacher_exclusive = exclusive(teacher)
    if student.exclusive_classes != teacher_exclusive:
        raise ValueError(
            f"Teacher exclusive_classes={teacher_exclusive} but student "
            f"exclusive_classes={student.exclusive_classes}: set them alike."
        )
    for label in teacher.labels:
        student.add_label(label)


@registry.misc("spacy-dekd.StudentFromTeacher.v1")
def make_student_from_teacher_v1(
    layers: Union[str, List[int]] = "uniform", n_layers: int = 3
) -> StudentInit:
    """Build the student from the teacher's own weights.

    layers (Union[str, List[int]]): Teacher layers to keep (0-based), or a
        strategy: "uniform" (spread from first to last, e.g. [0, 6, 11] of
        12), "first" or "last".
    n_layers (int): How many layers a strategy keeps.
    """
    if isinstance(layers, str) and layers not in LAYER_STRATEGIES:
        raise ValueError(f"layers must be a list or one of {sorted(LAYER_STRATEGIES)}, got '{layers}'.")

    def init(student: Any, teacher: Any) -> str:
        if not isinstance(student, TransformerTextCategorizer):
            raise ValueError(
                f"spacy-dekd.StudentFromTeacher.v1 copies the teacher's layers into a transformer_textcat, but "
                f"the student component '{student.name}' is a {type(student).__name__}: use "
                "spacy-dekd.StudentFromConfig.v1, which builds it from its own config."
            )
        if not isinstance(teacher, TransformerTextCategorizer):
            raise ValueError(
                f"spacy-dekd.StudentFromTeacher.v1 copies layers of a transformer_textcat teacher, "
                f"but the teacher component '{teacher.name}' is a {type(teacher).__name__}: use "
                "spacy-dekd.StudentFromPretrained.v1 with a pretrained encoder in the student's model config."
            )
        copy_labels(student, teacher)
        module = teacher.shim.module
        if teacher.shim.runtime == "onnx":
            raise ValueError(
                f"spacy-dekd.StudentFromTeacher.v1 copies the teacher's torch layers, but the teacher "
                f"component '{teacher.name}' is an ONNX export: distil from the torch pipeline it was made "
                "from, or use spacy-dekd.StudentFromPretrained.v1."
            )
        if module is None:
            raise ValueError("The teacher component is not trained: it has no weights.")
        n_teacher = module.n_layers
        keep = LAYER_STRATEGIES[layers](n_teacher, n_layers) if isinstance(layers, str) else list(layers)
        bad = [i for i in keep if not 0 <= i < n_teacher]
        if bad:
            raise ValueError(
                f"Student layers {bad} are out of range: the teacher has {n_teacher} "
                f"layers (0..{n_teacher - 1})."
            )
        student.shim.layers = keep
        student.shim.set_module(shrink_classifier(module, keep), teacher.shim.tokenizer)
        student.model.set_dim("nO", len(student.labels), force=True)
        return f"teacher layers {keep}"

    return init


@registry.misc("spacy-dekd.StudentFromPretrained.v1")
def make_student_from_pretrained_v1() -> StudentInit:
    """Load the encoder named in the student's model config (e.g. a smaller
    pretrained model), with a fresh head over the teacher's labels.
    """

    def init(student: Any, teacher: Any) -> str:
        if not isinstance(student, TransformerTextCategorizer):
            initialize_textcat(student, teacher.labels, exclusive=exclusive(teacher))
            return "fresh weights"
        copy_labels(student, teacher)
        student.model.set_dim("nO", len(student.labels), force=True)
        student.model.initialize()
        return f"'{student.shim.name}'"

    return init


registry.misc("spacy-dekd.StudentFromConfig.v1")(make_student_from_pretrained_v1)

