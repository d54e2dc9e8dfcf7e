"""Writing output files atomically, and checking early that they can be written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import CliError


def check_writable(path: str, option: str) -> None:
    if path == "-":
        return
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{option} {path}: is a folder; pass a file name")
    if not target.parent.is_dir():
        raise CliError(f"{option} {path}: folder {target.parent} does not exist")
    if not os.access(target.parent, os.W_OK):
        raise CliError(f"{option} {path}: folder {target.parent} is not writable")


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text)
        os.chmod(temporary, 0o666 & ~_umask())  # mkstemp makes it private; give it a normal file's mode
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
