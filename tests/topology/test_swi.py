"""Tests of Sparse Weight Initialisation: N(0, 2 / (density * fan_in)) on the mask, exact zeros off it."""

from __future__ import annotations

import math

import pytest
import torch

from sparsebrain.topology.swi import swi_


def _mask(shape: tuple[int, int], density: float, seed: int = 100) -> torch.Tensor:
    # a seed the weights never use: the same stream for mask and weights would correlate them
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed)) < density


@pytest.mark.parametrize("density", [0.02, 0.1, 0.5, 1.0])
def test_std_follows_the_formula(density: float) -> None:
    shape = (1024, 2048)
    mask = _mask(shape, density)
    w = swi_(torch.empty(shape), mask, generator=torch.Generator().manual_seed(1))
    on = w[mask].double()
    sigma = math.sqrt(2.0 / (float(mask.float().mean()) * shape[1]))
    assert float(on.std()) == pytest.approx(sigma, rel=0.03)
    assert abs(float(on.mean())) < 5 * sigma / math.sqrt(on.numel())


def test_zero_off_mask_and_nonzero_on_mask() -> None:
    mask = _mask((300, 500), 0.07)
    w = swi_(torch.full((300, 500), 7.0), mask)
    assert bool((w[~mask] == 0).all())
    assert bool((w[mask] != 0).all())


def test_in_place_and_returns_the_weight() -> None:
    w = torch.empty(20, 30)
    ptr = w.data_ptr()
    out = swi_(w, _mask((20, 30), 0.3))
    assert out is w and w.data_ptr() == ptr


def test_parameter_that_requires_grad_is_filled_without_autograd() -> None:
    p = torch.nn.Parameter(torch.empty(16, 24))
    swi_(p, _mask((16, 24), 0.5))
    assert p.requires_grad and p.grad_fn is None
    assert p.is_leaf


def test_seeded_generator_is_deterministic() -> None:
    mask = _mask((40, 50), 0.2)
    a = swi_(torch.empty(40, 50), mask, generator=torch.Generator().manual_seed(3))
    b = swi_(torch.empty(40, 50), mask, generator=torch.Generator().manual_seed(3))
    c = swi_(torch.empty(40, 50), mask, generator=torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_float_mask_and_fan_in_is_the_second_dimension() -> None:
    # a wide and a tall layer with the same density: sigma depends on fan_in = weight.shape[1] only
    for shape in [(256, 2048), (2048, 256)]:
        mask = _mask(shape, 0.25).float()
        w = swi_(torch.empty(shape), mask, generator=torch.Generator().manual_seed(0))
        sigma = math.sqrt(2.0 / (float(mask.mean()) * shape[1]))
        assert float(w[mask.bool()].std()) == pytest.approx(sigma, rel=0.03)
        assert bool((w[mask == 0] == 0).all())


def test_dense_mask_is_he_init() -> None:
    w = swi_(
        torch.empty(512, 1024), torch.ones(512, 1024, dtype=torch.bool), generator=torch.Generator().manual_seed(0)
    )
    assert float(w.std()) == pytest.approx(math.sqrt(2.0 / 1024), rel=0.02)


def test_empty_mask_gives_zeros_not_nan() -> None:
    w = swi_(torch.ones(8, 8), torch.zeros(8, 8, dtype=torch.bool))
    assert bool((w == 0).all())


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="mask"):
        swi_(torch.empty(4, 5), torch.ones(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="weight"):
        swi_(torch.empty(20), torch.ones(20, dtype=torch.bool))
