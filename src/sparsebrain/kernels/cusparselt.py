"""2:4 products on the sparse tensor cores through cuSPARSELt, compressed once and called with a searched algorithm.

A 2:4 weight ``W`` (``(out, in)``, at most 2 non-zeros in every 4 consecutive entries of a row) is compressed once
(:func:`compress`: its non-zeros and their positions, in the library's layout); each product then runs
``Y = X W^T`` as the sparse-times-dense ``(W X^T)^T``: ``X^T`` is a free transposed view of the token-major ``X``
and the library writes the transposed result, so no copy of the activations is made. The algorithm is searched once
per layer (:func:`search`) and passed to every call: the library's default is up to 1.5x slower on the H200.

Wraps private torch operators (``torch._cslt_compress``, ``torch._cslt_sparse_mm`` and the search), present in
torch >= 2.4 builds with cuSPARSELt; :func:`available` says whether this one has them. :func:`linear_reference` is
the plain-torch definition the products are tested against. For training, :class:`Packed24` holds a transposable
2:4 weight as ``W`` and ``W^T`` and :func:`linear24` runs the forward and the input gradient on the sparse tensor
cores (reference: :func:`linear24_reference`).

Example (CUDA with cuSPARSELt):
    >>> packed = compress(w)  # doctest: +SKIP
    >>> y = linear(x, packed, bias, search(packed, x))  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "Packed24",
    "available",
    "compress",
    "layout_holds",
    "linear",
    "linear24",
    "linear24_reference",
    "linear_reference",
    "search",
]


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
    """``x W^T + b`` for the compressed ``W``: ``x`` is ``(tokens, in)`` of the weight's dtype; ``(tokens, out)``."""
    tokens = x.shape[0]
    y = torch._cslt_sparse_mm(packed, _padded(x).t(), bias, transpose_result=True, alg_id=alg_id)
    return y if y.shape[0] == tokens else y[:tokens]


def linear_reference(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """The plain-torch definition: ``F.linear`` with the dense 2:4 weight (zeros included)."""
    return F.linear(x, weight, bias)


# ---------------------------------------------------------------------------------------------------------------------
# training with a transposable 2:4 weight: W and W^T compressed, refreshed from the dense weight at every step


class Packed24:
    """A transposable 2:4 weight held for the sparse tensor cores twice, as ``W`` and as ``W^T``.

    The compressed form's value slots are the kept entries in row-major order, a prefix of the buffer, and the rest
    is the pattern's metadata, which depends on the mask alone. So the mask is compressed once (at construction,
    after every topology change) and :meth:`refresh_` copies the weight's kept entries into the value slots: one
    gather per step instead of a compression of ``W`` and of ``W^T``. The layout is cuSPARSELt's, not a documented
    one: it is checked once per process against the library's own compression (:func:`layout_holds`); where it does
    not hold, :meth:`refresh_` compresses instead.

    Args:
        mask: bool ``(out, in)``, 2:4 along both sides (transposable), on a CUDA device.
        dtype: float16 or bfloat16, the products' dtype.
    """

    def __init__(self, mask: Tensor, dtype: torch.dtype) -> None:
        out_features, in_features = mask.shape
        self.mask, self.dtype = mask, dtype
        self.positions = mask.reshape(-1).nonzero().squeeze(1)  # W's kept entries, row-major
        by_col = mask.t().reshape(-1).nonzero().squeeze(1)  # W^T's kept entries, row-major, as positions of W^T
        self.positions_t = (by_col % out_features) * in_features + by_col // out_features  # ... as positions of W
        self.packed = compress(mask.to(dtype))
        self.packed_t = compress(mask.t().to(dtype))
        self.fast = layout_holds(dtype, mask.device)
        self.alg = self.alg_t = 0

    def search_(self, tokens: int) -> None:
        """Picks the fastest algorithm of both products for ``tokens`` rows of input."""
        out_features, in_features = self.mask.shape
        x = torch.randn(tokens, in_features, device=self.mask.device).to(self.dtype)
        dy = torch.randn(tokens, out_features, device=self.mask.device).to(self.dtype)
        self.alg, self.alg_t = search(self.packed, x), search(self.packed_t, dy)

    @torch.no_grad()
    def refresh_(self, weight: Tensor) -> None:
        """Makes the compressed ``W`` and ``W^T`` hold ``weight``'s kept entries (in the products' dtype)."""
        flat = weight.detach().reshape(-1)
        if self.fast:
            n = self.positions.numel()
            self.packed.view(-1)[:n].copy_(flat[self.positions])
            self.packed_t.view(-1)[:n].copy_(flat[self.positions_t])
        else:
            w = (weight.detach() * self.mask).to(self.dtype)
            self.packed, self.packed_t = compress(w), compress(w.t())


@functools.cache
def layout_holds(dtype: torch.dtype, device: torch.device) -> bool:
    """Whether cuSPARSELt's compressed 2:4 form is the kept entries in row-major order followed by metadata that
    depends on the mask alone (what :class:`Packed24` relies on), on a random probe: value slots bit-equal and the
    product right."""
    from ..topology import best_transposable_mask

    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(64, 128, generator=g, device=device)
    mask = best_transposable_mask(w.abs(), 2, 4)
    w = (w * mask + mask * 1e-3).to(dtype)  # no kept entry exactly 0
    packed = compress(mask.to(dtype))
    n = int(mask.sum())
    packed.view(-1)[:n] = w.reshape(-1)[mask.reshape(-1)]
    reference = compress(w)
    x = torch.randn(32, 128, generator=g, device=device).to(dtype)
    same_product = torch.allclose(linear(x, packed, None, 0).float(), F.linear(x, w).float(), rtol=1e-2, atol=1e-2)
    return bool(torch.equal(packed.view(-1)[:n], reference.view(-1)[:n])) and same_product


class _Linear24(torch.autograd.Function):
    """``Y = X W^T`` and ``dX = dY W`` on the sparse tensor cores, ``dW = (dY^T X) * mask`` dense."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, weight: Tensor, packed: Packed24) -> Tensor:
        ctx.packed, ctx.weight_dtype = packed, weight.dtype
        ctx.save_for_backward(x)
        return linear(x, packed.packed, None, packed.alg)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        (x,) = ctx.saved_tensors
        packed = ctx.packed
        dx = linear(dy, packed.packed_t, None, packed.alg_t) if ctx.needs_input_grad[0] else None
        dw = None
        if ctx.needs_input_grad[1]:
            dw = torch.empty(packed.mask.shape, dtype=ctx.weight_dtype, device=dy.device)
            torch.mul(dy.t() @ x, packed.mask, out=dw)
        return dx, dw, None


def linear24(x: Tensor, weight: Tensor, packed: Packed24) -> Tensor:
    """``x W^T`` for the dense ``weight`` held (as of its last :meth:`Packed24.refresh_`) in ``packed``, with
    gradients for ``x`` and ``weight`` (the latter masked); ``x`` is ``(tokens, in)`` in ``packed.dtype``."""
    return _Linear24.apply(x, weight, packed)


def linear24_reference(x: Tensor, weight: Tensor, mask: Tensor) -> Tensor:
    """The plain-torch definition of :func:`linear24`: the masked dense product."""
    return F.linear(x, (weight * mask).to(x.dtype))
