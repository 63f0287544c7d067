"""cuSPARSELt 2:4 products with their plans made once and kept, called through the library's C API.

torch's binding (``torch._cslt_sparse_mm``) builds the library's descriptors and plan at every call and destroys
them after it: about 0.5-1 ms of host time per product on the H200, longer than the product itself for the layers of
a 1B-parameter model, so a training step there is bound by the host. Here a :class:`Plan` is made once per
``(out, in, tokens, dtype, algorithm)`` and device, kept in a cache, and each product is one call of
``cusparseLtMatmul`` on the current stream. The library is the one torch loaded (found among the process's mapped
libraries), and the product is the one :func:`sparsebrain.kernels.cusparselt.linear` asks torch for: the same
descriptors (the compressed ``W`` row-major, ``X`` row-major and transposed, the result ``(tokens, out)``), so the
compressed weights of ``torch._cslt_compress`` serve both.

:func:`available` says whether the C API could be bound (cuSPARSELt 0.6 or newer, whose enumerations are those
below); where it cannot, :func:`sparsebrain.kernels.cusparselt.linear` keeps torch's binding.

Example (CUDA with cuSPARSELt):
    >>> y = matmul(packed, x, alg_id)  # doctest: +SKIP
"""

from __future__ import annotations

import ctypes
import functools
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["Plan", "available", "matmul"]

# cudaDataType_t, cusparseOrder_t, cusparseOperation_t (CUDA's headers); cuSPARSELt >= 0.6 for the rest
_DATA_TYPE = {torch.float16: 2, torch.bfloat16: 14}
_ORDER_COL, _ORDER_ROW = 1, 2
_NON_TRANSPOSE, _TRANSPOSE = 0, 1
_SPARSITY_50_PERCENT = 0
_COMPUTE_32F = 2
_ALG_DEFAULT = 0
_ALG_CONFIG_ID = 0
_MIN_VERSION = 600  # 0.6.0: the enumerations above
_OPAQUE = 4096  # bytes for each opaque struct (handle, descriptors, plan: 1 KiB or less in every release so far)
_ALIGNMENT = 16  # bytes, as torch's binding


class _Opaque:
    """An opaque struct of the library: ``_OPAQUE`` zeroed bytes at a 16-byte aligned address (the structs are
    ``alignas(16)``; a ctypes buffer alone is not always aligned so)."""

    def __init__(self) -> None:
        self.buffer = ctypes.create_string_buffer(_OPAQUE + 16)
        address = ctypes.addressof(self.buffer)
        self._as_parameter_ = ctypes.c_void_p(address + (-address % 16))  # what ctypes passes for this object


def _opaque() -> _Opaque:
    return _Opaque()


