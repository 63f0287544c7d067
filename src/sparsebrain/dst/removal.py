"""Removal (pruning) rules: each returns a *keep score* per position; the engine keeps the top scores of active links.

Rules are registered functions ``fn(layer: LayerView, ctx: UpdateContext) -> Tensor (out, in)``; higher means keep.
A rule that needs the dense gradient sets ``needs_grad`` (see :func:`register_removal`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..registry import Registry
from ..topology.sampling import frechet_scores
from .context import LayerView, UpdateContext

__all__ = ["REMOVALS", "RemovalRule", "register_removal", "relative_importance"]

RemovalRule = Callable[[LayerView, UpdateContext], Tensor]
REMOVALS: Registry[RemovalRule] = Registry("removal rule")


def register_removal(name: str, *, needs_grad: bool = False) -> Callable[[RemovalRule], RemovalRule]:
    """Registers a removal rule under ``name``.

    Example:
        >>> @register_removal("abs_plus_one")
        ... def abs_plus_one(layer, ctx):
        ...     return layer.weight.abs() + 1
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


@register_removal("magnitude")
def magnitude(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """Keep the largest |w| (SET, RigL, CHT)."""
    return layer.weight.abs().float()


@register_removal("ri")
def ri(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """Keep the largest relative importance (CHTss density pruning)."""
    return relative_importance(layer.weight, layer.mask)


@register_removal("mest", needs_grad=True)
def mest(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """MEST: keep the largest ``|w| + lambda |grad|`` (``mest_lambda`` option, default 0.01)."""
    lam = float(ctx.options.get("mest_lambda", 0.01))
    grad = layer.grad if layer.grad is not None else torch.zeros_like(layer.weight)
    return layer.weight.abs().float() + lam * grad.abs().float()


@register_removal("soft_magnitude")
def soft_magnitude(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """CHTs soft removal: keep links sampled without replacement with probability proportional to |w|^T."""
    return frechet_scores(layer.weight.abs().float(), ctx.temperature, ctx.generator, where=layer.mask)


@register_removal("soft_ri")
def soft_ri(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """CHTs soft removal on relative importance: probability proportional to RI^T."""
    ri = relative_importance(layer.weight, layer.mask)
    return frechet_scores(ri, ctx.temperature, ctx.generator, where=layer.mask)
