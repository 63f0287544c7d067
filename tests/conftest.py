"""Shared fixtures."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_mlp

import sparsebrain as sb


@pytest.fixture
def make_setup():  # type: ignore[no-untyped-def]
    def make(method: str, density: float = 0.2, optim: str = "sgd", seed: int = 0, **kw):  # type: ignore[no-untyped-def]
        model = tiny_mlp(seed)
        if optim == "sgd":
            opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        else:
            opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        kw.setdefault("update_interval", 1)
        kw.setdefault("total_steps", 67)  # end_fraction 0.75 -> 50 topology updates
        sp = sb.DynamicSparsifier(model, opt, method=method, density=density, seed=seed, **kw)
        return model, opt, sp

    return make
