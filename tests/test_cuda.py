"""On a CUDA device: predictors, sampling and a whole topology update stay on the GPU and agree with the CPU.

Skipped where no GPU is present (CI); run on the GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import copy

import pytest
import torch

import sparsebrain as sb
from sparsebrain.topology import LINK_PREDICTORS, frechet_scores

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.mark.parametrize("name", ["ch2_l3n", "ch3_l3n", "ch2_l3p", "ch3_l3p"])
def test_link_predictors_on_cuda_match_cpu(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(300, 500, generator=g) < 0.05
    fn = LINK_PREDICTORS.get(name)
    cpu = fn(mask)
    gpu = fn(mask.cuda())
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-5, atol=1e-5)


def test_ch2_l3n_close_with_tf32_allowed() -> None:
    """With TF32 matmuls allowed the 0/1 count products stay exact; only the score GEMMs round (about 1e-3)."""
    g = torch.Generator().manual_seed(1)
    mask = torch.rand(64, 6000, generator=g) < 0.6
    old = torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = True
        gpu = LINK_PREDICTORS.get("ch2_l3n")(mask.cuda()).cpu()
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old
    cpu = LINK_PREDICTORS.get("ch2_l3n")(mask)
    torch.testing.assert_close(gpu, cpu, rtol=5e-3, atol=1e-4)


@pytest.mark.parametrize("name", ["ch2_l3n", "ch3_l3n"])
@pytest.mark.parametrize(("precision", "rtol"), [("auto", 2e-6), ("bf16x3", 2e-6), ("bf16x2", 1e-4), ("dtype", 1e-5)])
def test_l3n_tensor_core_precisions_match_float64(name: str, precision: str, rtol: float) -> None:
    """bf16 tensor-core GEMMs into float32: exact counts (degrees up to 3600 here) and float32-level scores."""
    g = torch.Generator().manual_seed(2)
    mask = torch.block_diag(torch.rand(64, 6000, generator=g) < 0.6, torch.rand(500, 700, generator=g) < 0.02)
    ref = LINK_PREDICTORS.get(name)(mask, dtype=torch.float64)
    got = LINK_PREDICTORS.get(name)(mask.cuda(), precision=precision, tile_elems=1 << 20).cpu()
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), ref, rtol=rtol, atol=0)


def test_frechet_scores_on_cuda_over_2_pow_24() -> None:
    w = torch.rand(2**24 + 5, device="cuda")
    s = frechet_scores(w, 2.0, torch.Generator(device="cuda").manual_seed(0))
    assert s.device.type == "cuda" and s.shape == w.shape and bool(torch.isfinite(s).all())


@pytest.mark.parametrize("method", ["set", "rigl", "chts", "chtss", "granet", "mest"])
def test_update_on_cuda_keeps_invariants(method: str) -> None:
    torch.manual_seed(0)
    model = sb.models.MLP(64, [128, 128, 128], 10).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = sb.DynamicSparsifier(model, opt, method=method, density=0.1, total_steps=40, update_interval=2)
    for _ in range(40):
        x, y = torch.randn(32, 64, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        opt.zero_grad()
    assert sp.stats()["updates"] == 15
    for layer in sp.layers.values():
        assert layer.mask.device.type == "cuda"
        assert int(layer.mask.sum()) == round(0.1 * layer.mask.numel())
        assert torch.count_nonzero(layer.weight[~layer.mask]) == 0
        for v in opt.state[layer.weight].values():
            if torch.is_tensor(v) and v.shape == layer.weight.shape:
                assert torch.count_nonzero(v[~layer.mask]) == 0


@pytest.mark.parametrize("method", ["chts24", "chts14", "srste"])
def test_nm_methods_on_cuda_keep_valid_patterns(method: str) -> None:
    torch.manual_seed(0)
    model = sb.models.MLP(64, [128, 128, 128], 10).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = sb.DynamicSparsifier(model, opt, method=method, total_steps=40, update_interval=2, seed=0)
    n, m = sp.config.nm
    for _ in range(40):
        x, y = torch.randn(32, 64, device="cuda"), torch.randint(0, 10, (32,), device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        sp.step()
        opt.zero_grad()
    for layer in sp.layers.values():
        assert layer.mask.device.type == "cuda"
        assert sb.topology.is_transposable(layer.mask, n, m)
        if not layer.dense_master_weights:  # STE trains every weight; the masked storage zeroes off-mask ones
            assert torch.count_nonzero(layer.weight[~layer.mask]) == 0


@pytest.mark.parametrize("largest", [True, False])
def test_top_indices_prefilter_on_cuda_equals_topk(largest: bool) -> None:
    """Large selections on CUDA take the sampled-threshold path; the set is torch.topk's."""
    from sparsebrain.topology.sampling import top_indices

    g = torch.Generator(device="cuda").manual_seed(0)
    values = torch.rand(1 << 23, generator=g, device="cuda")
    for k in (1 << 16, 1 << 20, 3_000_000):
        got = top_indices(values, k, largest=largest)
        ref = torch.topk(values, k, largest=largest).indices
        assert got.numel() == k and torch.equal(got.sort().values, ref.sort().values), k


