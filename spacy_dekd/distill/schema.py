"""The schema of `[distillation]`, as spaCy's `schemas.py` has one for
`[training]` (and v4 `ConfigSchemaDistill` for its own `[distillation]`): an
unknown or misspelt key, or a setting out of range, fails before anything
is read or trained.
"""
import difflib
from typing import Any, Callable, Dict, Optional

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, confloat, conint


class ConfigSchemaDistill(BaseModel):
    # fmt: off
    corpus: StrictStr = Field(..., title="Path in the config to the labelled training data")
    unlabeled_corpus: Optional[StrictStr] = Field(None, title="Path in the config to unlabelled text, or null")
    teacher_budget: Optional[confloat(gt=0, le=1)] = Field(None, title="in (0, 1]: the most distinct examples the teacher may answer, as a fraction of all examples; null for no cap")  # type: ignore[valid-type]
    teacher_answers: Optional[StrictStr] = Field(None, title="A folder of the teacher's answers that runs share (distill/store.py): answers found there are not asked again, answers paid for are added; null for none")
    pool_sample: Optional[conint(ge=1)] = Field(None, title="1 or more: the unanswered texts a query round scores, drawn at random (seeded) from the pool; null for all")  # type: ignore[valid-type]
    dropout: Optional[confloat(ge=0, lt=1)] = Field(..., title="in [0, 1): the student's dropout, or null to keep its own")  # type: ignore[valid-type]
    max_epochs: conint(ge=1) = Field(..., title="1 or more: epochs to train for; max_steps may stop sooner (0 is not spacy train's 'no limit': query rounds are planned by epoch)")  # type: ignore[valid-type]
    max_steps: conint(ge=0) = Field(..., title="0 or more: steps to train for; 0 for as many as max_epochs take")  # type: ignore[valid-type]
    eval_frequency: conint(ge=1) = Field(..., title="1 or more: evaluate (and save) every this many steps")  # type: ignore[valid-type]
    seed: Optional[StrictInt] = Field(..., title="Random seed")
    temperature: confloat(gt=0) = Field(..., title="> 0: τ, for the KL terms that refer to it")  # type: ignore[valid-type]
    mixed_precision: StrictBool = Field(..., title="Autocast student, teacher and assistant (see TransformerClassifierShim.set_mixed_precision)")
    teacher_mixed_precision: StrictBool = Field(False, title="Autocast the teacher's and the assistant's forward passes alone")
    check_teacher: StrictBool = Field(True, title="Stop when the teacher is no better than the majority class on dev (teacher_check.py)")
    student_to_teacher: Dict[StrictStr, StrictStr] = Field(..., title="Student component name to teacher component name")
    batcher: Callable = Field(..., title="Batcher for the training data")
    optimizer: Any = Field(..., title="The optimizer")
    student_init: Callable = Field(..., title="How the student gets its first weights")
    trainer: Any = Field(..., title="The distillation loop (Algorithm 1)")
    objective: Any = Field(..., title="The loss (Eq. 10) and its selectors")
    before_update: Optional[Callable] = Field(None, title="Called as before_update(nlp, {'step', 'epoch'}) before each step, as spacy train's")
    after_step: Optional[Callable] = Field(None, title="Called as after_step(nlp, record) after each step, with the step's metrics.json record")
    after_evaluate: Optional[Callable] = Field(None, title="Called as after_evaluate(nlp, info) on rank 0 after each evaluation's set is saved")
    # fmt: on

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


def unknown_keys(block: Dict[str, Any]) -> Optional[str]:
    """A line naming the keys of a [distillation] block the schema does not
    know, with the nearest known key, or None. (confection's resolve drops
    such keys rather than failing.)
    """
    known = list(ConfigSchemaDistill.model_fields)
    unknown = [key for key in block if key not in known]
    if not unknown:
        return None
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"'{key}'" + (f" (did you mean '{close[0]}'?)" if close else ""))
    return f"Unknown [distillation] setting {', '.join(hints)}: known settings are {', '.join(known)}."


def describe_errors(errors: Any) -> str:
    """One line from a ConfigValidationError's errors, naming each key."""
    parts = []
    for error in errors:
        loc = [str(part) for part in error.get("loc", []) if part != "__root__"]
        message = error.get("msg", "invalid")
        field = ConfigSchemaDistill.model_fields.get(loc[0]) if loc else None
        if field is not None and field.title and ":" in field.title:  # "in (0, 1]: ..."
            message += f" ({field.title.split(':')[0]})"
        parts.append(f"{'.'.join(loc)}: {message}" if loc else message)
    return "; ".join(parts)
