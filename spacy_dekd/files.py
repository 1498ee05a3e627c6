"""What spacy-dekd writes to disk is left as `spacy train` leaves its files."""
import os
from pathlib import Path


def make_readable(path: Path) -> None:
    """Files as `spacy train` leaves them, readable by others under the
    usual umask (safetensors writes its files 0600).
    """
    umask = os.umask(0)
    os.umask(umask)
    for item in [path, *path.rglob("*")] if path.is_dir() else [path]:
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)
