"""In-place verbs that turn a model's ``nn.Linear`` layers into ``SparseLinear`` and back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from .._validation import check_density
from .sparse_linear import SparseLinear

__all__ = ["FilterFn", "default_filter", "sparse_layers", "sparsify_", "squash_"]

FilterFn = Callable[[str, nn.Module], bool]


def default_filter(model: nn.Module) -> FilterFn:
    """The layers sparsebrain makes sparse when no ``filter_fn`` is given.

    A model may declare its own choice with a method ``sparse_filter(fqn, module) -> bool`` (sparsebrain's models
    do). Otherwise every ``nn.Linear`` is sparse except the last one registered, which is taken to be the output head
    (the papers keep the classifier / generator / lm_head dense).
    """
    declared = getattr(model, "sparse_filter", None)
    if callable(declared):
        return declared  # type: ignore[no-any-return]
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear | SparseLinear)]
    head = linears[-1] if len(linears) > 1 else None
    return lambda fqn, m: fqn != head


def _set_submodule(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def sparse_layers(model: nn.Module) -> dict[str, SparseLinear]:
    """All ``SparseLinear`` modules of ``model`` by fully qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseLinear)}


def _chosen_linears(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Linear]]:
    filter_fn = filter_fn or default_filter(model)
    chosen = [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name and filter_fn(name, m)
    ]
    if not chosen:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"filter_fn matched no nn.Linear layer of the model; its Linear layers are: {linears or 'none'}"
        )
    return chosen


def sparsify_(
    model: nn.Module,
    density: float,
    filter_fn: FilterFn | None = None,
    init: str | Callable[..., torch.Tensor] = "er",
    *,
    init_kwargs: Mapping[str, Any] | None = None,
    allocation: str = "uniform",
    weight_init: str = "keep",
    generator: torch.Generator | None = None,
) -> dict[str, SparseLinear]:
    """Swaps the chosen ``nn.Linear`` modules of ``model`` for ``SparseLinear`` in place.

    The existing Parameter objects are kept, so an optimizer built before the call still trains them.

    Args:
        model: any ``nn.Module``.
        density: overall fraction of links kept, in (0, 1]; spread over layers by ``allocation``.
        filter_fn: ``(fqn, module) -> bool`` choosing the layers; default :func:`default_filter`.
        init: initial topology name (see ``sparsebrain.topology.INITS``) or a callable ``(shape, density, **kw)``.
        init_kwargs: extra arguments for the topology, e.g. ``{"r": 0.3}`` for BRF.
        allocation: per-layer density allocation, ``"uniform"`` or ``"erk"``.
        weight_init: ``"keep"`` (the current weights, masked) or ``"swi"`` (sparse weight initialisation).
        generator: random generator for the topology and SWI.

    Returns:
        The new sparse layers by name.

    Example:
        >>> model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
        >>> layers = sparsify_(model, density=0.1)
        >>> list(layers), round(layers["0"].density, 2)
        (['0'], 0.1)
    """
    from ..topology.allocation import ALLOCATIONS, check_no_empty_layer
    from ..topology.initial import INITS
    from ..topology.swi import swi_

    density = check_density(density)
    if weight_init not in ("keep", "swi"):
        raise ValueError(f"weight_init must be one of 'keep', 'swi'; got {weight_init!r}")
    chosen = _chosen_linears(model, filter_fn)
    shapes = [(m.out_features, m.in_features) for _, m in chosen]
    check_no_empty_layer([name for name, _ in chosen], shapes, density, allocation)
    init_fn = INITS.get(init)
    densities = ALLOCATIONS.get(allocation)(shapes, density)
    out: dict[str, SparseLinear] = {}
    for (name, linear), d in zip(chosen, densities):
        shape = (linear.out_features, linear.in_features)
        mask = init_fn(shape, d, generator=generator, device=linear.weight.device, **dict(init_kwargs or {}))
        layer = SparseLinear.from_linear(linear, mask)
        if weight_init == "swi":
            swi_(layer.weight, layer.mask, generator=generator)
        _set_submodule(model, name, layer)
        out[name] = layer
    return out


