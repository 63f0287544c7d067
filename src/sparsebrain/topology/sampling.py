"""Weighted sampling without replacement by Frechet (Gumbel) top-k, for soft removal and soft regrowth.

Sequentially drawing ``k`` of ``n`` elements without replacement with probability proportional to ``w_i^T`` has the
same law as keeping the ``k`` largest of ``w_i (-ln U_i)^(-1/T)``, ``U_i ~ U(0, 1)`` i.i.d. (Frechet keys; their logs
``T ln w_i + Gumbel`` give the Gumbel-top-k trick; CHTs24 paper, Appendix A). Unlike ``torch.multinomial`` this works
on any number of elements (no 2^24 limit) and costs one random draw and one ``topk``.

Selections rank by the keys' logarithms (``T ln w - ln(-ln U)``), which never overflow, and always return exactly ``k``
entries: when fewer than ``k`` entries have a positive weight, all of them are kept and the rest are drawn uniformly
among the zero-weight entries (the reference code adds 1e-5 to every candidate for the same purpose).
"""

from __future__ import annotations

import math
import operator

import torch
from torch import Tensor

__all__ = ["frechet_scores", "uniform_scaled_topk", "weighted_sample_without_replacement"]


def _check_nonnegative(t: Tensor, name: str) -> Tensor:
    """Returns ``t`` detached as a float32/float64 tensor, raising if it is not a tensor of values >= 0."""
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    t = t.detach()
    if t.dtype != torch.float64:
        t = t.float()
    if t.numel() and not bool((t >= 0).all()):  # also catches NaN
        raise ValueError(f"{name} must be >= 0 everywhere (no negative or NaN entries)")
    return t


def _check_temperature(temperature: float) -> float:
    T = float(temperature)
    if not (T > 0) or math.isinf(T):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    return T


def _check_k(k: int, numel: int) -> int:
    try:
        k_int = operator.index(k)  # accepts int-like (numpy ints), refuses floats and bools below
    except TypeError:
        raise ValueError(f"k must be an integer in [0, {numel}], got k={k!r}") from None
    if isinstance(k, bool) or not 0 <= k_int <= numel:
        raise ValueError(f"k must be an integer in [0, {numel}] (the number of elements), got k={k!r}")
    return k_int


def _uniform_open(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U(0, 1) of ``like``'s shape, dtype and device, clamped away from 0 and 1 so that ``ln(-ln U)`` is finite."""
    U = torch.rand(like.shape, generator=generator, dtype=like.dtype, device=like.device)
    info = torch.finfo(like.dtype)
    return U.clamp_(min=info.tiny, max=1.0 - info.eps / 2)  # 1 - eps/2 is the largest float below 1


def _frechet_log_keys(w: Tensor, T: float, U: Tensor) -> Tensor:
    """``T * ln(w (-ln U)^(-1/T)) = T ln w - ln(-ln U)``: same order as the Frechet scores, never overflows.

    Zero weights give ``-inf``; positive weights always give a finite key.
    """
    return w.log().mul_(T).sub_(U.log().neg_().log_())


def _topk_mask(key: Tensor, k: int, positive: Tensor, U: Tensor) -> Tensor:
    """Bool mask of the ``k`` largest ``key`` entries; if fewer than ``k`` are positive, all positive entries plus
    ``k - n_pos`` zero entries chosen uniformly at random (by ``U``)."""
    if int(positive.sum()) < k:
        # Ranking positives at +inf and zeros by U keeps every positive entry and a uniform draw among the zeros.
        key = torch.where(positive, torch.full_like(U, math.inf), U)
    mask = torch.zeros(key.numel(), dtype=torch.bool, device=key.device)
    if k > 0:
        mask[torch.topk(key.reshape(-1), k, sorted=False).indices] = True  # topk: exactly k indices, ties included
    return mask.view(key.shape)


def frechet_scores(weights: Tensor, temperature: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Frechet keys ``w * (-ln U)^(-1/T)``, ``U ~ U(0, 1)``: their top-k is a sample of ``k`` elements without
    replacement with probability proportional to ``w^T``.

    Larger ``T`` is closer to top-k by magnitude. Zero weights get score 0. Keys are computed in float32 (float64 for
    float64 weights); for ``T`` below about 0.2 the largest keys may overflow to ``inf`` (the selection functions of
    this module rank by log-keys and are unaffected).

    Args:
        weights: non-negative tensor of any shape and size, on any device.
        temperature: ``T > 0``.
        generator: source of ``U``, on ``weights``' device.

    Returns:
        Scores of ``weights``' shape.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> s = frechet_scores(torch.tensor([0.0, 1.0, 2.0, 3.0]), temperature=2.0, generator=g)
        >>> bool(s[0] == 0) and bool((s[1:] > 0).all())
        True
    """
    w = _check_nonnegative(weights, "weights")
    T = _check_temperature(temperature)
    U = _uniform_open(w, generator)
    return _frechet_log_keys(w, T, U).div_(T).exp_()


def weighted_sample_without_replacement(
    weights: Tensor, k: int, temperature: float = 1.0, generator: torch.Generator | None = None
) -> Tensor:
    """Samples ``k`` entries without replacement with probability proportional to ``weights^T``.

    The top-k of :func:`frechet_scores` (one uniform draw per element, any number of elements). If fewer than ``k``
    weights are positive, all of them are taken and the rest are drawn uniformly among the zero-weight entries.

    Args:
        weights: non-negative tensor of any shape, on any device.
        k: number of entries to select, ``0 <= k <= weights.numel()``.
        temperature: ``T > 0``; large ``T`` approaches top-k by weight.
        generator: source of randomness, on ``weights``' device.

    Returns:
        Bool tensor of ``weights``' shape with exactly ``k`` True entries.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> keep = weighted_sample_without_replacement(torch.tensor([0.1, 5.0, 0.0, 2.0]), 2, generator=g)
        >>> int(keep.sum()), bool(keep[2])
        (2, False)
    """
    w = _check_nonnegative(weights, "weights")
    k = _check_k(k, w.numel())
    T = _check_temperature(temperature)
    U = _uniform_open(w, generator)
    return _topk_mask(_frechet_log_keys(w, T, U), k, w > 0, U)


def uniform_scaled_topk(scores: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """CHTs24 soft regrowth: the top-k of ``scores * U``, ``U ~ U(0, 1)``.

    Entries with a positive score always rank above zero ones; if fewer than ``k`` are positive, the rest are drawn
    uniformly among the zero-score entries.

    Args:
        scores: non-negative tensor of any shape (e.g. CH scores of the non-links), on any device.
        k: number of entries to select, ``0 <= k <= scores.numel()``.
        generator: source of ``U``, on ``scores``' device.

    Returns:
        Bool tensor of ``scores``' shape with exactly ``k`` True entries.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> grow = uniform_scaled_topk(torch.tensor([[0.0, 3.0], [1.0, 0.0]]), 3, generator=g)
        >>> int(grow.sum()), bool(grow[0, 1] and grow[1, 0])
        (3, True)
    """
    s = _check_nonnegative(scores, "scores")
    k = _check_k(k, s.numel())
    U = _uniform_open(s, generator)
    key = s.log().add_(U.log())  # ln(s U): same order as s U without underflow; -inf for zero scores
    return _topk_mask(key, k, s > 0, U)
