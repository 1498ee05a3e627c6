"""`spacy-dekd.ProgressLogger.v1`: spaCy's console table, and between two
evaluations a line now and then with the step, the time a step takes and
the time left.

A transformer teacher on a CPU takes seconds a step, and spaCy's console
logger prints nothing between evaluations (its progress bar is off outside
a terminal), so a long first evaluation interval looks like a hang.

A step's time is the median of the last steps': the pauses between two
steps (an evaluation, a query round in which the teacher answers thousands
of texts and prints its own progress) would otherwise count as steps, and a
first round could make a half-hour run look like ten hours.
"""
import statistics
import sys
import time
from collections import deque
from typing import IO, Any, Callable, Dict, Optional, Tuple

from spacy.training.loggers import console_logger_v3
from spacy.util import registry
from wasabi import Printer


STEPS_TIMED = 64  # the last steps whose median is a step's time


@registry.loggers("spacy-dekd.ProgressLogger.v1")
def progress_logger_v1(
    interval: float = 60.0,
    console_output: bool = True,
    output_file: Optional[str] = None,
) -> Callable[..., Tuple[Callable[[Optional[Dict[str, Any]]], None], Callable[[], None]]]:
    """spaCy's ConsoleLogger.v3 (no progress bar), plus a progress line
    every `interval` seconds of training.

    interval (float): Seconds between two progress lines; 0 for none.
    console_output (bool): Whether to print to the console at all.
    output_file (Optional[str]): A jsonl file for the evaluations, as in
        spaCy's console logger.
    """
    console = console_logger_v3(progress_bar=None, console_output=console_output, output_file=output_file)

    def setup_printer(nlp: Any, stdout: IO = sys.stdout, stderr: IO = sys.stderr) -> Tuple[Callable, Callable]:
        log_table, finalize = console(nlp, stdout=stdout, stderr=stderr)
        max_steps = nlp.config["training"]["max_steps"]
        msg = Printer(no_print=True)
        # Each step's time, from the end of the one before (or of the last evaluation).
        durations: deque = deque(maxlen=STEPS_TIMED)
        since = last = time.perf_counter()
        step = 0

        def log_step(info: Optional[Dict[str, Any]]) -> None:
            nonlocal since, last, step
            if info is not None:
                log_table(info)
                step = info["step"]
                since = last = time.perf_counter()
                return
            step += 1
            now = time.perf_counter()
            durations.append(now - since)
            since = now
            if not console_output or interval <= 0 or now - last < interval:
                return
            last = now
            per_step = statistics.median(durations)
            left = f", about {_minutes(per_step * (max_steps - step))} to go besides query rounds" if max_steps else ""
            stdout.write(msg.text(f"step {step}{f' of {max_steps}' if max_steps else ''}: {per_step:.1f} s a step{left}") + "\n")
            stdout.flush()

        return log_step, finalize

    return setup_printer


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{seconds:.0f} s"
