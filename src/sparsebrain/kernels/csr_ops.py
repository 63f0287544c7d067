"""The two products of a layer that stores only its links, on whichever kernels the device has.

- ``spmm``: ``y_t[r, t] = sum_l values[l] * x_t[index[l], t]`` over the links ``l`` of row ``r`` (CSR order):
  the forward ``Y^T = W X^T`` (rows of ``W``) and the input gradient ``dX^T = W^T dY^T`` (rows of ``W^T``, the CSC
  order).
- ``transpose``: between the token-major activations of a model and the feature-major ones the products read.
- ``sddmm``: ``out[l] = sum_t a_t[rows[l], t] * b_t[index[l], t]``: the weight gradient at the links only.

Activations are passed feature-major (``x_t``: ``(features, tokens)``). On CUDA the Triton kernels run
(:mod:`sparsebrain.kernels.csr_triton`, when Triton is installed); on the CPU, MKL's sparse products through
``torch.sparse`` (float32: MKL has no bf16 product, so lower precision is computed in float32 and rounded once);
anywhere else, or with ``backend="reference"``, the plain-torch references of :mod:`sparsebrain.kernels.csr_reference`.

Example:
    >>> import torch
    >>> row_ptr, index, values = torch.tensor([0, 1, 2]), torch.tensor([1, 0]), torch.tensor([2.0, 3.0])
    >>> spmm(values, row_ptr, index, torch.tensor([[1.0], [10.0]]), 2).tolist()  # W = [[0, 2], [3, 0]], x = [1, 10]
    [[20.0], [3.0]]
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import Tensor

from . import csr_reference

__all__ = ["BACKENDS", "backend_for", "sddmm", "spmm", "transpose"]

BACKENDS = ("auto", "triton", "torch_sparse", "reference")


@functools.cache
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def backend_for(device: torch.device, backend: str = "auto") -> str:
    """The kernels ``backend`` means on ``device``: ``"triton"`` (CUDA), ``"torch_sparse"`` (CPU) or ``"reference"``.

    Raises ``ValueError`` for a backend that is not one of :data:`BACKENDS` or that ``device`` cannot run.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, BACKENDS))}; got {backend!r}")
    if backend == "auto":
        if device.type == "cuda" and _triton_available():
            return "triton"
        if device.type == "cuda":
            _warn_no_triton()
            return "reference"
        return "torch_sparse" if device.type == "cpu" else "reference"
    if backend == "triton" and not (device.type == "cuda" and _triton_available()):
        raise ValueError(f"backend='triton' needs a CUDA device and the triton package; got device {device}")
    if backend == "torch_sparse" and device.type != "cpu":
        raise ValueError(f"backend='torch_sparse' runs on the CPU (MKL); got device {device}")
    return backend


@functools.cache
def _warn_no_triton() -> None:
    warnings.warn(
        "compressed sparse layers on CUDA run the slow plain-torch reference products: install triton "
        "(pip install 'sparsebrain[kernels]') for the fast kernels",
        UserWarning,
        stacklevel=4,
    )


def spmm(values: Tensor, row_ptr: Tensor, index: Tensor, x_t: Tensor, n_rows: int, backend: str = "auto") -> Tensor:
    """``(n_rows, tokens)``: the CSR matrix ``(values, row_ptr, index)`` times the feature-major ``x_t``, in
    ``x_t``'s dtype (float32 accumulation)."""
    chosen = backend_for(x_t.device, backend)
    if chosen == "triton":
        from . import csr_triton

        return csr_triton.spmm(values, row_ptr, index, x_t.contiguous(), n_rows)
    if chosen == "torch_sparse":
        with warnings.catch_warnings():  # "sparse CSR support is in beta": said once per process is noise here
            warnings.simplefilter("ignore", UserWarning)
            w = torch.sparse_csr_tensor(
                row_ptr.to(index.dtype), index, values.float(), (n_rows, x_t.shape[0]), check_invariants=False
            )
            return torch.sparse.mm(w, x_t.float()).to(x_t.dtype)
    return csr_reference.spmm_reference(values, row_ptr, index, x_t, n_rows)


def transpose(x: Tensor, backend: str = "auto") -> Tensor:
    """``x.t()`` as a contiguous tensor (``x`` 2-D); a transposed view of a contiguous tensor costs nothing."""
    if x.t().is_contiguous():
        return x.t()
    if backend_for(x.device, backend) == "triton":
        from . import csr_triton

        return csr_triton.transpose(x.contiguous())
    return x.t().contiguous()


def sddmm(a_t: Tensor, b_t: Tensor, rows: Tensor, index: Tensor, row_ptr: Tensor, backend: str = "auto") -> Tensor:
    """``(nnz,)`` float32: ``(a_t^T b_t)`` sampled at the links ``(rows, index)``, sorted in CSR order
    (``row_ptr``)."""
    chosen = backend_for(a_t.device, backend)
    if chosen == "triton":
        from . import csr_triton

        return csr_triton.sddmm(a_t.contiguous(), b_t.contiguous(), row_ptr, index)
    if chosen == "torch_sparse":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            pattern = torch.sparse_csr_tensor(
                row_ptr.to(index.dtype),
                index,
                torch.zeros(index.numel(), dtype=torch.float32),
                (a_t.shape[0], b_t.shape[0]),
                check_invariants=False,
            )
            return torch.sparse.sampled_addmm(pattern, a_t.float(), b_t.float().t(), beta=0.0).values()
    return csr_reference.sddmm_reference(a_t, b_t, rows, index)
