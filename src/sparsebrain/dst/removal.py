"""Removal (pruning) rules: each returns a *keep score* per active link; the engine keeps the top scores.

Rules are registered functions ``fn(layer: LayerView, ctx: UpdateContext) -> Tensor``: a vector with one score per
link, in the order of ``layer.positions`` (read ``layer.active_weight`` / ``layer.active_grad``: no ``(out, in)``
tensor, so the rule also runs on layers that hold only their links), or an ``(out, in)`` tensor read at the links.
Higher means keep. A rule that needs the gradient sets ``needs_grad`` (see :func:`register_removal`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import Registry
from ..topology.sampling import frechet_scores_at
from .context import LayerView, UpdateContext

__all__ = ["REMOVALS", "RemovalRule", "register_removal", "relative_importance", "relative_importance_at"]

RemovalRule = Callable[[LayerView, UpdateContext], Tensor]
REMOVALS: Registry[RemovalRule] = Registry("removal rule")


def register_removal(name: str, *, needs_grad: bool = False) -> Callable[[RemovalRule], RemovalRule]:
    """Registers a removal rule under ``name``.

    Example:
        >>> @register_removal("abs_plus_one")
        ... def abs_plus_one(layer, ctx):
        ...     return layer.active_weight.abs() + 1
    """

    def deco(fn: RemovalRule) -> RemovalRule:
        fn.needs_grad = needs_grad  # type: ignore[attr-defined]
        REMOVALS.register(name, fn)
        return fn

    return deco


def relative_importance(weight: Tensor, mask: Tensor) -> Tensor:
    """RI_ij = |w_ij| / sum_j |w_ij| + |w_ij| / sum_i |w_ij| (row share plus column share), 0 off-mask."""
    a = weight.detach().abs().float() * mask
    row = a.sum(dim=1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)  # (out, 1)
    col = a.sum(dim=0, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)  # (1, in)
    return a / row + a / col


def relative_importance_at(weights: Tensor, rows: Tensor, cols: Tensor, shape: tuple[int, int] | torch.Size) -> Tensor:
    """:func:`relative_importance` at the links ``(rows, cols)`` of a ``shape`` layer, from their ``weights`` alone.

    Example:
        >>> relative_importance_at(torch.tensor([1.0, 3.0]), torch.tensor([0, 0]), torch.tensor([0, 1]), (1, 2))
        tensor([1.2500, 1.7500])
    """
    a = weights.detach().abs().float()
    tiny = torch.finfo(a.dtype).tiny
    row = torch.zeros(shape[0], dtype=a.dtype, device=a.device).index_add_(0, rows, a).clamp_min_(tiny)
    col = torch.zeros(shape[1], dtype=a.dtype, device=a.device).index_add_(0, cols, a).clamp_min_(tiny)
    return a / row[rows] + a / col[cols]


def _ri(layer: LayerView) -> Tensor:
    return relative_importance_at(layer.active_weight, layer.rows, layer.cols, layer.shape)


@register_removal("magnitude")
def magnitude(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """Keep the largest |w| (SET, RigL, CHT)."""
    return layer.active_weight.abs().float()


@register_removal("ri")
def ri(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """Keep the largest relative importance (CHTss density pruning)."""
    return _ri(layer)


@register_removal("mest", needs_grad=True)
def mest(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """MEST: keep the largest ``|w| + lambda |grad|`` (``mest_lambda`` option, default 0.01)."""
    lam = float(ctx.options.get("mest_lambda", 0.01))
    w = layer.active_weight.abs().float()
    grad = layer.active_grad
    return w if grad is None else w + lam * grad.abs().float()


@register_removal("soft_magnitude")
def soft_magnitude(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """CHTs soft removal: keep links sampled without replacement with probability proportional to |w|^T."""
    return frechet_scores_at(layer.active_weight.abs().float(), layer.positions, ctx.temperature, ctx.generator)


@register_removal("soft_ri")
def soft_ri(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """CHTs soft removal on relative importance: probability proportional to RI^T."""
    return frechet_scores_at(_ri(layer), layer.positions, ctx.temperature, ctx.generator)
