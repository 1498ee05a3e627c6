"""Files: where spacy-dekd may write, how it replaces what was there, and
what it reads as text is checked to be text. What it writes is left as
`spacy train` leaves its files."""
import contextlib
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, List, Mapping, Optional, Union


class OutputError(Exception):
    """The output cannot be written as asked; the message is one line."""


def check_output(
    output: Path, inputs: Iterable[Union[str, Path, None]] = (), *, folder: bool = True, option: str = "output"
) -> None:
    """Refuse, before the first step, an output whose writing would lose
    something the user has or could not be done: one of the inputs, a
    folder that holds an input, a path inside an input folder, a file where
    a folder is written (or a folder where a file is), a path under a file,
    or a folder one cannot write into.

    inputs: What the command reads; names that are not paths (an installed
        package, a hub id) and None are passed over.
    folder: Whether the output is a folder (replaced or filled) or one file.
    option: How the command names the output in its usage, for the message.
    RAISES OutputError: The one-line reason and what to do.
    """
    target = output.resolve()
    for item in inputs:
        if item is None or not Path(item).exists():
            continue
        source = Path(item).resolve()
        if source == target:
            raise OutputError(f"The {option} '{output}' is one of the inputs: writing it would replace '{item}'; choose another path.")
        if folder and target in source.parents:
            raise OutputError(f"The {option} '{output}' holds the input '{item}': writing it could replace it; choose another folder.")
        if source in target.parents:
            raise OutputError(f"The {option} '{output}' is inside the input '{item}': write it somewhere of its own.")
    if output.exists() and folder and not output.is_dir():
        raise OutputError(f"The {option} '{output}' is a file: a folder is written there; choose another path, or move the file.")
    if output.is_dir() and not folder:
        raise OutputError(f"The {option} '{output}' is a folder: a file is written there; name a file.")
    parent = next((p for p in [*([output] if folder else []), *output.absolute().parents] if p.exists()), None)
    if parent is not None and not parent.is_dir():
        raise OutputError(f"Cannot create '{output}': '{parent}' is a file, not a directory.")
    if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"Cannot write into '{parent}' (permission denied): choose another {option}.")


def make_readable(path: Path) -> None:
    """Files as `spacy train` leaves them, readable by others under the
    usual umask (safetensors writes its files 0600).
    """
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def config_inputs(config: Mapping[str, Any]) -> List[str]:
    """The files and folders an (interpolated) config reads: every value in
    [paths], and each `path` or `name` setting of its blocks that is a path
    on disk (a corpus, an encoder folder).
    """
    found: List[str] = []

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, Mapping):
            for name, value in node.items():
                walk(value, name)
        elif isinstance(node, str) and key in ("path", "name") and Path(node).exists():
            found.append(node)

    found.extend(str(value) for value in config.get("paths", {}).values() if isinstance(value, (str, Path)) and Path(value).exists())
    for section, node in config.items():
        if section != "paths":
            walk(node)
    return found


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


def write_whole(path: Path, write: Callable[[Path], Any], *, staged_name: Optional[str] = None) -> None:
    """A file written into a sibling, made readable and renamed to `path`:
    readers see all of it or none. The sibling is removed on failure.
    staged_name: the sibling's name, where processes side by side may
        write the same `path` (default: `path`'s name + ".tmp").
    """
    tmp = path.with_name(staged_name or path.name + ".tmp")
    try:
        write(tmp)
        make_readable(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_folder(output: Path) -> Iterator[Path]:
    """A sibling folder written first and renamed to `output` when the block
    ends (`replace_folder`); removed, `output` untouched, on failure.
    RAISES OutputError: The folder could not be written.
    """
    tmp = output.with_name(f".{output.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        yield tmp
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise OutputError(f"Cannot write '{output}': {err.strerror or err}.") from err
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    make_readable(tmp)
    replace_folder(tmp, output)


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
