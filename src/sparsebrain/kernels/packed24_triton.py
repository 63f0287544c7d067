"""CUDA kernels, in Triton, between a 2:4 weight's value slots and its compressed forms and gradient.

A 2:4 group is 4 consecutive entries holding exactly 2 value slots, at positions ``i0 < i1`` of the group, coded in
one byte as ``i0 | i1 << 2 | k0 << 4 | k1 << 5`` (``k0``, ``k1``: whether each slot is a link; a slot that is not
holds zero). The value slots of ``W`` (``(out, in)``) are its row groups' slots in row-major order, ``(out, in /
2)``: the trainable parameter and the first part of the compressed ``W``. Those of ``W^T`` run down the columns of
``W``: group ``g`` of column ``c`` is rows ``4g .. 4g + 3``, and they are ``(in, out / 2)``. Each program works on
a tile of ``W``, read or rebuilt once in registers, with no index tensor (an int64 index per value is 4x the bytes
of a bfloat16 value, which is what makes these faster than gathers).

- ``spread_``: from the value slots (``codes`` of the row groups, ``codes_t`` of the column groups), writes the
  compressed ``W``'s slots (the values, converted) and ``W^T``'s (the tile rebuilt dense, then read down its
  columns).
- ``slot_gather_``: reads a dense ``(out, in)`` gradient at the value slots (zero where a slot is not a link).

The plain-torch definitions are the gathers of :meth:`sparsebrain.kernels.packed24.Packed24.refresh_` and
:meth:`~sparsebrain.kernels.packed24.Packed24.slot_grad` (their reference paths), which the tests compare against.

Example (CUDA with Triton installed):
    >>> spread_(prefix, prefix_t, values, codes, codes_t)  # doctest: +SKIP
"""

from __future__ import annotations

import triton
import triton.language as tl
from torch import Tensor

__all__ = ["slot_gather_", "spread_"]


@triton.jit
def _pick(w, i0, i1, axis: tl.constexpr, j):
    """The entries at slots ``i0`` and ``i1`` of the groups of ``w``, whose group axis (of size 4) is ``axis``."""
    first = tl.sum(tl.where(j == i0, w, 0.0), axis=axis)
    second = tl.sum(tl.where(j == i1, w, 0.0), axis=axis)
    return first, second


@triton.jit
def _links_only(first, second, code):
    """``first`` and ``second``, the values at a group's two slots, zeroed where ``code`` says a slot is no link."""
    return tl.where((code >> 4 & 1) == 1, first, 0.0), tl.where((code >> 5 & 1) == 1, second, 0.0)


