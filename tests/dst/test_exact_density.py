"""The density is what was asked for, at every density in (0, 1] and every update, or the sparsifier refuses."""

from __future__ import annotations

import pytest
import torch
from helpers import make_optimizer, tiny_batch, tiny_mlp, train_steps

import sparsebrain as sb

# unstructured methods that regrow (the N:M ones hold N/M by construction, see test_nm_methods.py)
REGROWING = ["set", "rigl", "mest", "cht", "chts", "chtss", "granet"]


@pytest.mark.parametrize("density", [0.8, 0.9, 0.95, 1.0])
@pytest.mark.parametrize("method", REGROWING)
def test_link_count_is_exact_at_every_update_for_dense_ish_targets(method: str, density: float) -> None:
    """At density d only 1 - d of a layer is absent, fewer than the zeta d links an update removes."""
    model = tiny_mlp(0)
    opt = make_optimizer(model, "sgd")
    sp = sb.DynamicSparsifier(model, opt, method=method, density=density, total_steps=20, update_interval=1, seed=0)
    numel = {n: m.mask.numel() for n, m in sp.layers.items()}
    seen: list[int] = []

    def on_update(before) -> None:  # type: ignore[no-untyped-def]
        seen.append(1)
        target = sp.scheduled_density(len(seen))
        for name, layer in sp.layers.items():
            assert int(layer.mask.sum()) == round(target * numel[name]), (method, density, name, len(seen))

    train_steps(model, opt, sp, 0, 20, on_update)
    assert len(seen) == sp.num_updates == 15
    assert sp.stats()["density"] == pytest.approx(density, abs=1e-3)


def test_absent_rule_regrows_just_removed_links_only_when_too_few_absent_links_remain() -> None:
    """The fallback: with fewer absent links than links to regrow, just-removed links may come back, keeping weights."""
    model = tiny_mlp(0)
    opt = make_optimizer(model, "sgd")
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.9, total_steps=20, update_interval=1, seed=0)
    layer = sp.layers["layers.1"]
    train_steps(model, opt, sp, 0, 1)  # one update to start from trained weights
    x, y = tiny_batch(1)
    torch.nn.functional.cross_entropy(model(x), y).backward()
    opt.step()
    old_mask, old_w = layer.mask.clone(), layer.weight.detach().clone()
    sp.step()
    kept = old_mask & layer.mask
    grown = layer.mask & ~old_mask
    assert int(grown.sum()) == int((~old_mask).sum())  # every absent link was taken first ...
    assert int(layer.mask.sum()) == int(old_mask.sum())  # ... and the rest came from the removed ones
    assert int(kept.sum()) > int(old_mask.sum()) * (1 - 0.3)  # (more than the survivors of removal)
    # links that stayed, the re-picked removed ones included, keep their weights; new links start at 0
    assert torch.equal(layer.weight.detach()[kept], old_w[kept])
    assert torch.count_nonzero(layer.weight.detach()[grown]) == 0


@pytest.mark.parametrize("method", ["set", "rigl", "chts"])
def test_after_removal_rule_may_regrow_links_removed_in_the_same_update(method: str) -> None:
    """The references' rule: candidates are the non-links after removal; a re-picked link keeps its weight."""

    @sb.register_regrowth("_test_prefers_current_links")
    def prefers_current(layer, ctx):  # type: ignore[no-untyped-def]
        return layer.module.mask.float() * 1e6 + ctx.rand_like(layer.mask)  # module.mask is still the old one

    try:
        model = tiny_mlp(0)
        opt = make_optimizer(model, "sgd")
        sp = sb.DynamicSparsifier(
            model,
            opt,
            method=method,
            density=0.3,
            total_steps=20,
            update_interval=1,
            seed=0,
            regrowth="_test_prefers_current_links",
            regrowth_candidates="after_removal",
            percolation=False,
        )
        layer = sp.layers["layers.1"]
        train_steps(model, opt, sp, 0, 1)
        old_mask, old_w = layer.mask.clone(), layer.weight.detach().clone()
        x = torch.randn(8, 20)
        torch.nn.functional.cross_entropy(model(x), torch.zeros(8, dtype=torch.long)).backward()
        opt.zero_grad(set_to_none=True)
        opt.step()  # a step without gradients: no weight changes, so the update alone is tested
        assert sp.step() is True
        # every removed link scored highest, so the topology and the weights are unchanged
        assert torch.equal(layer.mask, old_mask)
        assert torch.equal(layer.weight.detach(), old_w)
        assert sp.stats()["layers"]["layers.1"]["regrown"] == 0
    finally:
        sb.dst.REGROWTHS._items.pop("_test_prefers_current_links")


def test_regrowth_candidates_is_validated() -> None:
    with pytest.raises(ValueError, match="regrowth_candidates.*absent.*after_removal"):
        sb.DynamicSparsifier(tiny_mlp(0), None, method="set", regrowth_candidates="all")


def test_presets_say_which_candidate_rule_they_use() -> None:
    for name in sb.list_methods():
        assert sb.dst.METHODS[name].regrowth_candidates == "absent", name


