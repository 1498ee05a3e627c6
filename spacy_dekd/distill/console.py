"""What a run prints besides `[training.logger]`'s table: one line each."""
import sys
from dataclasses import dataclass
from typing import IO

from wasabi import color


@dataclass
class Console:
    """Messages of a run, from rank 0 alone (`quiet` on the others)."""

    stdout: IO = sys.stdout
    quiet: bool = False

    def info(self, text: str) -> None:
        self._write("ℹ", "blue", text)

    def warn(self, text: str) -> None:
        self._write("⚠", "yellow", text)

    def _write(self, icon: str, fg: str, text: str) -> None:
        # One line however long: wasabi's printer wraps at 80 characters.
        if not self.quiet:
            self.stdout.write(color(f"{icon} {text}", fg=fg) + "\n")
