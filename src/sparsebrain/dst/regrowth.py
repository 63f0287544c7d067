"""Regrowth rules: each returns a non-negative score per position; the engine draws new links among non-links.

Rules are registered functions ``fn(layer: LayerView, ctx: UpdateContext) -> Tensor (out, in)``, scored on the
mask after removal. On a layer that holds only its links the engine asks the rule's ``tiles(layer, ctx)`` instead,
row tiles ``(lo, hi, scores[lo:hi])`` that it streams through (built-in rules have one; a rule without it is scored
on the whole layer at once), and a rule marked ``uniform`` (random regrowth) is not scored at all: the engine draws
positions. How the engine turns scores into links is the method's ``regrowth_sampling``: ``"topk"``
(deterministic), ``"multinomial"`` (without replacement, proportional to score; CHTs) or ``"uniform"`` (top-k of
score times U[0, 1]; CHTs24).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor

from ..registry import Registry
from ..topology.link_prediction import LINK_PREDICTORS, l3n_tiles, l3p_tiles
from ..topology.links import Links, ScoreTiles, tile_rows
from .context import LayerView, UpdateContext

_GRADIENT_TILE_ELEMS = 1 << 26  # entries of one tile of the dense gradient of a layer that holds only its links

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
    """SET: uniformly random new links (the engine draws positions: this scoring is for direct use)."""
    return ctx.rand_like(layer.mask)


random.uniform = True  # type: ignore[attr-defined]


@register_regrowth("gradient", needs_grad=True)
def gradient(layer: LayerView, ctx: UpdateContext) -> Tensor:
    """RigL / GraNet: largest dense-gradient magnitude at non-links."""
    if layer.grad is None:
        raise RuntimeError(f"gradient regrowth for layer {layer.name!r} found no captured gradient")
    return layer.grad.abs().float()


def _gradient_tiles(layer: LayerView, ctx: UpdateContext) -> ScoreTiles:
    """Row tiles of |dense gradient| from what the layer captured (its backward's dY and X), each averaged over
    processes: the whole ``(out, in)`` gradient never exists."""
    n_out = layer.shape[0]
    step = tile_rows(layer.shape, _GRADIENT_TILE_ELEMS)
    for lo in range(0, n_out, step):
        hi = min(lo + step, n_out)
        tile = layer.module.gradient_rows(lo, hi)
        if tile is None:
            raise RuntimeError(f"gradient regrowth for layer {layer.name!r} found no captured gradient")
        yield lo, hi, layer.reduce(tile).abs_()


gradient.tiles = _gradient_tiles  # type: ignore[attr-defined]


def _link_predictor_rule(name: str) -> RegrowthRule:
    predictor = LINK_PREDICTORS.get(name)

    def rule(layer: LayerView, ctx: UpdateContext) -> Tensor:
        return predictor(layer.mask)

    def tiles(layer: LayerView, ctx: UpdateContext) -> ScoreTiles:
        links = layer.mask
        assert isinstance(links, Links)
        tiles = l3n_tiles if name.endswith("_l3n") else l3p_tiles
        return tiles(links, ch2=name.startswith("ch2"))

    rule.__name__ = name
    rule.__doc__ = f"Cannistraci-Hebb regrowth: scores from the {name.upper().replace('_', '-')} link predictor."
    rule.tiles = tiles  # type: ignore[attr-defined]
    return rule


for _name in ("ch2_l3n", "ch3_l3n", "ch2_l3p", "ch3_l3p"):
    register_regrowth(_name)(_link_predictor_rule(_name))
