"""Frechet/Gumbel top-k sampling against exact sequential-draw probabilities, plus the selection rules."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from scipy.stats import chisquare

from sparsebrain.topology.sampling import (
    draw_seeds,
    frechet_scores,
    positional_uniform,
    uniform_scaled_topk,
    weighted_sample_without_replacement,
)


def exact_subset_probabilities(weights: list[float], k: int, temperature: float) -> dict[int, float]:
    """Law of the set drawn by k sequential draws without replacement, each proportional to w^T among those left.

    Enumerates every ordered draw; a set is keyed by its bitmask.
    """
    p = [w**temperature for w in weights]
    law: dict[int, float] = {}
    for order in itertools.permutations(range(len(p)), k):
        prob, left = 1.0, sum(p)
        for x in order:
            prob *= p[x] / left
            left -= p[x]
        code = sum(1 << x for x in order)
        law[code] = law.get(code, 0.0) + prob
    return law


@pytest.mark.parametrize("temperature", [1.0, 2.5])
@pytest.mark.parametrize("k", [2, 3])
def test_frechet_topk_matches_sequential_sampling(k: int, temperature: float) -> None:
    weights = [0.2, 0.5, 1.0, 1.5, 2.0, 3.0]
    n, trials = len(weights), 20000
    law = exact_subset_probabilities(weights, k, temperature)
    g = torch.Generator().manual_seed(1234)
    # All trials in one tensor: each row is an independent draw of keys, its top-k one sample.
    scores = frechet_scores(torch.tensor(weights).expand(trials, n), temperature, generator=g)  # (trials, n)
    chosen = torch.topk(scores, k, dim=1).indices  # (trials, k)
    codes = (1 << chosen).sum(1)
    counts = torch.bincount(codes, minlength=1 << n)
    subsets = sorted(law)
    assert int(counts[subsets].sum()) == trials  # no sample outside the k-subsets
    observed = counts[subsets].double().numpy()
    expected = [law[c] * trials for c in subsets]
    assert chisquare(observed, expected).pvalue > 1e-3
    # Per-element inclusion frequencies within 5 binomial standard deviations.
    freq = torch.bincount(chosen.reshape(-1), minlength=n) / trials
    for i in range(n):
        pi = sum(q for c, q in law.items() if c >> i & 1)
        assert abs(freq[i].item() - pi) < 5 * math.sqrt(pi * (1 - pi) / trials), (i, pi)


def test_weighted_sample_is_topk_of_frechet_scores() -> None:
    # Same generator state -> same draw, so the sampler inherits the law tested above.
    for seed in range(30):
        w = torch.rand(50, generator=torch.Generator().manual_seed(1000 + seed)) + 0.01
        k = 1 + seed % 20
        scores = frechet_scores(w, 1.7, generator=torch.Generator().manual_seed(seed))
        expected = torch.zeros(50, dtype=torch.bool)
        expected[torch.topk(scores, k).indices] = True
        got = weighted_sample_without_replacement(w, k, 1.7, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got, expected)


def test_frechet_scores_formula_and_dtypes() -> None:
    w = torch.tensor([0.0, 0.5, 1.0, 4.0, 10.0])
    s = frechet_scores(w, 2.0, generator=torch.Generator().manual_seed(3))
    seed = draw_seeds(torch.Generator().manual_seed(3), 1)[0]
    U = positional_uniform(seed, torch.arange(5))  # positional uniforms, never 0 or 1
    torch.testing.assert_close(s, w * (-U.log()) ** (-1 / 2.0), rtol=1e-5, atol=0.0)
    assert s[0] == 0 and s.dtype == torch.float32
    assert frechet_scores(w.double()).dtype == torch.float64
    assert frechet_scores(torch.tensor([[1, 2], [0, 3]])).shape == (2, 2)  # integer weights are accepted
    big = frechet_scores(torch.rand(100000) + 1e-3, 1.0)
    assert bool(torch.isfinite(big).all()) and bool((big > 0).all())


def test_large_temperature_is_topk_by_magnitude() -> None:
    # Keys are w * (-ln U)^(-1/T) with the noise factor inside [0.995, 1.017] at T = 1000: weights 1.25x apart
    # are never reordered.
    w = 1.25 ** torch.arange(8.0)
    for seed in range(30):
        perm = torch.randperm(8, generator=torch.Generator().manual_seed(seed))
        got = weighted_sample_without_replacement(w[perm], 3, 1000.0, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got, w[perm] >= w[5])


@pytest.mark.parametrize("sampler", ["weighted", "uniform_scaled"])
def test_exact_count_with_ties_zeros_and_any_shape(sampler: str) -> None:
    g = torch.Generator().manual_seed(0)
    cases = [torch.ones(7), torch.zeros(3, 4), torch.tensor([[0.0, 2.0, 2.0], [2.0, 0.0, 1.0]]), torch.rand(5, 2, 3)]
    for x in cases:
        for k in range(x.numel() + 1):
            if sampler == "weighted":
                m = weighted_sample_without_replacement(x, k, temperature=0.05, generator=g)
            else:
                m = uniform_scaled_topk(x, k, generator=g)
            assert m.dtype == torch.bool and m.shape == x.shape and int(m.sum()) == k


@pytest.mark.parametrize("sampler", ["weighted", "uniform_scaled"])
def test_zero_weights_fill_uniformly_after_all_positive_ones(sampler: str) -> None:
    w = torch.tensor([0.0, 3.0, 0.0, 0.0, 1.0, 0.0, 0.0, 2.0, 0.0, 0.0])
    positive, trials = w > 0, 700
    g = torch.Generator().manual_seed(5)

    def draw(k: int) -> torch.Tensor:
        if sampler == "weighted":
            return weighted_sample_without_replacement(w, k, generator=g)
        return uniform_scaled_topk(w, k, generator=g)

    for _ in range(50):
        assert not bool(draw(2)[~positive].any())  # enough positive entries: zeros never taken
    hits = torch.zeros(10)
    for _ in range(trials):
        m = draw(6)
        assert bool(m[positive].all())
        hits += m
    # 3 of the 7 zero entries per draw, uniformly.
    p = 3 / 7
    assert bool(((hits[~positive] / trials - p).abs() < 5 * math.sqrt(p * (1 - p) / trials)).all())


def test_uniform_scaled_topk_law() -> None:
    # k = 1 of scores (1, 2): P(first) = P(U1 > 2 U2) = 1/4.
    g = torch.Generator().manual_seed(9)
    s, trials = torch.tensor([1.0, 2.0]), 4000
    first = sum(bool(uniform_scaled_topk(s, 1, generator=g)[0]) for _ in range(trials))
    assert abs(first / trials - 0.25) < 5 * math.sqrt(0.25 * 0.75 / trials)


def test_more_than_2_pow_24_elements() -> None:
    # torch.multinomial refuses more than 2^24 categories; the top-k route does not.
    n = 2**24 + 10
    w = torch.full((n,), 1e-3)
    heavy = torch.tensor([2**24 + 1, 2**24 + 5, 2**24 + 9])
    w[heavy] = 1e12
    g = torch.Generator().manual_seed(0)
    m = weighted_sample_without_replacement(w, 3, generator=g)
    assert int(m.sum()) == 3 and bool(m[heavy].all())
    m = uniform_scaled_topk(w, 5, generator=g)
    assert int(m.sum()) == 5 and bool(m[heavy].all())


def test_determinism_with_seeded_generator() -> None:
    w = torch.rand(1000, generator=torch.Generator().manual_seed(0))

    def run(seed: int) -> list[torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        return [
            frechet_scores(w, 2.0, generator=g),
            weighted_sample_without_replacement(w, 100, 2.0, generator=g),
            uniform_scaled_topk(w, 100, generator=g),
        ]

    for a, b in zip(run(1), run(1), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(run(1)[1], run(2)[1])


def test_invalid_arguments() -> None:
    w = torch.rand(6)
    for bad_k in (-1, 7, 2.5, True, "3"):
        with pytest.raises(ValueError, match="k"):
            weighted_sample_without_replacement(w, bad_k)
        with pytest.raises(ValueError, match="k"):
            uniform_scaled_topk(w, bad_k)
    for bad in (torch.tensor([1.0, -0.1]), torch.tensor([1.0, math.nan])):
        with pytest.raises(ValueError, match="weights"):
            frechet_scores(bad)
        with pytest.raises(ValueError, match="weights"):
            weighted_sample_without_replacement(bad, 1)
        with pytest.raises(ValueError, match="scores"):
            uniform_scaled_topk(bad, 1)
    for bad_t in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="temperature"):
            frechet_scores(w, bad_t)
        with pytest.raises(ValueError, match="temperature"):
            weighted_sample_without_replacement(w, 2, bad_t)
    with pytest.raises(TypeError, match="weights"):
        frechet_scores([1.0, 2.0])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors_and_generator() -> None:
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.rand(1000, device="cuda")
    w[:10] = 0
    assert frechet_scores(w, 2.0, generator=g).device.type == "cuda"
    for m in (weighted_sample_without_replacement(w, 995, generator=g), uniform_scaled_topk(w, 995, generator=g)):
        assert m.device.type == "cuda" and int(m.sum()) == 995 and bool(m[10:].all())


# ---------------------------------------------------------------------------------------------------------------------
# Selection on the candidates alone, against the full-array selection it replaced


def _full_array_regrowth(scores, candidates, k, sampling, generator):  # type: ignore[no-untyped-def]
    """The selection written out over the whole array: keys from the positional uniforms of every position
    (non-candidates -inf), one top-k."""
    k = min(k, int(candidates.sum()))
    s = torch.nan_to_num(scores.float(), nan=0.0).clamp_min(0.0)
    seeds = draw_seeds(generator, 2)
    every = torch.arange(s.numel()).view(s.shape)
    U, fill = positional_uniform(seeds[0], every), -positional_uniform(seeds[1], every)
    pos_key = {"topk": s, "multinomial": s / (-U.log()), "uniform": s * U}[sampling]
    pos_key = pos_key.clamp_min(torch.finfo(torch.float32).tiny)
    key = torch.where(candidates & (s > 0), pos_key, torch.where(candidates, fill, torch.full_like(s, -torch.inf)))
    out = torch.zeros(s.numel(), dtype=torch.bool)
    out[torch.topk(key.reshape(-1), k).indices] = True
    return out.view_as(s) & candidates


@pytest.mark.parametrize("sampling", ["topk", "multinomial", "uniform"])
def test_regrowth_on_candidates_equals_the_full_array_selection(sampling: str) -> None:
    from sparsebrain.topology.sampling import select_regrowth

    g = torch.Generator().manual_seed(3)
    scores = torch.rand(60, 70, generator=g) * (torch.rand(60, 70, generator=g) < 0.7)  # zeros: uniform fill
    candidates = torch.rand(60, 70, generator=g) < 0.6
    for k in (1, 500, 2000, 5000):  # the last asks for more than the candidates
        got = select_regrowth(scores, candidates, k, sampling, torch.Generator().manual_seed(k))
        ref = _full_array_regrowth(scores, candidates, k, sampling, torch.Generator().manual_seed(k))
        assert torch.equal(got, ref), k


def test_regrowth_with_tied_scores_takes_an_equal_multiset() -> None:
    from sparsebrain.topology.sampling import select_regrowth

    g = torch.Generator().manual_seed(4)
    scores = torch.randint(1, 5, (50, 50), generator=g).float()  # four values: ties at the k-th everywhere
    candidates = torch.rand(50, 50, generator=g) < 0.5
    got = select_regrowth(scores, candidates, 700, "topk", None)
    ref = _full_array_regrowth(scores, candidates, 700, "topk", None)
    assert int(got.sum()) == int(ref.sum()) == 700 and bool((got & ~candidates).sum() == 0)
    assert torch.equal(scores[got].sort().values, scores[ref].sort().values)


@pytest.mark.parametrize("k", [0, 1, 7, 25, 39, 40, 41])
def test_keep_top_keeps_or_drops_on_the_active_entries(k: int) -> None:
    from sparsebrain.topology.sampling import keep_top

    g = torch.Generator().manual_seed(k)
    scores = torch.randn(8, 10, generator=g)
    scores[0, 0] = float("nan")
    active = torch.rand(8, 10, generator=g) < 0.5
    n = int(active.sum())
    got = keep_top(scores, active, k)
    key = torch.nan_to_num(scores, nan=-torch.inf).masked_fill(~active, -torch.inf).reshape(-1)
    ref = torch.zeros(80, dtype=torch.bool)
    ref[torch.topk(key, min(k, 80)).indices] = True
    ref = ref.view(8, 10) & active
    assert torch.equal(got, ref) and int(got.sum()) == min(k, n)


@pytest.mark.parametrize("largest", [True, False])
def test_top_indices_prefilter_equals_topk(monkeypatch, largest: bool) -> None:
    """The sampled-threshold prefilter (CUDA's path for large selections) picks the same set as torch.topk."""
    import sparsebrain.topology.sampling as sampling

    monkeypatch.setattr(sampling, "_PREFILTER_MIN_N", 1000)
    monkeypatch.setattr(sampling, "_PREFILTER_MIN_K", 10)
    monkeypatch.setattr(sampling, "_PREFILTER_SAMPLE", 256)
    monkeypatch.setattr(sampling, "_prefilter_here", lambda values: True)
    g = torch.Generator().manual_seed(5)
    values = torch.randn(50_000, generator=g)
    for k in (10, 300, 9_000, 24_999, 30_000):  # the last is over half: plain top-k
        got = sampling.top_indices(values, k, largest=largest)
        ref = torch.topk(values, k, largest=largest).indices
        assert got.numel() == k and torch.equal(got.sort().values, ref.sort().values), k
    skewed = torch.cat([torch.zeros(40_000), torch.randn(10_000, generator=g)])  # a sample that misjudges: fallback
    got = sampling.top_indices(skewed, 5_000, largest=largest)
    ref = torch.topk(skewed, 5_000, largest=largest).indices
    assert torch.equal(skewed[got].sort().values, skewed[ref].sort().values)


def test_frechet_where_equals_the_masked_weights() -> None:
    g = torch.Generator().manual_seed(6)
    w = torch.rand(30, 40, generator=g)
    where = torch.rand(30, 40, generator=g) < 0.3
    full = frechet_scores(w * where, 1.7, torch.Generator().manual_seed(1))
    only = frechet_scores(w, 1.7, torch.Generator().manual_seed(1), where=where)
    assert torch.equal(full, only)
    with pytest.raises(ValueError, match="where must have the shape"):
        frechet_scores(w, 1.0, where=where[:2])


def test_true_indices_with_and_without_a_count() -> None:
    from sparsebrain.topology.sampling import true_indices

    g = torch.Generator().manual_seed(7)
    mask = torch.rand(13, 17, generator=g) < 0.3
    ref = mask.reshape(-1).nonzero().squeeze(1)
    assert torch.equal(true_indices(mask), ref)
    assert torch.equal(true_indices(mask, int(mask.sum())), ref)
    assert true_indices(torch.zeros(3, 4, dtype=torch.bool), 0).numel() == 0
