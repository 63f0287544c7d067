"""Tests of the per-layer density allocations: the global budget, the cap at 1, ERK's ordering by layer size."""

from __future__ import annotations

import pytest

from sparsebrain.topology.allocation import ALLOCATIONS, allocate, erk, uniform

MLP = [(1568, 784), (1568, 1568), (1568, 1568), (10, 1568)]
TRANSFORMER = [(512, 512)] * 4 + [(2048, 512), (512, 2048)]
MIXED = [(3, 5), (64, 32), (1000, 10), (2048, 4096), (7, 7)]
SHAPE_SETS = {"mlp": MLP, "transformer": TRANSFORMER, "mixed": MIXED, "single": [(100, 300)]}


def _budget(shapes: list[tuple[int, int]], densities: list[float]) -> float:
    return sum(d * o * i for d, (o, i) in zip(densities, shapes))


def erk_reference(shapes: list[tuple[int, int]], density: float, power_scale: float = 1.0) -> list[float]:
    """ERK written the slow way: cap one layer (the most over 1) at a time until no density exceeds 1."""
    raw = [((o + i) / (o * i)) ** power_scale for o, i in shapes]
    numel = [o * i for o, i in shapes]
    dense: set[int] = set()
    while True:
        free = [j for j in range(len(shapes)) if j not in dense]
        if not free:
            return [1.0] * len(shapes)
        eps = (density * sum(numel) - sum(numel[j] for j in dense)) / sum(raw[j] * numel[j] for j in free)
        worst = max(free, key=lambda j: raw[j])
        if eps * raw[worst] <= 1.0:
            return [1.0 if j in dense else eps * raw[j] for j in range(len(shapes))]
        dense.add(worst)


def test_uniform_gives_every_layer_the_global_density() -> None:
    assert uniform(MLP, 0.05) == [0.05] * 4
    assert _budget(MLP, uniform(MLP, 0.05)) == pytest.approx(0.05 * _budget(MLP, [1.0] * 4))


@pytest.mark.parametrize("density", [0.001, 0.01, 0.05, 0.3, 0.9, 1.0])
@pytest.mark.parametrize("name", list(SHAPE_SETS))
def test_erk_meets_the_budget_and_stays_in_range(name: str, density: float) -> None:
    shapes = SHAPE_SETS[name]
    d = erk(shapes, density)
    assert len(d) == len(shapes)
    assert all(0.0 < x <= 1.0 for x in d)
    assert _budget(shapes, d) == pytest.approx(density * _budget(shapes, [1.0] * len(shapes)), rel=1e-9)
    assert d == pytest.approx(erk_reference(shapes, density), rel=1e-9)


def test_erk_is_proportional_to_the_erk_ratio_for_uncapped_layers() -> None:
    d = erk(MLP, 0.01)
    ratio = [(o + i) / (o * i) for o, i in MLP]
    assert all(x < 1.0 for x in d)
    for j in range(1, len(MLP)):
        assert d[j] / d[0] == pytest.approx(ratio[j] / ratio[0], rel=1e-12)


def test_erk_orders_layers_by_size() -> None:
    # a smaller layer (larger (n_in + n_out) / (n_in n_out)) never gets a lower density
    d = erk(MIXED, 0.005)
    ratio = [(o + i) / (o * i) for o, i in MIXED]
    pairs = sorted(zip(ratio, d))
    assert all(a[1] <= b[1] for a, b in zip(pairs, pairs[1:]))
    assert d[3] < d[1] < d[2] < d[0] == 1.0  # 2048x4096 < 64x32 < 1000x10 < 3x5 (capped)


def test_erk_caps_small_layers_at_one_and_rescales_the_rest() -> None:
    d = erk(MLP, 0.05)
    assert d[3] == 1.0  # the 10-output head would get about 3.9 uncapped
    assert all(x < 1.0 for x in d[:3])
    assert _budget(MLP, d) == pytest.approx(0.05 * _budget(MLP, [1.0] * 4))
    # the head's unused share goes to the other layers: above what plain proportional scaling would give them
    raw = [(o + i) / (o * i) for o, i in MLP]
    eps_uncapped = 0.05 * _budget(MLP, [1.0] * 4) / sum(r * o * i for r, (o, i) in zip(raw, MLP))
    assert d[0] > eps_uncapped * raw[0]


def test_erk_caps_several_layers_in_turn() -> None:
    shapes = [(2, 2), (4, 4), (8, 8), (1000, 1000)]
    d = erk(shapes, 0.6)
    assert d[:3] == [1.0, 1.0, 1.0] and d[3] < 1.0
    assert d == pytest.approx(erk_reference(shapes, 0.6))


def test_erk_density_one_is_dense() -> None:
    assert erk(MIXED, 1.0) == [1.0] * len(MIXED)


def test_erk_power_scale() -> None:
    assert erk(MIXED, 0.2, power_scale=0.0) == pytest.approx(uniform(MIXED, 0.2))
    half, full = erk(TRANSFORMER, 0.1, power_scale=0.5), erk(TRANSFORMER, 0.1)
    # the 512x512 layers get more than the 2048x512 ones, less so at power 0.5
    assert 1.0 < half[0] / half[4] < full[0] / full[4]
    assert half == pytest.approx(erk_reference(TRANSFORMER, 0.1, 0.5))


def test_erk_does_not_depend_on_orientation() -> None:
    assert erk(MIXED, 0.1) == pytest.approx(erk([(i, o) for o, i in MIXED], 0.1))


@pytest.mark.parametrize("fn", [uniform, erk])
def test_bad_density_raises(fn) -> None:  # type: ignore[no-untyped-def]
    for bad in (0.0, -0.5, 1.2, float("nan")):
        with pytest.raises(ValueError, match="density"):
            fn(MLP, bad)


@pytest.mark.parametrize("fn", [uniform, erk])
def test_bad_shapes_raise(fn) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="shapes"):
        fn([], 0.1)
    with pytest.raises(ValueError, match="shapes"):
        fn(5, 0.1)
    for bad in ([(0, 4)], [(4,)], [(4, 2.5)], [(4, 4), "ab"]):
        with pytest.raises(ValueError, match="shape"):
            fn(bad, 0.1)


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_erk_bad_power_scale_raises(bad: float) -> None:
    with pytest.raises(ValueError, match="power_scale"):
        erk(MLP, 0.1, power_scale=bad)


def test_registry() -> None:
    assert {"uniform", "erk"} <= set(ALLOCATIONS.names())
    assert allocate("erk", MLP, 0.05) == erk(MLP, 0.05)
    assert allocate("uniform", MLP, 0.05) == uniform(MLP, 0.05)
    assert allocate("erk", MLP, 0.05, power_scale=0.0) == pytest.approx(uniform(MLP, 0.05))
    with pytest.raises(ValueError, match="unknown allocation 'ekr'"):
        allocate("ekr", MLP, 0.05)