def test_soft_selection_on_cuda_equals_the_full_array_selection() -> None:
    """Removal and regrowth on the active entries (with the prefilter) pick what one top-k over all would."""
    from sparsebrain.topology.sampling import keep_top, select_regrowth

    g = torch.Generator(device="cuda").manual_seed(1)
    mask = torch.rand(4096, 4096, generator=g, device="cuda") < 0.3  # over 2^22 active and candidates
    scores = torch.rand(4096, 4096, generator=g, device="cuda")
    n = int(mask.sum())
    kept = keep_top(scores, mask, n - 200_000)
    key = scores.masked_fill(~mask, -torch.inf).reshape(-1)
    ref = torch.zeros(mask.numel(), dtype=torch.bool, device="cuda")
    ref[torch.topk(key, n - 200_000).indices] = True
    assert torch.equal(kept, ref.view_as(mask))
    grown = select_regrowth(scores, ~mask, 200_000, "multinomial", torch.Generator(device="cuda").manual_seed(2))
    assert int(grown.sum()) == 200_000 and not bool((grown & mask).any())
    s = scores.reshape(-1)
    from sparsebrain.topology.sampling import draw_seeds, positional_uniform

    seed = draw_seeds(torch.Generator(device="cuda").manual_seed(2), 2)[0]
    U = positional_uniform(seed, torch.arange(mask.numel(), device="cuda"))
    frechet = (s.log() - U.log().neg().log()).masked_fill(mask.reshape(-1), -torch.inf)  # same order as the keys
    ref = torch.zeros(mask.numel(), dtype=torch.bool, device="cuda")
    ref[torch.topk(frechet, 200_000).indices] = True
    assert torch.equal(grown, ref.view_as(mask))


def test_autocast_gradient_of_a_sparse_layer_is_the_dense_one_masked() -> None:
    torch.manual_seed(0)
    mask = torch.rand(512, 256, device="cuda") < 0.3
    dense = torch.nn.Linear(256, 512, device="cuda")
    with torch.no_grad():
        dense.weight.mul_(mask)
    sparse = sb.SparseLinear.from_linear(copy.deepcopy(dense), mask)
    x = torch.randn(64, 256, device="cuda")
    for layer in (dense, sparse):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = layer(x).float().pow(2).sum()
        (loss + 0.01 * layer.weight.abs().sum()).backward()  # a gradient from outside the forward too
    assert torch.equal(sparse.weight.grad, dense.weight.grad * mask)
    # Used twice in one graph, CUDA autocast casts the dense weight once and sums the two gradients in bf16; the
    # sparse layer casts per use and sums in float32: close, not equal.
    for layer in (dense, sparse):
        layer.weight.grad = None
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = (layer(x) * layer(x.flip(0))).float().sum()
        loss.backward()
    assert torch.count_nonzero(sparse.weight.grad[~mask]) == 0
    torch.testing.assert_close(sparse.weight.grad, dense.weight.grad * mask, rtol=2e-2, atol=1e-2)


