"""Tests of the initial topologies: exact link counts, determinism, and the defining property of each model.

Ring-lattice checks compare with a brute force written with explicit loops; ER-likeness is checked with degree
statistics (scipy two-sample KS tests with fixed seeds and tolerant thresholds).
"""

from __future__ import annotations

import math
import time
from fractions import Fraction

import pytest
import torch
from scipy import stats

from sparsebrain.topology.initial import INITS, brf, bsf, bsw, csti, er, initial_mask

SHAPES = [(3, 5), (5, 3), (1, 7), (7, 1), (16, 16), (40, 100), (100, 40)]
DENSITIES = [0.05, 0.3, 0.5, 1.0]

# every mode of every topology, so the shared contract (exact count, bool (out, in), seeded) is checked for each
VARIANTS = {
    "er": ("er", {}),
    "bsw": ("bsw", {}),
    "bsw_lattice": ("bsw", {"beta": 0.0}),
    "bsw_random": ("bsw", {"beta": 1.0}),
    "bsf": ("bsf", {}),
    "brf": ("brf", {}),
    "brf_r0": ("brf", {"r": 0.0}),
    "brf_r0_fixed": ("brf", {"r": 0.0, "degree": "fixed"}),
    "brf_r01_fixed": ("brf", {"r": 0.1, "degree": "fixed"}),
    "brf_r1": ("brf", {"r": 1.0}),
    "csti": ("csti", {}),
}
DETERMINISTIC = {"bsw_lattice", "brf_r0_fixed"}  # no randomness at all


def _samples(n_in: int, n: int = 32) -> torch.Tensor:
    return torch.randn(n, n_in, generator=torch.Generator().manual_seed(123))


def make(name: str, shape: tuple[int, int], density: float, seed: int | None = 0, **kwargs: object) -> torch.Tensor:
    """Builds a mask through the registry, supplying CSTI's data."""
    if name == "csti":
        kwargs.setdefault("data", _samples(shape[1]))
    g = torch.Generator().manual_seed(seed) if seed is not None else None
    return initial_mask(name, shape, density, generator=g, **kwargs)


def ring_runs(row: torch.Tensor) -> int:
    """Number of contiguous runs of True on a ring (0 if empty; 1 if full or a single arc)."""
    if bool(row.all()):
        return 1
    return int((row & ~row.roll(1)).sum())


def lattice_reference(shape: tuple[int, int], density: float) -> torch.Tensor:
    """The BRF r=0 / BSW beta=0 lattice, node by node: the documented rule written with loops.

    The smaller side's node i has centre round(i * n_large / n_small) (half up) and degree
    floor((i+1) k / n_small) - floor(i k / n_small); it links to its deg nearest nodes on the ring of the larger side,
    the clockwise node first at equal distance.
    """
    out_f, in_f = shape
    k = round(density * out_f * in_f)
    transpose = out_f > in_f
    n_s, n_l = (in_f, out_f) if transpose else (out_f, in_f)
    ref = torch.zeros(n_s, n_l, dtype=torch.bool)
    for i in range(n_s):
        c = math.floor(Fraction(i * n_l, n_s) + Fraction(1, 2)) % n_l
        deg = (i + 1) * k // n_s - i * k // n_s

        def key(j: int, c: int = c) -> tuple[int, int]:
            d = min((j - c) % n_l, (c - j) % n_l)
            return (d, 0 if (j - c) % n_l == d else 1)

        for j in sorted(range(n_l), key=key)[:deg]:
            ref[i, j] = True
    return ref.T if transpose else ref


# ---------------------------------------------------------------------------------------------------------------------
# the shared contract
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", DENSITIES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_exact_link_count(variant: str, shape: tuple[int, int], density: float) -> None:
    name, kwargs = VARIANTS[variant]
    mask = make(name, shape, density, **kwargs)
    assert mask.dtype == torch.bool
    assert mask.shape == shape
    assert int(mask.sum()) == round(density * shape[0] * shape[1])


# unstructured inits; the N:M ones (nm_random, nm_magnitude) keep their pattern (tests/topology/test_nm.py)
UNSTRUCTURED = [n for n in INITS.names() if getattr(INITS.get(n), "constraint", "unstructured") == "unstructured"]


