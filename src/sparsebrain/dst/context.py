"""What the engine hands to removal and regrowth rules."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..nn.layer import SparseLayer
from ..topology.links import Links

__all__ = ["LayerView", "UpdateContext"]


def _same(t: Tensor) -> Tensor:
    return t


@dataclass
class LayerView:
    """One sparse layer as a rule sees it.

    Removal rules score the active links and read the ``active_*`` properties (one entry per link, in the order of
    :attr:`positions`), which need no ``(out, in)`` tensor when the layer holds only its links. :attr:`weight`,
    :attr:`grad` and :attr:`mask` as ``(out, in)`` tensors are there for rules that need the whole layer.

    Attributes:
        name: fully qualified module name, e.g. ``"blocks.0.mlp.up"``.
        module: the layer itself.
        mask: the current links: a bool ``(out, in)`` mask, or :class:`~sparsebrain.topology.links.Links` for a
            layer that holds only its links; for regrowth rules, the links after removal.
        grad: the dense (unmasked) gradient of the last step, present only for rules that declare ``needs_grad``
            (masked storage; a layer holding its links gives :attr:`active_grad` and ``module.gradient_rows``).
        full_weight: the weights as the engine gathered them for this update (full even when the layer is
            sharded); None: read them from the layer.
        link_weight: the weights at the layer's links as the engine gathered them for this update (full even when
            the values are sharded); None: read them from the layer.
        link_grad: the gradient at the layer's links (layers holding their links), averaged over processes.
        reduce: averages a tensor computed from this process's data (a tile of captured gradient) over processes.
    """

    name: str
    module: SparseLayer
    mask: Tensor | Links
    grad: Tensor | None = None
    full_weight: Tensor | None = None
    link_weight: Tensor | None = None
    link_grad: Tensor | None = None
    reduce: Callable[[Tensor], Tensor] = _same

    @property
    def holds_links(self) -> bool:
        return isinstance(self.mask, Links)

    @property
    def positions(self) -> Tensor:
        """The flat positions ``row * in + col`` of the links, increasing (int64)."""
        if "_positions" not in self.__dict__:
            m = self.mask
            self.__dict__["_positions"] = m.flat if isinstance(m, Links) else m.reshape(-1).nonzero().squeeze(1)
        return self.__dict__["_positions"]

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.mask.shape)  # type: ignore[return-value]

    def _at_links(self, values: Tensor) -> Tensor:
        """``values`` given at the module's links, read at :attr:`positions` (a subset of them)."""
        flat = self.module.links().flat  # type: ignore[union-attr]
        if flat.numel() == self.positions.numel():
            return values
        return values[torch.searchsorted(flat, self.positions)]

    @property
    def active_weight(self) -> Tensor:
        """The weights at the links, ``(n_links,)``."""
        if self.holds_links:
            return self._at_links(self.link_weight if self.link_weight is not None else self.module.link_values())
        return self.weight.reshape(-1)[self.positions]

    @property
    def active_grad(self) -> Tensor | None:
        """The captured gradient at the links, ``(n_links,)``, or None."""
        if self.holds_links:
            return None if self.link_grad is None else self._at_links(self.link_grad)
        return None if self.grad is None else self.grad.reshape(-1)[self.positions]

    @property
    def rows(self) -> Tensor:
        return self.positions.div(self.shape[1], rounding_mode="floor")

    @property
    def cols(self) -> Tensor:
        return self.positions.remainder(self.shape[1])

    @property
    def weight(self) -> Tensor:
        """The layer's weights, detached ``(out, in)``, the same on every rank."""
        return self.full_weight if self.full_weight is not None else self.module.dense_weight()


@dataclass
class UpdateContext:
    """Schedule values and randomness of one topology update.

    Attributes:
        step: optimizer steps taken so far.
        update_index: 1 for the first topology update, 2 for the second, ...
        progress: fraction of the topology-update phase done, in [0, 1].
        zeta: fraction of active links removed at this update.
        temperature: soft-removal temperature T (larger is closer to top-k by magnitude).
        generator: the random generator on the layer's device; use it for every draw so runs are reproducible.
        options: the method's extra options (e.g. ``mest_lambda``).
    """

    step: int
    update_index: int
    progress: float
    zeta: float
    temperature: float
    generator: torch.Generator
    options: dict[str, Any] = field(default_factory=dict)

    def rand_like(self, t: Tensor) -> Tensor:
        """U(0, 1) numbers shaped like ``t`` drawn from this update's generator."""
        return torch.rand(t.shape, generator=self.generator, device=t.device, dtype=torch.float32)
