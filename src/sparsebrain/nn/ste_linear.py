"""STELinear: N:M training with dense master weights and a straight-through gradient (STE, SR-STE)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology.nm import best_nm_mask
from .sparse_linear import SparseLinear

__all__ = ["STELinear"]


class _StraightThrough(torch.autograd.Function):
    """``W * M`` forward; the gradient reaches every entry of ``W`` unchanged (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class STELinear(SparseLinear):
    """A linear layer that computes with the best N:M pattern of its own dense weight, recomputed at every forward.

    The weight is a dense *master* weight: every entry is trained. Each forward takes the N:M mask maximising the
    kept ``|W|`` (:func:`~sparsebrain.topology.best_nm_mask`), computes ``y = x (W * M)^T + b`` and passes the
    gradient straight through to all of ``W`` (STE). With ``decay > 0`` the gradient also gets
    ``decay * (1 - M) * W``, so that pruned weights shrink (SR-STE, lambda = 2e-4 in the papers). ``mask`` holds the
    pattern of the latest forward.

    Args of :meth:`from_linear`: the ``nn.Linear`` to wrap, ``n``, ``m``, ``layout`` ("transposable" or "rowwise")
    and ``decay``.

    Example:
        >>> layer = STELinear.from_nm(nn.Linear(8, 4), n=2, m=4, layout="transposable")
        >>> _ = layer(torch.randn(3, 8))
        >>> int(layer.mask.sum()), bool((layer.weight != 0).all())  # half the links used, all weights kept
        (16, True)
    """

    n: int
    m: int
    layout: str
    decay: float
    dense_master_weights = True

    @classmethod
    def from_nm(
        cls, linear: nn.Linear, n: int = 2, m: int = 4, layout: str = "transposable", decay: float = 0.0
    ) -> STELinear:
        """Wraps ``linear``'s own Parameters (an optimizer built on them keeps working); the weights are kept whole."""
        layer: STELinear = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.n, layer.m, layer.layout, layer.decay = n, m, layout, float(decay)
        layer.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=True)
        layer.mask = layer.pattern_of_weight()
        layer.capture_dense_grad = False
        layer.dense_grad = None
        layer._hook = layer.weight.register_hook(layer._mask_grad)
        return layer

    @torch.no_grad()
    def pattern_of_weight(self) -> Tensor:
        """The N:M mask of the largest ``|W|`` (what the next forward will use)."""
        return best_nm_mask(self.weight.detach().abs(), self.n, self.m, self.layout)

    def effective_mask(self) -> Tensor:
        """The pattern of the current ``|W|``: ``mask`` may be stale after an optimizer step."""
        return self.pattern_of_weight()

    def _mask_grad(self, grad: Tensor) -> Tensor:
        # The gradient is not masked: that is the point of STE. SR-STE adds its decay of the pruned weights.
        if self.decay:
            grad = grad + self.decay * (~self.mask) * self.weight.detach()
        return grad

    @torch.no_grad()
    def set_mask_(self, mask: Tensor) -> None:
        """Sets the mask without touching the master weight (the next forward recomputes it anyway)."""
        self._store_mask(mask)

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """No-op: the master weight stays dense."""

    def forward(self, x: Tensor) -> Tensor:
        self.mask = self.pattern_of_weight()
        return F.linear(x, _StraightThrough.apply(self.weight, self.mask), self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, pattern={self.n}:{self.m} {self.layout}, decay={self.decay}"
