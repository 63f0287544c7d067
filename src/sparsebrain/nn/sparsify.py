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
    from ..topology.allocation import ALLOCATIONS
    from ..topology.initial import INITS
    from ..topology.swi import swi_

    density = check_density(density)
    if weight_init not in ("keep", "swi"):
        raise ValueError(f"weight_init must be one of 'keep', 'swi'; got {weight_init!r}")
    filter_fn = filter_fn or default_filter(model)
    chosen = [
        (name, m) for name, m in model.named_modules() if isinstance(m, nn.Linear) and name and filter_fn(name, m)
    ]
    if not chosen:
        linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        raise ValueError(
            f"filter_fn matched no nn.Linear layer of the model; its Linear layers are: {linears or 'none'}"
        )
    init_fn = INITS.get(init)
    densities = ALLOCATIONS.get(allocation)([(m.out_features, m.in_features) for _, m in chosen], density)
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
        linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
        linear.weight = layer.weight
        linear.bias = layer.bias
        if name:
            _set_submodule(model, name, linear)
        else:
            raise ValueError("squash_ needs a model that contains SparseLinear layers, not a SparseLinear itself")
    return model