@pytest.mark.parametrize("name", UNSTRUCTURED)
def test_every_registered_init_keeps_the_contract(name: str) -> None:
    for shape, density in [((20, 50), 0.13), ((50, 20), 0.37), ((4, 4), 1.0)]:
        mask = make(name, shape, density)
        assert mask.dtype == torch.bool and mask.shape == shape
        assert int(mask.sum()) == round(density * shape[0] * shape[1])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_density_rounding_to_zero_links_gives_empty_mask(variant: str) -> None:
    name, kwargs = VARIANTS[variant]
    mask = make(name, (2, 2), 0.1, **kwargs)  # round(0.4) == 0
    assert mask.shape == (2, 2) and not bool(mask.any())


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_seeded_generator_is_deterministic(variant: str) -> None:
    name, kwargs = VARIANTS[variant]
    a = make(name, (60, 90), 0.1, seed=7, **kwargs)
    b = make(name, (60, 90), 0.1, seed=7, **kwargs)
    c = make(name, (60, 90), 0.1, seed=8, **kwargs)
    assert torch.equal(a, b)
    if variant in DETERMINISTIC:
        assert torch.equal(a, c)
        assert torch.equal(a, make(name, (60, 90), 0.1, seed=None, **kwargs))
    elif variant != "csti":  # CSTI is random only in its tie-breaks
        assert not torch.equal(a, c)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_device_argument_places_the_mask(variant: str) -> None:
    name, kwargs = VARIANTS[variant]
    a = make(name, (10, 12), 0.3, seed=3, device="cpu", **kwargs)
    b = make(name, (10, 12), 0.3, seed=3, device=torch.device("cpu"), **kwargs)
    assert a.device == torch.device("cpu") and torch.equal(a, b)


@pytest.mark.parametrize("bad", [(0, 5), (5, 0), (-1, 3), (3,), (2, 3, 4), (2.0, 3), (True, 3), "ab", 5, None])
@pytest.mark.parametrize("variant", ["er", "bsw", "bsf", "brf", "csti"])
def test_bad_shape_raises(variant: str, bad: object) -> None:
    name, kwargs = VARIANTS[variant]
    if name == "csti":
        kwargs = {"data": _samples(5)}
    with pytest.raises(ValueError, match="shape"):
        initial_mask(name, bad, 0.5, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
@pytest.mark.parametrize("variant", ["er", "bsw", "bsf", "brf", "csti"])
def test_bad_density_raises(variant: str, bad: float) -> None:
    name, kwargs = VARIANTS[variant]
    with pytest.raises(ValueError, match="density"):
        make(name, (5, 5), bad, **kwargs)


# ---------------------------------------------------------------------------------------------------------------------
# registry
# ---------------------------------------------------------------------------------------------------------------------


def test_registry_holds_every_topology_and_dispatches() -> None:
    assert {"er", "bsw", "bsf", "brf", "csti"} <= set(INITS.names())
    for fn, kwargs in [(er, {}), (bsw, {"beta": 0.4}), (bsf, {"gamma": 3.0}), (brf, {"r": 0.2})]:
        direct = fn((30, 40), 0.2, generator=torch.Generator().manual_seed(5), **kwargs)
        via = initial_mask(fn.__name__, (30, 40), 0.2, generator=torch.Generator().manual_seed(5), **kwargs)
        assert torch.equal(direct, via)
    lattice = brf((8, 8), 0.5, r=0.0, degree="fixed")
    assert torch.equal(initial_mask(brf, (8, 8), 0.5, r=0.0, degree="fixed"), lattice)  # a callable passes through


def test_unknown_init_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown init 'bfr'.*brf"):
        initial_mask("bfr", (4, 4), 0.5)


# ---------------------------------------------------------------------------------------------------------------------
# ER
# ---------------------------------------------------------------------------------------------------------------------


def test_er_small_is_uniform_over_positions() -> None:
    g = torch.Generator().manual_seed(0)
    counts = sum(er((6, 8), 0.25, generator=g).float() for _ in range(800))
    # each position is in the mask with probability 0.25; a chi-square test on 48 positions
    assert stats.chisquare(counts.flatten().numpy()).pvalue > 1e-3
    assert abs(float(counts.mean()) - 200.0) < 1e-9  # the count is exact in every sample


@pytest.mark.parametrize("density", [0.01, 0.3, 0.5, 0.7])
def test_er_large_path_is_uniform(density: float) -> None:
    # 300 x 400 = 120,000 candidates: the draw-with-replacement path (and its complement above density 0.5)
    out_f, in_f = 300, 400
    M, k = out_f * in_f, round(density * out_f * in_f)
    g = torch.Generator().manual_seed(1)
    masks = [er((out_f, in_f), density, generator=g) for _ in range(6)]
    rows = torch.cat([m.sum(1) for m in masks]).double()
    # a row of a uniform k-subset has a hypergeometric degree
    hyp = stats.hypergeom(M, k, in_f)
    assert abs(float(rows.mean()) - hyp.mean()) < 1e-9
    assert float(rows.var()) == pytest.approx(hyp.var(), rel=0.15)
    # no positional bias: links per block of 10,000 consecutive positions, all samples together
    blocks = torch.stack([m.flatten().view(12, -1).sum(1) for m in masks]).sum(0).double().numpy()
    assert stats.chisquare(blocks).pvalue > 1e-3


def test_er_big_layer() -> None:
    mask = er((4096, 11008), 0.01, generator=torch.Generator().manual_seed(0))
    assert int(mask.sum()) == round(0.01 * 4096 * 11008)


# ---------------------------------------------------------------------------------------------------------------------
# BRF
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.35, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (12, 12), (7, 30)], ids=str)
def test_brf_r0_fixed_is_the_ring_lattice_of_nearest_nodes(shape: tuple[int, int], density: float) -> None:
    mask = brf(shape, density, r=0.0, degree="fixed")
    assert torch.equal(mask, lattice_reference(shape, density))


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (64, 200)], ids=str)
def test_brf_r0_uniform_links_contiguous_arcs(shape: tuple[int, int]) -> None:
    # without any convention on centres: at r=0 every node of the smaller side links to one arc of the ring
    mask = brf(shape, 0.15, r=0.0, generator=torch.Generator().manual_seed(2))
    small = mask if shape[0] <= shape[1] else mask.T
    assert all(ring_runs(row) == 1 for row in small)


