"""Active-neuron percolation (chain removal) and the active-neuron percentage (ANP), as pure functions on masks.

A mask is a 2-D bool tensor shaped like ``nn.Linear.weight``: ``(out, in)``. Hidden neurons shared by several sparse
layers form a :class:`Junction`: *producers* are the layers whose output rows are those neurons, *consumers* the
layers whose input columns are those neurons. A junction neuron is alive iff it has a link in its row of every
producer and in its column of every consumer. A dead neuron cannot carry signal (nothing comes in, or nothing goes
out), and Cannistraci-Hebb regrowth never revives a node without links, so :func:`percolate` removes all of its links;
that can kill neurons in neighbouring junctions, so it repeats to a fixed point.

Typical junctions::

    Junction(producers=("l1",), consumers=("l2",))            # MLP: l1 (h, in) then l2 (out, h)
    Junction(producers=("q", "k"))                            # attention: q and k paired per head dimension
    Junction(producers=("v",), consumers=("o",))              # attention values -> output projection
    Junction(producers=("gate", "up"), consumers=("down",))   # gated MLP: gate and up paired, then down
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from .._validation import check_positive_int
from .links import Links

__all__ = [
    "Junction",
    "active_neuron_fraction",
    "alive_neurons",
    "attention_junctions",
    "junction_active_fraction",
    "layer_active_fraction",
    "percolate",
]


@dataclass(frozen=True)
class Junction:
    """A set of ``n`` hidden neurons shared by several sparse layers.

    Args:
        producers: Layers whose output rows are the junction's neurons (masks shaped ``(n, *)``).
        consumers: Layers whose input columns are the junction's neurons (masks shaped ``(*, n)``).

    Example:
        >>> Junction(producers=("fc1",), consumers=("fc2",))
        Junction(producers=('fc1',), consumers=('fc2',))
    """

    producers: tuple[str, ...]
    consumers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Accept lists (and a lone string, a common slip) but store tuples so the junction stays hashable.
        for field in ("producers", "consumers"):
            value = getattr(self, field)
            names = (value,) if isinstance(value, str) else tuple(value)
            for name in names:
                if not isinstance(name, str) or not name:
                    raise TypeError(f"Junction {field} must be non-empty layer names (str), got {name!r}")
            object.__setattr__(self, field, names)
        if not self.producers and not self.consumers:
            raise ValueError("a Junction needs at least one producer or consumer layer")
        names = self.producers + self.consumers
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(
                f"Junction layer names must be unique across producers and consumers; repeated: {repeated} "
                f"(producers={self.producers}, consumers={self.consumers})"
            )

    @property
    def layers(self) -> tuple[str, ...]:
        """All layer names, producers first."""
        return self.producers + self.consumers


def attention_junctions(attn: str, out: str = "o") -> list[Junction]:
    """The two junctions of an attention module ``attn`` with projections ``q, k, v`` and output ``out``.

    - ``(q, k)``: row ``d`` of ``q`` multiplies only row ``d`` of ``k`` in the scores, so the two rows of a head
      dimension live or die together (also in cross-attention, where ``k`` reads another stream).
    - ``(v) -> (out)``: attention mixes positions, not dimensions, so value dimension ``d`` reaches only column ``d``
      of ``out``.

    Example:
        >>> attention_junctions("blocks.0.attn", out="proj")[1]
        Junction(producers=('blocks.0.attn.v',), consumers=('blocks.0.attn.proj',))
    """
    return [
        Junction(producers=(f"{attn}.q", f"{attn}.k")),
        Junction(producers=(f"{attn}.v",), consumers=(f"{attn}.{out}",)),
    ]


def _mask(masks: Mapping[str, Tensor], name: str, junction: Junction | None = None) -> Tensor:
    """Looks up ``masks[name]`` and checks it is a 2-D bool tensor, with an error that says where it came from."""
    if name not in masks:
        where = f"{junction} names layer" if junction is not None else "layer"
        raise KeyError(f"{where} {name!r}, which is not in masks; known layers: {sorted(masks)}")
    mask = masks[name]
    if isinstance(mask, Links):  # a layer's links alone: the same graph
        return mask
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool or mask.dim() != 2:
        got = f"{mask.dtype} tensor of shape {tuple(mask.shape)}" if isinstance(mask, Tensor) else type(mask).__name__
        raise TypeError(f"mask {name!r} must be a 2-D bool tensor shaped (out, in), got {got}")
    return mask


def _has_link(mask: Tensor, dim: int) -> Tensor:
    """``mask.any(dim)``, computed as a uint8 max: on CPU ``any`` over bool is some 20x slower at 4096 x 11008."""
    if isinstance(mask, Links):
        return mask.has_link(dim)
    if mask.shape[dim] == 0:
        return mask.new_zeros(mask.shape[1 - dim])  # amax refuses empty reductions; nothing there means no link
    return mask.view(torch.uint8).amax(dim=dim).bool()


def _junction_size(masks: Mapping[str, Tensor], junction: Junction) -> int:
    """The junction's neuron count ``n``; raises if its layers disagree."""
    sides = [(name, "rows", _mask(masks, name, junction)) for name in junction.producers]
    sides += [(name, "columns", _mask(masks, name, junction)) for name in junction.consumers]
    sizes = {name: (m.shape[0] if side == "rows" else m.shape[1]) for name, side, m in sides}
    if len(set(sizes.values())) > 1:
        detail = ", ".join(f"{name} {tuple(m.shape)} ({side}: {sizes[name]})" for name, side, m in sides)
        raise ValueError(
            f"layers of {junction} disagree on the number of shared neurons: {detail}; producers share their "
            f"output rows (dim 0) and consumers their input columns (dim 1)"
        )
    return next(iter(sizes.values()))


