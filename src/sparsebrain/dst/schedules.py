"""Schedules as pure functions of training progress ``p`` in [0, 1]: ``fn(p, start, end) -> value``.

``p`` is the fraction of the topology-update phase done (update index / number of updates, or step / T_end).
:func:`warm_restart` is the learning-rate multiplier that restarts the rate after each topology update.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..registry import Registry

__all__ = ["DENSITY_SCHEDULES", "TEMPERATURE_SCHEDULES", "ZETA_SCHEDULES", "Schedule", "warm_restart"]

Schedule = Callable[[float, float, float], float]

DENSITY_SCHEDULES: Registry[Schedule] = Registry("density schedule")
ZETA_SCHEDULES: Registry[Schedule] = Registry("zeta schedule")
TEMPERATURE_SCHEDULES: Registry[Schedule] = Registry("temperature schedule")


def constant(p: float, start: float, end: float) -> float:
    """Always ``end`` (the target). Example: ``constant(0.3, 0.5, 0.01) == 0.01``."""
    return end


def linear(p: float, start: float, end: float) -> float:
    """Straight line from ``start`` at p=0 to ``end`` at p=1. Example: ``linear(0.5, 1.0, 3.0) == 2.0``."""
    return start + (end - start) * p


def sigmoid(p: float, start: float, end: float) -> float:
    """CHTss sigmoid gradual decay, exactly ``start`` at p=0 and ``end`` at p=1.

    The paper's form with n prune iterations, m = n/2, k' = 6/m, x = sigmoid(k'(i - m)) depends on i/n only:
    k'(i - m) = 12 p - 6, so ``value = start + (end - start) ((x - 0.5) / (sigmoid(6) - sigmoid(-6)) + 0.5)``.
    The map is affine, so it reads the same in density or in sparsity.

    Example:
        >>> sigmoid(0.0, 0.5, 0.01), sigmoid(1.0, 0.5, 0.01)
        (0.5, 0.01)
    """
    sig = lambda z: 1.0 / (1.0 + math.exp(-z))  # noqa: E731
    x = sig(12.0 * p - 6.0)
    scale = 1.0 / (sig(6.0) - sig(-6.0))
    frac = (x - 0.5) * scale + 0.5
    if p <= 0.0:
        return start
    if p >= 1.0:
        return end
    return start + (end - start) * frac


def cubic(p: float, start: float, end: float) -> float:
    """GMP / GraNet cubic schedule ``end + (start - end) (1 - p)^3`` (Zhu & Gupta). ``cubic(1, 1, .1) == .1``."""
    p = min(max(p, 0.0), 1.0)
    return end + (start - end) * (1.0 - p) ** 3


def cosine(p: float, start: float, end: float) -> float:
    """Cosine decay from ``start`` to ``end``: ``end + (start - end)/2 (1 + cos(pi p))`` (RigL's zeta decay)."""
    p = min(max(p, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * p))


for _name, _fn in (("constant", constant), ("sigmoid", sigmoid), ("cubic", cubic), ("linear", linear)):
    DENSITY_SCHEDULES.register(_name, _fn)
ZETA_SCHEDULES.register("constant", lambda p, start, end: start)
ZETA_SCHEDULES.register("cosine", cosine)
TEMPERATURE_SCHEDULES.register("constant", lambda p, start, end: start)
TEMPERATURE_SCHEDULES.register("linear", linear)


# ---------------------------------------------------------------------------------------------------------------------
# the learning rate around topology updates


def warm_restart(sparsifier: Any, steps: int, base: Callable[[int], float] | None = None) -> Callable[[int], float]:
    """A learning-rate multiplier for ``torch.optim.lr_scheduler.LambdaLR``: ``base(k)`` (default 1) times a warm
    restart that ramps the rate from ``1 / steps`` back to 1 over the ``steps`` optimizer steps that follow each
    topology update of ``sparsifier`` (what the CHT papers' Transformer and LLaMA code does after each rewiring:
    new links start at 0 and the optimizer's moments were reset there).

    ``k`` is the scheduler's count of steps taken (the multiplier of optimizer step ``k + 1``); the updates are the
    sparsifier's own schedule (:meth:`~sparsebrain.dst.DynamicSparsifier.is_update_step`), so any training loop that
    calls ``sparsifier.step()`` and ``scheduler.step()`` once per optimizer step gets the restarts.

    Example:
        >>> # sched = torch.optim.lr_scheduler.LambdaLR(opt, warm_restart(sparsifier, 10, cosine_decay))
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    interval = sparsifier.config.update_interval

    def factor(k: int) -> float:
        f = 1.0 if base is None else base(k)
        if steps:
            last = (k // interval) * interval  # the latest topology update at or before step k
            if last >= 1 and sparsifier.is_update_step(last) and k - last < steps:
                f *= (k - last + 1) / steps
        return f

    return factor