def test_brf_r0_covers_the_larger_side_evenly() -> None:
    # even centres: the larger side's degrees differ by a few links at most (the integer stride leaves a gap with 0)
    for shape in [(1376, 512), (512, 1376)]:
        mask = brf(shape, 0.05, r=0.0, degree="fixed")
        large = mask.sum(0) if shape[0] <= shape[1] else mask.sum(1)
        assert int(large.min()) > 0 and int(large.max() - large.min()) <= 3


@pytest.mark.parametrize("degree", ["uniform", "fixed"])
@pytest.mark.parametrize("shape", [(1376, 512), (512, 1376)], ids=str)
def test_brf_no_zero_degree_node_at_r01(shape: tuple[int, int], degree: str) -> None:
    for seed in range(2):
        mask = brf(shape, 0.05, r=0.1, degree=degree, generator=torch.Generator().manual_seed(seed))
        assert int(mask.sum()) == round(0.05 * shape[0] * shape[1])
        assert int((mask.sum(0) == 0).sum()) == 0, "an input node has no link"
        assert int((mask.sum(1) == 0).sum()) == 0, "an output node has no link"


def test_brf_r1_matches_er_degree_statistics() -> None:
    shape, density = (60, 90), 0.1
    g_brf, g_er = torch.Generator().manual_seed(10), torch.Generator().manual_seed(20)
    brf_masks = [brf(shape, density, r=1.0, generator=g_brf) for _ in range(30)]
    er_masks = [er(shape, density, generator=g_er) for _ in range(30)]
    for dim in (0, 1):
        a = torch.cat([m.sum(dim) for m in brf_masks]).double()
        b = torch.cat([m.sum(dim) for m in er_masks]).double()
        assert float(a.mean()) == pytest.approx(float(b.mean()))
        assert float(a.var()) == pytest.approx(float(b.var()), rel=0.2)
        assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3


def test_brf_locality_falls_as_r_grows() -> None:
    # mean resultant length of each node's links on the ring: 1 for a point, about 0 for uniform spread
    def concentration(mask: torch.Tensor) -> float:
        theta = 2 * math.pi * torch.arange(mask.shape[1], dtype=torch.float64) / mask.shape[1]
        m = mask.double()
        deg = m.sum(1)
        c, s = (m * theta.cos()).sum(1) / deg, (m * theta.sin()).sum(1) / deg
        return float(torch.sqrt(c**2 + s**2).mean())

    for shape in [(64, 256), (256, 64)]:
        values = []
        for r in [0.0, 0.1, 0.3, 0.6, 1.0]:
            mask = brf(shape, 0.1, r=r, degree="fixed", generator=torch.Generator().manual_seed(4))
            values.append(concentration(mask if shape[0] <= shape[1] else mask.T))
        assert all(a > b for a, b in zip(values, values[1:])), values
        assert values[0] > 0.9 and values[-1] < 0.4


