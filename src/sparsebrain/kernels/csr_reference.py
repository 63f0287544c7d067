"""Plain-torch definitions of the link products: what every fast kernel is compared with.

Both work in float32 and in chunks of links, so that their memory stays bounded on large layers (a gather of
``nnz x tokens`` at once would be the dense layer's size many times over).

Example:
    >>> import torch
    >>> row_ptr, index, values = torch.tensor([0, 1, 2]), torch.tensor([1, 0]), torch.tensor([2.0, 3.0])
    >>> spmm_reference(values, row_ptr, index, torch.tensor([[1.0], [10.0]]), 2).tolist()
    [[20.0], [3.0]]
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["sddmm_reference", "spmm_reference"]

_CHUNK_ELEMENTS = 1 << 24  # links x tokens gathered at once (64 MiB in float32)


def _rows_of(row_ptr: Tensor, nnz: int) -> Tensor:
    """The row of each link from the CSR row pointers."""
    counts = (row_ptr[1:] - row_ptr[:-1]).long()
    return torch.repeat_interleave(torch.arange(counts.numel(), device=row_ptr.device), counts, output_size=nnz)


def spmm_reference(values: Tensor, row_ptr: Tensor, index: Tensor, x_t: Tensor, n_rows: int) -> Tensor:
    """``y_t[r, t] = sum over links l of row r of values[l] * x_t[index[l], t]``: feature-major ``(n_rows,
    tokens)`` in ``x_t``'s dtype, accumulated in float32."""
    tokens = x_t.shape[1]
    nnz = index.numel()
    rows = _rows_of(row_ptr, nnz)
    out = torch.zeros(n_rows, tokens, dtype=torch.float32, device=x_t.device)
    step = max(1, _CHUNK_ELEMENTS // max(tokens, 1))
    for start in range(0, nnz, step):
        sl = slice(start, start + step)
        contrib = values[sl].float()[:, None] * x_t[index[sl].long()].float()
        out.index_add_(0, rows[sl], contrib)
    return out.to(x_t.dtype)


def sddmm_reference(a_t: Tensor, b_t: Tensor, rows: Tensor, index: Tensor) -> Tensor:
    """``out[l] = sum_t a_t[rows[l], t] * b_t[index[l], t]`` (float32, ``(nnz,)``): ``a_t^T b_t`` at the links."""
    tokens = a_t.shape[1]
    nnz = index.numel()
    out = torch.empty(nnz, dtype=torch.float32, device=a_t.device)
    step = max(1, _CHUNK_ELEMENTS // max(tokens, 1))
    for start in range(0, nnz, step):
        sl = slice(start, start + step)
        out[sl] = (a_t[rows[sl].long()].float() * b_t[index[sl].long()].float()).sum(1)
    return out
