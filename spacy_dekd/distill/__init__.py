"""DeKD: losses (Eq. 1, 2, 7, 9), selectors (Eq. 4-6, 8, 11, 12), the
objective (Eq. 10) and the trainer (Algorithm 1)."""
from . import cache, ksm, losses, multi_teacher, objective, optim, selectors, student, trainer  # noqa: F401
from .objective import DeKDObjective
from .types import QueryPlan, TeacherOutput
from .trainer import DistillationError, DistillTrainer

__all__ = ["DeKDObjective", "DistillTrainer", "DistillationError", "QueryPlan", "TeacherOutput"]
