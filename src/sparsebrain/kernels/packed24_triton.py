"""CUDA kernels, in Triton, that copy a 2:4 weight's kept entries into the value slots of its compressed forms.

A 2:4 group is 4 consecutive entries holding exactly 2 value slots, at positions ``i0 < i1`` of the group, coded in
one byte as ``i0 | i1 << 2``. The value slots of a compressed ``W`` (``(out, in)``) are its groups' slots in
row-major order, so ``values`` is ``(out, in / 2)``; those of ``W^T`` run down the columns of ``W``: group ``g`` of
column ``c`` is rows ``4g .. 4g + 3``, and ``values_t`` is ``(in, out / 2)``. Each program reads a tile of ``W`` once,
coalesced along its rows, and writes the tile's slots of both forms (converted to the values' dtype); no index tensor
is read, which is what makes this faster than a gather (an int64 index per value is 4x the bytes of a bfloat16
value).

``gather_`` writes both from one read of each tile of ``W``: the slots of its row groups (``codes``, ``(out, in /
4)``) and of its column groups (``codes_t``, ``(out / 4, in)``).

The plain-torch definition is the gather in :meth:`sparsebrain.kernels.packed24.Packed24.refresh_` (its reference
path), which the tests compare against.

Example (CUDA with Triton installed):
    >>> gather_(values, values_t, weight, codes, codes_t)  # doctest: +SKIP
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

__all__ = ["gather_"]


@triton.jit
def _pick(w, i0, i1, axis: tl.constexpr, j):
    """The entries at slots ``i0`` and ``i1`` of the groups of ``w``, whose group axis (of size 4) is ``axis``."""
    first = tl.sum(tl.where(j == i0, w, 0.0), axis=axis)
    second = tl.sum(tl.where(j == i1, w, 0.0), axis=axis)
    return first, second


@triton.jit
def _gather_kernel(
    values, values_t, weight, codes, codes_t, out_f, in_f, BA: tl.constexpr, BB: tl.constexpr
):  # fmt: skip
    """One tile of ``4 BA`` rows x ``4 BB`` columns of W, read once: its ``4 BA x BB`` row groups go to ``values``,
    its ``BA x 4 BB`` column groups to ``values_t``."""
    R: tl.constexpr = 4 * BA
    C: tl.constexpr = 4 * BB
    r = tl.program_id(0) * R + tl.arange(0, R)  # rows of W
    c = tl.program_id(1) * C + tl.arange(0, C)  # columns of W
    r64, c64 = r.to(tl.int64), c.to(tl.int64)
    w = tl.load(weight + r64[:, None] * in_f + c64[None, :], mask=(r[:, None] < out_f) & (c[None, :] < in_f),
                other=0.0).to(tl.float32)  # fmt: skip
    j = tl.arange(0, 4)
    # row groups: (R, BB, 4), slots written row-major into values, (out, in / 2)
    g = tl.program_id(1) * BB + tl.arange(0, BB)
    live = (r[:, None] < out_f) & (g[None, :] < in_f // 4)
    code = tl.load(codes + r64[:, None] * (in_f // 4) + g[None, :], mask=live, other=0).to(tl.int32)
    first, second = _pick(tl.reshape(w, (R, BB, 4)), (code & 3)[:, :, None], (code >> 2)[:, :, None], 2,
                          j[None, None, :])  # fmt: skip
    s = tl.program_id(1) * 2 * BB + tl.arange(0, 2 * BB)
    tl.store(values + r64[:, None] * (in_f // 2) + s[None, :],
             tl.reshape(tl.join(first, second), (R, 2 * BB)).to(values.dtype.element_ty),
             mask=(r[:, None] < out_f) & (s[None, :] < in_f // 2))  # fmt: skip
    # column groups: (BA, 4, C), slots written row-major into values_t, (in, out / 2)
    h = tl.program_id(0) * BA + tl.arange(0, BA)
    live_t = (h[:, None] < out_f // 4) & (c[None, :] < in_f)
    code_t = tl.load(codes_t + h.to(tl.int64)[:, None] * in_f + c64[None, :], mask=live_t, other=0).to(tl.int32)
    first, second = _pick(tl.reshape(w, (BA, 4, C)), (code_t & 3)[:, None, :], (code_t >> 2)[:, None, :], 1,
                          j[None, :, None])  # fmt: skip
    s = tl.program_id(0) * 2 * BA + tl.arange(0, 2 * BA)
    tl.store(values_t + c64[:, None] * (out_f // 2) + s[None, :],
             tl.reshape(tl.permute(tl.join(first, second), (1, 0, 2)), (C, 2 * BA)).to(values_t.dtype.element_ty),
             mask=(c[:, None] < in_f) & (s[None, :] < out_f // 2))  # fmt: skip


# A tile of 32 rows x 256 columns, 2 warps: within 3% of the fastest of 40 tilings at each of the 1B-shaped
# projections and 4096 <-> 11008 on the H200 (0.089 ms at 4096 x 11008, 69% of the memory bandwidth; 32 x 64 with
# 4 warps took 0.164 ms).
_BLOCK_A, _BLOCK_B, _WARPS = 8, 64, 2


def gather_(values: Tensor, values_t: Tensor, weight: Tensor, codes: Tensor, codes_t: Tensor) -> None:
    """Writes the slots of ``weight``'s row groups (``codes``, uint8 ``(out, in / 4)``) into ``values`` and those of
    its column groups (``codes_t``, uint8 ``(out / 4, in)``) into ``values_t`` (``out * in / 2`` entries each,
    contiguous), each in the row-major order of ``W`` and of ``W^T``."""
    out_f, in_f = weight.shape
    grid = (triton.cdiv(out_f, 4 * _BLOCK_A), triton.cdiv(in_f, 4 * _BLOCK_B))
    _gather_kernel[grid](values, values_t, weight.contiguous(), codes, codes_t, out_f, in_f, BA=_BLOCK_A, BB=_BLOCK_B,
                         num_warps=_WARPS)  # fmt: skip
