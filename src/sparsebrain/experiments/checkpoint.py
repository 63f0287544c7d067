"""Checkpoint files: written with a SHA-256 of their content, read back only when they are whole and ours.

Every checkpoint a run writes goes through :func:`save_checkpoint`, and every one it reads (``--resume``,
``model.init_from``) through :func:`load_checkpoint`, so a file that storage or a copy damaged, a file cut short, or
a file that is not a checkpoint at all stops the run with one :class:`~sparsebrain.experiments.io.RunError` that
names the file and what to do, instead of training on wrong weights or ending in a traceback.
"""

from __future__ import annotations

import hashlib
import warnings
import zipfile
from pathlib import Path
from typing import Any

import torch

from .io import RunError, atomic_save

__all__ = ["CHECKSUM", "checksum", "load_checkpoint", "save_checkpoint"]

CHECKSUM = "checksum"  # key of the checkpoint dict: hex SHA-256 of everything else in it, see checksum()


def checksum(obj: Any) -> str:
    """Hex SHA-256 of a nested structure of dicts, lists, scalars and tensors, as ``torch.load`` gives it back.

    It walks the structure in order and hashes each key, each scalar with its type, and each tensor's dtype, shape
    and raw bytes (a CPU view of them, one tensor at a time: the checkpoint is not copied whole). A tensor on
    another device or with other strides but the same values hashes the same.

    Example:
        >>> checksum({"w": torch.zeros(2)}) == checksum({"w": torch.zeros(2)})
        True
        >>> checksum({"w": torch.zeros(2)}) == checksum({"w": torch.tensor([0.0, 1e-45])})
        False
    """
    h = hashlib.sha256()
    _feed(h, obj)
    return h.hexdigest()


def _feed(h: Any, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()  # no copy for a contiguous CPU tensor
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(obj, dict):
        h.update(f"D{len(obj)}:".encode())
        for k, v in obj.items():  # insertion order survives torch.save / torch.load
            _feed(h, k)
            _feed(h, v)
    elif isinstance(obj, list | tuple):
        h.update(f"{type(obj).__name__}{len(obj)}:".encode())
        for v in obj:
            _feed(h, v)
    elif isinstance(obj, set | frozenset):  # iteration order varies between processes
        h.update(f"{type(obj).__name__}{len(obj)}:".encode())
        for r in sorted(repr(v) for v in obj):
            h.update(r.encode() + b",")
    else:  # int, float (repr is exact), bool, str, None, torch.Size / dtype / device...
        h.update(f"{type(obj).__name__}={obj!r};".encode())


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Writes ``payload`` to ``path`` atomically, with its :func:`checksum` under the key ``"checksum"``.

    Example:
        >>> save_checkpoint("/tmp/sb-doc-ckpt.pt", {"model": {"w": torch.ones(2)}})  # doctest: +SKIP
    """
    atomic_save(path, {**payload, CHECKSUM: checksum(payload)})


def load_checkpoint(
    path: str | Path, map_location: str | torch.device = "cpu", *, what: str = "checkpoint", advice: str
) -> Any:
    """Reads a file written by :func:`save_checkpoint` (or any ``torch.save`` of tensors and containers).

    The load is ``weights_only``: pickled code is refused. A dict with a ``"checksum"`` is verified and returned
    without it; a sparsebrain checkpoint that has none (written before checksums) loads with a warning. Which keys
    it must hold is the caller's to check.

    Args:
        path: the file.
        map_location: as for ``torch.load``.
        what: how the message names the file, e.g. ``"config key 'model.init_from': checkpoint"``.
        advice: what the user should do when the file is unusable, the end of the message.

    Raises:
        RunError: the file is missing, empty, cut short, damaged (checksum mismatch), not a torch file, or holds
            Python objects a safe load refuses.
    """
    path = Path(path)

    def fail(why: str) -> RunError:
        return RunError(f"{what} {str(path)!r} {why}; {advice}")

    try:
        size = path.stat().st_size
    except OSError as e:
        raise fail(f"cannot be read ({e.strerror or e})") from None
    if size == 0:
        raise fail("is empty (a write that never finished)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch warns about pickle protocols of foreign files
            obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise fail(_unreadable(path, e)) from None
    if isinstance(obj, dict) and CHECKSUM in obj:
        stored = obj.pop(CHECKSUM)
        if stored != checksum(obj):
            raise fail(
                "is damaged: its content does not match the checksum written with it (storage or copy corruption)"
            )
    elif isinstance(obj, dict) and "config" in obj and "model" in obj:
        warnings.warn(f"{what} {str(path)!r} has no checksum (written by an older sparsebrain); it cannot be verified",
                      stacklevel=2)  # fmt: skip
    return obj


def _unreadable(path: Path, e: Exception) -> str:
    """Why ``torch.load`` failed, in words: never torch's advice to load pickled code with ``weights_only=False``."""
    import pickle

    with open(path, "rb") as f:
        head = f.read(2)
    is_zip = zipfile.is_zipfile(path)
    if isinstance(e, pickle.UnpicklingError) and (is_zip or head[:1] == b"\x80"):  # a pickle, refused
        return (
            "holds Python objects that a safe load refuses (pickled code, or classes that are not tensors and plain "
            "containers); sparsebrain loads no such file"
        )
    if is_zip or head == b"PK":
        return "is cut short or damaged (its archive cannot be read)"
    return "was not written by torch.save (it is no checkpoint)"
