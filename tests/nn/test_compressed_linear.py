"""CompressedSparseLinear: the masked layer's arithmetic on the links alone, its protocol, its checkpoints."""

from __future__ import annotations

import copy
import io
import pickle

import pytest
import torch
from torch import nn

import sparsebrain as sb
from sparsebrain.dst.optimizer_state import reset_state_
from sparsebrain.nn.compressed_linear import index_dtype_for
from sparsebrain.topology.initial import er


def _pair(out_f: int = 30, in_f: int = 40, density: float = 0.2, seed: int = 0):  # type: ignore[no-untyped-def]
    """A masked and a compressed layer with the same links, weights and bias."""
    g = torch.Generator().manual_seed(seed)
    mask = torch.rand(out_f, in_f, generator=g) < density
    torch.manual_seed(seed)
    linear = nn.Linear(in_f, out_f)
    masked = sb.SparseLinear.from_linear(copy.deepcopy(linear), mask)
    compressed = sb.CompressedSparseLinear.from_linear(linear, mask)
    return masked, compressed, mask


@pytest.mark.parametrize("shape", [(30, 40, 0.2), (1, 1, 1.0), (64, 17, 0.05), (8, 9, 0.0)])
def test_forward_and_both_gradients_are_the_masked_layers(shape) -> None:  # type: ignore[no-untyped-def]
    masked, compressed, mask = _pair(*shape)
    x = torch.randn(5, 7, shape[1], requires_grad=True)
    x2 = x.detach().clone().requires_grad_()
    y1, y2 = masked(x), compressed(x2)
    torch.testing.assert_close(y2, y1, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(y1)
    y1.backward(g)
    y2.backward(g)
    torch.testing.assert_close(x2.grad, x.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compressed.values.grad, masked.weight.grad[mask], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(compressed.bias.grad, masked.bias.grad)


def test_bf16_autocast_on_the_cpu_matches_the_masked_layer() -> None:
    masked, compressed, _ = _pair(48, 64, 0.1)
    x = torch.randn(16, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y1, y2 = masked(x), compressed(x)
    assert y2.dtype == y1.dtype == torch.bfloat16
    torch.testing.assert_close(y2.float(), y1.float(), rtol=2e-2, atol=2e-2)
    y2.float().sum().backward()
    assert compressed.values.grad.dtype == torch.float32  # master weights stay float32


def test_input_of_another_dtype_is_refused_outside_autocast() -> None:
    _, compressed, _ = _pair()
    with pytest.raises(RuntimeError, match="input dtype torch.float64 differs"):
        compressed(torch.randn(2, 40, dtype=torch.float64))
    with pytest.raises(RuntimeError, match="input has 39 features, expected 40"):
        compressed(torch.randn(2, 39))


def test_built_directly_it_holds_the_er_links_of_the_same_seed_without_a_dense_weight() -> None:
    layer = sb.CompressedSparseLinear(500, 300, density=0.01, generator=torch.Generator().manual_seed(4))
    expected = er((300, 500), 0.01, generator=torch.Generator().manual_seed(4))
    assert torch.equal(layer.topology(), expected) and layer.nnz == 1500
    assert [p.numel() for p in layer.parameters()] == [1500, 300]
    assert layer.rows.dtype == torch.int32
    via_sparse_linear = sb.SparseLinear(500, 300, density=0.01, storage="compressed")
    assert isinstance(via_sparse_linear, sb.CompressedSparseLinear) and via_sparse_linear.nnz == 1500
    masked = sb.SparseLinear(500, 300, density=0.01, generator=torch.Generator().manual_seed(4))
    assert torch.equal(masked.mask, expected)
    with pytest.raises(ValueError, match="exactly one of density="):
        sb.CompressedSparseLinear(5, 5)


def test_index_dtype_is_int32_while_it_fits_and_refuses_an_overflow() -> None:
    assert index_dtype_for((4, 8), 10) == torch.int32
    assert index_dtype_for((4, 8), 10, "int64") == torch.int64
    assert index_dtype_for((2**31, 8), 10) == torch.int64
    with pytest.raises(ValueError, match="layer 'fc': shape .* does not fit int32 indices; pass index_dtype='int64'"):
        index_dtype_for((8, 2**31), 10, "int32", name="fc")
    with pytest.raises(ValueError, match="index_dtype must be one of"):
        sb.CompressedSparseLinear(4, 4, density=0.5, index_dtype="int16")


@pytest.mark.parametrize(
    "make",
    [
        lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
        lambda p: torch.optim.Adam(p, lr=0.01),
        lambda p: torch.optim.AdamW(p, lr=0.01, foreach=True),
        lambda p: torch.optim.AdamW(p, lr=0.01, fused=True),
    ],
    ids=["sgd", "adam", "adamw-foreach", "adamw-fused"],
)
def test_rewiring_moves_weights_gradients_and_optimizer_state_with_their_links(make) -> None:  # type: ignore[no-untyped-def]
    _, layer, mask = _pair(20, 30, 0.3)
    opt = make(layer.parameters())
    for _ in range(2):
        layer(torch.randn(4, 30)).square().sum().backward()
        opt.step()
    old_state = {
        k: layer._dense(v) for k, v in opt.state[layer.values].items() if v.dim() and v.shape == layer.values.shape
    }
    assert old_state
    old_weight, old_grad = layer.dense_weight(), layer._dense(layer.values.grad)
    new_mask = mask.clone()
    on = mask.nonzero()
    new_mask[on[0, 0], on[0, 1]] = False  # one link removed, two grown (the count may change)
    off = (~mask).nonzero()
    new_mask[off[0, 0], off[0, 1]] = new_mask[off[1, 0], off[1, 1]] = True
    moved = layer.rewire_(new_mask)
    reset_state_(opt, layer.values, moved["values"])
    assert torch.equal(layer.topology(), new_mask) and layer.values.shape == (int(new_mask.sum()),)
    kept, grown = mask & new_mask, new_mask & ~mask
    assert torch.equal(layer.dense_weight()[kept], old_weight[kept])
    assert torch.count_nonzero(layer.dense_weight()[grown]) == 0
    assert torch.equal(layer._dense(layer.values.grad)[kept], old_grad[kept])
    for key, before in old_state.items():
        after = layer._dense(opt.state[layer.values][key])
        assert torch.equal(after[kept], before[kept]) and torch.count_nonzero(after[grown]) == 0
    opt.zero_grad()
    layer(torch.randn(4, 30)).sum().backward()  # the optimizer steps on the new number of links
    opt.step()


def test_a_live_graph_does_not_pin_the_old_number_of_links() -> None:
    _, layer, mask = _pair(10, 10, 0.5)
    loss = layer(torch.randn(3, 10)).sum()
    loss.backward()  # ``loss`` (and its graph) stays alive across the rewiring, as in a training loop
    layer.rewire_(mask & (torch.rand(10, 10) < 0.5))
    layer.values.grad = None
    layer(torch.randn(3, 10)).sum().backward()
    assert layer.values.grad.shape == layer.values.shape


def test_checkpoints_load_into_either_storage() -> None:
    masked, compressed, mask = _pair()
    compressed.values.data.mul_(3)  # something to see
    fresh = sb.CompressedSparseLinear(40, 30, density=0.05)
    fresh.load_state_dict(compressed.state_dict())
    assert torch.equal(fresh.dense_weight(), compressed.dense_weight()) and fresh.nnz == compressed.nnz
    into_masked = sb.SparseLinear(40, 30, density=0.5)
    into_masked.load_state_dict(compressed.state_dict())
    assert torch.equal(into_masked.mask, mask) and torch.equal(into_masked.weight.detach(), compressed.dense_weight())
    from_masked = sb.CompressedSparseLinear(40, 30, density=0.05)
    from_masked.load_state_dict(masked.state_dict())
    assert torch.equal(from_masked.dense_weight(), masked.dense_weight())
    buffer = io.BytesIO()
    torch.save(compressed.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    state["cols"] = state["cols"].flip(0)
    with pytest.raises(RuntimeError, match="not distinct positions of a \\(30, 40\\) layer in row order"):
        fresh.load_state_dict(state)


def test_squash_gives_the_dense_linear_and_csr_export_the_same_weight() -> None:
    _, compressed, _ = _pair()
    model = nn.Sequential(compressed, nn.ReLU(), nn.Linear(30, 2))
    x = torch.randn(6, 40)
    before = model(x)
    csr = compressed.to_sparse_csr()
    assert csr.layout == torch.sparse_csr and torch.equal(csr.to_dense(), compressed.dense_weight())
    sb.squash_(model)
    assert type(model[0]) is nn.Linear
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_copies_and_pickles_compute_the_same() -> None:
    _, compressed, _ = _pair()
    x = torch.randn(3, 40)
    for other in (copy.deepcopy(compressed), pickle.loads(pickle.dumps(compressed))):
        torch.testing.assert_close(other(x), compressed(x))
