"""One way to write a file atomically, for every layer of the package (data caches, run directories, reports).

The content goes to a temporary file beside the target (``.NAME.PID.RANDOM.tmp``: unique per writer, so two threads
or processes writing one file do not share a temporary), is flushed to the disk, and is renamed over the target: a
reader, or a process killed mid-write, sees the old file or the new one, never half of one. The temporary gets the
umask's permissions (a shared report stays readable by its group). Torch-free, so the data layer and the report can
use it.

Example:
    >>> import tempfile, pathlib
    >>> target = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
    >>> atomic_write(target, lambda f: f.write(b"hello"))
    >>> target.read_text()
    'hello'
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_write"]


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any], *, fsync: bool = True) -> None:
    """Writes ``path`` through ``write(f)`` on a temporary binary file beside it, then renames it over ``path``;
    ``fsync``: flush it to the disk first (a crash of the machine then leaves the old file or the new one too)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, path)  # atomic on POSIX
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
