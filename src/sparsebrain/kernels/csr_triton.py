"""CUDA kernels of the link products, in Triton: one program per (row, token block), links gathered in chunks.

Activations are feature-major (``(features, tokens)``, tokens contiguous), so a link's operand is a contiguous run
of tokens and a chunk of ``BL`` links is a ``(BL, BT)`` gather of whole cache lines. The grid runs every row of one
token block before the next block (the row is the fast grid axis), so the activations that the rows share, one
token block of them, stay in L2 while all rows read them. Products run on the CUDA cores with float32 accumulation:
an unstructured sparse row has no reuse for the tensor cores to exploit.

- ``spmm``: ``y_t[r, t] = sum over links l of row r of values[l] * x_t[index[l], t]``; each program runs one row
  over a chunk of tokens, block by block.
- ``sddmm``: ``out[l] = sum_t a_t[r, t] * b_t[index[l], t]`` for the links ``l`` of row ``r``; long token ranges
  are split into chunks whose partial sums are added atomically, so that every SM has work.

Indices may be int32 or int64; addresses are computed in int64 (a 65536-feature layer at 16384 tokens has 2^30
activations). The plain-torch definitions are in :mod:`sparsebrain.kernels.csr_reference`.

Example (CUDA with Triton installed):
    >>> y = spmm(values, row_ptr, index, x_t, n_rows)  # doctest: +SKIP
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["sddmm", "spmm", "transpose"]


def _configs(names: tuple[str, ...], choices: list[tuple[int, ...]]) -> list[triton.Config]:
    return [triton.Config(dict(zip(names, c[:-1])), num_warps=c[-1]) for c in choices]


_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # the CPU interpreter: no autotuning, first config
_SPMM_CONFIGS = _configs(
    ("BL", "BT", "TC"),
    [(16, 128, 1024, 4), (32, 128, 1024, 8), (32, 64, 2048, 4), (16, 256, 2048, 8), (64, 64, 1024, 8),
     (8, 512, 2048, 8), (16, 128, 4096, 4), (8, 256, 1024, 4), (4, 512, 2048, 4)],
)  # fmt: skip
_SDDMM_CONFIGS = _configs(
    ("BL", "BT", "TC"),
    [(16, 128, 1024, 4), (32, 128, 1024, 4), (32, 64, 2048, 4), (16, 256, 2048, 8), (64, 64, 1024, 4)],
)


def _tuned(kernel: triton.JITFunction, configs: list[triton.Config], **options: object) -> triton.JITFunction:
    if _INTERPRET:
        return kernel
    return triton.autotune(configs=configs, key=["n_rows", "T", "nnz_bucket"], **options)(kernel)  # type: ignore[arg-type]


def _fixed(configs: list[triton.Config]) -> dict[str, int]:
    """The meta-parameters passed by hand where autotuning does not run."""
    return dict(configs[0].kwargs) if _INTERPRET else {}


@triton.jit
def _spmm_kernel(
    values, row_ptr, index, x_t, y_t, n_rows, T, nnz_bucket, BL: tl.constexpr, BT: tl.constexpr, TC: tl.constexpr
):
    # one row, TC tokens in blocks of BT: the row's links are re-read per block from L1, the gathered activations
    # of a token block are shared through L2 by every row
    r = tl.program_id(0)
    t_begin = tl.program_id(1).to(tl.int64) * TC
    start = tl.load(row_ptr + r).to(tl.int64)
    end = tl.load(row_ptr + r + 1).to(tl.int64)
    y_row = y_t + r.to(tl.int64) * T
    for t0 in range(0, TC, BT):
        t = t_begin + t0 + tl.arange(0, BT)
        in_t = t < T
        # products accumulate elementwise in a (BL, BT) tile, reduced over the links once per token block: a
        # reduction per chunk would shuffle between threads at every step
        acc = tl.zeros((BL, BT), dtype=tl.float32)
        for l0 in range(start, end, BL):
            link = l0 + tl.arange(0, BL)
            on = link < end
            k = tl.load(index + link, mask=on, other=0).to(tl.int64)
            v = tl.load(values + link, mask=on, other=0.0).to(tl.float32)
            xs = tl.load(x_t + k[:, None] * T + t[None, :], mask=on[:, None] & in_t[None, :], other=0.0)
            acc += v[:, None] * xs.to(tl.float32)
        tl.store(y_row + t, tl.sum(acc, axis=0).to(y_t.dtype.element_ty), mask=in_t)


@triton.jit
def _transpose_kernel(x, out, M, N, BM: tl.constexpr, BN: tl.constexpr):
    # out (N, M) = x (M, N) transposed, a tile at a time (the shuffle goes through shared memory)
    i = tl.program_id(0).to(tl.int64) * BM + tl.arange(0, BM)
    j = tl.program_id(1).to(tl.int64) * BN + tl.arange(0, BN)
    on = (i[:, None] < M) & (j[None, :] < N)
    tile = tl.load(x + i[:, None] * N + j[None, :], mask=on)
    tl.store(out + j[None, :] * M + i[:, None], tile, mask=on)


@triton.jit
def _sddmm_kernel(
    a_t, b_t, row_ptr, index, out, n_rows, T, nnz_bucket, BL: tl.constexpr, BT: tl.constexpr, TC: tl.constexpr
):
    r = tl.program_id(0)
    t_begin = tl.program_id(1).to(tl.int64) * TC
    start = tl.load(row_ptr + r).to(tl.int64)
    end = tl.load(row_ptr + r + 1).to(tl.int64)
    a_row = a_t + r.to(tl.int64) * T
    for l0 in range(start, end, BL):
        link = l0 + tl.arange(0, BL)
        on = link < end
        k = tl.load(index + link, mask=on, other=0).to(tl.int64)
        acc = tl.zeros((BL, BT), dtype=tl.float32)  # reduced over the tokens once, at the end
        for t0 in range(0, TC, BT):
            t = t_begin + t0 + tl.arange(0, BT)
            in_t = t < T
            a = tl.load(a_row + t, mask=in_t, other=0.0).to(tl.float32)
            b = tl.load(b_t + k[:, None] * T + t[None, :], mask=on[:, None] & in_t[None, :], other=0.0)
            acc += b.to(tl.float32) * a[None, :]
        tl.atomic_add(out + link, tl.sum(acc, axis=1), mask=on)


_spmm = _tuned(_spmm_kernel, _SPMM_CONFIGS)
_sddmm = _tuned(_sddmm_kernel, _SDDMM_CONFIGS, reset_to_zero=["out"])


def _bucket(nnz: int, n_rows: int) -> int:
    """A coarse links-per-row class, so that autotuning re-runs when the density changes by 2x, not every update."""
    return max(1, nnz // max(n_rows, 1)).bit_length()


def transpose(x: Tensor) -> Tensor:
    """``x.t().contiguous()`` for a contiguous 2-D CUDA ``x``, in tiles (several times faster than torch's copy)."""
    if x.dim() != 2 or not x.is_contiguous():
        raise ValueError("transpose takes a contiguous 2-D tensor")
    M, N = x.shape
    out = torch.empty(N, M, dtype=x.dtype, device=x.device)
    if x.numel():
        _transpose_kernel[(triton.cdiv(M, 64), triton.cdiv(N, 64))](x, out, M, N, BM=64, BN=64)
    return out


def spmm(values: Tensor, row_ptr: Tensor, index: Tensor, x_t: Tensor, n_rows: int) -> Tensor:
    """``(n_rows, tokens)`` (feature-major) in ``x_t``'s dtype; ``x_t`` contiguous ``(features, tokens)``."""
    _check(x_t, values, row_ptr, index)
    T = x_t.shape[1]
    y_t = torch.empty(n_rows, T, dtype=x_t.dtype, device=x_t.device)
    if n_rows and T:
        grid = lambda m: (n_rows, triton.cdiv(T, m["TC"]))  # noqa: E731
        meta = _fixed(_SPMM_CONFIGS)
        _spmm[grid](values, row_ptr, index, x_t, y_t, n_rows, T, _bucket(index.numel(), n_rows), **meta)
    return y_t


def sddmm(a_t: Tensor, b_t: Tensor, row_ptr: Tensor, index: Tensor) -> Tensor:
    """``(nnz,)`` float32: ``a_t^T b_t`` at the links (CSR ``row_ptr`` over ``a_t``'s rows, columns ``index``)."""
    _check(b_t, None, row_ptr, index)
    if not a_t.is_contiguous() or a_t.shape[1] != b_t.shape[1]:
        raise ValueError("sddmm: a_t must be contiguous with as many tokens as b_t")
    n_rows, T = a_t.shape
    out = torch.zeros(index.numel(), dtype=torch.float32, device=a_t.device)
    if index.numel() and T:
        grid = lambda m: (n_rows, triton.cdiv(T, m["TC"]))  # noqa: E731
        meta = _fixed(_SDDMM_CONFIGS)
        _sddmm[grid](a_t, b_t, row_ptr, index, out, n_rows, T, _bucket(index.numel(), n_rows), **meta)
    return out


def _check(x_t: Tensor, values: Tensor | None, row_ptr: Tensor, index: Tensor) -> None:
    if not x_t.is_contiguous():
        raise ValueError("the activations must be contiguous and feature-major: (features, tokens)")
    tensors = [x_t, row_ptr, index] + ([values] if values is not None else [])
    if len({t.device for t in tensors}) != 1:
        raise ValueError(f"the operands are on different devices: {sorted({str(t.device) for t in tensors})}")
