"""The masked weight gradient: ``grad * mask`` written in the weight's dtype, in one pass over memory.

Under bf16 autocast the weight's gradient arrives in bf16 and must leave in float32, zero off the mask. torch does
this in one ``mul`` with an ``out`` of the other dtype, but with a mixed-dtype kernel that does not vectorise (about
twice the time its bytes need); the Triton kernel reads 2 + 1 bytes and writes 4 per weight at full bandwidth.

Example:
    >>> g = torch.tensor([1.5, -2.0, 3.0], dtype=torch.bfloat16)
    >>> masked_grad(g, torch.tensor([True, False, True]), torch.float32).tolist()
    [1.5, -0.0, 3.0]
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

from ._triton import use_triton

__all__ = ["masked_grad", "masked_grad_reference"]


def masked_grad_reference(grad: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad * mask`` as ``dtype`` (plain torch): exact, since the mask is 0 or 1 (``-g * 0`` is ``-0``, NaN stays)."""
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    torch.mul(grad, mask, out=out)
    return out


@functools.cache
def _kernel() -> Any:
    import triton
    import triton.language as tl

    @triton.jit
    def masked_grad_kernel(grad_ptr, mask_ptr, out_ptr, n, BLOCK: tl.constexpr):  # type: ignore[no-untyped-def]
        offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        inside = offs < n
        g = tl.load(grad_ptr + offs, mask=inside, other=0.0)
        m = tl.load(mask_ptr + offs, mask=inside, other=0)
        # a product, not a select: the same signed zeros and NaNs as torch's grad * mask
        out = g.to(out_ptr.dtype.element_ty) * m.to(out_ptr.dtype.element_ty)
        tl.store(out_ptr + offs, out, mask=inside)

    return masked_grad_kernel


_BLOCK = 4096


def masked_grad(grad: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """``grad * mask`` as a new tensor of ``dtype``; a Triton kernel on CUDA, else :func:`masked_grad_reference`.

    ``mask`` is bool with ``grad``'s shape; both contiguous for the kernel (otherwise the reference runs).
    """
    if mask.shape != grad.shape or mask.dtype != torch.bool:
        raise ValueError(
            f"mask must be bool with grad's shape {tuple(grad.shape)}, got {mask.dtype} {tuple(mask.shape)}"
        )
    if not (use_triton(grad, mask) and grad.is_contiguous() and mask.is_contiguous() and grad.numel()):
        return masked_grad_reference(grad, mask, dtype)
    out = torch.empty(grad.shape, dtype=dtype, device=grad.device)
    n = grad.numel()
    _kernel()[((n + _BLOCK - 1) // _BLOCK,)](grad, mask.view(torch.uint8), out, n, BLOCK=_BLOCK)
    return out
