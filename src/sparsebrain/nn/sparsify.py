"""In-place verbs that turn a model's ``nn.Linear`` layers into sparse layers (:class:`SparseLayer`) and back."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .._validation import check_density
from ..topology.links import Links
from .layer import LAYERS, SparseLayer
from .storage import check_storage, storage_layer

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["FilterFn", "chosen_linears", "default_filter", "sparse_layers", "sparsify_", "sparsify_nm_", "squash_"]

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
    linears = [name for name, m in model.named_modules() if isinstance(m, nn.Linear | SparseLayer)]
    head = linears[-1] if len(linears) > 1 else None
    return lambda fqn, m: fqn != head


def _set_submodule(model: nn.Module, fqn: str, new: nn.Module) -> None:
    parent_name, _, child = fqn.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def sparse_layers(model: nn.Module) -> dict[str, SparseLayer]:
    """All sparse layers (:class:`SparseLayer`) of ``model`` by fully qualified name, in registration order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, SparseLayer)}


def chosen_linears(model: nn.Module, filter_fn: FilterFn | None) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules that :func:`sparsify_` would make sparse, by name (raises if there are none)."""
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
    density: float | None = None,
    filter_fn: FilterFn | None = None,
    init: str | Callable[..., torch.Tensor] = "er",
    *,
    constraint: Constraint | None = None,
    layer: str | type[SparseLayer] = "masked",
    layer_options: Mapping[str, Any] | None = None,
    init_kwargs: Mapping[str, Any] | None = None,
    allocation: str = "uniform",
    weight_init: str = "keep",
    skip_incompatible: bool = False,
    generator: torch.Generator | None = None,
    storage: str = "masked",
    device: torch.device | str | None = None,
) -> dict[str, SparseLayer]:
    """Swaps the chosen ``nn.Linear`` modules of ``model`` for sparse layers in place.

    The existing Parameter objects are kept, so an optimizer built before the call still trains them. A model
    built on the meta device (``nn.Linear(n, n, device="meta")``) is materialised on ``device``: compressed layers
    then hold only their links, never a dense weight (``init="er"`` draws the links directly; other inits build
    the bool mask), with ``nn.Linear``'s default initialisation at the links.

    Args:
        model: any ``nn.Module``.
        density: overall fraction of links kept, in (0, 1]; spread over layers by ``allocation``. An N:M constraint
            fixes it at N/M (None, or that value).
        filter_fn: ``(fqn, module) -> bool`` choosing the layers; default :func:`default_filter`.
        init: initial topology name (see ``sparsebrain.topology.INITS``) or a callable ``(shape, density, **kw)``;
            it must build masks of ``constraint`` (``nm_random`` / ``nm_magnitude`` for N:M).
        constraint: the allowed masks (:mod:`sparsebrain.topology.constraints`); default unstructured.
        layer: the storage and forward of the new layers, a name of :data:`~sparsebrain.nn.LAYERS` (``"masked"``:
            :class:`SparseLinear`; ``"ste"``: :class:`STELinear`) or a :class:`SparseLayer` class.
        layer_options: keyword options of the layer (``{"decay": 2e-4}`` for SR-STE).
        init_kwargs: extra arguments for the topology, e.g. ``{"r": 0.3}`` for BRF.
        allocation: per-layer density allocation, ``"uniform"`` or ``"erk"`` (unstructured only).
        weight_init: ``"keep"`` (the current weights, masked) or ``"swi"`` (sparse weight initialisation).
        skip_incompatible: leave layers whose shape cannot hold ``constraint`` dense instead of raising.
        generator: random generator for the topology and SWI.
        storage: ``"masked"`` (the masked dense weight of ``layer``), ``"compressed"`` (only the links:
            :class:`~sparsebrain.nn.CompressedSparseLinear`, unstructured only), ``"semi_structured"``
            (:class:`~sparsebrain.nn.SemiStructuredSparseLinear`, transposable 2:4 / 1:4 on the sparse tensor
            cores) or ``"auto"`` (compressed below the device's break-even density,
            :data:`~sparsebrain.nn.storage.BREAK_EVEN_DENSITY`).
        device: where the sparse layers live; needed for a model on the meta device; default: the layers' own.

    Returns:
        The new sparse layers by name.

    Raises:
        ValueError: a layer the density leaves without links, or whose shape cannot hold the constraint (named with
            its shape), an init of another constraint, or a bad option.

    Example:
        >>> model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 5))
        >>> layers = sparsify_(model, density=0.1)
        >>> list(layers), round(layers["0"].density, 2)
        (['0'], 0.1)
    """
    from ..topology.allocation import ALLOCATIONS, check_no_empty_layer
    from ..topology.constraints import Unstructured
    from ..topology.initial import INITS

    constraint = constraint if constraint is not None else Unstructured()
    fixed = constraint.density
    if fixed is not None:
        if density is not None and abs(float(density) - fixed) > 1e-9:
            raise ValueError(f"{constraint} fixes the density at {fixed:g}, got density={density!r}")
        density = fixed
    if density is None:
        raise ValueError("density is required for unstructured sparsity (a number in (0, 1])")
    density = check_density(density)
    if weight_init not in ("keep", "swi"):
        raise ValueError(f"weight_init must be one of 'keep', 'swi'; got {weight_init!r}")
    check_storage(storage)
    layer_cls = LAYERS.get(layer)
    if layer_cls.dense_master_weights and weight_init != "keep":
        raise ValueError(f"{layer_cls.__name__} layers keep dense master weights: use weight_init='keep'")
    if layer_cls.needs_pattern and fixed is None:
        raise ValueError(f"{layer_cls.__name__} layers need an N:M constraint")
    options = {**(constraint.init_kwargs() if layer_cls.needs_pattern else {}), **dict(layer_options or {})}
    layer_cls.check_options(options)
    init_fn = INITS.get(init)
    if not constraint.accepts_init(init_fn):
        raise ValueError(f"init {init!r} does not build masks of {constraint}")
    chosen = []
    for name, linear in chosen_linears(model, filter_fn):
        why = constraint.shape_error((linear.out_features, linear.in_features))
        if why is None:
            chosen.append((name, linear))
        elif not skip_incompatible:
            shape = (linear.out_features, linear.in_features)
            raise ValueError(
                f"layer {name!r} with weight shape (out, in) = {shape} cannot hold {constraint}: "
                f"{why}; leave it out with filter_fn, or pass skip_incompatible=True to keep such layers dense"
            )
    if not chosen:
        raise ValueError(f"no chosen layer can hold {constraint}")
    shapes = [(m.out_features, m.in_features) for _, m in chosen]
    if fixed is None:
        check_no_empty_layer([name for name, _ in chosen], shapes, density, allocation)
        densities = ALLOCATIONS.get(allocation)(shapes, density)
    else:
        densities = [fixed] * len(chosen)
    out: dict[str, SparseLayer] = {}
    target = torch.device(device) if device is not None else None
    for (name, linear), shape, d in zip(chosen, shapes, densities):
        where = target if target is not None else linear.weight.device
        if where.type == "meta":
            raise ValueError(f"layer {name!r} is on the meta device: pass device= (where its links are to live)")
        kind = storage_layer(storage, layer_cls, constraint=constraint, density=d, device=where, name=name)
        kwargs = {**constraint.init_kwargs(), **dict(init_kwargs or {})}
        if getattr(init_fn, "needs_weight", False):
            if linear.weight.is_meta:
                raise ValueError(f"init {init!r} reads the weights, but layer {name!r} is on the meta device")
            kwargs["weight"] = linear.weight.detach()
        try:
            if linear.weight.is_meta:
                new = _materialised(linear, kind, init_fn, d, where, generator, options, kwargs)
            else:
                if linear.weight.device != where:
                    linear.to(where)
                mask = init_fn(shape, d, generator=generator, device=where, **kwargs)
                new = kind.from_linear(linear, mask, **options)
        except ValueError as e:  # e.g. a layer too large for int32 indices: say which
            raise ValueError(f"layer {name!r}: {e}") from None
        if weight_init == "swi":
            new.init_sparse_weights_(generator)
        _set_submodule(model, name, new)
        out[name] = new
    if target is not None:
        _materialise_rest(model, target)
    return out


def _materialise_rest(model: nn.Module, device: torch.device) -> None:
    """Moves what is still on the meta device (the dense head, norms, embeddings) to ``device``, initialised by each
    module's own ``reset_parameters``; a module on the meta device without one is refused by name."""
    for name, module in model.named_modules():
        if isinstance(module, SparseLayer):
            continue
        own = [*module.parameters(recurse=False), *module.buffers(recurse=False)]
        if not any(t.is_meta for t in own):
            continue
        if not callable(getattr(module, "reset_parameters", None)):
            raise ValueError(
                f"module {name or type(module).__name__!r} is on the meta device and has no reset_parameters() to "
                "initialise it on device=; materialise it yourself (to_empty, then your initialisation)"
            )
        module.to_empty(device=device, recurse=False)
        module.reset_parameters()


