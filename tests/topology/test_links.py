"""The links-only form of a topology update: positional random numbers, index sampling, selection over tiles, CH
scores from the links, percolation on index sets, each against the bool-mask computation it replaces."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from sparsebrain.topology.link_prediction import ch2_l3n, ch2_l3p, ch3_l3n, ch3_l3p, l3n_tiles, l3p_tiles
from sparsebrain.topology.links import Links, scores_at, select_from_tiles
from sparsebrain.topology.percolation import Junction, active_neuron_fraction, layer_active_fraction, percolate
from sparsebrain.topology.sampling import (
    draw_seeds,
    positional_uniform,
    sample_positions,
    select_regrowth,
)


def _mask(shape: tuple[int, int], density: float, seed: int) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < density


def _tiles(scores: torch.Tensor, rows: int):  # type: ignore[no-untyped-def]
    for lo in range(0, scores.shape[0], rows):
        yield lo, min(lo + rows, scores.shape[0]), scores[lo : lo + rows]


# ---------------------------------------------------------------------------------------------------------------------
# positional uniforms


def test_positional_uniforms_depend_on_the_position_alone() -> None:
    seed = torch.tensor(123456789)
    every = positional_uniform(seed, torch.arange(10000))
    perm = torch.randperm(10000, generator=torch.Generator().manual_seed(0))
    assert torch.equal(positional_uniform(seed, perm), every[perm])  # any order or subset: the same numbers
    assert torch.equal(positional_uniform(seed, torch.arange(5000, 7000)), every[5000:7000])
    assert bool(((every > 0) & (every < 1)).all())
    assert not torch.equal(positional_uniform(torch.tensor(1), torch.arange(100)), every[:100])  # seeds differ
    # huge positions (a 65536 x 65536 layer) hash like small ones: no overflow error, same range
    big = positional_uniform(seed, torch.arange(2**32 - 1000, 2**32, dtype=torch.long))
    assert bool(((big > 0) & (big < 1)).all())


def test_positional_uniforms_are_uniform_and_uncorrelated() -> None:
    u = positional_uniform(torch.tensor(7), torch.arange(200000))
    counts = torch.histc(u, bins=20, min=0.0, max=1.0)
    assert chisquare(counts.numpy()).pvalue > 1e-3
    pairs = torch.corrcoef(torch.stack([u[:-1], u[1:]]))[0, 1]  # neighbours' numbers are independent
    assert abs(float(pairs)) < 0.01


# ---------------------------------------------------------------------------------------------------------------------
# Links against the bool mask


def test_links_operations_equal_the_mask_operations() -> None:
    a, b = _mask((13, 17), 0.3, 0), _mask((13, 17), 0.3, 1)
    la, lb = Links.from_mask(a), Links.from_mask(b)
    assert la.count == int(a.sum()) and la.numel() == a.numel()
    assert torch.equal(la.to_mask(), a)
    assert torch.equal(la.has_link(0), a.any(0)) and torch.equal(la.has_link(1), a.any(1))
    alive_r, alive_c = torch.rand(13) < 0.7, torch.rand(17) < 0.7
    assert torch.equal(la.restrict(alive_r, 1).to_mask(), a & alive_r[:, None])
    assert torch.equal(la.restrict(alive_c, 0).to_mask(), a & alive_c[None, :])
    assert torch.equal(la.union(lb).to_mask(), a | b)
    assert torch.equal(la.minus(lb).to_mask(), a & ~b)
    assert torch.equal(la.contains(torch.arange(a.numel())), a.reshape(-1))
    assert torch.equal(la.in_rows(3, 7), Links.from_mask(a[3:7]).flat + 3 * 17)


def test_percolation_on_links_equals_percolation_on_masks() -> None:
    masks = {"l1": _mask((30, 20), 0.08, 2), "l2": _mask((25, 30), 0.08, 3), "l3": _mask((5, 25), 0.2, 4)}
    junctions = [Junction(("l1",), ("l2",)), Junction(("l2",), ("l3",))]
    ref, ref_cut = percolate(masks, junctions)
    assert sum(ref_cut.values()) > 0  # the case percolates something
    mixed = {"l1": Links.from_mask(masks["l1"]), "l2": masks["l2"], "l3": Links.from_mask(masks["l3"])}
    got, cut = percolate(mixed, junctions)
    assert cut == ref_cut
    for name in masks:
        m = got[name].to_mask() if isinstance(got[name], Links) else got[name]
        assert torch.equal(m, ref[name]), name
    assert active_neuron_fraction(mixed, junctions) == active_neuron_fraction(masks, junctions)
    assert layer_active_fraction(mixed["l1"]) == layer_active_fraction(masks["l1"])


# ---------------------------------------------------------------------------------------------------------------------
# uniform regrowth by sampling positions


@pytest.mark.parametrize("shape", [(40, 50), (7, 300)])
def test_sampled_positions_avoid_the_links_and_respect_alive_neurons(shape: tuple[int, int]) -> None:
    mask = _mask(shape, 0.3, 5)
    excluded = Links.from_mask(mask).flat
    rows, cols = torch.rand(shape[0]) < 0.8, torch.rand(shape[1]) < 0.8
    for k in (1, 50, 300):
        got = sample_positions(shape, k, excluded, torch.Generator().manual_seed(k), alive_rows=rows, alive_cols=cols)
        assert got.numel() == k and torch.equal(got, got.unique())  # distinct and sorted
        picked = torch.zeros(mask.numel(), dtype=torch.bool)
        picked[got] = True
        picked = picked.view(shape)
        assert not bool((picked & mask).any())
        assert not bool(picked[~rows].any()) and not bool(picked[:, ~cols].any())


def test_sampled_positions_are_uniform_over_the_candidates() -> None:
    shape = (6, 10)
    mask = _mask(shape, 0.3, 6)
    excluded = Links.from_mask(mask).flat
    counts = torch.zeros(60)
    for seed in range(3000):
        counts[sample_positions(shape, 5, excluded, torch.Generator().manual_seed(seed))] += 1
    assert counts[excluded].sum() == 0
    free = counts[~mask.reshape(-1)]
    assert chisquare(free.numpy()).pvalue > 1e-3


def test_scarce_candidates_are_listed_with_the_same_law() -> None:
    shape = (10, 10)
    mask = torch.ones(shape, dtype=torch.bool)
    mask[2, 3] = mask[7, 1] = mask[9, 9] = False  # 3 candidates: under 1/8 of the positions
    got = sample_positions(shape, 2, Links.from_mask(mask).flat, torch.Generator().manual_seed(0))
    assert got.numel() == 2 and bool((~mask.reshape(-1)[got]).all())
    assert sample_positions(shape, 5, Links.from_mask(mask).flat, None).numel() == 3  # no more than there are


# ---------------------------------------------------------------------------------------------------------------------
# selection streamed over row tiles


@pytest.mark.parametrize("sampling", ["topk", "multinomial", "uniform"])
@pytest.mark.parametrize("rows", [1, 7, 40])
def test_selection_over_tiles_equals_the_whole_layer_selection(sampling: str, rows: int) -> None:
    shape = (40, 30)
    g = torch.Generator().manual_seed(9)
    scores = torch.rand(shape, generator=g) * (torch.rand(shape, generator=g) < 0.6)  # zeros: random fill keys
    old = _mask(shape, 0.25, 7)
    alive = (torch.rand(40, generator=g) < 0.9, None)
    for k, with_alive in ((1, False), (200, False), (600, True)):
        a = alive if with_alive else (None, None)
        candidates = ~old
        if with_alive:
            candidates &= a[0][:, None]
        ref = select_regrowth(scores, candidates, k, sampling, torch.Generator().manual_seed(k))
        got = select_from_tiles(
            _tiles(scores, rows), shape, k, Links.from_mask(old), sampling, torch.Generator().manual_seed(k), alive=a
        )
        assert torch.equal(Links(got, shape).to_mask(), ref), (k, with_alive)


def test_scores_at_reads_the_tiles_at_the_links() -> None:
    scores = torch.rand(20, 9)
    links = Links.from_mask(_mask((20, 9), 0.3, 8))
    assert torch.equal(scores_at(_tiles(scores, 6), links), scores.reshape(-1)[links.flat])


def test_seeds_come_from_the_generator() -> None:
    a = draw_seeds(torch.Generator().manual_seed(1), 2)
    assert torch.equal(a, draw_seeds(torch.Generator().manual_seed(1), 2)) and a[0] != a[1]


# ---------------------------------------------------------------------------------------------------------------------
# CH-L3n from the links


@pytest.mark.parametrize(("shape", "density"), [((50, 70), 0.1), ((64, 33), 0.3), ((90, 20), 0.02)])
@pytest.mark.parametrize("ch2", [True, False])
def test_l3n_tiles_from_the_links_equal_the_dense_predictor(shape: tuple[int, int], density: float, ch2: bool) -> None:
    mask = _mask(shape, density, 11)
    ref = (ch2_l3n if ch2 else ch3_l3n)(mask)
    links = Links.from_mask(mask)
    for tile_elems in (100, 700, 5000):  # 1 to 70 rows per tile, and input chunks of as many columns
        got = torch.zeros(shape)
        covered = torch.zeros(shape[0], dtype=torch.long)
        for lo, hi, tile in l3n_tiles(links, ch2=ch2, tile_elems=tile_elems, backend="reference"):
            assert tile.numel() <= max(tile_elems, shape[1]) * 1  # a tile is bounded by tile_elems (at least a row)
            got[lo:hi] = tile
            covered[lo:hi] += 1
        assert bool((covered == 1).all())
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_l3n_tiles_of_a_small_layer_are_the_dense_numbers() -> None:
    mask = _mask((30, 40), 0.2, 12)
    (lo, hi, tile),  = l3n_tiles(Links.from_mask(mask))  # fmt: skip
    assert (lo, hi) == (0, 30) and torch.equal(tile, ch2_l3n(mask))


@pytest.mark.parametrize(("shape", "density"), [((50, 70), 0.1), ((64, 33), 0.3), ((90, 20), 0.02)])
@pytest.mark.parametrize("ch2", [True, False])
def test_l3p_tiles_from_the_links_equal_the_dense_path_based_predictor(
    shape: tuple[int, int], density: float, ch2: bool
) -> None:
    mask = _mask(shape, density, 13)
    ref = (ch2_l3p if ch2 else ch3_l3p)(mask)
    links = Links.from_mask(mask)
    for tile_elems in (100, 700, 5000):
        got = torch.zeros(shape)
        for lo, hi, tile in l3p_tiles(links, ch2=ch2, tile_elems=tile_elems, backend="reference"):
            got[lo:hi] = tile
        torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-4)