def alive_neurons(masks: Mapping[str, Tensor], junction: Junction) -> Tensor:
    """Which of the junction's neurons are alive: a link in their row of every producer and column of every consumer.

    Args:
        masks: Layer name -> bool mask ``(out, in)``; must contain every layer of ``junction``.
        junction: The shared neurons to check.

    Returns:
        A bool tensor ``(n,)`` on the masks' device.

    Raises:
        ValueError: If the junction's layers disagree on ``n``.

    Example:
        >>> l1 = torch.tensor([[True, False], [False, False], [True, True]])  # (3, 2): neuron 1 has no input
        >>> l2 = torch.tensor([[True, True, False]])  # (1, 3): neuron 2 has no output
        >>> alive_neurons({"l1": l1, "l2": l2}, Junction(("l1",), ("l2",)))
        tensor([ True, False, False])
    """
    _junction_size(masks, junction)
    alive: Tensor | None = None
    for name in junction.producers:
        has_input = _has_link(masks[name], dim=1)  # (n,)
        alive = has_input if alive is None else alive & has_input
    for name in junction.consumers:
        has_output = _has_link(masks[name], dim=0)  # (n,)
        alive = has_output if alive is None else alive & has_output
    assert alive is not None  # Junction validation guarantees at least one layer
    return alive


