"""How the processes of a distributed run agree: the engine's seed, the dense gradients, the weights rules see, and
every new mask; and, where the layers' own gradient hooks cannot work, how gradients are masked.

The engine calls a strategy and never a collective itself, so a new way of distributing a model is a new strategy,
not an edit of the update loop:

- :class:`Local`: one process.
- :class:`DDP`: a replicated model (``DistributedDataParallel``): rank 0's seed and masks, dense gradients averaged.
- :class:`FSDP2`: a model sharded by ``torch.distributed.fsdp.fully_shard``: each rank holds rows of every weight
  (a part of the values of a layer that holds only its links). The layers' gradient hooks never fire on sharded
  parameters, so the strategy masks each masked weight's reduce-scattered gradient in a post-accumulate-grad hook
  (before clipping and the optimizer), captures the dense shard there on steps before an update, and gathers full
  weights and gradients for the rules.

Example:
    >>> strategy_for(None).agree_seed(7)  # one process: nothing to agree on
    7
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..nn.layer import SparseLayer
from ..nn.sharding import full, is_sharded, local, local_view
from ..topology.links import Links

__all__ = ["DDP", "FSDP2", "Local", "Strategy", "strategy_for"]


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def _broadcast_masks(masks: Mapping[str, Tensor | Links]) -> dict[str, Tensor | Links]:
    out: dict[str, Tensor | Links] = {}
    for name, mask in masks.items():  # rank 0's topology is the topology
        if isinstance(mask, Links):  # its number of links first, then the positions
            n = torch.tensor([mask.count], dtype=torch.int64, device=mask.device)
            torch.distributed.broadcast(n, src=0)
            flat = mask.flat.clone() if int(n) == mask.count else mask.flat.new_empty(int(n))
            torch.distributed.broadcast(flat, src=0)
            out[name] = Links(flat, mask.shape)
            continue
        buf = mask.to(torch.uint8)  # gloo broadcasts no bool
        torch.distributed.broadcast(buf, src=0)
        out[name] = buf.bool()
    return out


def _holds_links(layer: SparseLayer) -> bool:
    return layer.links() is not None


def _broadcast_seed(seed: int) -> int:
    t = torch.tensor([seed], dtype=torch.int64)
    torch.distributed.broadcast(t, src=0)
    return int(t.item())


class Strategy:
    """What the engine needs from the other processes of a run; the defaults are those of a single process."""

    def agree_seed(self, seed: int) -> int:
        """The seed every process uses: every rank must draw the same numbers."""
        return seed

    def agree_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The masks every rank applies (ranks agree already when their inputs agree; this makes it certain)."""
        return dict(masks)

    def install(self, layers: Mapping[str, SparseLayer]) -> None:
        """Sets up gradient masking and capture where the layers cannot do it themselves (nothing by default)."""

    def capture_dense_grads_(self, layers: Mapping[str, SparseLayer], on: bool) -> None:
        """Starts (afresh) or stops collecting the dense gradients of the next step."""
        for layer in layers.values():
            layer.capture_dense_grad_(on)

    def dense_grad(self, name: str, layer: SparseLayer) -> Tensor | None:
        """The full dense ``(out, in)`` gradient of ``layer``, the same on every rank, or None if none was captured."""
        return layer.dense_grad()

    def mean_(self, t: Tensor) -> Tensor:
        """``t``, computed from this process's data, averaged over the processes in place (the same on every rank)."""
        return t

    def full(self, t: Tensor) -> Tensor:
        """A layer tensor (weights) as a full tensor, the same on every rank."""
        return t

    def check(self, layers: Mapping[str, SparseLayer], *, counts_change: bool = False) -> None:
        """Raises if this strategy cannot keep the layers exact (sharded weights without :class:`FSDP2`).

        ``counts_change``: the method moves the layers' numbers of links over training.
        """
        sharded = [name for name, layer in layers.items() if is_sharded(layer.weight_parameter())]
        if sharded:
            raise RuntimeError(
                f"the weights of sparse layers {', '.join(sharded)} are sharded DTensors (fully_shard), which the "
                f"{type(self).__name__} strategy cannot keep sparse: their own gradient hooks never fire, so they "
                "would train dense. Build the sparsifier before fully_shard, the optimizer after it, then call "
                "sparsifier.attach(optimizer) (or pass strategy=FSDP2())"
            )


class Local(Strategy):
    """One process."""


class _Collective(Strategy):
    """Several processes of one process group: rank 0's seed and masks, tensors averaged by an all-reduce."""

    def agree_seed(self, seed: int) -> int:
        return _broadcast_seed(seed)

    def agree_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return _broadcast_masks(masks)

    def mean_(self, t: Tensor) -> Tensor:
        torch.distributed.all_reduce(t)
        return t.div_(torch.distributed.get_world_size())


