"""Schedules against the papers' formulas written out independently."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import tiny_batch, tiny_mlp

import sparsebrain as sb
from sparsebrain.dst.schedules import cosine, cubic, linear, sigmoid, warm_restart


def _chtss_paper(i: int, n: int, s0: float, s1: float) -> float:
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    m = n / 2
    k = 6 / m
    x = sig(k * (i - m))
    scale = 1 / (sig(k * (n - m)) - sig(-k * m))
    return s0 + (s1 - s0) * ((x - 0.5) * scale + 0.5)


@pytest.mark.parametrize("n", [1, 7, 30, 75])
def test_sigmoid_matches_the_paper_formula(n: int) -> None:
    for i in range(n + 1):
        assert sigmoid(i / n, 0.5, 0.99) == pytest.approx(_chtss_paper(i, n, 0.5, 0.99), abs=1e-12)
    assert sigmoid(0.0, 0.5, 0.99) == 0.5 and sigmoid(1.0, 0.5, 0.99) == 0.99
    values = [sigmoid(i / n, 0.5, 0.01) for i in range(n + 1)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # monotone decay of density


def test_cubic_cosine_linear() -> None:
    assert cubic(0.0, 1.0, 0.1) == 1.0 and cubic(1.0, 1.0, 0.1) == pytest.approx(0.1)
    assert cubic(0.5, 1.0, 0.0) == pytest.approx(0.125)
    assert cosine(0.0, 0.3, 0.0) == pytest.approx(0.3) and cosine(1.0, 0.3, 0.0) == pytest.approx(0.0)
    assert cosine(0.5, 0.3, 0.0) == pytest.approx(0.15)
    assert linear(0.25, 1.0, 3.0) == pytest.approx(1.5)


def test_the_warm_restart_ramps_the_rate_after_each_topology_update_of_the_sparsifier() -> None:
    """In a plain loop with LambdaLR: after each update the rate restarts at 1/steps of the base and climbs back,
    and no restart follows the last update's schedule (end_fraction)."""
    model = tiny_mlp(0)
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.3, total_steps=40, update_interval=10, seed=0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warm_restart(sp, 4, lambda k: 0.5))
    rates, updates = [], []
    for step in range(40):
        rates.append(opt.param_groups[0]["lr"])
        x, y = tiny_batch(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        if sp.step():
            updates.append(step + 1)
        sched.step()
        opt.zero_grad(set_to_none=True)
    assert updates == [10, 20, 30]  # end_fraction 0.75: none at step 40
    for u in updates:  # the rate of optimizer steps u + 1 .. u + 4 (rates[k] is that of step k + 1)
        assert rates[u : u + 5] == pytest.approx([0.5 * 1 / 4, 0.5 * 2 / 4, 0.5 * 3 / 4, 0.5, 0.5])
    assert rates[:10] == pytest.approx([0.5] * 10)
    with pytest.raises(ValueError, match="steps must be >= 0"):
        warm_restart(sp, -1)
