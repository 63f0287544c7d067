"""Regrowth rules: each returns a non-negative score per position; the engine draws new links among non-links.

Rules are registered functions ``fn(layer: LayerView, ctx: UpdateContext) -> Tensor (out, in)``, scored on the
mask after removal. How the engine turns scores into links is the method's ``regrowth_sampling``: ``"topk"``
(deterministic), ``"multinomial"`` (without replacement, proportional to score; CHTs) or ``"uniform"`` (top-k of
score times U[0, 1]; CHTs24).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..registry import Registry
from ..topology.link_prediction import LINK_PREDICTORS
from .context import LayerView, UpdateContext

__all__ = ["REGROWTHS", "RegrowthRule", "register_regrowth"]

RegrowthRule = Callable[[LayerView, UpdateContext], Tensor]
REGROWTHS: Registry[RegrowthRule] = Registry("regrowth rule")


def register_regrowth(name: str, *, needs_grad: bool = False) -> Callable[[RegrowthRule], RegrowthRule]:
    """Registers a regrowth rule (a scoring function) under ``name``.

    Example:
        >>> @register_regrowth("prefer_first_inputs")
        ... def prefer_first_inputs(layer, ctx):
        ...     return torch.linspace(1, 0, layer.mask.shape[1]).expand_as(layer.mask).clone()
    """

    def deco(fn: RegrowthRule) -> RegrowthRule:
        fn.needs_grad = needs_grad  # type: ignore[attr-defined]
        REGROWTHS.register(name, fn)
        return fn

    return deco


@register_regrowth("random")
def random(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """SET: uniformly random new links."""
    return ctx.rand_like(layer.mask)


@register_regrowth("gradient", needs_grad=True)
def gradient(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """RigL / GraNet: largest dense-gradient magnitude at non-links."""
    if layer.grad is None:
        raise RuntimeError(f"gradient regrowth for layer {layer.name!r} found no captured gradient")
    return layer.grad.abs().float()


def _link_predictor_rule(name: str) -> RegrowthRule:
    predictor = LINK_PREDICTORS.get(name)

    def rule(layer: LayerView, ctx: UpdateContext) -> Tensor:
        return predictor(layer.mask)

    rule.__name__ = name
    rule.__doc__ = f"Cannistraci-Hebb regrowth: scores from the {name.upper().replace('_', '-')} link predictor."
    return rule


for _name in ("ch2_l3n", "ch3_l3n", "ch2_l3p", "ch3_l3p"):
    register_regrowth(_name)(_link_predictor_rule(_name))