class DDP(_Collective):
    """Data parallel (``DistributedDataParallel``, or any replicated model): rank 0's seed and masks, mean gradients.

    The layers' own gradient hooks mask each rank's gradient before DDP's all-reduce, so off-mask gradients never
    exist; the dense gradients captured for gradient-based regrowth are averaged here.
    """

    def dense_grad(self, name: str, layer: SparseLayer) -> Tensor | None:
        g = layer.dense_grad()
        return None if g is None else self.mean_(g)


class FSDP2(_Collective):
    """A model sharded by FSDP2 (``fully_shard``): every sparse weight is a DTensor whose rows are spread over ranks.

    Order of construction: make the model sparse first (construct the sparsifier without an optimizer), then
    ``fully_shard`` it, build the optimizer on the sharded parameters, and ``sparsifier.attach(optimizer)``.

    - Gradients are masked by a post-accumulate-grad hook on each sharded weight (FSDP2 runs these after its
      reduce-scatter), on this rank's rows: exact zeros before clipping and the optimizer.
    - On steps before an update the hook first keeps the dense, reduced shard; :meth:`dense_grad` all-gathers it.
    - Rules see full weights (:meth:`full`, an all-gather per layer and update); masks stay full on every rank
      (a buffer FSDP2 does not shard) and are rank 0's.
    - A layer that holds only its links (``storage="compressed"``) has its values sharded in even chunks and its
      indices replicated: its gradient exists at the links only (nothing to mask), its backward keeps what gradient
      scores are made of on this rank's data, averaged over ranks tile by tile (:meth:`mean_`), and a rewiring
      rewrites each rank's chunk in place. FSDP2 fixes the number of values, so such layers need a method whose
      number of links stays the same (not gmp, granet or chtss, whose density moves: use masked storage there).
    """

    def __init__(self) -> None:
        self._handles: list[Any] = []
        self._capture = False
        self._shards: dict[str, Tensor | None] = {}

    def install(self, layers: Mapping[str, SparseLayer]) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for name, layer in layers.items():
            weight = layer.weight_parameter()
            if not is_sharded(weight):
                raise RuntimeError(f"FSDP2 strategy: the weight of sparse layer {name!r} is not sharded (fully_shard)")
            if _holds_links(layer):  # no gradient off the links to mask; the layer captures its own scores' parts
                continue
            self._shards[name] = None
            self._handles.append(weight.register_post_accumulate_grad_hook(self._hook(name, layer)))

    def _hook(self, name: str, layer: SparseLayer):  # type: ignore[no-untyped-def]
        def mask_grad(param: Tensor) -> None:
            g = local(param.grad)  # type: ignore[arg-type]
            keep = local_view(param, layer.topology())  # the current mask: nothing to refresh after a rewiring
            if self._capture:  # with micro-batches FSDP2 adds the new reduced shard to the masked one
                shard = self._shards[name]
                self._shards[name] = g.clone() if shard is None else g + shard * ~keep
            g.mul_(keep)

        return mask_grad

    def capture_dense_grads_(self, layers: Mapping[str, SparseLayer], on: bool) -> None:
        self._capture = on
        self._shards = {}
        for name, layer in layers.items():
            if _holds_links(layer):  # its backward runs on this rank's data: it captures for itself
                layer.capture_dense_grad_(on)
            else:
                self._shards[name] = None

    def dense_grad(self, name: str, layer: SparseLayer) -> Tensor | None:
        shard = self._shards.get(name)
        if shard is None:
            return None
        from torch.distributed.tensor import DTensor

        w = layer.weight
        return DTensor.from_local(shard, w.device_mesh, w.placements, shape=w.shape, stride=w.stride()).full_tensor()

    def full(self, t: Tensor) -> Tensor:
        return full(t)

    def check(self, layers: Mapping[str, SparseLayer], *, counts_change: bool = False) -> None:
        compressed = [name for name, layer in layers.items() if _holds_links(layer)]
        if compressed and counts_change:
            raise RuntimeError(
                f"FSDP2 strategy: sparse layers {', '.join(compressed)} hold only their links "
                "(storage='compressed'), whose sharded values FSDP2 keeps at a fixed number, but the method moves "
                "the number of links (a density schedule); use storage='masked' with FSDP2, or DDP with "
                "compressed layers"
            )
        plain = [name for name, layer in layers.items() if not is_sharded(layer.weight_parameter())]
        if plain:
            raise RuntimeError(
                f"FSDP2 strategy: the weights of sparse layers {', '.join(plain)} are not sharded: call fully_shard "
                "on the model before sparsifier.attach(optimizer)"
            )


def strategy_for(model: nn.Module | None) -> Strategy:
    """:class:`FSDP2` when the model's parameters are sharded DTensors, :class:`DDP` when a process group is
    initialised, else :class:`Local`."""
    if model is not None and any(is_sharded(p) for p in model.parameters()):
        return FSDP2()
    return DDP() if _initialized() else Local()
