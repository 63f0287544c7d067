"""Poincare-ball helpers for RSGN: a numerically safe geodesic distance, projection into the ball, pairwise matrices.

The distance ``d(x, y) = arcosh(1 + 2|x-y|^2 / ((1-|x|^2)(1-|y|^2)))`` is computed through the identity
``arcosh(1 + 2u) = 2 asinh(sqrt(u))``: near the boundary ``1 + 2u`` is huge and ``arcosh`` of it loses nothing, but
for nearby points ``1 + 2u`` rounds to 1 and ``arcosh`` (whose slope is infinite at 1) loses everything; ``asinh`` is
accurate at both ends. The conformal factors ``1 - |x|^2`` are computed as ``(1 - |x|)(1 + |x|)`` and clamped.

Example:
    >>> x = torch.tensor([[0.0, 0.0], [0.5, 0.0]])
    >>> round(float(poincare_distance(x[0], x[1])), 4)  # 2 artanh(0.5)
    1.0986
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["euclidean_pairwise", "poincare_distance", "poincare_pairwise", "project_to_ball"]

MAX_NORM = 0.95  # positions and sparks are kept at norm <= 0.95, as the reference code does
EPS = 1e-6  # clamp of the conformal denominator


def project_to_ball(x: Tensor, max_norm: float = MAX_NORM) -> Tensor:
    """Rescales the rows of ``x`` (last dimension) whose norm exceeds ``max_norm`` back onto that sphere.

    Differentiable; points already inside are returned unchanged.
    """
    norm = x.norm(dim=-1, keepdim=True)  # (..., 1)
    return x * (max_norm / norm.clamp_min(max_norm))


def _conformal(x: Tensor, eps: float) -> Tensor:
    """``1 - |x|^2`` as ``(1 - |x|)(1 + |x|)``, clamped below by ``eps`` (points on or outside the sphere)."""
    n = x.norm(dim=-1)
    return ((1 - n) * (1 + n)).clamp_min(eps)


def poincare_distance(x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """Geodesic distance in the unit Poincare ball between ``x`` and ``y`` (broadcast over leading dimensions).

    Example:
        >>> poincare_distance(torch.zeros(3), torch.zeros(3)).item()
        0.0
    """
    diff = (x - y).norm(dim=-1)
    return 2 * torch.asinh(diff / torch.sqrt(_conformal(x, eps) * _conformal(y, eps)))


def poincare_pairwise(x: Tensor, y: Tensor, eps: float = EPS) -> Tensor:
    """All distances between the rows of ``x (..., N, d)`` and ``y (..., M, d)``: ``(..., N, M)``.

    Example:
        >>> poincare_pairwise(torch.zeros(2, 3), torch.zeros(4, 3)).shape
        torch.Size([2, 4])
    """
    diff = euclidean_pairwise(x, y)  # (..., N, M)
    denom = _conformal(x, eps)[..., :, None] * _conformal(y, eps)[..., None, :]  # (..., N, M)
    return 2 * torch.asinh(diff / denom.sqrt())


def euclidean_pairwise(x: Tensor, y: Tensor) -> Tensor:
    """All Euclidean distances ``(..., N, M)``, computed without the ``|x|^2 + |y|^2 - 2 x.y`` shortcut.

    The shortcut cancels catastrophically for nearby points (and its gradient at zero distance is NaN).
    """
    return torch.cdist(x, y, compute_mode="donot_use_mm_for_euclid_dist")