_DENSE_INIT_LIMIT = 1 << 26  # positions up to which a meta layer's initial topology is drawn as a mask (as masked)


def _materialised(
    linear: nn.Linear,
    kind: type[SparseLayer],
    init_fn: Callable[..., torch.Tensor],
    density: float,
    device: torch.device,
    generator: torch.Generator | None,
    options: Mapping[str, Any],
    init_kwargs: Mapping[str, Any],
) -> SparseLayer:
    """The sparse layer of a meta ``linear`` on ``device``, with ``nn.Linear``'s initialisation at its links."""
    from ..topology.initial import er

    shape = (linear.out_features, linear.in_features)

    def mask() -> torch.Tensor:
        return init_fn(shape, density, generator=generator, device=device, **init_kwargs)

    compressed = LAYERS.get("compressed")
    if kind is compressed:
        # er's links are drawn directly (the masked storage's draws); a large layer takes an init's links-only form
        # where it has one (brf); anything else builds its bool mask first
        links_only = getattr(init_fn, "links", None)
        if init_fn is er and not init_kwargs:
            links: dict[str, Any] = {"density": density}
        elif links_only is not None and shape[0] * shape[1] > _DENSE_INIT_LIMIT:
            flat = links_only(shape, density, generator=generator, device=device, **init_kwargs)
            links = {"mask": Links(flat, shape)}
        else:
            links = {"mask": mask()}
        return compressed(
            linear.in_features, linear.out_features, linear.bias is not None, device=device,
            dtype=linear.weight.dtype, generator=generator, **links, **options,
        )  # fmt: skip
    # a masked storage holds the dense weight anyway: materialise it, then mask it
    linear.to_empty(device=device)
    linear.reset_parameters()
    return kind.from_linear(linear, mask(), **options)


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
) -> dict[str, SparseLayer]:
    """:func:`sparsify_` under an N:M constraint: ``pattern`` ``"N:M"`` in ``layout``.

    ``ste_decay`` None gives :class:`SparseLinear` layers (weights only on the pattern); a number gives
    :class:`STELinear` layers with dense master weights (0: STE, > 0: SR-STE's lambda).

    Example:
        >>> model = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> layers = sparsify_nm_(model, "2:4")
        >>> layers["0"].density
        0.5
    """
    from ..topology.constraints import constraint_of

    return sparsify_(
        model,
        None,
        filter_fn,
        init,
        constraint=constraint_of(pattern, layout),
        layer="masked" if ste_decay is None else "ste",
        layer_options=None if ste_decay is None else {"decay": ste_decay},
        weight_init=weight_init,
        skip_incompatible=skip_incompatible,
        generator=generator,
    )


def squash_(model: nn.Module) -> nn.Module:
    """Turns every sparse layer of ``model`` back into an ``nn.Linear`` computing the same (zero off-topology) map.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 2))
        >>> _ = sparsify_(model, 0.5)
        >>> type(squash_(model)[0]).__name__
        'Linear'
    """
    for name, layer in list(sparse_layers(model).items()):
        if not name:
            raise ValueError("squash_ needs a model that contains sparse layers, not a sparse layer itself")
        _set_submodule(model, name, layer.to_linear())
    return model