def _library_path() -> str | None:
    """The libcusparseLt torch loaded into this process (after one product made it load), or None."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return None
    for line in maps.splitlines():
        path = line.split()[-1] if line.split() else ""
        if "libcusparseLt" in Path(path).name:
            return path
    return None


class _Library:
    """The C API and one handle per device."""

    def __init__(self, path: str) -> None:
        self.lib = ctypes.CDLL(path)
        for name in ("cusparseLtInit", "cusparseLtGetVersion", "cusparseLtStructuredDescriptorInit",
                     "cusparseLtDenseDescriptorInit", "cusparseLtMatmulDescriptorInit",
                     "cusparseLtMatmulAlgSelectionInit", "cusparseLtMatmulAlgSetAttribute",
                     "cusparseLtMatmulPlanInit", "cusparseLtMatmulGetWorkspace", "cusparseLtMatmul"):  # fmt: skip
            getattr(self.lib, name).restype = ctypes.c_int
        self.lib.cusparseLtStructuredDescriptorInit.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint32,
            ctypes.c_int, ctypes.c_int, ctypes.c_int,
        ]  # fmt: skip
        self.lib.cusparseLtDenseDescriptorInit.argtypes = [
            ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint32,
            ctypes.c_int, ctypes.c_int,
        ]  # fmt: skip
        self.lib.cusparseLtMatmulDescriptorInit.argtypes = (
            [ctypes.c_void_p] * 2 + [ctypes.c_int] * 2 + [ctypes.c_void_p] * 4 + [ctypes.c_int]
        )
        self.lib.cusparseLtMatmulAlgSelectionInit.argtypes = [ctypes.c_void_p] * 3 + [ctypes.c_int]
        self.lib.cusparseLtMatmulAlgSetAttribute.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int,
                                                             ctypes.c_void_p, ctypes.c_size_t]  # fmt: skip
        self.lib.cusparseLtMatmulPlanInit.argtypes = [ctypes.c_void_p] * 4
        self.lib.cusparseLtMatmulGetWorkspace.argtypes = [ctypes.c_void_p] * 3
        self.lib.cusparseLtMatmul.argtypes = [ctypes.c_void_p] * 10 + [ctypes.c_int32]
        self.handles: dict[int, _Opaque] = {}
        self.lock = threading.Lock()

    def check(self, status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"cuSPARSELt {what} failed with status {status}")

    def handle(self, device: int) -> _Opaque:
        with self.lock:
            if device not in self.handles:
                h = _opaque()
                with torch.cuda.device(device):
                    self.check(self.lib.cusparseLtInit(h), "cusparseLtInit")
                version = ctypes.c_int(0)
                self.check(self.lib.cusparseLtGetVersion(h, ctypes.byref(version)), "cusparseLtGetVersion")
                if version.value < _MIN_VERSION:
                    raise RuntimeError(f"cuSPARSELt {version.value} is older than {_MIN_VERSION}")
                self.handles[device] = h
            return self.handles[device]


@functools.cache
def _library() -> _Library | None:
    from . import cusparselt

    if not cusparselt.available():
        return None
    path = _library_path()
    if path is None:  # torch loads it with its first product: make one
        w = torch.zeros(16, 16, device="cuda", dtype=torch.bfloat16)
        w[:, ::2] = 1
        torch._cslt_sparse_mm(torch._cslt_compress(w), torch.zeros(16, 16, device="cuda", dtype=torch.bfloat16))
        path = _library_path()
    if path is None:
        return None
    try:
        lib = _Library(path)
        lib.handle(torch.cuda.current_device())
    except (OSError, AttributeError, RuntimeError):
        return None
    return lib


def available() -> bool:
    """Whether the products can run through kept plans here (else torch's binding is used)."""
    return _library() is not None


class Plan:
    """A kept cuSPARSELt plan of ``Y = X W^T``: ``W`` ``(out, in)`` compressed, ``X`` ``(tokens, in)`` row-major,
    ``Y`` ``(tokens, out)`` row-major, in ``dtype``, with algorithm ``alg_id``, on CUDA device ``device``.

    A plan holds one workspace: calls of one plan run in the order of their stream, so products of one shape must
    not run on two streams at once (one stream per device, as in training, is fine)."""

    def __init__(self, out_f: int, in_f: int, tokens: int, dtype: torch.dtype, alg_id: int, device: int) -> None:
        lib = _library()
        if lib is None:
            raise RuntimeError("cuSPARSELt's C API is not available here")
        self.lib, self.handle = lib, lib.handle(device)
        self.shape, self.dtype, self.device = (out_f, in_f, tokens), dtype, device
        c, t = lib.check, _DATA_TYPE[dtype]
        self.a, self.b, self.c, self.matmul, self.alg, self.plan = (_opaque() for _ in range(6))
        L = lib.lib
        c(L.cusparseLtStructuredDescriptorInit(self.handle, self.a, out_f, in_f, in_f, _ALIGNMENT, t, _ORDER_ROW,
                                               _SPARSITY_50_PERCENT), "the sparse descriptor")  # fmt: skip
        c(L.cusparseLtDenseDescriptorInit(self.handle, self.b, tokens, in_f, in_f, _ALIGNMENT, t, _ORDER_ROW),
          "the input descriptor")  # fmt: skip
        c(L.cusparseLtDenseDescriptorInit(self.handle, self.c, out_f, tokens, out_f, _ALIGNMENT, t, _ORDER_COL),
          "the output descriptor")  # fmt: skip
        c(L.cusparseLtMatmulDescriptorInit(self.handle, self.matmul, _NON_TRANSPOSE, _TRANSPOSE, self.a, self.b,
                                           self.c, self.c, _COMPUTE_32F), "the matmul descriptor")  # fmt: skip
        c(L.cusparseLtMatmulAlgSelectionInit(self.handle, self.alg, self.matmul, _ALG_DEFAULT), "the selection")
        alg = ctypes.c_int(alg_id)
        c(L.cusparseLtMatmulAlgSetAttribute(self.handle, self.alg, _ALG_CONFIG_ID, ctypes.byref(alg),
                                            ctypes.sizeof(alg)), f"algorithm {alg_id}")  # fmt: skip
        with torch.cuda.device(device):
            c(L.cusparseLtMatmulPlanInit(self.handle, self.plan, self.matmul, self.alg), "cusparseLtMatmulPlanInit")
        size = ctypes.c_size_t(0)
        c(L.cusparseLtMatmulGetWorkspace(self.handle, self.plan, ctypes.byref(size)), "the workspace size")
        self.workspace = torch.empty(max(int(size.value), 1), dtype=torch.uint8, device=f"cuda:{device}")
        self.alpha, self.beta = ctypes.c_float(1.0), ctypes.c_float(0.0)

    def __call__(self, packed: Tensor, x: Tensor) -> Tensor:
        """``x W^T`` for the compressed ``packed``; ``x`` is ``(tokens, in)``, contiguous, of the plan's dtype."""
        out_f, _, tokens = self.shape
        y = torch.empty(tokens, out_f, dtype=self.dtype, device=x.device)
        stream = ctypes.c_void_p(_current_stream(self.device))
        self.lib.check(
            self.lib.lib.cusparseLtMatmul(self.handle, self.plan, ctypes.byref(self.alpha), packed.data_ptr(),
                                          x.data_ptr(), ctypes.byref(self.beta), y.data_ptr(), y.data_ptr(),
                                          self.workspace.data_ptr(), ctypes.byref(stream), 1),
            "cusparseLtMatmul",
        )  # fmt: skip
        return y


def _current_stream(device: int) -> int:
    """The address of ``device``'s current CUDA stream (torch's raw binding where it has one: ``current_stream``
    costs tens of microseconds of host time, twice per layer and step)."""
    raw = getattr(torch._C, "_cuda_getCurrentRawStream", None)
    return int(raw(device)) if raw is not None else int(torch.cuda.current_stream(device).cuda_stream)


@functools.lru_cache(maxsize=1024)
def _plan(out_f: int, in_f: int, tokens: int, dtype: torch.dtype, alg_id: int, device: int) -> Plan | None:
    """The kept plan of these shapes, or None where the library refuses to plan them (seen for sides that are
    multiples of 16 but not of 32, which torch's operator runs: the caller falls back to it)."""
    try:
        return Plan(out_f, in_f, tokens, dtype, alg_id, device)
    except RuntimeError:
        return None


def matmul(packed: Tensor, x: Tensor, out_features: int, alg_id: int) -> Tensor | None:
    """``x W^T`` (``(tokens, out_features)``) for the compressed ``W`` ``packed``, through a kept plan, or None
    where these shapes have none; ``x`` is ``(tokens, in)``, contiguous, float16 or bfloat16, tokens a multiple
    of 8."""
    device = x.device.index if x.device.index is not None else torch.cuda.current_device()
    plan = _plan(out_features, x.shape[1], x.shape[0], x.dtype, alg_id, device)
    return None if plan is None else plan(packed, x)
