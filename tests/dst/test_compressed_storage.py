"""The compressed storage under the engine: the same seed gives the same topology trajectory as the masked storage,
with weights and optimizer state equal within float tolerance, for every unstructured preset."""

from __future__ import annotations

import pytest
import torch
from helpers import make_optimizer, tiny_batch, tiny_mlp

import sparsebrain as sb
from sparsebrain.dst.methods import resolve_method

UNSTRUCTURED = [
    name
    for name in sb.list_methods()
    if (c := resolve_method(name)).sparse and c.pattern is None and c.layer == "masked"
]
VARIANTS = [
    *[(name, {}) for name in UNSTRUCTURED],
    ("set", {"percolation": True}),
    ("chts", {"percolation": True}),
    ("set", {"regrowth_candidates": "after_removal"}),
]


def _run(
    method: str, storage: str, optim: str, options: dict, monkeypatch=None
) -> tuple[list, torch.nn.Module, object, object]:  # type: ignore[no-untyped-def,type-arg]
    """30 steps of the tiny MLP; the topology after each. ``monkeypatch``: no (out, in) tensor of a compressed layer
    may be built after construction (the links are recorded instead of the masks)."""
    model = tiny_mlp(0)
    opt = make_optimizer(model, optim)
    sp = sb.DynamicSparsifier(
        model, opt, method=method, density=0.2, seed=0, total_steps=30, update_interval=3, storage=storage, **options
    )
    if monkeypatch is not None:
        _forbid_dense(monkeypatch)
    topologies = []
    for step in range(30):
        x, y = tiny_batch(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        opt.zero_grad(set_to_none=True)
        if monkeypatch is None:
            topologies.append({n: layer.topology().clone() for n, layer in sp.layers.items()})
        else:
            topologies.append({n: layer.links().flat.clone() for n, layer in sp.layers.items()})
    return topologies, model, opt, sp


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize(("method", "options"), VARIANTS, ids=[f"{m}{o or ''}" for m, o in VARIANTS])
def test_compressed_storage_follows_the_masked_trajectory(method: str, options: dict, optim: str) -> None:  # type: ignore[type-arg]
    masked, m_model, m_opt, m_sp = _run(method, "masked", optim, options)
    compressed, c_model, c_opt, c_sp = _run(method, "compressed", optim, options)
    assert all(isinstance(layer, sb.CompressedSparseLinear) for layer in c_sp.layers.values())
    assert c_sp.stats()["updates"] == m_sp.stats()["updates"] > (0 if resolve_method(method).dynamic else -1)
    for step, (a, b) in enumerate(zip(masked, compressed)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"step {step}, layer {name}: the topologies differ"
    for name, layer in c_sp.layers.items():
        ref = m_sp.layers[name]
        torch.testing.assert_close(layer.dense_weight(), ref.dense_weight(), rtol=1e-5, atol=1e-6)
        mask = ref.topology()
        state, ref_state = c_opt.state[layer.values], m_opt.state[ref.weight]
        for key, value in ref_state.items():
            if torch.is_tensor(value) and value.shape == mask.shape:
                assert state[key].shape == (int(mask.sum()),)
                torch.testing.assert_close(state[key], value[mask], rtol=1e-4, atol=1e-6)
    # everything else in the model (the dense head, biases) trained the same
    for (n, p), (_, q) in zip(m_model.named_parameters(), c_model.named_parameters()):
        if p.shape == q.shape:
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=n)


def test_new_links_start_at_zero_with_fresh_optimizer_state() -> None:
    _, model, opt, sp = _run("set", "compressed", "adamw", {})
    x, y = tiny_batch(99)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    before = {n: (layer.topology(), layer.dense_weight()) for n, layer in sp.layers.items()}
    sp._update(sp._step)  # a topology update now, on this step's gradients
    for name, layer in sp.layers.items():
        old_mask, old_weight = before[name]
        new_mask, new_weight = layer.topology(), layer.dense_weight()
        assert int(new_mask.sum()) == int(old_mask.sum()) == layer.nnz  # exact link count
        grown = new_mask & ~old_mask
        assert grown.any()
        assert torch.count_nonzero(new_weight[grown]) == 0
        kept = new_mask & old_mask
        assert torch.equal(new_weight[kept], old_weight[kept])
        moments = layer._dense(opt.state[layer.values]["exp_avg"])
        assert torch.count_nonzero(moments[grown]) == 0 and torch.count_nonzero(moments[kept]) > 0


def test_a_method_the_storage_cannot_hold_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="storage='compressed' holds unstructured links"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="chts24", storage="compressed")
    with pytest.raises(ValueError, match="storage='compressed' (replaces the masked layer|holds unstructured)"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="ste", storage="compressed")
    from sparsebrain.nn.storage import storage_layer

    with pytest.raises(ValueError, match="layer 'fc': storage='compressed' replaces the masked layer, not STELinear"):
        storage_layer("compressed", sb.STELinear, density=0.1, device=torch.device("cpu"), name="fc")
    with pytest.raises(ValueError, match="storage must be one of 'masked', 'compressed', 'semi_structured', 'auto'"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="set", total_steps=10, storage="csr")


def test_existing_compressed_layers_need_a_compressed_storage() -> None:
    model = tiny_mlp()
    sb.sparsify_(model, 0.2, storage="compressed")
    with pytest.raises(ValueError, match="pass storage='compressed'"):
        sb.DynamicSparsifier(model, None, method="set", total_steps=10)
    sp = sb.DynamicSparsifier(model, None, method="set", total_steps=10, storage="compressed")
    assert len(sp.layers) == 3


