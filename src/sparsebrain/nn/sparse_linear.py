"""SparseLinear: a drop-in ``nn.Linear`` whose weight lives on a boolean mask."""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SparseLinear"]


class SparseLinear(nn.Module):
    """A linear layer ``y = x W^T + b`` whose weight is exactly zero wherever ``mask`` is False.

    The mask is a persistent boolean buffer (it travels in ``model.state_dict()``). A gradient hook zeroes the
    gradient off-mask before it is accumulated, so plain SGD/Adam/AdamW (with or without weight decay) never move an
    off-mask weight, and optimizer state stays zero there. The layer owns its storage: today a masked dense weight;
    other backends (true sparse, 2:4 compressed) can replace ``forward`` without touching the training engine.

    On steps where a dynamic sparsifier needs it (RigL-style gradient regrowth), ``capture_dense_grad`` is set and
    the hook also accumulates the unmasked gradient into ``dense_grad``.

    Example:
        >>> layer = SparseLinear(4, 3, mask=torch.eye(3, 4, dtype=torch.bool))
        >>> int(layer.mask.sum()), bool((layer.weight[~layer.mask] == 0).all())
        (3, True)
    """

    mask: Tensor
    dense_master_weights: ClassVar[bool] = False  # True where weights off the mask are trained too (STE)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        mask: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.weight = linear.weight
        self.bias = linear.bias
        if mask is None:
            mask = torch.ones(out_features, in_features, dtype=torch.bool, device=self.weight.device)
        self.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=True)
        self.set_mask_(mask)
        self.capture_dense_grad = False
        self.dense_grad: Tensor | None = None
        self._hook = self.weight.register_hook(self._mask_grad)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor) -> SparseLinear:
        """Wraps ``linear``'s own Parameter objects (so optimizers built on them keep working) and applies ``mask``."""
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer.weight = linear.weight
        layer.bias = linear.bias
        layer.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=True)
        layer.set_mask_(mask)
        layer.capture_dense_grad = False
        layer.dense_grad = None
        layer._hook = layer.weight.register_hook(layer._mask_grad)
        return layer

    def _mask_grad(self, grad: Tensor) -> Tensor:
        # Runs before accumulation into .grad (and before DDP's all-reduce sees it): off-mask gradients never exist.
        if self.capture_dense_grad:
            g = grad.detach()
            self.dense_grad = g.clone() if self.dense_grad is None else self.dense_grad + g
        return grad * self.mask

    @torch.no_grad()
    def set_mask_(self, mask: Tensor) -> None:
        """Replaces the mask (bool, shape ``(out_features, in_features)``) and zeroes the weight off it."""
        self._store_mask(mask)
        self.weight.mul_(self.mask)

    def _store_mask(self, mask: Tensor) -> None:
        if mask.shape != (self.out_features, self.in_features):
            raise ValueError(
                f"mask must have shape (out_features, in_features) = {(self.out_features, self.in_features)}, "
                f"got {tuple(mask.shape)}"
            )
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool).clone()

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zeroes the weight off-mask (a no-op when training through the gradient hook, kept as a safety net)."""
        self.weight.mul_(self.mask)

    def effective_mask(self) -> Tensor:
        """The links this layer computes with for its current weights: ``mask`` (subclasses may derive it)."""
        return self.mask

    @property
    def density(self) -> float:
        """Fraction of links present."""
        return float(self.mask.sum()) / self.mask.numel()

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, density={self.density:.4f}"
        )

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # The mask buffer may be registered empty; accept the stored mask whatever our current one is.
        key = prefix + "mask"
        mask = state_dict.get(key, self.mask)
        if tuple(mask.shape) != (self.out_features, self.in_features):
            error_msgs.append(
                f"sparse layer {prefix[:-1]!r}: the loaded mask has shape {tuple(mask.shape)}, but the layer's weight "
                f"is (out, in) = {(self.out_features, self.in_features)}"
            )
            return
        if key in state_dict:
            self.mask = torch.empty_like(state_dict[key], dtype=torch.bool, device=self.weight.device)
        weight = state_dict.get(prefix + "weight")
        if not self.dense_master_weights and weight is not None and weight.shape == mask.shape:
            # weights off the mask would compute with links the mask says are absent: refuse, do not re-mask quietly
            off = int(torch.count_nonzero(weight.detach().to(mask.device)[~mask.bool()]))
            if off:
                error_msgs.append(
                    f"sparse layer {prefix[:-1]!r}: the loaded weight has {off} non-zero entries off its mask "
                    f"({'the loaded' if key in state_dict else 'the current'} one); load dense weights before "
                    "sparsifying (sparsify_ keeps them, masked), or zero them off the mask first"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )

    def __getstate__(self) -> dict:  # type: ignore[type-arg]
        # Hook handles are not picklable; deepcopy/pickle re-registers the hook in __setstate__.
        state = self.__dict__.copy()
        state.pop("_hook", None)
        return state

    def __setstate__(self, state: dict) -> None:  # type: ignore[type-arg]
        self.__dict__.update(state)
        self._hook = self.weight.register_hook(self._mask_grad)