def test_brf_degree_modes() -> None:
    g = torch.Generator().manual_seed(0)
    shape, density = (100, 300), 0.05
    k = round(density * 100 * 300)
    fixed = brf(shape, density, r=0.3, degree="fixed", generator=g).sum(1)
    assert set(fixed.tolist()) <= {k // 100, -(-k // 100)}
    uniform = brf(shape, density, r=0.3, degree="uniform", generator=g).sum(1)
    assert int(uniform.min()) >= 1 and float(uniform.float().var()) > 1.0
    # tall layer: the smaller side is the input side
    tall = brf((300, 100), density, r=0.3, degree="fixed", generator=g).sum(0)
    assert set(tall.tolist()) <= {k // 100, -(-k // 100)}
    # fewer links than nodes: at most one link each
    few = brf((50, 60), 0.01, r=0.3, generator=g)
    assert int(few.sum()) == 30 and int(few.sum(1).max()) == 1


@pytest.mark.parametrize("r", [-0.1, 1.5, float("nan")])
def test_brf_bad_r_raises(r: float) -> None:
    with pytest.raises(ValueError, match=r"\br\b must be in \[0, 1\]"):
        brf((4, 4), 0.5, r=r)


def test_brf_bad_degree_raises() -> None:
    with pytest.raises(ValueError, match=r"degree must be one of 'uniform', 'fixed', got 'random'"):
        brf((4, 4), 0.5, degree="random")


# ---------------------------------------------------------------------------------------------------------------------
# BSW
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(12, 30), (30, 12), (16, 16)], ids=str)
def test_bsw_beta0_is_the_lattice(shape: tuple[int, int]) -> None:
    for density in (0.1, 0.3):
        mask = bsw(shape, density, beta=0.0, generator=torch.Generator().manual_seed(1))
        assert torch.equal(mask, lattice_reference(shape, density))
        assert torch.equal(mask, brf(shape, density, r=0.0, degree="fixed"))


@pytest.mark.parametrize("beta", [0.1, 0.25, 0.5, 0.8])
def test_bsw_rewires_the_right_fraction(beta: float) -> None:
    shape, density = (200, 300), 0.1
    M, k = 200 * 300, round(density * 200 * 300)
    lattice = bsw(shape, density, beta=0.0)
    mask = bsw(shape, density, beta=beta, generator=torch.Generator().manual_seed(3))
    moved = int((lattice & ~mask).sum()) / k
    # m links leave, m land uniformly on the M - k + m non-links, of which m are the vacated positions
    m = round(beta * k)
    expected = (m - m * m / (M - k + m)) / k
    assert moved == pytest.approx(expected, abs=0.02)
    assert moved == pytest.approx(beta, rel=0.12)


def test_bsw_beta1_matches_er_degree_statistics() -> None:
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(2)
    a = torch.cat([bsw((60, 90), 0.1, beta=1.0, generator=g1).sum(1) for _ in range(30)]).double()
    b = torch.cat([er((60, 90), 0.1, generator=g2).sum(1) for _ in range(30)]).double()
    assert stats.ks_2samp(a.numpy(), b.numpy()).pvalue > 1e-3
    lattice = bsw((60, 90), 0.1, beta=0.0).sum(1).double()
    assert float(lattice.var()) == 0.0 and float(a.var()) > 3.0


@pytest.mark.parametrize("beta", [-0.5, 1.01])
def test_bsw_bad_beta_raises(beta: float) -> None:
    with pytest.raises(ValueError, match="beta"):
        bsw((4, 4), 0.5, beta=beta)


# ---------------------------------------------------------------------------------------------------------------------
# BSF
# ---------------------------------------------------------------------------------------------------------------------


