"""SemiStructuredSparseLinear: a layer of transposable 2:4 (or 1:4) links, its value slots trained on the sparse
tensor cores."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_post_hook

from ..kernels import cusparselt
from ..kernels.packed24 import (
    Packed24,
    dense_from_slots,
    linear24,
    link_index,
    slot_masks,
    slots_from_dense,
    transposable_problem,
)
from .compressed_linear import _swap_data, _values_to_linear
from .layer import LAYERS, SparseLayer, StateMoved
from .sharding import is_sharded

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["SemiStructuredSparseLinear"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_MIN_SIDE = 16  # cuSPARSELt's smallest sparse operand, for float16 and bfloat16 (both W and W^T)
_warned: set[str] = set()
# Optimizer steps taken in this process, counted by a hook on every torch optimizer: fused optimizers change the
# parameters without bumping their version counters, so a step must say itself that the values may have changed.
_steps = [0]


def _count_step(*_: Any) -> None:
    _steps[0] += 1


register_optimizer_step_post_hook(_count_step)


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"semi_structured storage runs the dense product: {reason}", UserWarning, stacklevel=3)


class SemiStructuredSparseLinear(SparseLayer):
    """A linear layer ``y = x W^T + b`` over a transposable 2:4 or 1:4 mask whose trainable parameter is the weight's
    value slots: ``values``, ``(out, in / 2)``, two per group of 4 along each row, in row-major order
    (:mod:`sparsebrain.kernels.packed24`); slots of a group with fewer than 2 links (1:4, or a group a rewiring left
    short) that are not links hold zeros, and their gradient is zero. The optimizer's state has half the entries of
    the dense weight, and no weight off the slots exists.

    On the sparse tensor cores the weight is also held compressed as ``W`` and ``W^T``: the forward ``X W^T`` and
    the input gradient ``dY W`` run as 2:4 products, the slots' gradient is the dense ``dY^T X`` read at the slots.
    The mask is compressed once per topology (again after :meth:`rewire_`, a load, or a move to another device);
    the slots are copied into both compressed forms before the first forward after they may have changed: after
    any torch optimizer's step (fused optimizers included, which do not bump version counters) or an in-place
    change of the parameter (a change through ``values.data`` is not seen: call :meth:`weights_changed_` after
    one). A 1:4 mask runs on the same 2:4 products, so at 2:4 speed: the hardware
    has no faster 1:4 mode for float16 and bfloat16.

    The sparse tensor cores run float16 and bfloat16: the layer takes them under CUDA autocast to one of those (the
    values may stay float32 masters) or for inputs and values of one of those dtypes, on a CUDA device with
    cuSPARSELt (:func:`~sparsebrain.kernels.cusparselt.available`), with both sides multiples of 16. Elsewhere (the
    CPU, float32, a gradient-capturing update step of a gradient-based rule, sharded values) it computes the dense
    product with the weight of the slots, as the masked layer does; :attr:`path` says which ran last, and why.
    Inside a ``torch.compile``-d model it runs eagerly (the graph breaks around it). Registered as the
    ``"semi_structured"`` storage (``storage="semi_structured"`` with the ``chts24`` / ``chts14`` / ``asp``
    methods); it loads the masked layer's checkpoints (``weight``, ``mask``) as well as its own (``values``,
    ``mask``), which the masked layer loads too.

    Example:
        >>> from sparsebrain.topology import random_transposable_mask
        >>> layer = SemiStructuredSparseLinear(16, 16, mask=random_transposable_mask((16, 16), 2, 4))
        >>> layer.values.shape, layer(torch.randn(3, 16)).shape  # on the CPU: the dense product
        (torch.Size([16, 8]), torch.Size([3, 16]))
        >>> layer.path
        'dense (needs a CUDA device)'
    """

    mask: Tensor
    values: nn.Parameter
    path: str

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        mask: Tensor,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        linear = nn.Linear(in_features, out_features, bias=bias, device=device, dtype=dtype)  # its initialisation
        self._wrap(linear, mask.to(linear.weight.device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor, **options: Any) -> SemiStructuredSparseLinear:
        """The slots of ``mask`` with ``linear``'s weights there; ``linear``'s own Parameter objects are kept (an
        optimizer built on them keeps training them), the weight now holding only its value slots."""
        cls.check_options(options)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer._wrap(linear, mask.to(linear.weight.device))
        return layer

    def _wrap(self, linear: nn.Linear, mask: Tensor) -> None:
        self.in_features, self.out_features = linear.in_features, linear.out_features
        mask = self._checked(mask)
        self.register_buffer("mask", mask.clone(), persistent=True)
        self._topology_changed()
        slot, kept = self._slots()
        with torch.no_grad():  # the same Parameter object, its value slots now (zero at slots that are not links)
            _swap_data(linear.weight, slots_from_dense(linear.weight.data, slot, kept))
        self.values = linear.weight
        self.bias = linear.bias
        self._tokens = 0  # the first sparse call's tokens: what the products' algorithms are searched for
        self._capture = False
        self._dense_grad: Tensor | None = None
        self.path = "not run yet"

    @classmethod
    def storage_problem(cls, layer: type[SparseLayer], constraint: Constraint | None) -> str | None:
        n, m, layout = (getattr(constraint, k, None) for k in ("n", "m", "layout"))
        if not (m == 4 and n in (1, 2) and layout == "transposable"):
            got = "an unstructured topology" if constraint is None or constraint.density is None else str(constraint)
            return (
                "holds transposable 2:4 and 1:4 patterns (pattern='2:4' or '1:4', pattern_layout='transposable'), "
                f"got {got}; use storage='masked'"
            )
        return super().storage_problem(layer, constraint)

    # ------------------------------------------------------------------------------------------------------------
    # the topology and its slots

    def _checked(self, mask: Tensor) -> Tensor:
        shape = (self.out_features, self.in_features)
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask must have shape (out_features, in_features) = {shape}, got {tuple(mask.shape)}")
        mask = mask.bool()
        problem = transposable_problem(mask)
        if problem is not None:
            raise ValueError(f"{type(self).__name__}: the mask is not transposable 2:4 or 1:4: {problem}")
        return mask

    def _topology_changed(self) -> None:
        self._slot_cache: tuple[Tensor, Tensor, Tensor] | None = None
        self._packed: Packed24 | None = None
        self._fresh: tuple[int, int, int] | None = None  # _values_key() when the values were last copied in

    def _slots(self) -> tuple[Tensor, Tensor]:
        """``(slot, kept)`` of the current mask (:func:`~sparsebrain.kernels.packed24.slot_masks`), kept until the
        mask changes (a move to another device makes a new mask tensor)."""
        cache = self._slot_cache
        if cache is None or cache[0] is not self.mask:
            cache = self._slot_cache = (self.mask, *slot_masks(self.mask))
        return cache[1], cache[2]

    def _dense(self, values: Tensor) -> Tensor:
        return dense_from_slots(values, *self._slots())

    def topology(self) -> Tensor:
        return self.mask

    def dense_weight(self) -> Tensor:
        return self._dense(self.values.detach())

    def weight_parameter(self) -> nn.Parameter:
        return self.values

    @torch.no_grad()
    def rewire_(self, mask: Tensor) -> dict[str, Tensor | StateMoved]:
        mask = self._checked(mask.to(self.mask.device))
        index, _ = link_index(*self._slots())  # where each old link's value is
        self.mask.copy_(mask)
        self._topology_changed()
        slot, kept = self._slots()
        source = index[slot.reshape(-1).nonzero().squeeze(1)].masked_fill_(~kept.reshape(-1), -1)
        moved = StateMoved(source.view(kept.shape), self.values.shape)  # kept links keep theirs, new ones start at 0
        self.values.copy_(moved.apply(self.values))
        if self.values.grad is not None:  # a gradient not yet cleared follows its links too (zero for new ones)
            self.values.grad.copy_(moved.apply(self.values.grad))
        return {"values": moved}

    def set_mask_(self, mask: Tensor) -> None:
        """Replaces the mask (bool ``(out, in)``, transposable 2:4 or 1:4): links in both keep their weights, the
        others start at 0."""
        self.rewire_(mask)

    def state_kept_at_sparsify(self) -> dict[str, Tensor | StateMoved]:
        # a fresh state: whatever an optimizer held for the dense weight does not carry over
        fresh = torch.full(self.values.shape, -1, dtype=torch.int64, device=self.mask.device)
        return {"values": StateMoved(fresh, torch.Size((self.out_features, self.in_features)))}

    @torch.no_grad()
    def init_sparse_weights_(self, generator: torch.Generator | None = None) -> None:
        # SWI at the links, in row-major order: the draws of sparsebrain.topology.swi.swi_ on the masked layer
        from ..topology.swi import swi_std

        _, kept = self._slots()
        links = int(kept.sum())
        self.values.zero_()
        if links:
            std = swi_std(links / self.mask.numel(), self.in_features)
            draws = torch.empty(links, dtype=self.values.dtype, device=self.values.device).normal_(
                0.0, std, generator=generator
            )
            self.values.masked_scatter_(kept, draws)

    def capture_dense_grad_(self, on: bool) -> None:
        self._capture = on
        self._dense_grad = None

    def dense_grad(self) -> Tensor | None:
        return self._dense_grad

    def _capture_grad(self, grad: Tensor) -> None:
        g = grad.detach()
        self._dense_grad = g.clone() if self._dense_grad is None else self._dense_grad + g

    def to_linear(self) -> nn.Linear:
        return _values_to_linear(self, self._dense)

    def weights_changed_(self) -> None:
        """Copies the value slots into the compressed forms again before the next forward: needed only after a
        change through ``values.data`` outside a torch optimizer's step (every in-place change of the parameter
        itself, and every optimizer step, is seen)."""
        self._fresh = None

    def _hook_gradient(self) -> None:  # nothing to mask: the gradient exists at the slots only
        pass

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_packed"], state["_fresh"], state["_slot_cache"] = None, None, None  # rebuilt from the mask
        return state

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # Either storage's checkpoint: the value slots (values, mask) or the masked layer's (weight, mask).
        name = prefix[:-1]
        mask = state_dict.get(prefix + "mask")
        if mask is not None:
            try:
                mask = self._checked(mask)
            except ValueError as e:
                error_msgs.append(f"sparse layer {name!r}: the loaded mask is not usable: {e}")
                return
            state_dict[prefix + "mask"] = mask
        weight = state_dict.pop(prefix + "weight", None)
        if weight is not None:
            if mask is None or tuple(weight.shape) != tuple(mask.shape):
                error_msgs.append(f"sparse layer {name!r}: a masked checkpoint needs its weight and mask of one shape")
                return
            off = int(torch.count_nonzero(weight.detach()[~mask.to(weight.device)]))
            if off:
                error_msgs.append(
                    f"sparse layer {name!r}: the loaded weight has {off} non-zero entries off its mask; zero them "
                    "off the mask first"
                )
                return
            state_dict[prefix + "values"] = slots_from_dense(weight.detach(), *slot_masks(mask.to(weight.device)))
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._topology_changed()  # the mask was copied in place

    # ------------------------------------------------------------------------------------------------------------
    # the forward

    def _sparse_dtype(self, x: Tensor) -> torch.dtype | str:
        """The products' dtype where the sparse tensor cores can run this call, else why not."""
        v = self.values
        if not x.is_cuda or not v.is_cuda:
            return "needs a CUDA device"
        if not cusparselt.available():
            return "this torch build or device has no cuSPARSELt with sparse tensor cores"
        if self.out_features % _MIN_SIDE or self.in_features % _MIN_SIDE:
            return f"shape (out, in) = {(self.out_features, self.in_features)} is not a multiple of {_MIN_SIDE}"
        if self._capture:
            return "the dense gradient is being captured for a topology update"
        if is_sharded(v):
            return "the values are sharded"
        if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") in _LOW_PRECISION:
            return torch.get_autocast_dtype("cuda")
        if x.dtype in _LOW_PRECISION and v.dtype == x.dtype:
            return x.dtype
        return f"needs bfloat16 or float16 (autocast, or inputs and values of that dtype), got {x.dtype}"

    def _compressed(self, dtype: torch.dtype, tokens: int) -> Packed24:
        """The compressed weights in ``dtype``, compressed again if the mask or device changed, refreshed if the
        values did."""
        packed = self._packed
        if packed is None or packed.mask is not self.mask or packed.dtype != dtype:
            packed = self._packed = Packed24(self.mask, dtype)
            self._fresh = None
            packed.search_(self._tokens or tokens)  # the first call's tokens, every time: one search per shape
            self._tokens = self._tokens or tokens
        now = self._values_key()
        if self._fresh != now:
            packed.refresh_(self.values)
            self.__dict__["_fresh"] = now  # a plain attribute: set without nn.Module's checks, at every step
        return packed

    def _values_key(self) -> tuple[int, int, int]:
        """What says the values may have changed since they were last copied in: an in-place change of the
        parameter (its version counter), a new tensor (its address), or any torch optimizer's step (fused ones
        change the parameters without bumping their version counters)."""
        v = self.values
        return v._version, v.data_ptr(), _steps[0]

    @torch.compiler.disable  # Python-side state (versions, compressed copies): run eagerly inside a compiled model
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.in_features:
            raise RuntimeError(f"{type(self).__name__}: input has {x.shape[-1]} features, expected {self.in_features}")
        dtype = self._sparse_dtype(x)
        if isinstance(dtype, str):
            self.__dict__["path"] = f"dense ({dtype})"  # plain attributes: set without nn.Module's checks
            if x.is_cuda and not self._capture:
                _warn_once(dtype)
            w = self._dense(self.values)
            if self._capture and w.requires_grad:  # a gradient-based rule scores every position: the dense gradient
                w.register_hook(self._capture_grad)
            return F.linear(x, w, self.bias)
        x2 = x.reshape(-1, self.in_features).to(dtype)  # (tokens, in)
        y = linear24(x2, self.values, self._compressed(dtype, x2.shape[0]), self.bias)
        self.__dict__["path"] = "2:4 sparse tensor cores"
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        links = int(self.mask.sum())
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"links={links}, density={links / max(self.mask.numel(), 1):.4g}"
        )


LAYERS.register("semi_structured", SemiStructuredSparseLinear)