def percolate(
    masks: Mapping[str, Tensor], junctions: Sequence[Junction], max_iter: int = 1000
) -> tuple[dict[str, Tensor], dict[str, int]]:
    """Removes every link of every dead junction neuron, repeatedly, until no dead neuron has a link left.

    A dead neuron (see :func:`alive_neurons`) loses its row in every producer and its column in every consumer. That
    can kill neurons of other junctions (a layer consumes one junction and produces the next), so the junctions are
    swept backward then forward, alternately, until a sweep changes nothing. The fixed point does not depend on the
    sweep order: it is the largest sub-mask in which every junction neuron is either alive or has no links at all.

    Args:
        masks: Layer name -> bool mask ``(out, in)``. Not modified.
        junctions: The shared-neuron sets, best listed from input to output (any order gives the same result, only
            more slowly); a layer may appear in several (e.g. consumer of one, producer of the next).
        max_iter: Most sweeps (each visits every junction once, the last one confirming that nothing changes) before
            giving up with ``RuntimeError``; an MLP chain listed input to output needs at most 3.

    Returns:
        ``(new_masks, cut)``: new masks (layers in a junction are fresh tensors; layers in no junction are the input
        tensors, untouched) and, per layer, how many links were removed (0 for layers in no junction).

    Example:
        >>> l1 = torch.tensor([[True, False], [False, False], [True, True]])  # (3, 2): hidden 1 has no input
        >>> l2 = torch.tensor([[True, True, False]])  # (1, 3): hidden 2 has no output
        >>> new, cut = percolate({"l1": l1, "l2": l2}, [Junction(("l1",), ("l2",))])
        >>> new["l1"].int().tolist(), new["l2"].int().tolist(), cut
        ([[1, 0], [0, 0], [0, 0]], [[1, 0, 0]], {'l1': 2, 'l2': 1})
    """
    check_positive_int(max_iter, "max_iter")
    junctions = list(junctions)
    for junction in junctions:
        if not isinstance(junction, Junction):
            raise TypeError(f"junctions must be Junction objects, got {junction!r}")
        _junction_size(masks, junction)  # fail early, before any work, on a shape mismatch

    touched = list(dict.fromkeys(name for junction in junctions for name in junction.layers))
    new = dict(masks)
    for name in touched:  # work in place on copies: the caller's masks stay as they were (Links never change)
        new[name] = masks[name] if isinstance(masks[name], Links) else masks[name].clone()
    before = {name: _count(new[name]) for name in touched}

    # Backward first: a neuron without outputs cuts its inputs, which can leave the previous junction's neurons without
    # outputs, so the cascade runs toward the input in one pass; the forward sweep does the same for neurons without
    # inputs. Forward cuts never take the last output of a live neuron, so a chain settles in 2 sweeps + 1 to confirm.
    orders = (junctions[::-1], junctions)
    for sweep in range(max_iter):
        changed = False
        for junction in orders[sweep % 2]:
            changed |= _cut_dead(new, junction)
        if not changed:
            break
    else:
        raise RuntimeError(f"percolate did not reach a fixed point within max_iter={max_iter} sweeps")

    cut = {name: 0 for name in masks}
    cut.update({name: before[name] - _count(new[name]) for name in touched})
    return new, cut


def _cut_dead(masks: dict[str, Tensor], junction: Junction) -> bool:
    """Removes, in place, the links of the junction's dead neurons; returns whether any link was removed."""
    row_any = {name: _has_link(masks[name], dim=1) for name in junction.producers}  # each (n,)
    col_any = {name: _has_link(masks[name], dim=0) for name in junction.consumers}  # each (n,)
    alive: Tensor | None = None
    for has_link in (*row_any.values(), *col_any.values()):
        alive = has_link if alive is None else alive & has_link
    assert alive is not None
    changed = False
    # Only rewrite a layer whose dead neurons still hold links: the full-matrix AND is the expensive part.
    for name, has_link in row_any.items():
        if bool((has_link & ~alive).any()):
            _restrict_(masks, name, alive, dim=1)  # (n, in)
            changed = True
    for name, has_link in col_any.items():
        if bool((has_link & ~alive).any()):
            _restrict_(masks, name, alive, dim=0)  # (out, n)
            changed = True
    return changed


def _count(mask: Tensor | Links) -> int:
    return mask.count if isinstance(mask, Links) else int(mask.count_nonzero())


def _restrict_(masks: dict[str, Tensor | Links], name: str, alive: Tensor, dim: int) -> None:
    """Keeps only the links of ``masks[name]`` whose row (``dim=1``) or column (``dim=0``) is ``alive``."""
    mask = masks[name]
    if isinstance(mask, Links):
        masks[name] = mask.restrict(alive, dim)
    else:
        mask.logical_and_(alive[:, None] if dim == 1 else alive[None, :])


def layer_active_fraction(mask: Tensor) -> tuple[float, float]:
    """Fractions of a layer's input columns and output rows that have at least one link.

    Args:
        mask: Bool mask ``(out, in)``.

    Returns:
        ``(active inputs / in, active outputs / out)``.

    Example:
        >>> layer_active_fraction(torch.tensor([[True, False, False], [False, False, False]]))
        (0.3333333333333333, 0.5)
    """
    mask = _mask({"mask": mask}, "mask")
    n_out, n_in = mask.shape
    return int(_has_link(mask, 0).count_nonzero()) / n_in, int(_has_link(mask, 1).count_nonzero()) / n_out


