"""The link products: references against dense arithmetic, every backend against the references.

The CPU backend (torch.sparse) runs in CI; the Triton kernels run in Triton's CPU interpreter where Triton is
installed, and on a CUDA device (``python -m pytest tests/kernels`` on the GPU machine).
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebrain.kernels import csr_ops, csr_reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_CUDA = torch.cuda.is_available()


def _links(out_f: int, in_f: int, density: float, seed: int, index_dtype: torch.dtype = torch.int64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(out_f, in_f, generator=g) < density
    mask[0] = False  # an empty row
    weight = torch.randn(out_f, in_f, generator=g) * mask
    flat = mask.reshape(-1).nonzero().squeeze(1)
    rows, cols = (flat // in_f).to(index_dtype), (flat % in_f).to(index_dtype)
    row_ptr = torch.zeros(out_f + 1, dtype=index_dtype)
    row_ptr[1:] = torch.bincount(rows.long(), minlength=out_f).cumsum(0)
    to = lambda t: t.to(device)  # noqa: E731
    return to(mask), to(weight), to(weight[mask]), to(rows), to(cols), to(row_ptr)


SHAPES = [(1, 1, 1, 1.0), (5, 7, 3, 0.5), (64, 48, 33, 0.1), (200, 300, 17, 0.02), (37, 91, 129, 0.0)]


@pytest.mark.parametrize(("out_f", "in_f", "tokens", "density"), SHAPES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_references_are_the_dense_products_at_the_links(out_f, in_f, tokens, density, index_dtype) -> None:
    mask, weight, values, rows, cols, row_ptr = _links(out_f, in_f, density, 0, index_dtype)
    g = torch.Generator().manual_seed(1)
    x, dy = torch.randn(tokens, in_f, generator=g), torch.randn(tokens, out_f, generator=g)
    y = csr_reference.spmm_reference(values, row_ptr, cols, x.t(), out_f)
    torch.testing.assert_close(y, weight @ x.t(), rtol=1e-5, atol=1e-5)
    dw = csr_reference.sddmm_reference(dy.t(), x.t(), rows, cols)
    torch.testing.assert_close(dw, (dy.t() @ x)[mask], rtol=1e-5, atol=1e-5)


def test_reference_works_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    mask, _weight, values, rows, cols, row_ptr = _links(50, 60, 0.2, 3)
    x = torch.randn(9, 60)
    whole = csr_reference.spmm_reference(values, row_ptr, cols, x.t(), 50)
    monkeypatch.setattr(csr_reference, "_CHUNK_ELEMENTS", 20)  # a couple of links per chunk
    torch.testing.assert_close(csr_reference.spmm_reference(values, row_ptr, cols, x.t(), 50), whole)
    torch.testing.assert_close(
        csr_reference.sddmm_reference(x.t()[:50], x.t(), rows, cols), (x.t()[:50] @ x)[mask], rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(("out_f", "in_f", "tokens", "density"), SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cpu_backend_matches_the_reference(out_f, in_f, tokens, density, dtype) -> None:
    _mask, _weight, values, rows, cols, row_ptr = _links(out_f, in_f, density, 2, torch.int32)
    g = torch.Generator().manual_seed(4)
    x_t, dy_t = torch.randn(in_f, tokens, generator=g).to(dtype), torch.randn(out_f, tokens, generator=g).to(dtype)
    y = csr_ops.spmm(values, row_ptr, cols, x_t, out_f, "torch_sparse")
    y_ref = csr_reference.spmm_reference(values, row_ptr, cols, x_t, out_f)
    assert y.dtype == dtype and y.shape == (out_f, tokens)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=tol, atol=tol)
    s = csr_ops.sddmm(dy_t, x_t, rows, cols, row_ptr, "torch_sparse")
    torch.testing.assert_close(s, csr_reference.sddmm_reference(dy_t, x_t, rows, cols), rtol=1e-5, atol=1e-4)


@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA device and triton")
@pytest.mark.parametrize("shape", [(1, 1), (3, 130), (1000, 77), (4096, 2048)])
def test_cuda_transpose_is_torchs(shape) -> None:  # type: ignore[no-untyped-def]
    x = torch.randn(*shape, device="cuda").to(torch.bfloat16)
    t = csr_ops.transpose(x)
    assert t.is_contiguous() and torch.equal(t, x.t())


def test_transpose_of_a_transposed_view_is_free() -> None:
    x = torch.randn(5, 3)
    assert csr_ops.transpose(x.t()).data_ptr() == x.data_ptr()
    assert torch.equal(csr_ops.transpose(x), x.t()) and csr_ops.transpose(x).is_contiguous()


def test_backend_names_and_devices_are_checked() -> None:
    with pytest.raises(ValueError, match="backend must be one of"):
        csr_ops.backend_for(torch.device("cpu"), "cusparse")
    with pytest.raises(ValueError, match="needs a CUDA device"):
        csr_ops.backend_for(torch.device("cpu"), "triton")
    assert csr_ops.backend_for(torch.device("cpu")) == "torch_sparse"
    assert csr_ops.backend_for(torch.device("meta")) == "reference"


@pytest.mark.skipif(not HAS_TRITON, reason="needs the triton package (pip install 'sparsebrain[kernels]')")
def test_triton_kernels_in_the_interpreter_match_the_reference() -> None:
    script = Path(__file__).with_name("triton_interpreter.py")
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert proc.stdout.count("\n") == 23  # every case, both products, the transpose and the 2:4 slot kernels


@pytest.mark.skipif(not (HAS_CUDA and HAS_TRITON), reason="needs a CUDA device and triton")
@pytest.mark.parametrize(
    ("out_f", "in_f", "tokens", "density"),
    [(1, 1, 1, 1.0), (300, 500, 77, 0.05), (1024, 4096, 2048, 0.01), (4096, 1024, 3000, 0.003), (64, 64, 5000, 0.3)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_cuda_kernels_match_the_reference(out_f, in_f, tokens, density, dtype, index_dtype) -> None:
    _mask, _weight, values, rows, cols, row_ptr = _links(out_f, in_f, density, 5, index_dtype, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(6)
    x_t = torch.randn(in_f, tokens, generator=g, device="cuda").to(dtype)
    dy_t = torch.randn(out_f, tokens, generator=g, device="cuda").to(dtype)
    y = csr_ops.spmm(values, row_ptr, cols, x_t, out_f, "triton")
    y_ref = csr_reference.spmm_reference(values, row_ptr, cols, x_t, out_f)
    assert y.dtype == dtype and y.shape == (out_f, tokens)
    ulp = {torch.float32: 1e-5, torch.bfloat16: 2**-7, torch.float16: 2**-10}[dtype]
    torch.testing.assert_close(y.float(), y_ref.float(), rtol=ulp, atol=ulp)
    s = csr_ops.sddmm(dy_t, x_t, rows, cols, row_ptr, "triton")
    s_ref = csr_reference.sddmm_reference(dy_t, x_t, rows, cols)
    torch.testing.assert_close(s, s_ref, rtol=1e-4, atol=1e-4 * (1 + tokens / 1000))
