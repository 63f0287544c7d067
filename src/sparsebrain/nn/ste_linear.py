"""STELinear: N:M training with dense master weights and a straight-through gradient (STE, SR-STE)."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..topology.nm import best_nm_mask
from .layer import LAYERS, SparseLayer

__all__ = ["STELinear"]


class _StraightThrough(torch.autograd.Function):
    """``W * M`` forward; the gradient reaches every entry of ``W`` unchanged (the straight-through estimator)."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, mask: Tensor) -> Tensor:
        return weight * mask

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        return grad, None


class STELinear(SparseLayer):
    """A linear layer that computes with the best N:M pattern of its own dense weight, recomputed at every forward.

    The weight is a dense *master* weight: every entry is trained. Each forward takes the N:M mask maximising the
    kept ``|W|`` (:func:`~sparsebrain.topology.best_nm_mask`), computes ``y = x (W * M)^T + b`` and passes the
    gradient straight through to all of ``W`` (STE). With ``decay > 0`` the gradient also gets
    ``decay * (1 - M) * W``, so that pruned weights shrink (SR-STE, lambda = 2e-4 in the papers). ``mask`` holds the
    pattern of the latest forward; :meth:`topology` the pattern of the current weight.

    It is registered as the layer ``"ste"``, with ``layer_options`` ``n``, ``m``, ``layout`` (given by the method's
    pattern) and ``decay``; its topology follows the weights, so no engine rewires it.

    Example:
        >>> layer = STELinear.from_linear(nn.Linear(8, 4), torch.ones(4, 8, dtype=torch.bool), n=2, m=4)
        >>> _ = layer(torch.randn(3, 8))
        >>> int(layer.mask.sum()), bool((layer.weight != 0).all())  # half the links used, all weights kept
        (16, True)
    """

    rewirable = False
    dense_master_weights = True
    needs_pattern = True

    mask: Tensor
    n: int
    m: int
    layout: str
    decay: float

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        unknown = set(options) - {"n", "m", "layout", "decay"}
        if unknown:
            raise ValueError(f"layer 'ste' takes layer_options n, m, layout, decay; got {sorted(unknown)}")
        decay = options.get("decay", 0.0)
        if isinstance(decay, bool) or not isinstance(decay, int | float) or not (math.isfinite(decay) and decay >= 0):
            raise ValueError(f"layer_options['decay'] (SR-STE's lambda) must be a finite number >= 0, got {decay!r}")

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor, **options: Any) -> STELinear:
        """Wraps ``linear``'s own Parameters (an optimizer built on them keeps working); the weights are kept whole.

        ``mask`` is only the starting pattern: each forward recomputes it from the weight.
        """
        cls.check_options(options)
        layer: STELinear = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.n, layer.m = int(options.get("n", 2)), int(options.get("m", 4))
        layer.layout, layer.decay = str(options.get("layout", "transposable")), float(options.get("decay", 0.0))
        layer.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=True)
        layer.mask = layer.pattern_of_weight()
        layer._hook_gradient()
        return layer

    @classmethod
    def from_nm(
        cls, linear: nn.Linear, n: int = 2, m: int = 4, layout: str = "transposable", decay: float = 0.0
    ) -> STELinear:
        """:meth:`from_linear` over the best pattern of ``linear``'s current weight."""
        shape = (linear.out_features, linear.in_features)
        return cls.from_linear(linear, torch.ones(shape, dtype=torch.bool), n=n, m=m, layout=layout, decay=decay)

    @torch.no_grad()
    def pattern_of_weight(self) -> Tensor:
        """The N:M mask of the largest ``|W|`` (what the next forward will use)."""
        return best_nm_mask(self.weight.detach().abs(), self.n, self.m, self.layout)

    def _on_grad(self, grad: Tensor) -> Tensor:
        # The gradient is not masked: that is the point of STE. SR-STE adds its decay of the pruned weights.
        if self.decay:
            grad = grad + self.decay * (~self.mask) * self.weight.detach()
        return grad

    # ------------------------------------------------------------------------------------------------------------
    # the storage protocol

    def topology(self) -> Tensor:
        """The pattern of the current ``|W|``: ``mask`` may be stale after an optimizer step."""
        return self.pattern_of_weight()

    def dense_weight(self) -> Tensor:
        return self.weight.detach()

    def capture_dense_grad_(self, on: bool) -> None:
        if on:
            raise RuntimeError("STELinear trains every weight: its gradient is already dense")

    def to_linear(self) -> nn.Linear:
        with torch.no_grad():  # W * M is the model: the master weights off the pattern are dropped
            self.weight.mul_(self.pattern_of_weight())
        return self._linear_sharing_parameters()

    # ------------------------------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        self.mask = self.pattern_of_weight()
        return F.linear(x, _StraightThrough.apply(self.weight, self.mask), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"pattern={self.n}:{self.m} {self.layout}, decay={self.decay}"
        )


LAYERS.register("ste", STELinear)
