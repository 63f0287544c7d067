"""SparseLinear: masked dense storage, a drop-in ``nn.Linear`` whose weight lives on a boolean mask."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .layer import LAYERS, SparseLayer
from .sharding import local, local_view

__all__ = ["SparseLinear"]

# Per-device autocast queries (torch >= 2.4); without them the layer keeps the unfused hook, which is always right.
_DEVICE_AUTOCAST = hasattr(torch, "get_autocast_dtype")


class _MaskedCast(torch.autograd.Function):
    """Autocast's weight cast with the gradient mask fused into its backward: ``W.to(dtype)`` forward, and the low
    precision gradient masked straight into the weight's dtype (one kernel) instead of cast, then masked.

    Fewer bytes move: under bf16 autocast the masking reads 2 + 1 bytes and writes 4 per weight instead of the
    cast's 2 + 4 and the mask's 4 + 1 + 4. The gradient is
    bit for bit what the cast and the mask hook give (the mask is 0/1) for a layer run once per graph; run twice,
    each use casts and the uses' gradients add up in the weight's dtype (CUDA autocast casts once and adds in bf16).
    """

    @staticmethod
    def forward(ctx: Any, weight: Tensor, dtype: torch.dtype, layer: SparseLinear) -> Tensor:
        ctx.layer, ctx.weight_dtype = layer, weight.dtype
        return weight.to(dtype)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None, None]:
        layer = ctx.layer
        masked = torch.empty(grad.shape, dtype=ctx.weight_dtype, device=grad.device)
        torch.mul(grad, layer.mask, out=masked)  # one kernel: grad * mask computed, then stored as the weight's dtype
        layer._graph_grads.append(masked)  # the weight's hook recognises it and does not mask it again
        return masked, None, None


class SparseLinear(SparseLayer):
    """A linear layer ``y = x W^T + b`` whose weight is exactly zero wherever ``mask`` is False.

    The mask is a persistent boolean buffer (it travels in ``model.state_dict()``). A gradient hook zeroes the
    gradient off-mask before it is accumulated, so plain SGD/Adam/AdamW (with or without weight decay) never move an
    off-mask weight, and optimizer state stays zero there. This is the masked dense storage of the
    :class:`~sparsebrain.nn.layer.SparseLayer` protocol (registered as ``"masked"``): fastest above a few percent
    density, and the memory of the dense layer plus one byte per weight.

    While :meth:`capture_dense_grad_` is on (on steps before a topology update of a gradient-based rule), the hook
    also accumulates the unmasked gradient, read back with :meth:`dense_grad`.

    Built directly, the links are ``mask`` (default: all) or ``density``'s uniformly random ones (drawn from
    ``generator``); ``storage="compressed"`` (or ``"auto"`` below the device's break-even density) returns a
    :class:`~sparsebrain.nn.CompressedSparseLinear` instead, which never allocates the dense weight. Loading a
    state dict accepts either storage's checkpoint.

    Example:
        >>> layer = SparseLinear(4, 3, mask=torch.eye(3, 4, dtype=torch.bool))
        >>> int(layer.mask.sum()), bool((layer.weight[~layer.mask] == 0).all())
        (3, True)
        >>> type(SparseLinear(1000, 1000, density=0.001, storage="compressed")).__name__
        'CompressedSparseLinear'
    """

    mask: Tensor

    def __new__(cls, *args: Any, storage: str = "masked", **kwargs: Any) -> Any:
        # SparseLinear(..., storage="compressed") builds the layer that holds only its links, never a dense weight
        from .storage import check_storage, storage_layer

        check_storage(storage)
        if cls is not SparseLinear or storage == "masked":
            return super().__new__(cls)
        density, device = kwargs.get("density"), torch.device(kwargs.get("device") or "cpu")
        if density is None and kwargs.get("mask") is not None:
            mask = kwargs["mask"]
            density = float(mask.sum()) / max(mask.numel(), 1)
        if density is None:
            raise ValueError(f"SparseLinear(storage={storage!r}) needs density= or mask=")
        kind = storage_layer(storage, cls, density=density, device=device)
        return super().__new__(cls) if kind is cls else kind(*args, **kwargs)

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        mask: Tensor | None = None,
        density: float | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
        storage: str = "masked",
    ) -> None:
        super().__init__()
        if mask is not None and density is not None:
            raise ValueError("SparseLinear takes mask= or density=, not both")
        linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)
        if density is not None:
            from ..topology.initial import er

            mask = er((out_features, in_features), density, generator=generator, device=linear.weight.device)
        if mask is None:
            mask = torch.ones(out_features, in_features, dtype=torch.bool, device=linear.weight.device)
        self._wrap(linear, mask)

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor, **options: Any) -> SparseLinear:
        """Wraps ``linear``'s own Parameter objects (so optimizers built on them keep working) and applies ``mask``."""
        cls.check_options(options)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._wrap(linear, mask)
        return layer

    def _wrap(self, linear: nn.Linear, mask: Tensor) -> None:
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight = linear.weight
        self.bias = linear.bias
        self.register_buffer("mask", torch.empty(0, dtype=torch.bool), persistent=True)
        self.set_mask_(mask)
        self._capture = False
        self._dense_grad: Tensor | None = None
        self._graph_grads: list[Tensor] = []
        self._hook_gradient()

    def _hook_gradient(self) -> None:
        super()._hook_gradient()
        self._hooked = weakref.ref(self.weight)
        self._graph_grads = []

    def _on_grad(self, grad: Tensor) -> Tensor:
        # Runs before accumulation into .grad (and before DDP's all-reduce sees it): off-mask gradients never exist.
        ours, self._graph_grads = self._graph_grads, []
        if len(ours) == 1 and grad.data_ptr() == ours[0].data_ptr() and grad.shape == ours[0].shape:
            # masked in the graph (_MaskedCast) and nothing else reached the weight. We held a reference to it, so
            # autograd could not have added another gradient into it in place.
            return grad
        if self._capture:
            g = grad.detach()
            self._dense_grad = g.clone() if self._dense_grad is None else self._dense_grad + g
        return grad * self.mask

    def _weight_for_forward(self) -> Tensor:
        """The weight autocast would use, with the gradient mask fused into the cast's backward where it casts.

        Only for the weight this layer's hook watches (one a wrapper such as FSDP2 put in its place is masked by
        whoever put it there), and not while the dense gradient is captured (the hook captures it unmasked).
        """
        self._graph_grads = []
        w = self.weight
        device = w.device.type
        if (
            not w.requires_grad
            or self._capture
            or self._hooked() is not w
            or not torch.is_grad_enabled()
            or not _DEVICE_AUTOCAST
            or not torch.is_autocast_enabled(device)
        ):
            return w
        dtype = torch.get_autocast_dtype(device)
        if (
            w.dtype == dtype or w.dtype == torch.float64 or not w.is_floating_point()
        ):  # autocast leaves these as they are
            return w
        return _MaskedCast.apply(w, dtype, self)

    # ------------------------------------------------------------------------------------------------------------
    # the storage protocol

    def topology(self) -> Tensor:
        return self.mask

    def dense_weight(self) -> Tensor:
        return self.weight.detach()

    @torch.no_grad()
    def rewire_(self, mask: Tensor) -> dict[str, Tensor]:
        kept = self.mask & mask
        # removed links vanish, new links start at 0 (on this rank's rows of a sharded weight); the mask changes
        # only once the weight has
        local(self.weight).mul_(local_view(self.weight, kept))
        self.mask.copy_(mask)
        return {"weight": kept}

    def state_kept_at_sparsify(self) -> dict[str, Tensor]:
        return {"weight": torch.zeros_like(self.mask)}  # a fresh state for the sparse weights

    def init_sparse_weights_(self, generator: torch.Generator | None = None) -> None:
        from ..topology.swi import swi_

        swi_(self.weight, self.mask, generator=generator)

    def capture_dense_grad_(self, on: bool) -> None:
        self._capture = on
        self._dense_grad = None

    def dense_grad(self) -> Tensor | None:
        return self._dense_grad

    def to_linear(self) -> nn.Linear:
        with torch.no_grad():
            self.weight.mul_(self.mask)
        return self._linear_sharing_parameters()

    # ------------------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def set_mask_(self, mask: Tensor) -> None:
        """Replaces the mask (bool, shape ``(out_features, in_features)``) and zeroes the weight off it."""
        if mask.shape != (self.out_features, self.in_features):
            raise ValueError(
                f"mask must have shape (out_features, in_features) = {(self.out_features, self.in_features)}, "
                f"got {tuple(mask.shape)}"
            )
        self.mask = mask.to(device=self.weight.device, dtype=torch.bool).clone()
        self.weight.mul_(self.mask)

    @torch.no_grad()
    def apply_mask_(self) -> None:
        """Zeroes the weight off-mask (a no-op when training through the gradient hook, kept as a safety net)."""
        self.weight.mul_(self.mask)

    def forward(self, x: Tensor) -> Tensor:
        return F.linear(x, self._weight_for_forward(), self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}, density={self.density:.4f}"
        )

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A compressed checkpoint (values at the links, rows, cols) becomes the masked layer's (weight, mask).
        if prefix + "values" in state_dict and prefix + "rows" in state_dict and prefix + "cols" in state_dict:
            from .compressed_linear import dense_from_links

            try:
                weight, mask = dense_from_links(
                    state_dict.pop(prefix + "values"),
                    state_dict.pop(prefix + "rows"),
                    state_dict.pop(prefix + "cols"),
                    (self.out_features, self.in_features),
                )
            except ValueError as e:
                error_msgs.append(f"sparse layer {prefix[:-1]!r}: {e}")
                return
            state_dict[prefix + "weight"], state_dict[prefix + "mask"] = weight, mask
        elif prefix + "values" in state_dict and prefix + "mask" in state_dict:
            # a semi_structured checkpoint (the value slots of a transposable 2:4 / 1:4 mask) becomes (weight, mask)
            from ..kernels.packed24 import dense_from_slots, slot_masks

            values, mask = state_dict.pop(prefix + "values"), state_dict[prefix + "mask"].bool()
            if values.dim() != 2 or tuple(values.shape) != (mask.shape[0], mask.shape[1] // 2):
                error_msgs.append(
                    f"sparse layer {prefix[:-1]!r}: the loaded values have shape {tuple(values.shape)}, not the "
                    f"value slots (out, in / 2) of its {tuple(mask.shape)} mask"
                )
                return
            state_dict[prefix + "weight"] = dense_from_slots(values, *slot_masks(mask.to(values.device)))
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
        if weight is not None and weight.shape == mask.shape:
            # weights off the mask would compute with links the mask says are absent: refuse, do not re-mask quietly
            # (a sharded weight is checked on this rank's rows)
            w, m = local(weight.detach()), local_view(weight, mask.to(weight.device).bool())
            off = int(torch.count_nonzero(w[~m]))
            if off:
                error_msgs.append(
                    f"sparse layer {prefix[:-1]!r}: the loaded weight has {off} non-zero entries off its mask "
                    f"({'the loaded' if key in state_dict else 'the current'} one); load dense weights before "
                    "sparsifying (sparsify_ keeps them, masked), or zero them off the mask first"
                )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


LAYERS.register("masked", SparseLinear)
