"""How a student component gets its first weights, in `[distillation.student_init]`.

`spacy-dekd.StudentFromTeacher.v1` copies the teacher's embeddings, some of
its layers (a list, or a strategy) and its head; `spacy-dekd.StudentFromPretrained.v1`
loads the encoder named in the student's own model config. Either way the
labels come from the teacher.
"""
from typing import Callable, List, Union

from spacy.pipeline.textcat_multilabel import MultiLabel_TextCategorizer
from spacy.util import registry

from ..models.pytorch import shrink_classifier
from ..pipeline.textcat import TransformerTextCategorizer
from .selectors import first_layers, last_layers, spread_layers

# (student, teacher) -> a description of where the weights came from.
StudentInit = Callable[[TransformerTextCategorizer, TransformerTextCategorizer], str]

LAYER_STRATEGIES = {"uniform": spread_layers, "first": first_layers, "last": last_layers}


def copy_labels(student: TransformerTextCategorizer, teacher: TransformerTextCategorizer) -> None:
    """Give the student the teacher's labels and class mode, or fail if it
    already has others.
    """
    if student.labels and list(student.labels) != list(teacher.labels):
        raise ValueError(
            f"Teacher labels {list(teacher.labels)} differ from student labels "
            f"{list(student.labels)}: the student must predict the teacher's classes."
        )
    # spaCy's own textcat has no such setting; textcat_multilabel is not exclusive.
    teacher_exclusive = getattr(teacher, "exclusive_classes", not isinstance(teacher, MultiLabel_TextCategorizer))
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

    def init(student: TransformerTextCategorizer, teacher: TransformerTextCategorizer) -> str:
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

    def init(student: TransformerTextCategorizer, teacher: TransformerTextCategorizer) -> str:
        copy_labels(student, teacher)
        student.model.set_dim("nO", len(student.labels), force=True)
        student.model.initialize()
        return f"'{student.shim.name}'"

    return init
