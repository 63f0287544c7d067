"""A state_dict round trip continues the same trajectory bit for bit on the CPU."""

from __future__ import annotations

import io

import pytest
import torch
from helpers import train_steps


def _snapshot(model) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("method", ["chtss", "chts", "rigl", "mest", "set", "granet", "cht"])
@pytest.mark.parametrize("optim", ["sgd", "adamw"])
def test_resume_is_bit_identical(method: str, optim: str, make_setup) -> None:  # type: ignore[no-untyped-def]
    model, opt, sp = make_setup(method, optim=optim, seed=1, update_interval=2)
    train_steps(model, opt, sp, 0, 40)
    expected = _snapshot(model)

    model2, opt2, sp2 = make_setup(method, optim=optim, seed=1, update_interval=2)
    train_steps(model2, opt2, sp2, 0, 17)  # odd: the next step is an update step, so capture state matters
    buf = io.BytesIO()
    torch.save({"model": model2.state_dict(), "opt": opt2.state_dict(), "sp": sp2.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    # a fresh process would build everything anew, with another seed: the checkpoint must override it all
    model3, opt3, sp3 = make_setup(method, optim=optim, seed=99, update_interval=2)
    model3.load_state_dict(ckpt["model"])
    opt3.load_state_dict(ckpt["opt"])
    sp3.load_state_dict(ckpt["sp"])
    train_steps(model3, opt3, sp3, 17, 40)
    got = _snapshot(model3)
    assert expected.keys() == got.keys()
    for k in expected:
        assert torch.equal(expected[k], got[k]), k
    assert sp3.stats() == sp.stats()


def test_state_dict_is_keyed_by_parameter_names(make_setup) -> None:  # type: ignore[no-untyped-def]
    _, _, sp = make_setup("chts")
    state = sp.state_dict()
    assert set(state["layers"]) == {"layers.0.weight", "layers.1.weight", "layers.2.weight"}
    assert "cpu" in state["generators"]


def test_load_state_dict_rejects_other_layers(make_setup) -> None:  # type: ignore[no-untyped-def]
    _, _, sp = make_setup("set")
    state = sp.state_dict()
    state["layers"] = {"foo.weight": {}}
    with pytest.raises(ValueError, match="foo.weight"):
        sp.load_state_dict(state)
