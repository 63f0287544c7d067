"""Invariants of every method preset over 50 topology updates on a tiny MLP."""

from __future__ import annotations

import pytest
import torch
from helpers import assert_zero_off_mask, dead_ends, tiny_batch, train_steps

import sparsebrain as sb
import sparsebrain.topology.constraints as constraints

# unstructured presets; the N:M ones (chts24, ste, asp, ...) have their own invariants in test_nm_methods.py
SPARSE_METHODS = [m for m in sb.list_methods() if m != "dense" and sb.dst.METHODS[m].pattern is None]


@pytest.mark.parametrize("optim", ["sgd", "adamw"])
@pytest.mark.parametrize("method", SPARSE_METHODS)
def test_preset_invariants_over_50_updates(method: str, optim: str, make_setup, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    model, opt, sp = make_setup(method, density=0.2, optim=optim)
    assert sp.num_updates == 50

    calls: list[tuple[torch.Tensor, torch.Tensor]] = []
    real_select = constraints.select_regrowth

    def spy(scores, candidates, k, sampling, generator, count=None):  # type: ignore[no-untyped-def]
        assert count is None or count == int(candidates.sum())  # a count passed on is exact
        grown = real_select(scores, candidates, k, sampling, generator, count=count)
        calls.append((candidates.clone(), grown.clone()))
        return grown

    monkeypatch.setattr(constraints, "select_regrowth", spy)
    updates: list[int] = []
    numel = {n: m.mask.numel() for n, m in sp.layers.items()}

    def on_update(before) -> None:  # type: ignore[no-untyped-def]
        updates.append(1)
        i = len(updates)
        target = sp.scheduled_density(i)
        for name, layer in sp.layers.items():
            # exact link count: conserved, or exactly as scheduled
            assert int(layer.mask.sum()) == round(target * numel[name]), (method, name, i)
        for cand, grown in calls:
            assert not (grown & ~cand).any()
        # candidates are the non-links of a layer before the update (all of them, or without percolated neurons):
        # nothing removed now is regrown now
        for cand, _ in calls:
            if sp.config.percolation:
                assert any(cand.shape == b.shape and not (cand & b).any() for b in before.values())
            else:
                assert any(torch.equal(cand, ~b) for b in before.values())
        calls.clear()
        assert_zero_off_mask(opt, sp)

    train_steps(model, opt, sp, 0, 67, on_update)
    expected_updates = 0 if method == "static" else 50
    assert len(updates) == expected_updates
    assert sp.stats()["updates"] == expected_updates
    assert_zero_off_mask(opt, sp)
    assert sp.stats()["density"] == pytest.approx(0.2, abs=1e-3)


def test_regrowth_never_revives_links_removed_in_the_same_update() -> None:
    """An adversarial rule that scores the just-removed links highest must still get other links."""

    @sb.register_regrowth("_test_prefers_old_links")
    def prefers_old(layer, ctx):  # type: ignore[no-untyped-def]
        return layer.module.mask.float() * 1e6 + ctx.rand_like(layer.mask)  # module.mask is still the old one

    try:
        model = sb.models.MLP(20, [24, 24], 5)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sp = sb.DynamicSparsifier(
            model, opt, method="set", density=0.3, regrowth="_test_prefers_old_links", update_interval=1, seed=3
        )
        for _ in range(5):
            old = {n: m.mask.clone() for n, m in sp.layers.items()}
            opt.step()  # no gradients: the weights stay, the sparsifier sees a real step
            sp.step()
            for name, layer in sp.layers.items():
                n = int(old[name].sum())
                new_links = layer.mask & ~old[name]
                assert int(new_links.sum()) == round(0.3 * n)
                assert int(layer.mask.sum()) == n
    finally:
        sb.dst.REGROWTHS._items.pop("_test_prefers_old_links")


def test_dense_method_changes_nothing() -> None:
    model = sb.models.MLP(20, [24], 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sb.DynamicSparsifier(model, opt, method="dense", density=0.1)
    assert sp.layers == {}
    assert not sb.sparse_layers(model)
    opt.step()
    assert sp.step() is False
    assert sp.stats()["density"] == 1.0


def test_links_move_and_changed_fraction_is_reported(make_setup) -> None:  # type: ignore[no-untyped-def]
    model, opt, sp = make_setup("set", density=0.3)
    before = {n: m.mask.clone() for n, m in sp.layers.items()}
    train_steps(model, opt, sp, 0, 1)
    stats = sp.stats()
    for name, layer in sp.layers.items():
        changed = int((layer.mask & ~before[name]).sum())
        assert changed > 0
        assert stats["layers"][name]["regrown"] == changed
        assert stats["layers"][name]["changed_fraction"] == pytest.approx(changed / int(layer.mask.sum()))


def test_rigl_regrows_largest_dense_gradients(make_setup) -> None:  # type: ignore[no-untyped-def]
    """RigL's new links are exactly the top |dense gradient| among non-links (no cosine decay at step 1 ~ zeta)."""
    model, opt, sp = make_setup("rigl", density=0.3)
    layer = sp.layers["layers.1"]
    x, y = tiny_batch_for_test()
    loss = torch.nn.functional.cross_entropy(model(x), y)
    loss.backward()
    dense = layer.dense_grad().clone()  # captured: step 1 is an update step
    old = layer.mask.clone()
    # the stored .grad is masked, the captured one is not
    assert torch.count_nonzero(layer.weight.grad[~old]) == 0
    assert torch.count_nonzero(dense[~old]) > 0
    opt.step()
    sp.step()
    grown = layer.mask & ~old
    k = int(grown.sum())
    top = torch.topk(dense.abs().masked_fill(old, -1).flatten(), k).indices
    assert set(top.tolist()) == set(grown.flatten().nonzero().flatten().tolist())
    assert layer.dense_grad() is None  # step 2 is an update step too: a fresh capture
    torch.nn.functional.cross_entropy(model(x), y).backward()
    assert layer.dense_grad() is not None


def test_dense_gradient_is_captured_on_update_steps_only() -> None:
    model = sb.models.MLP(20, [24, 24], 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sb.DynamicSparsifier(model, opt, method="rigl", density=0.3, total_steps=100, update_interval=3)
    layer = sp.layers["layers.0"]
    seen = []
    for _ in range(1, 10):
        x, y = tiny_batch_for_test()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        seen.append(layer.dense_grad() is not None)
        opt.step()
        sp.step()
        opt.zero_grad()
    assert seen == [False, False, True] * 3
    # set does not need gradients at all
    model2 = sb.models.MLP(20, [24, 24], 5)
    sb.DynamicSparsifier(model2, None, method="set", density=0.3, update_interval=1)
    torch.nn.functional.cross_entropy(model2(x), y).backward()
    assert all(m.dense_grad() is None for m in sb.sparse_layers(model2).values())


def tiny_batch_for_test() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(16, 20, generator=g), torch.randint(0, 5, (16,), generator=g)


@pytest.mark.parametrize("regrowth", ["random", "ch2_l3n"])
def test_percolation_leaves_no_dead_end_after_regrowth(regrowth: str) -> None:
    """Regrowth never gives links back to neurons percolation cut, so no junction neuron is half-connected."""
    from sparsebrain.topology.percolation import alive_neurons

    torch.manual_seed(0)
    model = sb.models.MLP(40, [60, 60, 60], 5)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sp = sb.DynamicSparsifier(
        model, opt, method="chts", density=0.02, total_steps=40, update_interval=1, regrowth=regrowth, seed=1
    )
    cut_somewhere = False
    for step in range(30):
        x, y = tiny_batch(step)
        x = torch.cat([x, x], 1)  # 40 features
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        sp.step()
        opt.zero_grad()
        masks = {n: m.mask for n, m in sp.layers.items()}
        for j in sp.junctions:
            assert dead_ends(masks, j) == 0, (step, j)
            cut_somewhere |= bool((~alive_neurons(masks, j)).any())
        for layer in sp.layers.values():
            assert int(layer.mask.sum()) == round(0.02 * layer.mask.numel())  # density still conserved
    assert cut_somewhere  # the test exercised percolation
