"""The fused masked gradient against its torch reference (and the reference against the unfused computation)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from sparsebrain.kernels import masked_grad, masked_grad_reference


def _cases() -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    out = []
    for shape in [(1,), (7, 5), (4096,), (3, 4099)]:  # below, at and across one block of the kernel
        grad = torch.randn(shape, generator=g).to(torch.bfloat16)
        mask = torch.rand(shape, generator=g) < 0.4
        flat = grad.view(-1)
        flat[: min(4, flat.numel())] = torch.tensor([float("nan"), -1.0, float("inf"), -float("inf")])[: flat.numel()]
        mask.view(-1)[:2] = False  # NaN * 0 stays NaN; -1 * 0 is -0
        out.append((grad, mask))
    return out


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (signed zeros included), NaN where the other has NaN."""
    nan = a.isnan()
    return bool(torch.equal(nan, b.isnan()) and torch.equal(a[~nan].view(torch.int32), b[~nan].view(torch.int32)))


@pytest.mark.parametrize("case", range(4))
def test_reference_is_the_cast_then_the_mask(case: int) -> None:
    grad, mask = _cases()[case]
    assert _same(masked_grad_reference(grad, mask, torch.float32), grad.float() * mask)


def test_cpu_tensors_take_the_reference() -> None:
    grad, mask = _cases()[1]
    assert _same(masked_grad(grad, mask, torch.float32), masked_grad_reference(grad, mask, torch.float32))


def test_bad_mask_is_refused() -> None:
    grad = torch.zeros(3, 4, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="mask must be bool"):
        masked_grad(grad, torch.ones(3, 4), torch.float32)
    with pytest.raises(ValueError, match="mask must be bool"):
        masked_grad(grad, torch.ones(4, 3, dtype=torch.bool), torch.float32)


_INTERPRETED = """
import torch
from tests.kernels.test_masked_grad import _cases, _same
from sparsebrain.kernels import masked_grad, masked_grad_reference
from sparsebrain.kernels._triton import use_triton
for grad, mask in _cases():
    assert use_triton(grad, mask)
    assert _same(masked_grad(grad, mask, torch.float32), masked_grad_reference(grad, mask, torch.float32))
print("ok")
"""


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="Triton is not installed")
def test_kernel_in_the_triton_interpreter_matches_the_reference() -> None:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    env.pop("SPARSEBRAIN_NO_TRITON", None)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    run = subprocess.run([sys.executable, "-c", _INTERPRETED], env=env, cwd=root, capture_output=True, text=True)
    assert run.returncode == 0 and "ok" in run.stdout, run.stderr[-2000:]
