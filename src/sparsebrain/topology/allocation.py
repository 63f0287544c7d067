"""Per-layer density allocation: how a global density budget is shared among the sparse layers of a model.

Every allocation takes the layers' weight shapes ``(out, in)`` and a global density, and returns one density per layer
such that ``sum(d_l * numel_l) == density * sum(numel_l)`` (up to float rounding).

Example:
    >>> [round(d, 4) for d in erk([(1568, 784), (1568, 1568), (10, 1568)], 0.05)]  # the 10-output layer is made dense
    [0.0591, 0.0394, 1.0]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from .._validation import check_density
from ..registry import Registry
from .initial import _check_shape

__all__ = ["ALLOCATIONS", "allocate", "check_no_empty_layer", "erk", "link_counts", "uniform"]

AllocationFn = Callable[..., list[float]]

ALLOCATIONS: Registry[AllocationFn] = Registry("allocation")


def _check_shapes(shapes: Sequence[Sequence[int]]) -> list[tuple[int, int]]:
    """Validates a non-empty sequence of ``(out, in)`` shapes."""
    try:
        checked = [_check_shape(s) for s in shapes]
    except TypeError:
        raise ValueError(f"shapes must be a sequence of (out, in) pairs of positive ints, got {shapes!r}") from None
    if not checked:
        raise ValueError("shapes must hold at least one (out, in) shape, got an empty sequence")
    return checked


def uniform(shapes: Sequence[Sequence[int]], density: float) -> list[float]:
    """Every layer gets the global density.

    Example:
        >>> uniform([(4, 8), (2, 4)], 0.25)
        [0.25, 0.25]
    """
    checked = _check_shapes(shapes)
    density = check_density(density)
    return [density] * len(checked)


def erk(shapes: Sequence[Sequence[int]], density: float, *, power_scale: float = 1.0) -> list[float]:
    """Erdős-Rényi-Kernel allocation: ``d_l ~ ((n_in + n_out) / (n_in * n_out)) ** power_scale``, scaled to the budget.

    Small layers get a higher density, large ones a lower: a layer's expected degree, not its density, is what stays
    comparable across widths. Layers whose density would exceed 1 are made dense and the others rescaled, repeatedly,
    until none exceeds 1 (making a layer dense frees budget, so a layer over 1 stays over 1 and all of them can be
    capped in one pass).

    Args:
        shapes: the ``(out, in)`` weight shapes of the sparse layers.
        density: global density in (0, 1]: ``sum(d_l * numel_l) == density * sum(numel_l)``.
        power_scale: exponent of the ERK ratio, >= 0; 0 gives :func:`uniform`, 1 is ERK.

    Example:
        >>> erk([(10, 10), (100, 100)], 0.1)[0] > erk([(10, 10), (100, 100)], 0.1)[1]
        True
    """
    checked = _check_shapes(shapes)
    density = check_density(density)
    p = float(power_scale)
    if not (math.isfinite(p) and p >= 0.0):
        raise ValueError(f"power_scale must be a finite number >= 0, got {power_scale!r}")
    numel = [o * i for o, i in checked]
    raw = [((o + i) / (o * i)) ** p for o, i in checked]
    budget = density * sum(numel)
    dense = [False] * len(checked)
    eps = 0.0
    while True:
        divisor = sum(r * n for r, n, d in zip(raw, numel, dense) if not d)
        if divisor == 0.0:  # every layer dense (density 1)
            break
        eps = (budget - sum(n for n, d in zip(numel, dense) if d)) / divisor
        over = [i for i, d in enumerate(dense) if not d and eps * raw[i] > 1.0]
        if not over:
            break
        for i in over:
            dense[i] = True
    return [1.0 if d else min(1.0, eps * r) for r, d in zip(raw, dense)]


ALLOCATIONS.register("uniform", uniform)
ALLOCATIONS.register("erk", erk)


def allocate(
    name: str | AllocationFn, shapes: Sequence[Sequence[int]], density: float, **kwargs: object
) -> list[float]:
    """Per-layer densities from the allocation registered as ``name`` (or a callable).

    Example:
        >>> allocate("uniform", [(4, 8)], 0.5)
        [0.5]
    """
    return ALLOCATIONS.get(name)(shapes, density, **kwargs)


def link_counts(name: str | AllocationFn, shapes: Sequence[Sequence[int]], density: float) -> list[int]:
    """Links of each layer at global ``density``: ``round(d_l * out * in)``, as the initial topologies place them.

    Example:
        >>> link_counts("uniform", [(16, 8), (1, 8)], 0.01)
        [1, 0]
    """
    checked = _check_shapes(shapes)
    return [round(d * o * i) for d, (o, i) in zip(allocate(name, checked, density), checked)]


def _smallest_density_with_a_link(name: str | AllocationFn, shapes: Sequence[Sequence[int]], index: int) -> str:
    """The smallest global density, as short text, at which layer ``index`` gets at least one link."""
    works = lambda d: link_counts(name, shapes, d)[index] >= 1  # noqa: E731  (monotone in d)
    lo, hi = 0.0, 1.0
    for _ in range(80):  # bisection to float precision
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if works(mid) else (mid, hi)
    # 3 significant digits, rounded up so that the printed value works and 1% less does not
    exponent = math.floor(math.log10(hi)) - 2
    text = f"{math.ceil(hi / 10.0**exponent) * 10.0**exponent:.3g}"
    return text if works(float(text)) else repr(hi)


def check_no_empty_layer(
    names: Sequence[str], shapes: Sequence[Sequence[int]], density: float, allocation: str | AllocationFn = "uniform"
) -> None:
    """Raises ``ValueError`` if ``density`` would leave a layer with 0 links (it would train at chance, silently).

    The message names the layer that needs the highest density among the empty ones, its shape and the smallest
    density that gives it a link (at which every layer has one), and how many other layers are empty.

    Example:
        >>> check_no_empty_layer(["fc1", "fc2"], [(16, 8), (1, 8)], 0.01)
        Traceback (most recent call last):
        ...
        ValueError: density 0.01 gives sparse layer 'fc2' of shape (out, in) = (1, 8) 0 links (8 weights at layer \
density 0.01, allocation 'uniform'); the smallest density that gives it a link is 0.0626; raise the density or leave \
the layer dense with filter_fn
    """
    checked = _check_shapes(shapes)
    empty = [i for i, links in enumerate(link_counts(allocation, checked, density)) if links < 1]
    if not empty:
        return
    needed = {i: _smallest_density_with_a_link(allocation, checked, i) for i in empty}
    i = max(empty, key=lambda j: float(needed[j]))  # the binding layer: its density gives every layer a link
    (o, n_in), layer_density = checked[i], allocate(allocation, checked, density)[i]
    alloc = allocation if isinstance(allocation, str) else getattr(allocation, "__name__", repr(allocation))
    others = f" ({len(empty) - 1} other layers have 0 links too)" if len(empty) > 1 else ""
    raise ValueError(
        f"density {density:g} gives sparse layer {names[i]!r} of shape (out, in) = {(o, n_in)} 0 links "
        f"({o * n_in} weights at layer density {layer_density:.3g}, allocation {alloc!r}){others}; the smallest "
        f"density that gives it a link is {needed[i]}; raise the density or leave the layer dense with filter_fn"
    )
