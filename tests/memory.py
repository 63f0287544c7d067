"""Peak bytes of the tensors an operation creates, on any device (the CPU included), for memory-bound tests.

``LiveBytes`` watches every aten call inside its ``with`` block and tracks the storages of the tensors they return:
a storage counts from its first appearance until the last tensor on it is gone. Tensors that existed before the
block (the inputs) are not counted, nor a kernel's internal scratch memory, so the peak is what the Python-level
algorithm holds at once: the quantity a tiled algorithm bounds.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode


class LiveBytes(TorchDispatchMode):
    """Example: ``with LiveBytes() as m: f(x)``, then ``m.peak`` (bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        self._refs: dict[int, int] = {}  # storage data pointer -> tensors alive on it

    def _drop(self, key: int, nbytes: int) -> None:
        self._refs[key] -= 1
        if self._refs[key] == 0:
            del self._refs[key]
            self.live -= nbytes

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key, nbytes = storage.data_ptr(), storage.nbytes()
        if nbytes == 0:
            return
        if key not in self._refs:
            self._refs[key] = 0
            self.live += nbytes
            self.peak = max(self.peak, self.live)
        self._refs[key] += 1
        weakref.finalize(t, self._drop, key, nbytes)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out
