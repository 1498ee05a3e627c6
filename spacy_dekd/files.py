"""Files: what spacy-dekd writes is left as `spacy train` leaves its files,
and what it reads as text is checked to be text."""
import os
import shutil
from pathlib import Path
from typing import Optional


def make_readable(path: Path) -> None:
    """Files as `spacy train` leaves them, readable by others under the
    usual umask (safetensors writes its files 0600).
    """
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def replace_folder(new: Path, output: Path) -> None:
    """`new`, written whole, renamed to `output`: what was at `output` is
    moved aside first and removed after, so it stays until the new one is
    in its place.
    """
    old = output.with_name(f".{output.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if output.is_dir():
        output.rename(old)
    elif output.exists():
        output.unlink()
    new.rename(output)
    shutil.rmtree(old, ignore_errors=True)


def not_utf8(data: bytes, first_line: int = 1) -> Optional[str]:
    """Where `data` stops being UTF-8 ("line 2, byte 0xe9 at column 4"), or
    None. first_line: the line number `data` starts at.
    """
    try:
        data.decode("utf8")
    except UnicodeDecodeError as err:
        line = first_line + data.count(b"\n", 0, err.start)
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        return f"line {line}, byte 0x{data[err.start]:02x} at column {column}"
    return None
