"""CUDA kernels, in Triton, that copy a 2:4 weight's kept entries into the value slots of its compressed forms.

A 2:4 group is 4 consecutive entries holding exactly 2 value slots, at positions ``i0 < i1`` of the group, coded in
one byte as ``i0 | i1 << 2``. The value slots of a compressed ``W`` (``(out, in)``) are its groups' slots in
row-major order, so ``values`` is ``(out, in / 2)``; those of ``W^T`` run down the columns of ``W``: group ``g`` of
column ``c`` is rows ``4g .. 4g + 3``, and ``values_t`` is ``(in, out / 2)``. Each program reads a tile of ``W`` once,
coalesced along its rows, and writes the tile's slots (converted to the values' dtype); no index tensor is read,
which is what makes this faster than a gather (an int64 index per value is 4x the bytes of a bfloat16 value).

- ``gather_rows_``: the slots of ``W``'s row groups, ``codes`` ``(out, in / 4)``.
- ``gather_cols_``: the slots of ``W``'s column groups, ``codes_t`` ``(out / 4, in)``.

The plain-torch definition is the gather in :meth:`sparsebrain.kernels.packed24.Packed24.refresh_` (its reference
path), which the tests compare against.

Example (CUDA with Triton installed):
    >>> gather_rows_(values, weight, codes)  # doctest: +SKIP
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

__all__ = ["gather_cols_", "gather_rows_"]

_BLOCK_ROWS, _BLOCK_GROUPS = 32, 32  # a tile of 32 rows x 128 entries of W (row kernel), 128 rows x 32 (column one)


@triton.jit
def _pick(w, i0, i1, axis: tl.constexpr, j):
    """The entries at slots ``i0`` and ``i1`` of the groups of ``w``, whose group axis (of size 4) is ``axis``."""
    first = tl.sum(tl.where(j == i0, w, 0.0), axis=axis)
    second = tl.sum(tl.where(j == i1, w, 0.0), axis=axis)
    return first, second


@triton.jit
def _gather_rows_kernel(values, weight, codes, out_f, groups, BR: tl.constexpr, BG: tl.constexpr):
    r = tl.program_id(0) * BR + tl.arange(0, BR)  # rows of W
    g = tl.program_id(1) * BG + tl.arange(0, BG)  # groups along the row
    r64 = r.to(tl.int64)
    live = (r[:, None] < out_f) & (g[None, :] < groups)  # (BR, BG)
    code = tl.load(codes + r64[:, None] * groups + g[None, :], mask=live, other=0).to(tl.int32)
    j = tl.arange(0, 4)
    col = g[None, :, None] * 4 + j[None, None, :]  # (1, BG, 4)
    w = tl.load(weight + r64[:, None, None] * (groups * 4) + col, mask=live[:, :, None], other=0.0).to(
        tl.float32
    )  # (BR, BG, 4)
    first, second = _pick(w, (code & 3)[:, :, None], (code >> 2)[:, :, None], 2, j[None, None, :])
    slot = tl.reshape(tl.join(first, second), (BR, 2 * BG))  # (BR, BG, 2) -> slots in row-major order
    s = tl.program_id(1) * 2 * BG + tl.arange(0, 2 * BG)
    live_s = (r[:, None] < out_f) & (s[None, :] < 2 * groups)
    tl.store(values + r64[:, None] * (2 * groups) + s[None, :], slot.to(values.dtype.element_ty), mask=live_s)


@triton.jit
def _gather_cols_kernel(values_t, weight, codes_t, groups, in_f, BG: tl.constexpr, BC: tl.constexpr):
    g = tl.program_id(0) * BG + tl.arange(0, BG)  # groups of 4 rows of W
    c = tl.program_id(1) * BC + tl.arange(0, BC)  # columns of W
    g64, c64 = g.to(tl.int64), c.to(tl.int64)
    live = (g[:, None] < groups) & (c[None, :] < in_f)  # (BG, BC)
    code = tl.load(codes_t + g64[:, None] * in_f + c64[None, :], mask=live, other=0).to(tl.int32)
    j = tl.arange(0, 4)
    row = g64[:, None, None] * 4 + j[None, :, None]  # (BG, 4, 1)
    w = tl.load(weight + row * in_f + c64[None, None, :], mask=live[:, None, :], other=0.0).to(tl.float32)
    first, second = _pick(w, (code & 3)[:, None, :], (code >> 2)[:, None, :], 1, j[None, :, None])  # (BG, BC)
    slot = tl.reshape(tl.permute(tl.join(first, second), (1, 0, 2)), (BC, 2 * BG))  # row c of W^T, its slots
    s = tl.program_id(0) * 2 * BG + tl.arange(0, 2 * BG)
    live_s = (c[:, None] < in_f) & (s[None, :] < 2 * groups)
    tl.store(values_t + c64[:, None] * (2 * groups) + s[None, :], slot.to(values_t.dtype.element_ty), mask=live_s)


def gather_rows_(values: Tensor, weight: Tensor, codes: Tensor) -> None:
    """Writes the slots of ``weight``'s row groups (``codes``, uint8 ``(out, in / 4)``) into ``values`` (``out *
    in / 2`` entries, contiguous), in row-major order."""
    out_f, in_f = weight.shape
    groups = in_f // 4
    grid = (triton.cdiv(out_f, _BLOCK_ROWS), triton.cdiv(groups, _BLOCK_GROUPS))
    _gather_rows_kernel[grid](values, weight.contiguous(), codes, out_f, groups, BR=_BLOCK_ROWS, BG=_BLOCK_GROUPS)


def gather_cols_(values_t: Tensor, weight: Tensor, codes_t: Tensor) -> None:
    """Writes the slots of ``weight``'s column groups (``codes_t``, uint8 ``(out / 4, in)``) into ``values_t``
    (``in * out / 2`` entries, contiguous), in the row-major order of ``W^T``."""
    out_f, in_f = weight.shape
    groups = out_f // 4
    grid = (triton.cdiv(groups, _BLOCK_GROUPS), triton.cdiv(in_f, _BLOCK_ROWS))
    _gather_cols_kernel[grid](values_t, weight.contiguous(), codes_t, groups, in_f, BG=_BLOCK_GROUPS, BC=_BLOCK_ROWS)
