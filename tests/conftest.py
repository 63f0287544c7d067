"""Shared fixtures."""

from __future__ import annotations

import pytest
from helpers import make_optimizer, tiny_mlp

import sparsebrain as sb


@pytest.fixture
def make_setup():  # type: ignore[no-untyped-def]
    def make(method: str, density: float = 0.2, optim: str = "sgd", seed: int = 0, **kw):  # type: ignore[no-untyped-def]
        model = tiny_mlp(seed)
        opt = make_optimizer(model, optim)
        kw.setdefault("update_interval", 1)
        kw.setdefault("total_steps", 67)  # end_fraction 0.75 -> 50 topology updates
        sp = sb.DynamicSparsifier(model, opt, method=method, density=density, seed=seed, **kw)
        return model, opt, sp

    return make