def sparsify_nm_(
    model: nn.Module,
    pattern: str = "2:4",
    filter_fn: FilterFn | None = None,
    init: str = "nm_random",
    *,
    layout: str = "transposable",
    weight_init: str = "keep",
    ste_decay: float | None = None,
    skip_incompatible: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, SparseLinear]:
    """Swaps the chosen ``nn.Linear`` modules for layers whose masks are N:M patterns, in place.

    Args:
        model: any ``nn.Module``.
        pattern: ``"N:M"``, e.g. ``"2:4"`` or ``"1:4"``.
        filter_fn: ``(fqn, module) -> bool`` choosing the layers; default :func:`default_filter`.
        init: ``"nm_random"`` (a pattern drawn uniformly per block) or ``"nm_magnitude"`` (the best pattern of the
            current ``|W|``: a one-shot projection of a trained dense layer).
        layout: ``"transposable"`` (``W`` and ``W^T`` both N:M) or ``"rowwise"`` (groups along ``in_features``).
        weight_init: ``"keep"`` or ``"swi"`` (sparse weight initialisation at density N/M; not for STE layers).
        ste_decay: None for ``SparseLinear`` layers (weights only on the mask); a number for :class:`STELinear`
            layers with dense master weights (0: STE, > 0: SR-STE's lambda).
        skip_incompatible: leave layers whose shape cannot hold the pattern dense instead of raising.
        generator: random generator for ``nm_random`` and SWI.

    Returns:
        The new layers by name.

    Raises:
        ValueError: naming the layer and its shape, if a chosen layer's dimensions are not multiples of M
            (and ``skip_incompatible`` is False).

    Example:
        >>> model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layers = sparsify_nm_(model, "2:4")
        >>> layers["0"].density
        0.5
    """
    from ..topology.nm import LAYOUTS, best_nm_mask, nm_shape_error, parse_nm, random_nm_mask
    from ..topology.swi import swi_
    from .ste_linear import STELinear

    n, m = parse_nm(pattern)
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
    if init not in ("nm_random", "nm_magnitude"):
        raise ValueError(f"init must be one of 'nm_random', 'nm_magnitude'; got {init!r}")
    if weight_init not in ("keep", "swi"):
        raise ValueError(f"weight_init must be one of 'keep', 'swi'; got {weight_init!r}")
    if ste_decay is not None and weight_init != "keep":
        raise ValueError("STE layers keep dense master weights: use weight_init='keep'")
    chosen = []
    for name, linear in _chosen_linears(model, filter_fn):
        shape = (linear.out_features, linear.in_features)
        why = nm_shape_error(shape, m, layout)
        if why is None:
            chosen.append((name, linear))
        elif not skip_incompatible:
            raise ValueError(
                f"layer {name!r} with weight shape (out, in) = {shape} cannot hold a {layout} {n}:{m} pattern: {why}; "
                "leave it out with filter_fn, or pass skip_incompatible=True to keep such layers dense"
            )
    if not chosen:
        raise ValueError(f"no chosen layer can hold a {layout} {n}:{m} pattern")
    out: dict[str, SparseLinear] = {}
    for name, linear in chosen:
        layer: SparseLinear
        if ste_decay is not None:
            layer = STELinear.from_nm(linear, n, m, layout, ste_decay)
        else:
            if init == "nm_random":
                shape = tuple(linear.weight.shape)
                mask = random_nm_mask(shape, n, m, layout, generator=generator, device=linear.weight.device)
            else:
                mask = best_nm_mask(linear.weight.detach().abs(), n, m, layout)
            layer = SparseLinear.from_linear(linear, mask)
            if weight_init == "swi":
                swi_(layer.weight, layer.mask, generator=generator)
        _set_submodule(model, name, layer)
        out[name] = layer
    return out


def squash_(model: nn.Module) -> nn.Module:
    """Turns every ``SparseLinear`` of ``model`` back into an ``nn.Linear`` holding the same (zero off-mask) weights.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
        >>> _ = sparsify_(model, 0.5)
        >>> type(squash_(model)[0]).__name__
        'Linear'
    """
    for name, layer in list(sparse_layers(model).items()):
        layer._hook.remove()
        with torch.no_grad():  # W * M is the model (an STE layer keeps dense master weights)
            layer.weight.mul_(layer.effective_mask())
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        linear.weight = layer.weight
        linear.bias = layer.bias
        if name:
            _set_submodule(model, name, linear)
        else:
            raise ValueError("squash_ needs a model that contains SparseLinear layers, not a SparseLinear itself")
    return model
