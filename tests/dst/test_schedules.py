"""Schedules against the papers' formulas written out independently."""

from __future__ import annotations

import math

import pytest

from sparsebrain.dst.schedules import cosine, cubic, linear, sigmoid


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
