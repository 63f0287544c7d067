"""CH link predictors against a brute-force enumeration written from the local-community definitions.

The brute force works on the plain graph of in + out nodes, the way the definitions are stated: enumerate the L3 paths
u - z1 - z2 - i, collect their intermediate nodes (the local community, LC), count each member's links into the LC
(di) and its links to nodes that are neither in the LC nor seeds (de). It shares no formula with the matrix forms.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from sparsebrain.topology.link_prediction import LINK_PREDICTORS, ch2_l3n, ch2_l3p, ch3_l3n, ch3_l3p

PREDICTORS = {"ch2_l3n": ch2_l3n, "ch3_l3n": ch3_l3n, "ch2_l3p": ch2_l3p, "ch3_l3p": ch3_l3p}


def brute_force(mask: torch.Tensor, name: str) -> torch.Tensor:
    """Scores of every non-link (u, i) in float64 by explicit loops over paths and neighbour sets."""
    n_out, n_in = mask.shape
    adj: dict[tuple[str, int], set[tuple[str, int]]] = {}
    links = mask.tolist()
    for u in range(n_out):
        adj[("o", u)] = {("i", i) for i in range(n_in) if links[u][i]}
    for i in range(n_in):
        adj[("i", i)] = {("o", u) for u in range(n_out) if links[u][i]}
    S = torch.zeros(n_out, n_in, dtype=torch.float64)
    for u, i in itertools.product(range(n_out), range(n_in)):
        s, t = ("o", u), ("i", i)
        if t in adj[s]:
            continue
        paths = [(z1, z2) for z1 in adj[s] for z2 in adj[z1] if z2 != s and z1 != t and t in adj[z2]]
        lc = {z for path in paths for z in path}
        di = {z: len(adj[z] & lc) for z in lc}
        de = {z: len(adj[z] - lc - {s, t}) for z in lc}
        if name == "ch2_l3n":
            S[u, i] = sum((1 + di[z]) / (1 + de[z]) for z in lc)
        elif name == "ch3_l3n":
            S[u, i] = sum(1 / (1 + de[z]) for z in lc)
        elif name == "ch2_l3p":
            S[u, i] = sum(math.sqrt((1 + di[a]) * (1 + di[b]) / ((1 + de[a]) * (1 + de[b]))) for a, b in paths)
        else:
            S[u, i] = sum(1 / math.sqrt((1 + de[a]) * (1 + de[b])) for a, b in paths)
    return S


def random_mask(shape: tuple[int, int], density: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    M = torch.rand(shape, generator=g) < density
    if seed % 3 == 0:  # isolated nodes on both sides
        M[int(torch.randint(shape[0], (1,), generator=g))] = False
        M[:, int(torch.randint(shape[1], (1,), generator=g))] = False
    return M


@pytest.mark.parametrize("shape", [(6, 9), (9, 6), (12, 12)])
@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_matches_brute_force(name: str, shape: tuple[int, int]) -> None:
    # 80 random graphs laid side by side as one block-diagonal layer: CH scores are local (no L3 path leaves a block,
    # degrees are unchanged), so each diagonal block must equal its own brute force and every other entry is 0.
    # One call instead of 80 also keeps the test fast where each parallel kernel launch is costly.
    masks = [random_mask(shape, p, seed) for seed, p in itertools.product(range(20), (0.1, 0.25, 0.4, 0.6))]
    S = PREDICTORS[name](torch.block_diag(*masks))
    assert S.shape == (80 * shape[0], 80 * shape[1])
    off_block = torch.ones_like(S, dtype=torch.bool)
    for b, M in enumerate(masks):
        rows, cols = slice(b * shape[0], (b + 1) * shape[0]), slice(b * shape[1], (b + 1) * shape[1])
        off_block[rows, cols] = False
        torch.testing.assert_close(S[rows, cols].double(), brute_force(M, name), rtol=1e-5, atol=1e-6, msg=f"graph {b}")
    assert bool((S[off_block] == 0).all())


def test_brute_force_on_single_small_graphs() -> None:
    for seed in range(3):
        M = random_mask((7, 5), 0.4, seed)
        for name, f in PREDICTORS.items():
            torch.testing.assert_close(f(M).double(), brute_force(M, name), rtol=1e-5, atol=1e-6)


def test_hand_computed_single_path() -> None:
    # u0 - i0 - u1 - i1: both intermediates have di = 1 and de = 0.
    M = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)
    for name, value in {"ch2_l3n": 4.0, "ch3_l3n": 2.0, "ch2_l3p": 2.0, "ch3_l3p": 1.0}.items():
        torch.testing.assert_close(PREDICTORS[name](M), torch.tensor([[0.0, value], [0.0, 0.0]]))


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_shape_dtype_device_and_zero_at_links(name: str) -> None:
    M = random_mask((30, 20), 0.2, seed=1)
    S = PREDICTORS[name](M)
    assert S.shape == M.shape and S.dtype == torch.float32 and S.device == M.device
    assert bool((S[M] == 0).all())
    assert bool((S >= 0).all()) and bool((S[~M] > 0).any())


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_isolated_nodes_score_zero(name: str) -> None:
    M = random_mask((25, 15), 0.4, seed=2)
    M[4] = False  # an output with no links is never revived
    M[:, 7] = False
    S = PREDICTORS[name](M)
    assert bool((S[4] == 0).all()) and bool((S[:, 7] == 0).all())


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_symmetric_in_the_two_seeds(name: str) -> None:
    # CH scores treat the two seeds alike, so transposing the layer transposes the scores.
    M = random_mask((70, 45), 0.12, seed=3)
    torch.testing.assert_close(PREDICTORS[name](M.T), PREDICTORS[name](M).T, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_float64_matches_float32_and_numeric_masks(name: str) -> None:
    M = random_mask((40, 30), 0.15, seed=4)
    S32 = PREDICTORS[name](M)
    S64 = PREDICTORS[name](M, dtype=torch.float64)
    assert S64.dtype == torch.float64
    torch.testing.assert_close(S32.double(), S64, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(PREDICTORS[name](M.float() * 0.5), S32)  # nonzero = link
    torch.testing.assert_close(PREDICTORS[name](M.to(torch.uint8)), S32)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_empty_full_and_degenerate_masks(name: str) -> None:
    f = PREDICTORS[name]
    assert bool((f(torch.zeros(5, 4, dtype=torch.bool)) == 0).all())
    assert bool((f(torch.ones(5, 4, dtype=torch.bool)) == 0).all())
    assert f(torch.zeros(0, 3, dtype=torch.bool)).shape == (0, 3)


@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_input_validation(name: str) -> None:
    f = PREDICTORS[name]
    with pytest.raises(ValueError, match="2-D"):
        f(torch.ones(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="2-D"):
        f(torch.ones(2, 3, 4, dtype=torch.bool))
    with pytest.raises(TypeError, match="mask"):
        f([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="dtype"):
        f(torch.ones(2, 2, dtype=torch.bool), dtype=torch.int64)


@pytest.mark.parametrize("f", [ch2_l3p, ch3_l3p])
def test_l3p_chunking_does_not_change_the_result(f) -> None:
    M = random_mask((40, 25), 0.2, seed=5)
    full = f(M, dtype=torch.float64)
    for chunk_nnz in (1, 300):  # one input per chunk, a few inputs per chunk
        torch.testing.assert_close(f(M, dtype=torch.float64, chunk_nnz=chunk_nnz), full)
    with pytest.raises(ValueError, match="chunk_nnz"):
        f(M, chunk_nnz=0)


@pytest.mark.parametrize("f", [ch2_l3n, ch3_l3n])
def test_l3n_tiles_do_not_change_the_result(f) -> None:
    M = random_mask((137, 53), 0.2, seed=7)  # shapes no tile divides
    full = f(M, dtype=torch.float64)
    for tile_elems in (1, 137 * 5, 137 * 100):  # one row per tile, a few rows, tiles of 64 rows (aligned edges)
        torch.testing.assert_close(f(M, dtype=torch.float64, tile_elems=tile_elems), full, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="tile_elems"):
        f(M, tile_elems=0)


@pytest.mark.parametrize("f", [ch2_l3n, ch3_l3n])
def test_l3n_bf16_split_precisions_match_float64(f) -> None:
    """Three bf16 parts carry every bit of the float32 node terms; two carry about 16 (bf16 here on the CPU is
    emulated with float32 GEMMs on the same bf16 values, as the tensor cores sum them in float32)."""
    M = torch.block_diag(random_mask((60, 300), 0.5, seed=8), random_mask((50, 40), 0.05, seed=9))  # wide degrees
    ref = f(M, dtype=torch.float64)
    x3 = f(M, precision="bf16x3", tile_elems=300 * 7)
    x2 = f(M, precision="bf16x2")
    torch.testing.assert_close(x3.double(), ref, rtol=2e-6, atol=0)
    torch.testing.assert_close(x2.double(), ref, rtol=1e-4, atol=0)
    assert float(((x2.double() - ref).abs() / ref.clamp_min(1e-30)).max()) > 1e-7  # two parts do round
    assert x3.dtype == x2.dtype == torch.float32
    with pytest.raises(ValueError, match="precision must be one of 'auto', 'dtype', 'bf16x3', 'bf16x2'"):
        f(M, precision="bf16")
    with pytest.raises(ValueError, match="dtype=torch.float32"):
        f(M, precision="bf16x3", dtype=torch.float64)


def test_registry() -> None:
    assert LINK_PREDICTORS.names() == ["ch2_l3n", "ch2_l3p", "ch3_l3n", "ch3_l3p"]
    assert LINK_PREDICTORS.get("ch3_l3p") is ch3_l3p
    with pytest.raises(ValueError, match="ch2_l3n"):
        LINK_PREDICTORS.get("ch2_l3")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(PREDICTORS))
def test_cuda_matches_cpu(name: str) -> None:
    M = random_mask((90, 60), 0.1, seed=6)
    S = PREDICTORS[name](M.cuda())
    assert S.device.type == "cuda"
    torch.testing.assert_close(S.cpu(), PREDICTORS[name](M), rtol=1e-5, atol=1e-5)


def test_l3p_retries_smaller_blocks_when_the_sparse_product_runs_out_of_memory(monkeypatch) -> None:
    """A block whose SpGEMM does not fit is split in halves until it does; the scores do not change."""
    import sparsebrain.topology.link_prediction as lp

    g = torch.Generator().manual_seed(5)
    mask = torch.rand(40, 30, generator=g) < 0.2
    expected = lp.ch3_l3p(mask)
    real = lp._spgemm_dense
    sizes = []

    def picky(X, Y):  # type: ignore[no-untyped-def]
        sizes.append(X.shape[0])
        if X.shape[0] > 5:
            raise torch.cuda.OutOfMemoryError("simulated")
        return real(X, Y)

    monkeypatch.setattr(lp, "_spgemm_dense", picky)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: None)
    got = lp.ch3_l3p(mask, chunk_nnz=30 * 40)  # one block of all 40 rows to start with
    torch.testing.assert_close(got, expected)
    assert sizes[0] == 40 and max(sizes[-3:]) <= 5


@pytest.mark.parametrize(
    ("precision", "device"),
    [
        ("dtype", "cpu"),
        # off CUDA the bf16 GEMMs are emulated on float32 copies of their operands: measured where they are real
        pytest.param("bf16x3", "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")),
    ],
)
def test_l3n_working_memory_is_bounded_by_its_tiles(precision: str, device: str) -> None:
    """Beyond the float32 result and one GEMM copy of the mask, L3n holds a few tiles of tile_elems entries."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from memory import LiveBytes

    M = random_mask((192, 640), 0.3, seed=10).to(device)
    result = M.numel() * 4
    operand = M.numel() * (4 if precision == "dtype" else 2)
    tile = 640 * 64  # tiles of 64 rows of the longer side
    with LiveBytes() as small:
        ch2_l3n(M, precision=precision, tile_elems=tile)
    with LiveBytes() as whole:
        ch2_l3n(M, precision=precision, tile_elems=1 << 30)
    # a count tile, its node-term temporaries, a bf16 part and a product tile: about 4 bytes x 4 per tile entry
    assert small.peak <= result + operand + 16 * tile + 4096, (small.peak, result + operand)
    assert whole.peak > small.peak + 4 * tile  # one tile of everything holds much more: the bound is not loose
