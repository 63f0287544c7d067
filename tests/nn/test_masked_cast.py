"""Under autocast, SparseLinear masks the weight's gradient inside the cast's backward; it must equal the hook's."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import sparsebrain as sb

AUTOCAST = {"device_type": "cpu", "dtype": torch.bfloat16}


def _pair(seed: int = 0) -> tuple[nn.Linear, sb.SparseLinear, Tensor]:
    """A dense linear and a sparse one starting from the same (masked) weights, and the mask."""
    torch.manual_seed(seed)
    mask = torch.rand(48, 40) < 0.3
    dense = nn.Linear(40, 48)
    with torch.no_grad():
        dense.weight.mul_(mask)
    sparse = sb.SparseLinear.from_linear(copy.deepcopy(dense), mask)
    return dense, sparse, mask


def _grads(layer: nn.Module, loss_of: Callable[[nn.Module, Tensor], Tensor], steps: int = 1) -> Tensor:
    torch.manual_seed(1)
    for _ in range(steps):  # micro-batches accumulate into .grad
        x = torch.randn(6, 40)
        with torch.autocast(**AUTOCAST):
            loss = loss_of(layer, x)
        loss.backward()
    return layer.weight.grad  # type: ignore[return-value]


def _once(layer: nn.Module, x: Tensor) -> Tensor:
    return layer(x).float().pow(2).sum()


def _twice(layer: nn.Module, x: Tensor) -> Tensor:  # the layer used twice in one graph
    return (layer(x) * layer(x.flip(0))).float().sum()


def _with_penalty(layer: nn.Module, x: Tensor) -> Tensor:  # a gradient that reaches the weight outside forward
    return _once(layer, x) + 0.1 * layer.weight.abs().sum()  # type: ignore[operator]


@pytest.mark.parametrize("loss_of", [_once, _twice, _with_penalty], ids=["once", "twice", "penalty"])
@pytest.mark.parametrize("steps", [1, 2])
def test_gradient_is_the_dense_gradient_masked_bit_for_bit(loss_of, steps) -> None:  # type: ignore[no-untyped-def]
    dense, sparse, mask = _pair()
    want = _grads(dense, loss_of, steps) * mask
    got = _grads(sparse, loss_of, steps)
    assert got.dtype == torch.float32
    assert torch.equal(got, want)
    assert torch.count_nonzero(got[~mask]) == 0


def test_the_fused_backward_is_used_only_where_autocast_casts() -> None:
    _, sparse, _ = _pair()
    with torch.autocast(**AUTOCAST):
        w = sparse._weight_for_forward()
        assert w.dtype == torch.bfloat16 and "MaskedCast" in type(w.grad_fn).__name__
        with torch.no_grad():
            assert sparse._weight_for_forward() is sparse.weight
        sparse.capture_dense_grad_(True)  # the hook captures the unmasked gradient: no fusion then
        assert sparse._weight_for_forward() is sparse.weight
        sparse.capture_dense_grad_(False)
    assert sparse._weight_for_forward() is sparse.weight  # no autocast: nothing to fuse
    bf16 = sb.SparseLinear(40, 48, dtype=torch.bfloat16)
    with torch.autocast(**AUTOCAST):
        assert bf16._weight_for_forward() is bf16.weight  # autocast does not cast it either


def test_capture_under_autocast_keeps_the_unmasked_gradient() -> None:
    dense, sparse, mask = _pair()
    sparse.capture_dense_grad_(True)
    want = _grads(dense, _once, 2)
    got = _grads(sparse, _once, 2)
    assert torch.equal(sparse.dense_grad(), want)
    assert torch.equal(got, want * mask)


def test_a_copy_fuses_on_its_own_weight() -> None:
    dense, sparse, mask = _pair()
    clone = copy.deepcopy(sparse)
    with torch.autocast(**AUTOCAST):
        assert "MaskedCast" in type(clone._weight_for_forward().grad_fn).__name__
    assert torch.equal(_grads(clone, _with_penalty), _grads(dense, _with_penalty) * mask)
    assert sparse.weight.grad is None


def test_autocast_training_keeps_off_mask_weights_zero() -> None:
    _, sparse, mask = _pair()
    opt = torch.optim.AdamW(sparse.parameters(), lr=0.05, weight_decay=0.1)
    for _ in range(3):
        opt.zero_grad()
        _grads(sparse, _with_penalty)
        opt.step()
    assert torch.count_nonzero(sparse.weight[~mask]) == 0
    assert torch.count_nonzero(opt.state[sparse.weight]["exp_avg"][~mask]) == 0
