"""Whether Triton kernels can run: imported once, on first use, never at package import."""

from __future__ import annotations

import functools
import os

from torch import Tensor


@functools.cache
def triton_available() -> bool:
    """True when ``triton`` imports (and ``SPARSEBRAIN_NO_TRITON`` is not set, to force the torch paths)."""
    if os.environ.get("SPARSEBRAIN_NO_TRITON"):
        return False
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(*tensors: Tensor) -> bool:
    """Whether a kernel may run on ``tensors``: all on CUDA (or the Triton interpreter is on) and Triton importable."""
    on_device = all(t.is_cuda for t in tensors) or os.environ.get("TRITON_INTERPRET") == "1"
    return on_device and triton_available()
