"""Files of a run directory: atomic writes (a reader, or a crash, never sees half a file), appends, the lock.

Every write turns a full disk into a :class:`RunError` naming the file, and :func:`lock_run_dir` keeps a second
process out of a run directory that one is writing.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .._atomic import atomic_write

try:
    import fcntl
except ImportError:  # Windows: no advisory locks (see docs/run-directory.md)
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "LOCK",
    "RunError",
    "append_line",
    "atomic_save",
    "atomic_write_json",
    "atomic_write_text",
    "lock_run_dir",
    "remove_temporaries",
]

LOCK = ".lock"  # in the run directory: the PID of the process writing it, under an flock


class RunError(RuntimeError):
    """A run cannot start or continue (bad run directory, missing data...); the message says why and what to do."""


def _no_space(e: BaseException) -> bool:
    """Whether ``e`` or an exception it wraps is ENOSPC / EDQUOT (torch.save reports a failed write as RuntimeError)."""
    seen: set[int] = set()
    cur: BaseException | None = e
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, OSError) and cur.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return False


@contextlib.contextmanager
def _disk_full_is_run_error(path: Path) -> Iterator[None]:
    try:
        yield
    except Exception as e:
        if _no_space(e):
            raise RunError(
                f"no space left on the device while writing {str(path)!r} (what it held before stays whole); free "
                "some space, or use a --run-dir on another disk, then continue with --resume"
            ) from None
        raise


def _atomic(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    with _disk_full_is_run_error(Path(path)):
        atomic_write(path, write)


def append_line(path: str | Path, line: str) -> None:
    """Appends ``line`` and a newline to ``path`` (a cut-short append leaves a last line without newline)."""
    with _disk_full_is_run_error(Path(path)), open(path, "a") as f:
        f.write(line + "\n")


def remove_temporaries(run_dir: str | Path) -> list[Path]:
    """Deletes the temporary files (``.NAME.*.tmp``) of writes that a killed process left in ``run_dir``.

    Call it only while holding :func:`lock_run_dir`: another writer's temporaries are in use. Returns what it removed.
    """
    removed = []
    for tmp in Path(run_dir).glob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


@contextlib.contextmanager
def lock_run_dir(run_dir: str | Path) -> Iterator[Path]:
    """Holds ``RUN_DIR/.lock`` (creating ``run_dir``): one process writes a run directory at a time.

    An advisory ``flock`` on the lock file, not the file's existence, marks the directory in use, so the kernel
    releases it when the holder dies however it dies: a lock file left by a killed process is simply taken over. The
    holder's PID is written into the file for the message of whoever is refused.

    Raises:
        RunError: another process holds the directory (its PID is named), or the directory is not writable.

    Example:
        >>> with lock_run_dir("/tmp/sb-doc-lock") as run_dir:  # doctest: +SKIP
        ...     (run_dir / "notes.txt").write_text("only this process writes here")
    """
    run_dir = Path(run_dir)
    lock = run_dir / LOCK
    try:
        with _disk_full_is_run_error(lock):
            run_dir.mkdir(parents=True, exist_ok=True)
            fd = _acquire(lock) if fcntl is not None else None
    except OSError as e:
        raise RunError(f"run directory {str(run_dir)!r} is not writable: {e.strerror or e}") from None
    try:
        yield run_dir
    finally:
        if fd is not None:
            # unlink while holding the lock: whoever opened the old file then sees that it is gone (see _acquire)
            lock.unlink(missing_ok=True)
            os.close(fd)


def _acquire(lock: Path) -> int:
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunError(
                f"run directory {str(lock.parent)!r} is in use by another process (PID {holder}); wait for it to end "
                "or stop it, or choose another --run-dir"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            current = os.stat(lock).st_ino
        except FileNotFoundError:
            current = None
        if current == os.fstat(fd).st_ino:
            break
        os.close(fd)  # the holder released and removed the file after we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except BaseException:
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd


def atomic_write_text(path: str | Path, text: str) -> None:
    """Writes ``text`` to ``path`` through a temporary file and a rename."""
    _atomic(Path(path), lambda f: f.write(text.encode()))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Writes ``obj`` as indented JSON, atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def atomic_save(path: str | Path, obj: Any) -> None:
    """``torch.save`` through a temporary file and a rename."""
    _atomic(Path(path), lambda f: torch.save(obj, f))
