"""2:4 products on the sparse tensor cores through cuSPARSELt, compressed once and called with a searched algorithm.

A 2:4 weight ``W`` (``(out, in)``, at most 2 non-zeros in every 4 consecutive entries of a row) is compressed once
(:func:`compress`: its non-zeros and their positions, in the library's layout); each product then runs
``Y = X W^T`` as the sparse-times-dense ``(W X^T)^T``: ``X^T`` is a free transposed view of the token-major ``X``
and the library writes the transposed result, so no copy of the activations is made. The algorithm is searched once
per layer (:func:`search`) and passed to every call: the library's default is up to 1.5x slower on the H200.

Wraps private torch operators (``torch._cslt_compress``, ``torch._cslt_sparse_mm`` and the search), present in
torch >= 2.4 builds with cuSPARSELt; :func:`available` says whether this one has them. :func:`linear_reference` is
the plain-torch definition the products are tested against. Training on these products is in
:mod:`sparsebrain.kernels.packed24`.

Example (CUDA with cuSPARSELt):
    >>> packed = compress(w)  # doctest: +SKIP
    >>> y = linear(x, packed, bias, search(packed, x))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import warnings

import torch
import torch.nn.functional as F
from torch import Tensor

from . import cusparselt_plans

__all__ = ["available", "compress", "linear", "linear_reference", "search"]


@functools.cache
def available() -> bool:
    """Whether this torch build has cuSPARSELt and a CUDA device with sparse tensor cores (compute capability 8+)."""
    backend = getattr(torch.backends, "cusparselt", None)
    if backend is None or not backend.is_available() or not torch.cuda.is_available():
        return False
    return torch.cuda.get_device_capability() >= (8, 0) and hasattr(torch, "_cslt_sparse_mm")


def compress(weight: Tensor) -> Tensor:
    """The 2:4 ``weight`` (``(out, in)``, CUDA, float16 or bfloat16, contiguous) in cuSPARSELt's compressed form."""
    return torch._cslt_compress(weight.contiguous())


_TOKEN_MULTIPLE = 8  # the dense operand's sides must be multiples of 8 (float16 / bfloat16)
_COMPRESSION_FACTOR = 9  # a compressed float16 / bfloat16 weight has 9/16 of the dense weight's entries


def _padded(x: Tensor) -> Tensor:
    """``x`` (``(tokens, in)``) contiguous, with zero rows up to a multiple of :data:`_TOKEN_MULTIPLE` tokens."""
    pad = -x.shape[0] % _TOKEN_MULTIPLE
    return x.contiguous() if not pad else F.pad(x, (0, 0, 0, pad))


def search(packed: Tensor, x: Tensor, bias: Tensor | None = None) -> int:
    """The fastest cuSPARSELt algorithm for ``linear(x, packed, bias, ...)``, timed by the library on ``x``.

    A sample of the activations the layer will see (``(tokens, in)``) is enough: the choice depends on the shapes.
    float16 gets the library's default algorithm (0) without a search: with torch 2.11 (CUDA 13) on the H200 the
    search fails for float16 at every shape tried and leaves the CUDA context unusable, while the product itself
    is right.
    """
    if x.dtype == torch.float16:
        return 0
    x = _padded(x)  # as linear() pads it
    if hasattr(torch, "_cslt_sparse_mm_search"):
        with warnings.catch_warnings():  # torch 2.11 deprecates it for torch._C._cusparselt.mm_search
            warnings.simplefilter("ignore", UserWarning)
            found = torch._cslt_sparse_mm_search(packed, x.t(), bias=bias, transpose_result=True)
    else:
        found = torch._C._cusparselt.mm_search(packed, x.t(), bias, None, None, True)
    return int(found[0] if isinstance(found, tuple | list) else found)


def linear(x: Tensor, packed: Tensor, bias: Tensor | None, alg_id: int) -> Tensor:
    """``x W^T + b`` for the compressed ``W``: ``x`` is ``(tokens, in)`` of the weight's dtype; ``(tokens, out)``.

    Eager calls go through kept plans (:mod:`sparsebrain.kernels.cusparselt_plans`) where they can; under
    ``torch.compile`` (which cannot trace a foreign call) and where the plans are not available, through torch's
    operator, which computes the same product with a plan made for each call.
    """
    tokens = x.shape[0]
    xp = _padded(x)
    y = None
    if not torch.compiler.is_compiling() and cusparselt_plans.available():
        out_features = packed.numel() * 16 // _COMPRESSION_FACTOR // x.shape[1]
        y = cusparselt_plans.matmul(packed, xp, out_features, alg_id)
        if y is not None and bias is not None:
            y += bias
    if y is None:
        y = torch._cslt_sparse_mm(packed, xp.t(), bias, transpose_result=True, alg_id=alg_id)
    return y if y.shape[0] == tokens else y[:tokens]


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The plain-torch definition: ``F.linear`` with the dense 2:4 weight (zeros included)."""
    return F.linear(x, weight, bias)
