"""Training on the 2:4 sparse tensor cores with a transposable weight held compressed as ``W`` and ``W^T``.

Needs a CUDA device with sparse tensor cores and a torch build with cuSPARSELt (skipped elsewhere, as in CI; the
Triton copy kernels are also checked in Triton's CPU interpreter, in ``triton_interpreter.py``).
"""

from __future__ import annotations

import pytest
import torch

from sparsebrain.kernels import cusparselt, packed24
from sparsebrain.topology import best_transposable_mask, random_transposable_mask

pytestmark = pytest.mark.skipif(not cusparselt.available(), reason="needs cuSPARSELt and sparse tensor cores")


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


@pytest.mark.parametrize(("fast", "kernel"), [(True, "triton"), (True, "gather"), (False, "gather")])
@pytest.mark.parametrize(("out_features", "in_features", "tokens"), [(256, 512, 300), (512, 128, 64)])
def test_packed_transposable_linear_matches_the_masked_product_and_its_gradients(
    fast: bool, kernel: str, out_features: int, in_features: int, tokens: int
) -> None:
    """Forward, input and weight gradients against the masked dense product; after a weight update the refreshed
    copies follow, on the layout shortcut and on the full compression alike."""
    g = torch.Generator(device="cuda").manual_seed(tokens)
    w0 = torch.randn(out_features, in_features, generator=g, device="cuda")
    mask = best_transposable_mask(w0.abs(), 2, 4)
    weight = torch.nn.Parameter(w0 * mask)  # float32 master weights
    packed = packed24.Packed24(mask, torch.bfloat16, kernel=kernel)
    packed.fast = fast and packed.fast
    packed.search_(tokens)
    for _ in range(2):
        packed.refresh_(weight)
        x = torch.randn(tokens, in_features, generator=g, device="cuda").bfloat16().requires_grad_()
        dy = torch.randn(tokens, out_features, generator=g, device="cuda").bfloat16()
        y = packed24.linear24(x, weight, packed)
        y.backward(dy)
        dx, dw = x.grad, weight.grad
        x.grad, weight.grad = None, None
        ref = packed24.linear24_reference(x, weight, mask)
        ref.backward(dy)
        assert _rel(y, ref) < 1e-2 and _rel(dx, x.grad) < 1e-2
        assert dw.dtype == torch.float32 and torch.count_nonzero(dw[~mask]) == 0
        assert _rel(dw, weight.grad * mask) < 1e-2  # the reference's gradient, masked as the layer's hook does
        weight.grad = None
        with torch.no_grad():
            weight.add_(torch.randn(weight.shape, generator=g, device="cuda") * mask)  # an optimizer step


def test_the_layout_shortcut_holds_here() -> None:
    """cuSPARSELt's compressed form is the kept entries row-major, then metadata (what makes a refresh a gather)."""
    assert packed24.layout_holds(torch.bfloat16, torch.device("cuda", torch.cuda.current_device()))


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(("out_features", "in_features"), [(16, 16), (256, 512), (528, 272), (1040, 48)])
def test_the_copy_kernels_write_exactly_what_the_gather_writes(n: int, out_features: int, in_features: int) -> None:
    """Bit for bit, on 2:4 and 1:4 masks with short groups, from float32 and bfloat16 weights."""
    g = torch.Generator().manual_seed(out_features)
    mask = random_transposable_mask((out_features, in_features), n, 4, generator=g)
    mask[0, :4] = False
    mask = mask.cuda()
    for dtype in (torch.float32, torch.bfloat16):
        weight = (torch.randn(out_features, in_features, generator=g) * mask.cpu()).cuda().to(dtype)
        fast = packed24.Packed24(mask, torch.bfloat16, kernel="triton")
        reference = packed24.Packed24(mask, torch.bfloat16, kernel="gather")
        assert fast.kernel == "triton" and fast.fast
        fast.refresh_(weight)
        reference.refresh_(weight)
        n = mask.numel() // 2  # the value slots (the metadata after them, and any padding, are the compressor's)
        assert torch.equal(fast.packed.view(-1)[:n], reference.packed.view(-1)[:n])
        assert torch.equal(fast.packed_t.view(-1)[:n], reference.packed_t.view(-1)[:n])


def test_short_groups_and_1_4_masks_compute_right() -> None:
    """A group with fewer than 2 kept entries holds zeros in its free slots: the products stay those of the mask."""
    g = torch.Generator(device="cuda").manual_seed(3)
    for n in (1, 2):
        mask = random_transposable_mask((256, 256), n, 4, generator=torch.Generator().manual_seed(n)).cuda()
        mask[:, :4] = False  # whole columns of empty groups
        mask[8:12, 16:20] = False
        weight = torch.nn.Parameter(torch.randn(256, 256, generator=g, device="cuda") * mask)
        packed = packed24.Packed24(mask, torch.bfloat16)
        packed.refresh_(weight)
        x = torch.randn(64, 256, generator=g, device="cuda").bfloat16().requires_grad_()
        y = packed24.linear24(x, weight, packed)
        ref = packed24.linear24_reference(x, weight, mask)
        assert _rel(y, ref) < 1e-2
        dy = torch.randn(y.shape, generator=g, device="cuda").bfloat16()
        (dx,) = torch.autograd.grad(y, x, dy)
        (dx_ref,) = torch.autograd.grad(ref, x, dy)
        assert _rel(dx, dx_ref) < 1e-2