def test_fsdp2_strategy_refuses_compressed_layers_it_cannot_keep_exact() -> None:
    """FSDP2 fixes the number of sharded values: a moving density is refused up front, and unsharded values too."""
    from sparsebrain.dst.distributed import FSDP2

    model = tiny_mlp()
    layers = sb.sparsify_(model, 0.2, storage="compressed")
    with pytest.raises(RuntimeError, match=r"hold only their links.*moves the number of links"):
        FSDP2().check(layers, counts_change=True)
    with pytest.raises(RuntimeError, match="are not sharded: call fully_shard"):
        FSDP2().check(layers)


def test_a_model_on_the_meta_device_is_materialised_with_only_its_links() -> None:
    with torch.device("meta"):
        model = torch.nn.Sequential(torch.nn.Linear(300, 400), torch.nn.ReLU(), torch.nn.Linear(400, 10))
    sp = sb.DynamicSparsifier(
        model, None, method="set", density=0.01, total_steps=20, update_interval=5, storage="compressed",
        device="cpu", seed=3, weight_init="keep",
    )  # fmt: skip
    layer = sp.layers["0"]
    assert isinstance(layer, sb.CompressedSparseLinear) and layer.values.device.type == "cpu"
    assert layer.values.numel() == layer.nnz == 1200 and layer.bias.shape == (400,)
    assert all(p.numel() < 300 * 400 for p in layer.parameters())
    bound = 1 / 300**0.5  # nn.Linear's default initialisation at the links
    top = float(layer.values.detach().abs().max())
    assert 0.9 * bound < top <= bound
    assert not any(p.is_meta for p in model.parameters())  # the dense head too, by its own reset_parameters
    with pytest.raises(ValueError, match="is on the meta device: pass device="):
        with torch.device("meta"):
            meta = torch.nn.Sequential(torch.nn.Linear(30, 40), torch.nn.Linear(40, 2))
        sb.sparsify_(meta, 0.1, storage="compressed")
    with pytest.raises(ValueError, match="the model is on the meta device: pass device="):
        sb.DynamicSparsifier(meta, None, method="set", density=0.1, total_steps=10, storage="compressed")


def test_auto_storage_picks_compressed_below_the_break_even_density() -> None:
    from sparsebrain.nn.storage import BREAK_EVEN_DENSITY

    low, high = BREAK_EVEN_DENSITY["cpu"] / 2, min(1.0, BREAK_EVEN_DENSITY["cpu"] * 3)
    for density, kind in ((low, sb.CompressedSparseLinear), (high, sb.SparseLinear)):
        model = torch.nn.Sequential(torch.nn.Linear(200, 200), torch.nn.Linear(200, 2))
        layers = sb.sparsify_(model, density, storage="auto")
        assert type(layers["0"]) is kind
    nm = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 2))
    assert type(sb.sparsify_nm_(nm, "1:4")["0"]) is sb.SparseLinear


def _forbid_dense(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Makes every (out, in) tensor of a compressed layer an error, and every tile smaller than the tiny layers."""
    from sparsebrain.dst import regrowth
    from sparsebrain.topology import link_prediction
    from sparsebrain.topology.links import Links

    def refuse(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise AssertionError("an (out, in) tensor of a compressed layer was built during training")

    for name in ("topology", "dense_weight", "dense_grad"):
        monkeypatch.setattr(sb.CompressedSparseLinear, name, refuse)
    monkeypatch.setattr(Links, "to_mask", refuse)
    monkeypatch.setattr(link_prediction, "_DEFAULT_LINK_TILE_ELEMS", 100)  # the 24 x 24 layers: 4 rows a tile
    monkeypatch.setattr(regrowth, "_GRADIENT_TILE_ELEMS", 100)


LINKS_ONLY = [*VARIANTS, ("chts", {"regrowth": "ch3_l3p"})]


@pytest.mark.parametrize(("method", "options"), LINKS_ONLY, ids=[f"{m}{o or ''}" for m, o in LINKS_ONLY])
def test_updates_of_compressed_layers_build_no_dense_tensor(method: str, options: dict, monkeypatch) -> None:  # type: ignore[no-untyped-def,type-arg]
    topologies, _, _, sp = _run(method, "compressed", "adamw", options, monkeypatch)
    stats = sp.stats()  # counted on the links too
    assert stats["updates"] == (7 if resolve_method(method).dynamic else 0)
    for name, layer in sp.layers.items():
        assert stats["layers"][name]["links"] == layer.nnz
        if resolve_method(method).dynamic and resolve_method(method).regrowth is not None:
            assert not torch.equal(topologies[-1][name], topologies[0][name]), name  # the topology moved


# Rules whose scores are exact in any tiling (uniform draws, gradients summed in one order per entry): the tiled,
# links-only update picks what the masked storage picks
TILE_EXACT = ["set", "mest", "rigl", "granet", "gmp", "static"]


@pytest.mark.parametrize("method", TILE_EXACT)
def test_tiled_links_only_updates_follow_the_masked_trajectory(method: str, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    masked, *_ = _run(method, "masked", "sgd", {})
    from sparsebrain.dst import regrowth

    monkeypatch.setattr(regrowth, "_GRADIENT_TILE_ELEMS", 100)
    compressed, *_ = _run(method, "compressed", "sgd", {})
    for step, (a, b) in enumerate(zip(masked, compressed)):
        for name in a:
            assert torch.equal(a[name], b[name]), f"step {step}, layer {name}: the topologies differ"
