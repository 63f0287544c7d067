"""Tests of the N:M pattern libraries and masks, each checked against a brute force written independently.

The libraries are compared with a filter over every binary block; the block solver with explicit loops over blocks and
patterns on continuous random scores (so there are no ties); uniformity of random masks with a chi-square test at a
fixed seed and a tolerant threshold.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from scipy import stats

from sparsebrain.topology.nm import (
    best_rowwise_mask,
    best_transposable_mask,
    is_rowwise,
    is_transposable,
    random_transposable_mask,
    rowwise_patterns,
    transposable_patterns,
)

SHAPES = [(4, 4), (8, 4), (4, 12), (16, 32), (36, 20)]


def _all_blocks(m: int) -> torch.Tensor:
    """Every m x m binary block, (2^(m*m), m, m), enumerated from the bits of the integers."""
    codes = torch.arange(2 ** (m * m))
    bits = (codes[:, None] >> torch.arange(m * m)) & 1  # (2^(m*m), m*m)
    return bits.bool().reshape(-1, m, m)


def _brute_best(scores: torch.Tensor, lib: torch.Tensor) -> torch.Tensor:
    """Best pattern per block with explicit loops over blocks and patterns (first maximum wins)."""
    m = lib.shape[-1]
    H, W = scores.shape
    out = torch.zeros(H, W, dtype=torch.bool)
    for i in range(0, H, m):
        for j in range(0, W, m):
            block = scores[i : i + m, j : j + m]
            best, best_value = None, -math.inf
            for pattern in lib:
                value = float(block[pattern].sum())
                if value > best_value:
                    best, best_value = pattern, value
            out[i : i + m, j : j + m] = best
    return out


# ---------------------------------------------------------------------------------------------------------------------
# libraries
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "count"), [(1, 24), (2, 90), (3, 24)])
def test_transposable_library_m4(n: int, count: int) -> None:
    lib = transposable_patterns(n, 4)
    assert lib.shape == (count, 4, 4) and lib.dtype == torch.bool
    assert len({tuple(p.flatten().tolist()) for p in lib}) == count  # all distinct
    assert (lib.sum(dim=2) == n).all() and (lib.sum(dim=1) == n).all()  # rows and columns
    assert all(is_transposable(p, n, 4) for p in lib)


@pytest.mark.parametrize(("n", "m"), [(1, 2), (1, 3), (2, 3), (1, 4), (2, 4), (3, 4)])
def test_transposable_library_equals_brute_force(n: int, m: int) -> None:
    blocks = _all_blocks(m)
    valid = blocks[((blocks.sum(dim=2) == n).all(dim=1)) & ((blocks.sum(dim=1) == n).all(dim=1))]
    lib = transposable_patterns(n, m)
    assert lib.shape[0] == valid.shape[0]
    as_set = {tuple(p.flatten().tolist()) for p in lib}
    assert as_set == {tuple(p.flatten().tolist()) for p in valid}


def test_transposable_library_order_is_lexicographic_and_stable() -> None:
    lib = transposable_patterns(2, 4)
    rank = {tuple(r.tolist()): i for i, r in enumerate(rowwise_patterns(2, 4))}
    keys = [tuple(rank[tuple(row.tolist())] for row in p) for p in lib]
    assert keys == sorted(keys)
    assert torch.equal(lib, transposable_patterns(2, 4))
    lib[0] = False  # a returned library is a copy: mutating it does not corrupt the cache
    assert transposable_patterns(2, 4)[0].sum() == 8


def test_rowwise_library() -> None:
    lib = rowwise_patterns(2, 4)
    assert lib.shape == (6, 4) and lib.dtype == torch.bool
    assert (lib.sum(dim=1) == 2).all()
    assert len({tuple(r.tolist()) for r in lib}) == 6
    assert rowwise_patterns(1, 4).shape == (4, 4)
    assert rowwise_patterns(3, 8).shape == (math.comb(8, 3), 8)


def test_library_device_keyword() -> None:
    assert transposable_patterns(2, 4, device="cpu").device.type == "cpu"
    assert rowwise_patterns(2, 4, device=torch.device("cpu")).device.type == "cpu"


@pytest.mark.parametrize("fn", [transposable_patterns, rowwise_patterns])
@pytest.mark.parametrize(("n", "m"), [(4, 4), (5, 4), (0, 4), (-1, 4), (1, 1)])
def test_library_rejects_bad_n_m(fn, n: int, m: int) -> None:
    with pytest.raises(ValueError, match=rf"n={n}, m={m}"):
        fn(n, m)


# ---------------------------------------------------------------------------------------------------------------------
# best masks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("n", [1, 2])
def test_best_transposable_equals_brute_force(shape: tuple[int, int], n: int) -> None:
    g = torch.Generator().manual_seed(1000 * shape[0] + 10 * shape[1] + n)
    scores = torch.randn(shape, generator=g, dtype=torch.float64)  # continuous: no ties
    mask = best_transposable_mask(scores, n=n, m=4)
    assert mask.shape == shape and mask.dtype == torch.bool
    assert torch.equal(mask, _brute_best(scores, transposable_patterns(n, 4)))
    assert is_transposable(mask, n, 4) and is_transposable(mask.T, n, 4)


def test_best_transposable_ties_go_to_first_pattern() -> None:
    mask = best_transposable_mask(torch.zeros(8, 8), n=2, m=4)  # every pattern ties in every block
    first = transposable_patterns(2, 4)[0]
    assert torch.equal(mask, first.repeat(2, 2))


def test_best_transposable_beats_random_masks() -> None:
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(32, 64, generator=g)
    best = float(scores[best_transposable_mask(scores)].sum())
    for _ in range(50):
        other = random_transposable_mask(scores.shape, generator=g)
        assert best >= float(scores[other].sum()) - 1e-4


def test_best_transposable_dtypes_and_infinities() -> None:
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(8, 8, generator=g)
    expected = best_transposable_mask(scores.double())
    assert torch.equal(best_transposable_mask(scores), expected)
    assert is_transposable(best_transposable_mask(torch.randint(-5, 5, (8, 8), generator=g)))
    assert is_transposable(best_transposable_mask(scores.half()))
    # a -inf score is never kept when a pattern avoiding it exists, and never makes the block sums nan
    scores[0, 0] = -math.inf
    mask = best_transposable_mask(scores)
    assert not mask[0, 0] and is_transposable(mask)
    scores[1, 1] = math.inf
    assert best_transposable_mask(scores)[1, 1]


@pytest.mark.parametrize("shape", [(6, 8), (8, 6), (8,), (2, 8, 8)])
def test_best_transposable_rejects_bad_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=re.escape(f"m=4, got shape={shape}")):
        best_transposable_mask(torch.zeros(shape))


def test_best_transposable_rejects_bad_n() -> None:
    with pytest.raises(ValueError, match=r"n=4, m=4"):
        best_transposable_mask(torch.zeros(8, 8), n=4, m=4)


@pytest.mark.parametrize(("n", "m"), [(1, 4), (2, 4), (3, 8)])
def test_best_rowwise_keeps_top_n(n: int, m: int) -> None:
    g = torch.Generator().manual_seed(n * 10 + m)
    scores = torch.randn(12, 4 * m, generator=g)
    mask = best_rowwise_mask(scores, n=n, m=m)
    assert mask.shape == scores.shape and mask.dtype == torch.bool and is_rowwise(mask, n, m)
    for r in range(scores.shape[0]):
        for c in range(0, scores.shape[1], m):
            group = scores[r, c : c + m]
            top = set(sorted(range(m), key=lambda k: -float(group[k]))[:n])
            assert {k for k in range(m) if mask[r, c + k]} == top


def test_best_rowwise_exact_count_with_ties_and_batch_dims() -> None:
    mask = best_rowwise_mask(torch.zeros(3, 5, 8))
    assert mask.shape == (3, 5, 8) and is_rowwise(mask)
    with pytest.raises(ValueError, match=r"m=4.*shape=\(4, 6\)"):
        best_rowwise_mask(torch.zeros(4, 6))
    with pytest.raises(ValueError, match=r"n=0, m=4"):
        best_rowwise_mask(torch.zeros(4, 8), n=0)


# ---------------------------------------------------------------------------------------------------------------------
# random masks
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [1, 2, 3])
def test_random_transposable_valid_and_seeded(n: int) -> None:
    a = random_transposable_mask((16, 24), n, generator=torch.Generator().manual_seed(7))
    b = random_transposable_mask((16, 24), n, generator=torch.Generator().manual_seed(7))
    c = random_transposable_mask((16, 24), n, generator=torch.Generator().manual_seed(8))
    assert a.shape == (16, 24) and a.dtype == torch.bool
    assert is_transposable(a, n) and torch.equal(a, b) and not torch.equal(a, c)
    assert random_transposable_mask((8, 8), n, device="cpu").device.type == "cpu"


def test_random_transposable_is_uniform_over_patterns() -> None:
    lib = transposable_patterns(2, 4)
    mask = random_transposable_mask((4 * 60, 4 * 60), generator=torch.Generator().manual_seed(0))  # 3600 blocks
    blocks = mask.reshape(60, 4, 60, 4).permute(0, 2, 1, 3).reshape(-1, 16)
    index = {tuple(p.flatten().tolist()): i for i, p in enumerate(lib)}
    counts = torch.bincount(torch.tensor([index[tuple(b.tolist())] for b in blocks]), minlength=len(lib))
    assert stats.chisquare(counts.numpy()).pvalue > 1e-3


def test_random_transposable_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"m=4, got shape=\(6, 8\)"):
        random_transposable_mask((6, 8))
    with pytest.raises(ValueError, match=r"n=2, m=2"):
        random_transposable_mask((8, 8), n=2, m=2)


# ---------------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------------


def test_is_transposable_and_is_rowwise() -> None:
    rowwise_only = torch.tensor([[1, 1, 0, 0]] * 4, dtype=torch.bool)  # 2 per row, columns 4 and 0
    assert is_rowwise(rowwise_only) and not is_transposable(rowwise_only)
    good = transposable_patterns(2, 4)[17].repeat(2, 3)
    assert is_transposable(good) and is_rowwise(good) and is_rowwise(good.T)
    assert is_transposable(good.float() * 3.5)  # non-zeros count, so a masked weight can be checked directly
    broken = good.clone()
    broken[5, 9] = ~broken[5, 9]
    assert not is_transposable(broken) and not is_rowwise(broken)
    assert not is_transposable(torch.ones(6, 8, dtype=torch.bool)) and not is_rowwise(torch.ones(3, 6))
    perms = torch.eye(4).repeat(2, 2)  # permutation matrix in every block
    assert is_transposable(perms, n=1) and not is_transposable(perms, n=2)
    assert not is_transposable(torch.eye(8), n=1)  # the off-diagonal blocks are empty
    with pytest.raises(ValueError, match=r"n=4, m=4"):
        is_transposable(good, n=4)
    with pytest.raises(ValueError, match=r"n=5, m=4"):
        is_rowwise(good, n=5)


def test_all_transposable_blocks_pass_check_and_others_fail() -> None:
    # the check and the library agree on every 4x4 block, not only on the library's members
    lib = {tuple(p.flatten().tolist()) for p in transposable_patterns(2, 4)}
    blocks = _all_blocks(4)
    ok = (blocks.sum(dim=2) == 2).all(dim=1) & (blocks.sum(dim=1) == 2).all(dim=1)
    for i in itertools.chain(ok.nonzero().flatten()[:20].tolist(), (~ok).nonzero().flatten()[:200].tolist()):
        assert is_transposable(blocks[i]) == bool(ok[i]) == (tuple(blocks[i].flatten().tolist()) in lib)