def junction_active_fraction(masks: Mapping[str, Tensor], junction: Junction) -> float:
    """Fraction of a junction's neurons that are alive (see :func:`alive_neurons`).

    Example:
        >>> q = torch.tensor([[True], [True], [False]])  # (3, 1): dimension 2 dead in q
        >>> k = torch.tensor([[True], [False], [True]])  # (3, 1): dimension 1 dead in k
        >>> junction_active_fraction({"q": q, "k": k}, Junction(("q", "k")))
        0.3333333333333333
    """
    alive = alive_neurons(masks, junction)
    return int(alive.count_nonzero()) / alive.numel()


def active_neuron_fraction(masks: Mapping[str, Tensor], junctions: Sequence[Junction] = ()) -> float:
    """The whole-network active-neuron percentage (ANP) as a fraction in [0, 1].

    Definition: the network is a graph whose nodes are the input neurons (columns) and output neurons (rows) of every
    sparse layer in ``masks``. Neurons shared through a junction are one node each, counted once however many layers
    share them, and active iff alive per :func:`alive_neurons` (a link in every producer and every consumer). A layer
    side that belongs to no junction (the first layer's inputs, the last sparse layer's outputs) contributes its own
    nodes, each active iff it has degree > 0 in that layer. ANP = active nodes / all nodes.

    Junctions that share a layer side (e.g. ``(gate, up)`` and ``(gate, down)``) describe the same neurons, so they are
    merged into one node set whose neurons must be alive in all of their layers.

    Args:
        masks: Layer name -> bool mask ``(out, in)``, one entry per sparse layer.
        junctions: The shared-neuron sets; their layers must all be in ``masks``.

    Returns:
        Active nodes / all nodes.

    Example:
        >>> l1 = torch.tensor([[True, False], [False, False], [True, True]])  # (3, 2)
        >>> l2 = torch.tensor([[True, True, False]])  # (1, 3)
        >>> active_neuron_fraction({"l1": l1, "l2": l2}, [Junction(("l1",), ("l2",))])  # (2 + 1 + 1) / (2 + 3 + 1)
        0.6666666666666666
    """
    if not masks:
        raise ValueError("active_neuron_fraction needs at least one mask")
    groups = _merge_junctions(junctions)
    active = total = 0
    claimed: set[tuple[str, int]] = set()  # (layer, dim): dim 0 = output rows, dim 1 = input columns
    for group in groups:
        alive = alive_neurons(masks, group)
        active += int(alive.count_nonzero())
        total += alive.numel()
        claimed |= {(name, 0) for name in group.producers} | {(name, 1) for name in group.consumers}
    for name in masks:
        mask = _mask(masks, name)
        for dim in (0, 1):
            if (name, dim) not in claimed:
                # dim 0 are the rows (outputs): a row is active iff it has a link, i.e. any over the columns.
                active += int(_has_link(mask, 1 - dim).count_nonzero())
                total += mask.shape[dim]
    return active / total


def _merge_junctions(junctions: Sequence[Junction]) -> list[Junction]:
    """Merges junctions that share a layer side (union-find), so each node set is counted once."""
    junctions = list(junctions)
    parent = list(range(len(junctions)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[tuple[str, int], int] = {}
    for i, junction in enumerate(junctions):
        sides = [(name, 0) for name in junction.producers] + [(name, 1) for name in junction.consumers]
        for side in sides:
            if side in owner:
                parent[find(i)] = find(owner[side])
            else:
                owner[side] = i
    merged: dict[int, tuple[list[str], list[str]]] = {}
    for i, junction in enumerate(junctions):
        producers, consumers = merged.setdefault(find(i), ([], []))
        producers.extend(name for name in junction.producers if name not in producers)
        consumers.extend(name for name in junction.consumers if name not in consumers)
    return [Junction(tuple(producers), tuple(consumers)) for producers, consumers in merged.values()]
