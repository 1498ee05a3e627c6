"""Errors a user can mend: a mistake in the data or the settings.

`UserError` is a ValueError, so library callers handle it as before. In the
spaCy CLI (spacy_dekd.cli installs the hook), one that reaches the top of a
command that is not spacy-dekd's own, such as `spacy evaluate` scoring data
with labels the model lacks, prints as one line and exits 1; in a command
that has `-V` / `--verbose`, that flag shows the traceback.
"""
import sys
from types import TracebackType
from typing import Optional, Type

from wasabi import color


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