# ----------------------------------------------------------------------------------------------------------------
# schedules that cannot run


@pytest.mark.parametrize("method", ["chtss", "granet", "gmp"])
def test_density_schedule_with_no_update_refuses_to_start(method: str) -> None:
    """One epoch with one update per epoch: T_end = 0.75 * 10 < 10, no update, the start density would stay."""
    model = tiny_mlp(0)
    before = [type(m).__name__ for m in model.modules()]
    with pytest.raises(ValueError) as info:
        sb.DynamicSparsifier(model, None, method=method, density=0.1, total_steps=10, update_interval=10)
    msg = str(info.value)
    for word in ("update_interval=10", "end_fraction=0.75", "total_steps=10", "0 topology updates", method):
        assert word in msg, msg
    assert [type(m).__name__ for m in model.modules()] == before  # nothing was sparsified


def test_density_schedule_with_one_update_starts() -> None:
    sp = sb.DynamicSparsifier(tiny_mlp(0), None, method="chtss", density=0.1, total_steps=20, update_interval=10)
    assert sp.num_updates == 1


def test_dynamic_method_without_updates_warns_that_it_is_static() -> None:
    with pytest.warns(UserWarning, match="0 topology updates"):
        sb.DynamicSparsifier(tiny_mlp(0), None, method="set", density=0.1, total_steps=10, update_interval=10)


# ----------------------------------------------------------------------------------------------------------------
# empty layers


def test_density_that_leaves_a_layer_empty_is_refused_with_the_smallest_working_density() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Linear(1, 2))
    with pytest.raises(ValueError) as info:
        sb.DynamicSparsifier(model, None, method="set", density=0.01, filter_fn=lambda n, m: n != "3")
    msg = str(info.value)
    assert "'2'" in msg and "(1, 8)" in msg, msg  # the 8 -> 1 layer: 8 * 0.01 = 0.08 links
    smallest = float(msg.split("smallest density that gives it a link is ")[1].split()[0].rstrip(";,."))
    sb.DynamicSparsifier(  # that density works ...
        torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Linear(1, 2)),
        None,
        method="set",
        density=smallest,
        filter_fn=lambda n, m: n != "3",
    )
    with pytest.raises(ValueError):  # ... and a little less does not
        sb.DynamicSparsifier(
            torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1), torch.nn.Linear(1, 2)),
            None,
            method="set",
            density=smallest * 0.99,
            filter_fn=lambda n, m: n != "3",
        )


def test_tiny_global_density_is_refused() -> None:
    with pytest.raises(ValueError, match="0 links"):
        sb.DynamicSparsifier(tiny_mlp(0), None, method="set", density=1e-9)


def test_erk_allocation_that_empties_a_layer_is_refused() -> None:
    """ERK gives a layer eps (out + in) links: the 40 x 40 layer gets 0.19 here, where uniform gives it 2."""

    def model() -> torch.nn.Module:
        return torch.nn.Sequential(torch.nn.Linear(1000, 1), torch.nn.Linear(40, 40), torch.nn.Linear(40, 2))

    sb.DynamicSparsifier(model(), None, method="set", density=1e-3)
    with pytest.raises(ValueError) as info:
        sb.DynamicSparsifier(model(), None, method="set", density=1e-3, allocation="erk")
    assert "'1'" in str(info.value) and "(40, 40)" in str(info.value) and "'erk'" in str(info.value)


def test_final_density_of_a_schedule_that_empties_a_layer_is_refused() -> None:
    """chtss starts at 0.5 (fine) but its target would leave a layer without links."""
    with pytest.raises(ValueError, match="0 links"):
        sb.DynamicSparsifier(tiny_mlp(0), None, method="chtss", density=1e-4, total_steps=100, update_interval=1)


def test_sparsify_refuses_an_empty_layer_too() -> None:
    with pytest.raises(ValueError, match="0 links"):
        sb.sparsify_(torch.nn.Sequential(torch.nn.Linear(16, 1), torch.nn.Linear(1, 2)), 0.01)


def test_the_layer_named_is_the_one_that_needs_the_highest_density() -> None:
    """With several empty layers, the density given must give every layer a link, not only the first one."""
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.Linear(40, 2), torch.nn.Linear(2, 2))
    with pytest.raises(ValueError) as info:  # 1600 and 80 weights: both empty at 1e-4
        sb.DynamicSparsifier(model, None, method="set", density=1e-4, filter_fn=lambda n, m: n != "2")
    msg = str(info.value)
    assert "'1'" in msg and "(2, 40)" in msg and "1 other layers" in msg, msg
    smallest = float(msg.split("smallest density that gives it a link is ")[1].split(";")[0])
    model = torch.nn.Sequential(torch.nn.Linear(40, 40), torch.nn.Linear(40, 2), torch.nn.Linear(2, 2))
    sb.DynamicSparsifier(model, None, method="set", density=smallest, filter_fn=lambda n, m: n != "2")
