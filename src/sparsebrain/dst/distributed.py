"""How the processes of a distributed run agree: on the engine's seed, its dense gradients and every new mask.

The engine calls a strategy at three points and never a collective itself, so that a new way of distributing a
model (FSDP2 sharding, for one) is a new strategy, not edits of the update loop.

Example:
    >>> strategy_for(None).agree_seed(7)  # one process: nothing to agree on
    7
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["DDP", "Local", "Strategy", "strategy_for"]


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


class Strategy:
    """What the engine needs from the other processes of a run (a single process needs nothing)."""

    def agree_seed(self, seed: int) -> int:
        """The seed every process uses: every rank must draw the same numbers."""
        return seed

    def mean_dense_grads_(self, grads: Mapping[str, Tensor]) -> None:
        """Replaces each rank's dense gradients, in place, by their mean over the ranks."""

    def agree_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """The masks every rank applies (ranks agree already when their inputs agree; this makes it certain)."""
        return dict(masks)


class Local(Strategy):
    """One process."""


class DDP(Strategy):
    """Data parallel (``DistributedDataParallel``, or any replicated model): rank 0's seed and masks, mean gradients.

    Example:
        >>> DDP().agree_seed(3)  # doctest: +SKIP  (needs an initialised process group)
        3
    """

    def agree_seed(self, seed: int) -> int:
        t = torch.tensor([seed], dtype=torch.int64)
        torch.distributed.broadcast(t, src=0)
        return int(t.item())

    def mean_dense_grads_(self, grads: Mapping[str, Tensor]) -> None:
        world = torch.distributed.get_world_size()
        for g in grads.values():
            torch.distributed.all_reduce(g)
            g.div_(world)

    def agree_masks(self, masks: Mapping[str, Tensor]) -> dict[str, Tensor]:
        out = {}
        for name, mask in masks.items():  # rank 0's topology is the topology
            buf = mask.to(torch.uint8)
            torch.distributed.broadcast(buf, src=0)
            out[name] = buf.bool()
        return out


def strategy_for(model: nn.Module | None) -> Strategy:
    """:class:`DDP` when a process group is initialised, else :class:`Local`."""
    return DDP() if _initialized() else Local()
