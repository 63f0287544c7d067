"""What the engine hands to removal and regrowth rules."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..nn.layer import SparseLayer

__all__ = ["LayerView", "UpdateContext"]


@dataclass
class LayerView:
    """One sparse layer as a rule sees it.

    Attributes:
        name: fully qualified module name, e.g. ``"blocks.0.mlp.up"``.
        module: the layer itself.
        mask: the current mask, bool ``(out, in)``; for regrowth rules this is the mask after removal.
        grad: the dense (unmasked) gradient of the last step, present only for rules that declare ``needs_grad``.
        full_weight: the weights as the engine gathered them for this update (full even when the layer is
            sharded); None: read them from the layer.
    """

    name: str
    module: SparseLayer
    mask: Tensor
    grad: Tensor | None = None
    full_weight: Tensor | None = None

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