def test_bsf_is_heavy_tailed_and_fast() -> None:
    shape, density = (1568, 784), 0.01
    start = time.perf_counter()
    mask = bsf(shape, density, generator=torch.Generator().manual_seed(0))
    assert time.perf_counter() - start < 2.0
    ref = er(shape, density, generator=torch.Generator().manual_seed(0))
    for dim in (0, 1):
        deg, deg_er = mask.sum(dim).double(), ref.sum(dim).double()
        assert float(deg.max() / deg.mean()) > 8.0  # hubs
        assert float(deg_er.max() / deg_er.mean()) < 3.0
        assert float(deg.std() / deg.mean()) > 2 * float(deg_er.std() / deg_er.mean())


def test_bsf_power_law_exponent() -> None:
    # the mask's degrees on both sides, scaled by each side's mean, fit a power law with the asked exponent:
    # discrete maximum-likelihood estimate above k_min (Clauset et al. 2009), loose bounds
    for gamma in (2.5, 3.0):
        mask = bsf((2000, 2000), 0.01, gamma=gamma, generator=torch.Generator().manual_seed(1))
        deg = torch.cat([mask.sum(0), mask.sum(1)]).double()
        k_min = 20.0
        tail = deg[deg >= k_min]
        estimate = 1.0 + tail.numel() / float(torch.log(tail / (k_min - 0.5)).sum())
        assert estimate == pytest.approx(gamma, abs=0.35), estimate


def test_bsf_smaller_gamma_has_more_hubs() -> None:
    def spread(gamma: float) -> float:
        mask = bsf((500, 700), 0.02, gamma=gamma, generator=torch.Generator().manual_seed(5))
        deg = torch.cat([mask.sum(0), mask.sum(1)]).double()
        return float(deg.std() / deg.mean())

    assert spread(2.2) > spread(2.76) > spread(4.0)


@pytest.mark.parametrize("gamma", [2.0, 1.5, -3.0, float("inf"), float("nan")])
def test_bsf_bad_gamma_raises(gamma: float) -> None:
    with pytest.raises(ValueError, match="gamma"):
        bsf((4, 4), 0.5, gamma=gamma)


# ---------------------------------------------------------------------------------------------------------------------
# CSTI
# ---------------------------------------------------------------------------------------------------------------------


