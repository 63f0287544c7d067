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


def _slots_of(weight: torch.Tensor, mask: torch.Tensor) -> torch.nn.Parameter:
    """The value slots of the dense ``weight`` on ``mask``, as a trainable parameter."""
    return torch.nn.Parameter(packed24.slots_from_dense(weight, *packed24.slot_masks(mask)))


@pytest.mark.parametrize(("fast", "kernel"), [(True, "triton"), (True, "gather"), (False, "gather")])
@pytest.mark.parametrize(("out_features", "in_features", "tokens"), [(256, 512, 300), (512, 128, 64)])
def test_packed_transposable_linear_matches_the_dense_product_and_its_gradients(
    fast: bool, kernel: str, out_features: int, in_features: int, tokens: int
) -> None:
    """Forward, input and value-slot gradients against the dense product of the slots' weight; after an update
    of the slots the refreshed copies follow, on the layout shortcut and on the full compression alike."""
    g = torch.Generator(device="cuda").manual_seed(tokens)
    w0 = torch.randn(out_features, in_features, generator=g, device="cuda")
    mask = best_transposable_mask(w0.abs(), 2, 4)
    values = _slots_of(w0 * mask, mask)  # float32 master weights
    reference = torch.nn.Parameter(values.detach().clone())
    packed = packed24.Packed24(mask, torch.bfloat16, kernel=kernel)
    packed.fast = fast and packed.fast
    packed.search_(tokens)
    for _ in range(2):
        packed.refresh_(values)
        x = torch.randn(tokens, in_features, generator=g, device="cuda").bfloat16().requires_grad_()
        dy = torch.randn(tokens, out_features, generator=g, device="cuda").bfloat16()
        y = packed24.linear24(x, values, packed)
        y.backward(dy)
        dx, dv = x.grad, values.grad
        x.grad, values.grad = None, None
        ref = packed24.linear24_reference(x, reference, mask)
        ref.backward(dy)
        assert _rel(y, ref) < 1e-2 and _rel(dx, x.grad) < 1e-2
        assert dv.dtype == torch.float32 and dv.shape == (out_features, in_features // 2)
        assert _rel(dv, reference.grad) < 1e-2
        reference.grad = None
        with torch.no_grad():
            step = torch.randn(values.shape, generator=g, device="cuda")  # an optimizer step
            values.add_(step)
            reference.add_(step)


def test_the_layout_shortcut_holds_here() -> None:
    """cuSPARSELt's compressed form is the kept entries row-major, then metadata (what makes a refresh a copy)."""
    assert packed24.layout_holds(torch.bfloat16, torch.device("cuda", torch.cuda.current_device()))


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize(("out_features", "in_features"), [(16, 16), (256, 512), (528, 272), (1040, 48)])
def test_the_kernels_write_exactly_what_the_gathers_write(n: int, out_features: int, in_features: int) -> None:
    """Bit for bit, on 2:4 and 1:4 masks with short groups, from float32 and bfloat16 slots (noise at the slots that
    are not links must not leak), and the slot gradient from a bfloat16 product."""
    g = torch.Generator().manual_seed(out_features)
    mask = random_transposable_mask((out_features, in_features), n, 4, generator=g)
    mask[0, :4] = False
    mask = mask.cuda()
    for dtype in (torch.float32, torch.bfloat16):
        values = torch.randn(out_features, in_features // 2, generator=g).cuda().to(dtype)
        fast = packed24.Packed24(mask, torch.bfloat16, kernel="triton")
        reference = packed24.Packed24(mask, torch.bfloat16, kernel="gather")
        assert fast.kernel == "triton" and fast.fast
        fast.refresh_(values)
        reference.refresh_(values)
        n = mask.numel() // 2  # the value slots (the metadata after them, and any padding, are the compressor's)
        assert torch.equal(fast.packed.view(-1)[:n], reference.packed.view(-1)[:n])
        assert torch.equal(fast.packed_t.view(-1)[:n], reference.packed_t.view(-1)[:n])
        dense = torch.randn(out_features, in_features, generator=g).cuda().bfloat16()
        for out in (torch.float32, torch.bfloat16):
            assert torch.equal(fast.slot_grad(dense, out), reference.slot_grad(dense, out))


def test_short_groups_and_1_4_masks_compute_right() -> None:
    """A group with fewer than 2 kept entries holds zeros in its free slots: the products stay those of the mask."""
    g = torch.Generator(device="cuda").manual_seed(3)
    for n in (1, 2):
        mask = random_transposable_mask((256, 256), n, 4, generator=torch.Generator().manual_seed(n)).cuda()
        mask[:, :4] = False  # whole columns of empty groups
        mask[8:12, 16:20] = False
        values = torch.nn.Parameter(torch.randn(256, 128, generator=g, device="cuda"))  # noise at free slots, too
        packed = packed24.Packed24(mask, torch.bfloat16)
        packed.refresh_(values)
        x = torch.randn(64, 256, generator=g, device="cuda").bfloat16().requires_grad_()
        y = packed24.linear24(x, values, packed)
        ref = packed24.linear24_reference(x, values, mask)
        assert _rel(y, ref) < 1e-2
        dy = torch.randn(y.shape, generator=g, device="cuda").bfloat16()
        (dx, dv) = torch.autograd.grad(y, (x, values), dy)
        (dx_ref, dv_ref) = torch.autograd.grad(ref, (x, values), dy)
        assert _rel(dx, dx_ref) < 1e-2 and _rel(dv, dv_ref) < 1e-2
        _, kept = packed24.slot_masks(mask)
        assert torch.count_nonzero(dv[~kept]) == 0
