"""SparseLinear, sparsify_ and squash_."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import sparsebrain as sb


def _seq() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(30, 40), nn.ReLU(), nn.Linear(40, 40), nn.ReLU(), nn.Linear(40, 3))


def test_sparsify_keeps_parameters_and_head_dense() -> None:
    model = _seq()
    params = [id(p) for p in model.parameters()]
    layers = sb.sparsify_(model, 0.25)
    assert list(layers) == ["0", "2"]
    assert isinstance(model[4], nn.Linear) and not isinstance(model[4], sb.SparseLinear)
    assert [id(p) for p in model.parameters()] == params  # an optimizer built before still works
    for layer in layers.values():
        assert int(layer.mask.sum()) == round(0.25 * layer.mask.numel())
        assert torch.count_nonzero(layer.weight[~layer.mask]) == 0


def test_mask_in_state_dict_and_round_trip() -> None:
    model = _seq()
    sb.sparsify_(model, 0.3, generator=torch.Generator().manual_seed(1))
    sd = model.state_dict()
    assert sd["0.mask"].dtype == torch.bool
    other = _seq()
    sb.sparsify_(other, 0.3, generator=torch.Generator().manual_seed(2))
    assert not torch.equal(other[0].mask, model[0].mask)
    other.load_state_dict(sd)
    assert torch.equal(other[0].mask, model[0].mask) and torch.equal(other[0].weight, model[0].weight)


@pytest.mark.parametrize("opt_cls", [torch.optim.SGD, torch.optim.Adam, torch.optim.AdamW])
def test_training_never_moves_off_mask_weights(opt_cls) -> None:  # type: ignore[no-untyped-def]
    model = _seq()
    sb.sparsify_(model, 0.2)
    kwargs = {"lr": 0.05, "weight_decay": 0.1}
    if opt_cls is torch.optim.SGD:
        kwargs["momentum"] = 0.9
    opt = opt_cls(model.parameters(), **kwargs)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(8, 30)).pow(2).mean().backward()
        opt.step()
    for layer in sb.sparse_layers(model).values():
        assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
        assert torch.count_nonzero(layer.weight.grad[~layer.mask]) == 0


def test_forward_matches_masked_dense() -> None:
    model = _seq()
    ref = copy.deepcopy(model)
    sb.sparsify_(model, 0.5)
    with torch.no_grad():
        for i in (0, 2):
            ref[i].weight.mul_(model[i].mask)
    x = torch.randn(4, 30)
    assert torch.allclose(model(x), ref(x))


def test_squash_returns_plain_linear_with_zeros() -> None:
    model = _seq()
    sb.sparsify_(model, 0.1)
    masks = {n: m.mask.clone() for n, m in sb.sparse_layers(model).items()}
    x = torch.randn(4, 30)
    y = model(x)
    sb.squash_(model)
    assert not sb.sparse_layers(model)
    assert type(model[0]) is nn.Linear
    assert torch.count_nonzero(model[0].weight) == int(masks["0"].sum())
    assert torch.allclose(model(x), y)


def test_deepcopy_keeps_one_gradient_hook() -> None:
    model = _seq()
    sb.sparsify_(model, 0.2)
    clone = copy.deepcopy(model)
    clone[0].capture_dense_grad_(True)
    clone(torch.randn(4, 30)).sum().backward()
    g = clone[0].weight.grad
    assert torch.count_nonzero(g[~clone[0].mask]) == 0
    assert torch.allclose(clone[0].dense_grad() * clone[0].mask, g)  # captured once, not twice


def test_bad_mask_shape() -> None:
    with pytest.raises(ValueError, match="mask must have shape"):
        sb.SparseLinear(4, 3, mask=torch.ones(4, 3, dtype=torch.bool))