def _correlated_features(n: int = 2000) -> torch.Tensor:
    """7 features: 1 ~ 0, 3 ~ -2 (strong pairs), 4 and 5 independent, 6 constant."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 7, generator=g)
    x[:, 1] = x[:, 0] + 0.1 * torch.randn(n, generator=g)
    x[:, 3] = -x[:, 2] + 0.1 * torch.randn(n, generator=g)
    x[:, 6] = 3.0
    return x


def test_csti_links_each_feature_copy_to_itself_and_its_correlated_features() -> None:
    # 6 non-constant features (the self links) + 4 links of the two pairs
    mask = csti((7, 7), 10 / 49, data=_correlated_features())
    expected = torch.zeros(7, 7, dtype=torch.bool)
    expected[range(6), range(6)] = True
    for a, b in [(0, 1), (1, 0), (2, 3), (3, 2)]:
        expected[a, b] = True
    assert torch.equal(mask, expected)


def test_csti_wide_layer_copies_each_feature() -> None:
    # out = 2 in: outputs 2a and 2a+1 both copy feature a, and get the same links
    mask = csti((14, 7), 20 / 98, data=_correlated_features(), generator=torch.Generator().manual_seed(0))
    assert int(mask.sum()) == 20
    assert torch.equal(mask[0::2], mask[1::2])
    assert bool(mask[0, 1]) and bool(mask[6, 3])


def test_csti_constant_inputs_give_no_nan_and_no_links() -> None:
    # 8x8 "images" whose border is always 0, as MNIST's border pixels
    g = torch.Generator().manual_seed(0)
    images = torch.zeros(500, 1, 8, 8)
    images[:, :, 1:-1, 1:-1] = torch.rand(500, 1, 6, 6, generator=g)
    images[:, :, 1:-1, 2:-1] += images[:, :, 1:-1, 1:-2]  # neighbour correlations
    border = torch.ones(8, 8, dtype=torch.bool)
    border[1:-1, 1:-1] = False
    mask = csti((32, 64), 0.1, data=images, generator=g)
    assert int(mask.sum()) == round(0.1 * 32 * 64)
    assert not bool(mask[:, border.flatten()].any())
    # all-constant data: nothing to correlate, still the exact count and no error
    flat = csti((10, 6), 0.5, data=torch.ones(20, 6), generator=g)
    assert int(flat.sum()) == 30


def test_csti_fewer_outputs_than_inputs_spreads_the_copies() -> None:
    x = _correlated_features()
    mask = csti((3, 7), 3 / 21, data=x)  # copies of features 0, 2 and 4: three self links
    assert mask.nonzero().tolist() == [[0, 0], [1, 2], [2, 4]]


@pytest.mark.parametrize(
    "data",
    [torch.randn(10, 6), torch.randn(1, 5), torch.randn(5), "not a tensor", torch.randn(10, 2, 3)],
    ids=["wrong-width", "one-sample", "1d", "str", "wrong-flat-width"],
)
def test_csti_bad_data_raises(data: object) -> None:
    with pytest.raises(ValueError, match="data"):
        csti((4, 5), 0.5, data=data)  # type: ignore[arg-type]


def test_csti_accepts_image_shaped_data() -> None:
    x = torch.randn(50, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    assert int(csti((8, 16), 0.25, data=x).sum()) == 32


# ---------------------------------------------------------------------------------------------------------------------
# BRF from its links alone (layers that hold only their links)


def _ring_distances(flat: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    from sparsebrain.topology.initial import _centres

    out_f, in_f = shape
    small, large = min(shape), max(shape)
    rows, cols = flat // in_f, flat % in_f
    node, other = (rows, cols) if out_f <= in_f else (cols, rows)
    d = (other - _centres(small, large, torch.device("cpu"))[node]).abs()
    return torch.minimum(d, large - d)


@pytest.mark.parametrize("shape", [(60, 900), (900, 60)])
@pytest.mark.parametrize("degree", ["uniform", "fixed"])
def test_brf_links_follow_the_law_of_brf(shape: tuple[int, int], degree: str) -> None:
    from scipy.stats import chisquare

    from sparsebrain.topology.initial import brf, brf_links

    small = min(shape)
    dense_hist, links_hist = torch.zeros(8), torch.zeros(8)
    for seed in range(40):
        mask = brf(shape, 0.02, r=0.3, degree=degree, generator=torch.Generator().manual_seed(seed))
        flat = brf_links(shape, 0.02, r=0.3, degree=degree, generator=torch.Generator().manual_seed(seed))
        assert flat.numel() == int(mask.sum()) and torch.equal(flat, flat.unique())  # exact count, distinct, sorted
        node = flat // shape[1] if shape[0] <= shape[1] else flat % shape[1]
        assert torch.bincount(node, minlength=small).min() >= 1  # every node of the smaller side has a link
        if degree == "fixed":  # the same degrees as brf's
            side = 1 if shape[0] <= shape[1] else 0
            assert torch.equal(torch.bincount(node, minlength=small), mask.sum(side))
        dense_hist += torch.histc(_ring_distances(mask.reshape(-1).nonzero().squeeze(1), shape).float(), 8, 0, 16)
        links_hist += torch.histc(_ring_distances(flat, shape).float(), 8, 0, 16)
    expected = dense_hist / dense_hist.sum() * links_hist.sum()
    assert chisquare(links_hist.numpy(), expected.numpy()).pvalue > 1e-3


def test_brf_links_at_the_ends_of_r_are_the_ring_lattice_and_er() -> None:
    from sparsebrain.topology.initial import brf, brf_links, er_links

    mask = brf((30, 200), 0.05, r=0.0, degree="fixed")
    assert torch.equal(brf_links((30, 200), 0.05, r=0.0, degree="fixed"), mask.reshape(-1).nonzero().squeeze(1))
    a = brf_links((30, 200), 0.05, r=1.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, er_links((30, 200), 0.05, generator=torch.Generator().manual_seed(3)))


def test_a_large_meta_layer_draws_its_brf_links_without_a_mask(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import sparsebrain as sb
    from sparsebrain.nn import sparsify
    from sparsebrain.topology import initial

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("the dense BRF mask was built")

    monkeypatch.setattr(sparsify, "_DENSE_INIT_LIMIT", 1000)
    monkeypatch.setattr(initial, "_receptive_field", refuse)
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(300, 400), torch.nn.ReLU(), torch.nn.Linear(400, 10))
    sp = sb.DynamicSparsifier(model, None, method="chts", density=0.05, total_steps=100, storage="compressed",
                              device="cpu", seed=0)  # fmt: skip
    layer = sp.layers["0"]
    assert isinstance(layer, sb.CompressedSparseLinear) and layer.nnz == round(0.05 * 300 * 400)
