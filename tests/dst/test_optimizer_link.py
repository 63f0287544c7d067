"""The sparsifier knows its optimizer: real steps only, the right parameters, matching state and weights."""

from __future__ import annotations

import warnings

import pytest
import torch
from helpers import make_optimizer, tiny_batch, tiny_mlp, train_steps

import sparsebrain as sb


def test_step_without_an_optimizer_step_warns_once_and_does_not_advance() -> None:
    model = tiny_mlp(0)
    opt = make_optimizer(model, "sgd")
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.3, total_steps=20, update_interval=1, seed=0)
    masks = {n: m.mask.clone() for n, m in sp.layers.items()}
    with pytest.warns(UserWarning, match="optimizer.step"):
        assert sp.step() is False
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once only
        assert sp.step() is False
    assert sp.stats()["step"] == 0 and sp.stats()["updates"] == 0
    assert all(torch.equal(masks[n], m.mask) for n, m in sp.layers.items())
    train_steps(model, opt, sp, 0, 3)  # real steps advance as before
    assert sp.stats()["step"] == 3 and sp.stats()["updates"] == 3


def test_grad_scaler_skipped_steps_neither_advance_nor_rewire_on_nan_gradients() -> None:
    """30 steps whose gradients are all NaN: the scaler skips every optimizer step, so nothing changes.

    The run then takes one real step and must end exactly as a run that never saw the NaN steps: the gradients
    captured for gradient regrowth on the skipped steps are not carried into the real update.
    """

    def setup():  # type: ignore[no-untyped-def]
        model = tiny_mlp(0)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        sp = sb.DynamicSparsifier(model, opt, method="rigl", density=0.3, total_steps=60, update_interval=1, seed=0)
        return model, opt, sp

    model, opt, sp = setup()
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)
    masks = {n: m.mask.clone() for n, m in sp.layers.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for step in range(30):
            x, y = tiny_batch(step)
            loss = torch.nn.functional.cross_entropy(model(x), y) * float("nan")
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            assert sp.step() is False
            opt.zero_grad(set_to_none=True)
    assert sp.stats()["step"] == 0 and sp.stats()["updates"] == 0
    assert all(torch.equal(masks[n], m.mask) for n, m in sp.layers.items())
    x, y = tiny_batch(100)
    scaler.scale(torch.nn.functional.cross_entropy(model(x), y)).backward()
    scaler.step(opt)
    scaler.update()
    assert sp.step() is True

    ref_model, ref_opt, ref = setup()
    torch.nn.functional.cross_entropy(ref_model(x), y).backward()
    ref_opt.step()
    ref.step()
    for name, layer in sp.layers.items():
        assert torch.equal(layer.mask, ref.layers[name].mask), name
        assert torch.equal(layer.weight, ref.layers[name].weight), name


def test_sparsifier_without_optimizer_advances_on_every_call() -> None:
    sp = sb.DynamicSparsifier(tiny_mlp(0), None, method="set", density=0.3, total_steps=20, update_interval=1)
    assert sp.step() is True
    assert sp.stats()["step"] == 1


def test_optimizer_without_the_sparse_weights_is_refused() -> None:
    model = tiny_mlp(0)
    other = torch.optim.SGD(tiny_mlp(1).parameters(), lr=0.1)
    before = [type(m).__name__ for m in model.modules()]
    with pytest.raises(ValueError, match="optimizer.*none of the sparse layers"):
        sb.DynamicSparsifier(model, other, method="set", density=0.3, total_steps=20, update_interval=1)
    assert [type(m).__name__ for m in model.modules()] == before


def test_optimizer_missing_some_sparse_weights_warns_naming_them() -> None:
    model = tiny_mlp(0)
    opt = torch.optim.SGD([p for n, p in model.named_parameters() if not n.startswith("layers.1.")], lr=0.1)
    with pytest.warns(UserWarning, match=r"layers\.1"):
        sb.DynamicSparsifier(model, opt, method="set", density=0.3, total_steps=20, update_interval=1)


# ----------------------------------------------------------------------------------------------------------------
# state that does not belong to this sparsifier


def _state_of(method: str, density: float, **kw) -> dict:  # type: ignore[type-arg]
    model = tiny_mlp(0)
    opt = make_optimizer(model, "sgd")
    sp = sb.DynamicSparsifier(model, opt, method=method, density=density, total_steps=40, update_interval=2, **kw)
    train_steps(model, opt, sp, 0, 4)
    return sp.state_dict()


@pytest.mark.parametrize(
    ("method", "density", "kw", "word"),
    [
        ("rigl", 0.3, {}, "method"),
        ("set", 0.2, {}, "density"),
        ("set", 0.3, {"zeta": 0.1}, "zeta"),
    ],
)
def test_sparsifier_state_of_another_method_or_density_is_refused(method, density, kw, word) -> None:  # type: ignore[no-untyped-def]
    state = _state_of(method, density, **kw)
    model = tiny_mlp(0)
    sp = sb.DynamicSparsifier(model, None, method="set", density=0.3, total_steps=40, update_interval=2)
    with pytest.raises(ValueError, match=word):
        sp.load_state_dict(state)
    assert sp.stats()["step"] == 0


def test_sparsifier_state_of_other_layers_is_refused() -> None:
    state = _state_of("set", 0.3)
    model = sb.models.MLP(20, [24, 24], 5)
    sp = sb.DynamicSparsifier(model, None, method="set", density=0.3, total_steps=40, update_interval=2)
    with pytest.raises(ValueError, match="layers"):
        sp.load_state_dict(state)


def test_own_state_round_trips() -> None:
    state = _state_of("set", 0.3)
    sp = sb.DynamicSparsifier(tiny_mlp(0), None, method="set", density=0.3, total_steps=40, update_interval=2)
    sp.load_state_dict(state)
    assert sp.stats()["step"] == 4


# ----------------------------------------------------------------------------------------------------------------
# weights that contradict their mask


def test_loading_weights_that_are_nonzero_off_the_mask_is_refused() -> None:
    model = tiny_mlp(0)
    sb.sparsify_(model, 0.3)
    state = model.state_dict()
    state["layers.1.weight"] = torch.randn_like(state["layers.1.weight"])  # a dense weight under a sparse mask
    fresh = tiny_mlp(1)
    sb.sparsify_(fresh, 0.3)
    with pytest.raises(RuntimeError, match=r"layers\.1.*off its mask"):
        fresh.load_state_dict(state)


def test_loading_a_consistent_sparse_state_works() -> None:
    model = tiny_mlp(0)
    sb.sparsify_(model, 0.3)
    fresh = tiny_mlp(1)
    sb.sparsify_(fresh, 0.3)
    fresh.load_state_dict(model.state_dict())
    for name, layer in sb.sparse_layers(fresh).items():
        assert torch.equal(layer.mask, sb.sparse_layers(model)[name].mask)


def test_ste_layers_keep_dense_master_weights_on_load() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    sp = sb.DynamicSparsifier(model, None, method="ste", total_steps=10)
    state = model.state_dict()
    fresh = torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 4))
    sb.DynamicSparsifier(fresh, None, method="ste", total_steps=10)
    fresh.load_state_dict(state)  # dense master weights are the point of STE: no refusal
    assert torch.equal(fresh[0].weight, sp.layers["0"].weight)