@triton.jit
def _spread_kernel(
    prefix, prefix_t, values, codes, codes_t, out_f, in_f, BA: tl.constexpr, BB: tl.constexpr
):  # fmt: skip
    """One tile of ``4 BA`` rows x ``4 BB`` columns of W: its ``4 BA x 2 BB`` value slots read once, written to
    ``prefix`` (``(out, in / 2)``) and, through the dense tile, its ``BA x 4 BB`` column groups to ``prefix_t``."""
    R: tl.constexpr = 4 * BA
    C: tl.constexpr = 4 * BB
    r = tl.program_id(0) * R + tl.arange(0, R)  # rows of W
    r64 = r.to(tl.int64)
    g = tl.program_id(1) * BB + tl.arange(0, BB)  # row groups of the tile
    s = tl.program_id(1) * 2 * BB + tl.arange(0, 2 * BB)  # their value slots
    live_s = (r[:, None] < out_f) & (s[None, :] < in_f // 2)
    v = tl.load(values + r64[:, None] * (in_f // 2) + s[None, :], mask=live_s, other=0.0).to(tl.float32)
    live_g = (r[:, None] < out_f) & (g[None, :] < in_f // 4)
    code = tl.load(codes + r64[:, None] * (in_f // 4) + g[None, :], mask=live_g, other=0).to(tl.int32)
    first, second = tl.split(tl.reshape(v, (R, BB, 2)))
    first, second = _links_only(first, second, code)  # a slot that is not a link holds zero
    tl.store(prefix + r64[:, None] * (in_f // 2) + s[None, :],
             tl.reshape(tl.join(first, second), (R, 2 * BB)).to(prefix.dtype.element_ty), mask=live_s)  # fmt: skip
    # the dense tile, (R, BB, 4) -> (R, C), then its column groups: (BA, 4, C), written row-major into W^T's slots
    j = tl.arange(0, 4)
    i0, i1 = (code & 3)[:, :, None], (code >> 2 & 3)[:, :, None]
    w = tl.where(j[None, None, :] == i0, first[:, :, None], tl.where(j[None, None, :] == i1, second[:, :, None], 0.0))
    c = tl.program_id(1) * C + tl.arange(0, C)  # columns of W
    c64 = c.to(tl.int64)
    h = tl.program_id(0) * BA + tl.arange(0, BA)
    live_t = (h[:, None] < out_f // 4) & (c[None, :] < in_f)
    code_t = tl.load(codes_t + h.to(tl.int64)[:, None] * in_f + c64[None, :], mask=live_t, other=0).to(tl.int32)
    first_t, second_t = _pick(tl.reshape(w, (BA, 4, C)), (code_t & 3)[:, None, :], (code_t >> 2 & 3)[:, None, :],
                              1, j[None, :, None])  # fmt: skip
    s_t = tl.program_id(0) * 2 * BA + tl.arange(0, 2 * BA)
    tl.store(prefix_t + c64[:, None] * (out_f // 2) + s_t[None, :],
             tl.reshape(tl.permute(tl.join(first_t, second_t), (1, 0, 2)), (C, 2 * BA)).to(prefix_t.dtype.element_ty),
             mask=(c[:, None] < in_f) & (s_t[None, :] < out_f // 2))  # fmt: skip


@triton.jit
def _slot_gather_kernel(grad, dense, codes, out_f, in_f, BA: tl.constexpr, BB: tl.constexpr):
    """One tile of ``4 BA`` rows x ``4 BB`` columns of the dense ``dense``, read once, its value slots written to
    ``grad`` (``(out, in / 2)``)."""
    R: tl.constexpr = 4 * BA
    C: tl.constexpr = 4 * BB
    r = tl.program_id(0) * R + tl.arange(0, R)
    c = tl.program_id(1) * C + tl.arange(0, C)
    r64 = r.to(tl.int64)
    w = tl.load(dense + r64[:, None] * in_f + c.to(tl.int64)[None, :], mask=(r[:, None] < out_f) & (c[None, :] < in_f),
                other=0.0).to(tl.float32)  # fmt: skip
    g = tl.program_id(1) * BB + tl.arange(0, BB)
    live_g = (r[:, None] < out_f) & (g[None, :] < in_f // 4)
    code = tl.load(codes + r64[:, None] * (in_f // 4) + g[None, :], mask=live_g, other=0).to(tl.int32)
    j = tl.arange(0, 4)
    first, second = _pick(tl.reshape(w, (R, BB, 4)), (code & 3)[:, :, None], (code >> 2 & 3)[:, :, None], 2,
                          j[None, None, :])  # fmt: skip
    first, second = _links_only(first, second, code)
    s = tl.program_id(1) * 2 * BB + tl.arange(0, 2 * BB)
    tl.store(grad + r64[:, None] * (in_f // 2) + s[None, :],
             tl.reshape(tl.join(first, second), (R, 2 * BB)).to(grad.dtype.element_ty),
             mask=(r[:, None] < out_f) & (s[None, :] < in_f // 2))  # fmt: skip


# A tile of 32 rows x 256 columns, 2 warps: for the dense-weight form of these copies, within 3% of the fastest of 40
# tilings at each of the 1B-shaped projections and 4096 <-> 11008 on the H200 (32 x 64 with 4 warps took 1.8x as
# long at 4096 x 11008).
_BLOCK_A, _BLOCK_B, _WARPS = 8, 64, 2


def _grid(out_f: int, in_f: int) -> tuple[int, int]:
    return triton.cdiv(out_f, 4 * _BLOCK_A), triton.cdiv(in_f, 4 * _BLOCK_B)


def spread_(prefix: Tensor, prefix_t: Tensor, values: Tensor, codes: Tensor, codes_t: Tensor) -> None:
    """Writes the value slots ``values`` (``(out, in / 2)``, contiguous) into ``prefix`` (``W``'s slots) and, read
    down the columns (``codes_t``, uint8 ``(out / 4, in)``), into ``prefix_t`` (``W^T``'s), each ``out * in / 2``
    entries, contiguous, in its own dtype; ``codes`` (uint8 ``(out, in / 4)``) name the row groups' slots."""
    out_f, half = values.shape
    _spread_kernel[_grid(out_f, 2 * half)](prefix, prefix_t, values, codes, codes_t, out_f, 2 * half,
                                           BA=_BLOCK_A, BB=_BLOCK_B, num_warps=_WARPS)  # fmt: skip


def slot_gather_(grad: Tensor, dense: Tensor, codes: Tensor) -> None:
    """Writes ``dense`` (``(out, in)``, contiguous) at the value slots of its row groups (``codes``) into ``grad``
    (``(out, in / 2)``, contiguous, in its own dtype)."""
    out_f, in_f = dense.shape
    _slot_gather_kernel[_grid(out_f, in_f)](grad, dense, codes, out_f, in_f, BA=_BLOCK_A, BB=_BLOCK_B,
                                            num_warps=_WARPS)  # fmt: skip
