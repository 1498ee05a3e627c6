"""Errors a user can mend: a mistake in the data or the settings, and the
catalogue of their messages.

`UserError` is a ValueError, so library callers handle it as before. In the
spaCy CLI (spacy_dekd.cli installs the hook), one that reaches the top of a
command that is not spacy-dekd's own, such as `spacy evaluate` scoring data
with labels the model lacks, prints as one line and exits 1; in a command
that has `-V` / `--verbose`, that flag shows the traceback.

`Errors` holds every one-line message `spacy distill` and the component give
a user, as spaCy's `spacy.errors.Errors` does: a code each, read as
`Errors.D001.format(...)`, printed as "[D001] ..." so that a message can be
searched for and cited.
"""
import sys
from types import TracebackType
from typing import Optional, Type

from wasabi import color


class ErrorsWithCodes(type):
    """Prefix each message with its code, as spaCy's errors do."""

    def __getattribute__(self, code: str) -> str:
        message = super().__getattribute__(code)
        if code.startswith("__"):
            return message
        return f"[{code}] {message}"


# fmt: off
class Errors(metaclass=ErrorsWithCodes):
    # cli/distill.py
    D001 = '[rank {rank}] Another process of the run stopped ({reason}): its own message says why{where}.'
    D002 = 'Interrupted{where}.'
    D003 = "'{student_config_path}' has no [distillation] block."
    D004 = (
        "[components.{student_name}.model] max_length = 0 takes the teacher's, but the teacher "
        "component '{teacher_name}' has none: set max_length to a number of word pieces."
    )
    D005 = (
        "The {role} pipeline '{path}' is neither a directory nor an installed package: train it "
        'first (spacy project run {role}).'
    )
    D006 = "Cannot load the {role} pipeline '{path}': {reason}"

    # cli/init_config.py
    D007 = "'{output_file}' exists: pass --force to overwrite it, or choose another file."
    D008 = "Cannot write '{output_file}' ({reason}): choose a path in a writable folder."

    # distill/frozen.py
    D009 = (
        "Layer alignment needs hidden states, but the {role} component '{name}' is {kind} and "
        'gives none: use a torch transformer_textcat {role} or set alignment_weight = 0.'
    )
    D010 = (
        "Monte Carlo dropout needs a torch transformer_textcat, but the {role} component '{name}'"
        ' is {kind}: set the objective\'s uncertainty to "entropy".'
    )

    # distill/loop.py
    D011 = 'Invalid [training.logger]: {err}'
    D012 = (
        'The loss is not finite at step {step} ({values}): lower the learning rate or the loss '
        'weights; checkpoints written so far are intact.'
    )
    D040 = (
        'The unlabelled text {err}: its texts are read from disk where they were when the run '
        'started. Put the file back as it was and --resume, or start a new --output with the new '
        'file; what earlier evaluations wrote is intact.'
    )

    # distill/output.py
    D013 = '--resume needs --output.'
    D014 = "Nothing to resume in '{path}': no {checkpoint}/ and {model_last}/ from an earlier run."
    D015 = "Cannot resume from '{ckpt}': it was written by an older spacy-dekd; start a new --output."
    D016 = (
        "Cannot resume the run in '{path}': {settings} {verb} from when it started; resume with "
        'the same corpus, teacher, assistant and config, or start a new --output.'
    )
    D017 = 'Cannot resume: {err}'
    D018 = (
        "Cannot resume the run in '{output}': {model_last}/ and {checkpoint}/ come from "
        'different steps; start a new --output.'
    )
    D019 = "Cannot resume: '{path}' is not a checkpoint weights file ({reason}); start a new --output."
    D020 = (
        "Cannot write to '{output_path}'{when} ({reason}): check its disk space and permissions, "
        'or choose another --output; what earlier evaluations wrote is intact.'
    )

    # distill/prepare.py
    D021 = 'Invalid [distillation] settings: {errors}.'
    D022 = 'Invalid setting in [distillation]: {err}'
    D023 = "The training corpus '{corpus}' is empty."
    D024 = (
        'The run has no step to take (max_epochs = 0, or a batcher that makes no batch): set '
        '[distillation] max_epochs or max_steps, and a batcher size > 0.'
    )
    D025 = 'student_to_teacher must map exactly one student component.'
    D026 = (
        "The student component '{student_name}' is {kind}: spacy distill trains a torch "
        "transformer_textcat or spaCy's textcat / textcat_multilabel."
    )
    D027 = (
        'This objective routes uncertain examples to a teacher assistant: pass --assistant PATH, '
        'or use spacy-dekd.TeacherOnlyRouter.v1.'
    )
    D028 = 'Assistant labels {labels} differ from teacher labels {teacher_labels}.'
    D029 = (
        "This objective aligns the student to the assistant's hidden states: the assistant must "
        'be a torch transformer_textcat (pass one with --assistant).'
    )
    D030 = (
        "The corpus '{dot_name}' has label(s) {unknown} the teacher does not know (it has "
        "{known}): distil on data labelled with the teacher's labels, or fix the reader's labels."
    )
    D031 = "Cannot read the corpus '{dot_name}': {err}"
    D032 = (
        "The config has no [{dot_name}] for the corpus it names '{dot_name}': add the section, or"
        ' point the setting at a corpus the config defines.'
    )
    D033 = (
        "The unlabelled corpus '{dot_name}' ([distillation] unlabeled_corpus) is empty: point it "
        'at a file with one text per line, or set it to null.'
    )
    D034 = "Cannot read the dev corpus '{dot_name}': {err}"
    D041 = (
        "The unlabelled corpus '{dot_name}' reads .txt files, a text a line, and '{path}' "
        '{found}: point it at such a file or a folder of them, or read another format with '
        'spacy-dekd.DatasetCorpus.v1 (label_field = null).'
    )
    D035 = "The dev corpus '{dot_name}' is empty: point [training] dev_corpus at labelled examples."
    D036 = (
        'The {role} scores at chance on the dev set (macro AUC {auc:.2f}, accuracy '
        '{accuracy:.2f}): it has not learned the task. A `spacy train` run scored only before its'
        ' first step keeps the untrained model as model-best: train it so that its last step is '
        'scored (configs/teacher.cfg counts max_steps, and eval_frequency divides it).'
    )
    D037 = (
        'The teacher is not worth distilling: {problem}. Train it longer or weigh its classes '
        "(scripts/train_teacher.py; the workflow's --vars.teacher_epochs), or distil it anyway "
        'with --distillation.check_teacher false.'
    )
    D038 = "The {role} pipeline has no component '{name}' (it has {pipe_names}): fix student_to_teacher."

    # distill/spacy_student.py
    D042 = (
        "The student component '{name}' is spaCy's textcat, which trains on the CPU: run spacy "
        'distill without --gpu-id (it trains in minutes), or train a transformer_textcat student '
        'on the GPU.'
    )
    D043 = (
        "The student component '{name}' listens to the pipeline's '{upstream}' component: give "
        'the textcat a tok2vec of its own ([components.{name}.model.tok2vec]) to distil it.'
    )
    D044 = (
        "The student component '{name}' ends in a '{layer}' layer: spacy distill takes logits from "
        "thinc's softmax, softmax_activation or logistic output layers, or a linear last layer; use "
        "one of spaCy's textcat architectures."
    )
    D045 = "The student component '{name}' gives logits alone: no layer states to align or select by."
    D046 = (
        "The student '{name}' gives logits alone, no layer states, but {what} reads them: {fix}."
    )
    D047 = (
        "The student config's [initialize] vectors '{vectors}' is neither a folder nor an installed "
        "package: write them with `spacy init encoder-vectors` (or `spacy init vectors`), or set it to null."
    )
    D048 = (
        "The student component '{name}' needs static vectors: set paths.vectors (the config's "
        "[initialize] vectors) to a folder `spacy init encoder-vectors` wrote, or set "
        "include_static_vectors = false."
    )
    D049 = (
        "[distillation] teacher_answers '{path}' cannot be used: {why}."
    )
    D050 = (
        "[distillation] teacher_answers keeps the teacher's logits alone, but {what} needs its "
        "{needs}: set teacher_answers = null, or {fix}."
    )

    # pipeline/scorer.py
    D039 = (
        'The gold data has label(s) {unknown} the model does not know (it has {known}): score it '
        'on data labelled with its own labels.'
    )
# fmt: on


class UserError(ValueError):
    """A mistake in the data or the settings; the message says what to change."""


class DistillationError(Exception):
    """A distillation run that cannot go on; the message is one actionable
    line (`spacy distill` prints it and exits 1).
    """


def fail(message: str, code: int = 1) -> None:
    """One unwrapped line, so that the whole reason sits on it; exit 1
    (`-V` shows the traceback instead).
    """
    sys.stderr.write(color("✘ " + message, fg="red") + "\n")
    sys.exit(code)


def one_line_user_errors() -> None:
    """Print an uncaught `UserError` as one line instead of a traceback."""
    previous = sys.excepthook

    def hook(kind: Type[BaseException], error: BaseException, tb: Optional[TracebackType]) -> None:
        verbose = any(arg in ("-V", "-VV", "--verbose") for arg in sys.argv)
        if isinstance(error, UserError) and not verbose:
            sys.stderr.write(color(f"✘ {str(error).strip().splitlines()[0]}", fg="red") + "\n")
            return
        previous(kind, error, tb)

    sys.excepthook = hook