def test_positional_uniforms_are_the_same_on_cuda_and_cpu() -> None:
    from sparsebrain.topology.sampling import positional_uniform

    index = torch.cat([torch.arange(100000), torch.arange(2**32 - 5000, 2**32)])
    seed = torch.tensor(987654321987)
    assert torch.equal(positional_uniform(seed.cuda(), index.cuda()).cpu(), positional_uniform(seed, index))


@pytest.mark.parametrize("ch2", [True, False])
def test_l3n_tiles_from_the_links_on_cuda_equal_the_dense_predictor(ch2: bool) -> None:
    from sparsebrain.topology.link_prediction import ch2_l3n, ch3_l3n, l3n_tiles
    from sparsebrain.topology.links import Links

    mask = (torch.rand(700, 900, generator=torch.Generator().manual_seed(4)) < 0.03).cuda()
    ref = (ch2_l3n if ch2 else ch3_l3n)(mask, precision="dtype")
    got = torch.zeros_like(ref)
    for lo, hi, tile in l3n_tiles(Links.from_mask(mask), ch2=ch2, tile_elems=50000):  # the Triton kernels
        got[lo:hi] = tile
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("ch2", [True, False])
def test_l3p_tiles_from_the_links_on_cuda_equal_the_dense_predictor(ch2: bool) -> None:
    from sparsebrain.topology.link_prediction import ch2_l3p, ch3_l3p, l3p_tiles
    from sparsebrain.topology.links import Links

    mask = (torch.rand(700, 900, generator=torch.Generator().manual_seed(5)) < 0.03).cuda()
    ref = (ch2_l3p if ch2 else ch3_l3p)(mask)
    got = torch.zeros_like(ref)
    for lo, hi, tile in l3p_tiles(Links.from_mask(mask), ch2=ch2, tile_elems=50000):
        got[lo:hi] = tile
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["set", "rigl", "chts", "cht"])
def test_links_only_update_on_cuda_keeps_invariants(method: str) -> None:
    from sparsebrain.dst import regrowth
    from sparsebrain.topology import link_prediction

    model = torch.nn.Sequential(
        sb.CompressedSparseLinear(512, 1024, density=0.02, device="cuda"),
        torch.nn.ReLU(),
        sb.CompressedSparseLinear(1024, 512, density=0.02, device="cuda"),
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = sb.DynamicSparsifier(
        model, opt, method=method, density=0.02, total_steps=40, update_interval=10, storage="compressed", seed=0
    )
    old_tiles = (link_prediction._DEFAULT_LINK_TILE_ELEMS, regrowth._GRADIENT_TILE_ELEMS)
    link_prediction._DEFAULT_LINK_TILE_ELEMS = regrowth._GRADIENT_TILE_ELEMS = 1 << 16  # several tiles
    try:
        links = [m.nnz for m in sp.layers.values()]
        for _ in range(30):
            x = torch.randn(256, 512, device="cuda")
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = model(x).float().pow(2).mean()
            loss.backward()
            opt.step()
            sp.step()
            opt.zero_grad(set_to_none=True)
    finally:
        link_prediction._DEFAULT_LINK_TILE_ELEMS, regrowth._GRADIENT_TILE_ELEMS = old_tiles
    assert sp.stats()["updates"] == 3
    for layer, n in zip(sp.layers.values(), links):
        assert layer.nnz == n and layer.values.is_cuda
        flat = layer.links().flat
        assert bool((flat[1:] > flat[:-1]).all())  # distinct, sorted
        assert sp.stats()["layers"]  # stats from the links
