"""SemiStructuredSparseLinear: a masked layer of transposable 2:4 (or 1:4) links trained on the sparse tensor cores."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ..kernels import cusparselt
from ..kernels.packed24 import Packed24, linear24, transposable_problem
from .layer import LAYERS, SparseLayer
from .sparse_linear import SparseLinear

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["SemiStructuredSparseLinear"]

_LOW_PRECISION = (torch.bfloat16, torch.float16)
_MIN_SIDE = 16  # cuSPARSELt's smallest sparse operand, for float16 and bfloat16 (both W and W^T)
_warned: set[str] = set()


def _warn_once(reason: str) -> None:
    if reason not in _warned:
        _warned.add(reason)
        warnings.warn(f"semi_structured storage runs the masked dense product: {reason}", UserWarning, stacklevel=3)


class SemiStructuredSparseLinear(SparseLinear):
    """The masked layer (:class:`SparseLinear`: a dense weight on a mask, the same state dict) whose transposable
    2:4 or 1:4 weight is also held compressed for the 2:4 sparse tensor cores, as ``W`` and ``W^T``
    (:class:`~sparsebrain.kernels.packed24.Packed24`).

    Its forward ``X W^T`` and input gradient ``dY W`` run as 2:4 sparse products; the weight gradient is the dense
    ``dY^T X`` at the links. The mask is compressed once per topology (again after :meth:`rewire_`, a load of a new
    mask, or a move to another device); the weights are copied into the compressed form before the first forward
    after they changed (an optimizer step, a load), as the weight's version counter says (a change through
    ``weight.data`` is not counted: call :meth:`weights_changed_` after one). A 1:4 mask runs on the same 2:4
    products, holding zeros in the slots it leaves free: the hardware has no faster 1:4 mode for float16 and
    bfloat16, so it runs at 2:4 speed.

    The sparse tensor cores run float16 and bfloat16: the layer takes them under CUDA autocast to one of those (the
    weights may stay float32 masters) or for inputs and weights of one of those dtypes, on a CUDA device with
    cuSPARSELt (:func:`~sparsebrain.kernels.cusparselt.available`), with both sides multiples of 16. Elsewhere (the
    CPU, float32, a gradient-capturing update step of a gradient-based rule, a weight a wrapper such as FSDP2
    replaced) it computes exactly as the masked layer; :attr:`path` says which ran last, and why. Inside a
    ``torch.compile``-d model it runs eagerly (the graph breaks around it). Registered as the ``"semi_structured"``
    storage (``storage="semi_structured"`` with the ``chts24`` / ``chts14`` methods).

    Example:
        >>> from sparsebrain.topology import random_transposable_mask
        >>> layer = SemiStructuredSparseLinear(16, 16, mask=random_transposable_mask((16, 16), 2, 4))
        >>> y = layer(torch.randn(3, 16))  # on the CPU: the masked product
        >>> layer.path
        'masked (needs a CUDA device)'
    """

    path: str

    def _wrap(self, linear: torch.nn.Linear, mask: Tensor) -> None:
        self._packed: Packed24 | None = None
        self._fresh: tuple[int, int] | None = None  # (version, address) of the weights last copied in
        self._tokens = 0  # the first sparse call's tokens: what the products' algorithms are searched for
        self.path = "not run yet"
        super()._wrap(linear, mask)

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
    # the topology: the masked layer's, checked, and compressed again when it changes

    def _check_mask(self, mask: Tensor) -> None:
        if tuple(mask.shape) == (self.out_features, self.in_features):
            problem = transposable_problem(mask.bool())
            if problem is not None:
                raise ValueError(f"{type(self).__name__}: the mask is not transposable 2:4 or 1:4: {problem}")

    def set_mask_(self, mask: Tensor) -> None:
        self._check_mask(mask)
        super().set_mask_(mask)
        self._packed = None

    def rewire_(self, mask: Tensor) -> dict[str, Tensor]:
        self._check_mask(mask)
        kept = super().rewire_(mask)
        self._packed = None
        return kept

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        mask = state_dict.get(prefix + "mask")
        if mask is not None and tuple(mask.shape) == (self.out_features, self.in_features):
            problem = transposable_problem(mask.bool())
            if problem is not None:
                error_msgs.append(f"sparse layer {prefix[:-1]!r}: the loaded mask is not transposable 2:4: {problem}")
                return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._packed = None

    def weights_changed_(self) -> None:
        """Copies the weights into the compressed form again before the next forward: needed only after a change
        through ``weight.data``, which the weight's version counter does not see (every in-place change of the
        weight itself, an optimizer's step included, is seen)."""
        self._fresh = None

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_packed"], state["_fresh"] = None, None  # rebuilt from the mask (a copy's mask is another tensor)
        return state

    # ------------------------------------------------------------------------------------------------------------
    # the forward

    def _sparse_dtype(self, x: Tensor) -> torch.dtype | str:
        """The products' dtype where the sparse tensor cores can run this call, else why not."""
        w = self.weight
        if not x.is_cuda or not w.is_cuda:
            return "needs a CUDA device"
        if not cusparselt.available():
            return "this torch build or device has no cuSPARSELt with sparse tensor cores"
        if self.out_features % _MIN_SIDE or self.in_features % _MIN_SIDE:
            return f"shape (out, in) = {(self.out_features, self.in_features)} is not a multiple of {_MIN_SIDE}"
        if self._capture:
            return "the dense gradient is being captured for a topology update"
        if self._hooked() is not w:
            return "the weight was replaced by a wrapper"
        if torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") in _LOW_PRECISION:
            return torch.get_autocast_dtype("cuda")
        if x.dtype in _LOW_PRECISION and w.dtype == x.dtype:
            return x.dtype
        return f"needs bfloat16 or float16 (autocast, or inputs and weights of that dtype), got {x.dtype}"

    def _compressed(self, dtype: torch.dtype, tokens: int) -> Packed24:
        """The compressed weights in ``dtype``, compressed again if the mask or device changed, refreshed if the
        weights did."""
        packed = self._packed
        if packed is None or packed.mask is not self.mask or packed.dtype != dtype:
            packed = self._packed = Packed24(self.mask, dtype)
            self._fresh = None
            packed.search_(self._tokens or tokens)  # the first call's tokens, every time: one search per shape
            self._tokens = self._tokens or tokens
        w = self.weight
        now = (w._version, w.data_ptr())
        if self._fresh != now:
            packed.refresh_(w)
            self.__dict__["_fresh"] = now  # a plain attribute: set without nn.Module's checks, at every step
        return packed

    @torch.compiler.disable  # Python-side state (versions, compressed copies): run eagerly inside a compiled model
    def forward(self, x: Tensor) -> Tensor:
        dtype = self._sparse_dtype(x)
        if isinstance(dtype, str):
            self.__dict__["path"] = f"masked ({dtype})"  # plain attributes: set without nn.Module's checks
            if x.is_cuda and not self._capture:
                _warn_once(dtype)
            return super().forward(x)
        x2 = x.reshape(-1, self.in_features).to(dtype)  # (tokens, in)
        packed = self._compressed(dtype, x2.shape[0])
        self._graph_grads = []  # the weight's hook recognises the gradient this product masked already
        y = linear24(x2, self.weight, packed, self.bias, sink=self._graph_grads)
        self.__dict__["path"] = "2:4 sparse tensor cores"
        return y.reshape(*x.shape[:-1], self.out_features)


LAYERS.register("semi_structured", SemiStructuredSparseLinear)
