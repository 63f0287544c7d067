"""The storage protocol: what the training engine may ask of a sparse layer, and nothing more.

The engine (:class:`~sparsebrain.dst.DynamicSparsifier`) reads a layer's *logical* topology, asks the layer to
rewire it, and reads the inputs of its scores (the weights, and the dense gradient on update steps). How the layer
holds its links (a masked dense weight today; only the active links' values, or a 2:4-compressed weight, later) is
the layer's business: a new storage is a new :class:`SparseLayer` subclass registered in :data:`LAYERS`, with no
change to the engine.

Example:
    >>> import torch, sparsebrain as sb
    >>> layer = sb.SparseLinear(8, 4, mask=torch.rand(4, 8) < 0.5)
    >>> keep = layer.rewire_(torch.ones(4, 8, dtype=torch.bool))  # every link now; the new ones start at 0
    >>> sorted(keep)
    ['weight']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import Tensor, nn

from ..registry import Registry

if TYPE_CHECKING:
    from ..topology.constraints import Constraint
    from ..topology.links import Links

__all__ = ["LAYERS", "SparseLayer", "StateMoved"]


@dataclass(frozen=True)
class StateMoved:
    """Where a parameter's optimizer state comes from after its entries moved (a storage holding only its links).

    Entry ``j`` of the parameter's new state is entry ``source[j]`` of the old state (flattened), or 0 where
    ``source[j]`` is -1 (a new link). Only state tensors of ``old_shape`` (the parameter's shape before) move.
    """

    source: Tensor
    old_shape: torch.Size

    def apply(self, old: Tensor) -> Tensor:
        """``old`` (of ``old_shape``) moved to the new entries: ``old.flatten()[source]``, 0 where ``source`` is -1.

        Example:
            >>> StateMoved(torch.tensor([1, -1]), torch.Size([2])).apply(torch.tensor([5.0, 7.0])).tolist()
            [7.0, 0.0]
        """
        flat = old.reshape(-1)
        if not flat.numel():
            return flat.new_zeros(self.source.shape)
        return flat[self.source.clamp(min=0)].masked_fill_(self.source < 0, 0)


class SparseLayer(nn.Module):
    """A linear map ``y = x W^T + b`` over a sparse bipartite topology of shape ``(out_features, in_features)``.

    Class attributes say what a method may do with the layer (the method's validation reads them):

    - ``rewirable``: the engine may change the topology with :meth:`rewire_`.
    - ``dense_master_weights``: every weight is trained, the topology only selects which ones compute (STE): weights
      off the topology are not zero, and no sparse initialisation applies.
    - ``needs_pattern``: the layer derives an N:M pattern itself, so the method must name one.
    """

    in_features: int
    out_features: int
    rewirable: ClassVar[bool] = True
    dense_master_weights: ClassVar[bool] = False
    needs_pattern: ClassVar[bool] = False

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor, **options: Any) -> SparseLayer:
        """Wraps ``linear``'s own Parameter objects (an optimizer built on them keeps working) over ``mask``."""
        raise NotImplementedError

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """Raises ``ValueError`` naming the option if ``options`` (a method's ``layer_options``) do not fit."""
        if options:
            raise ValueError(f"layer {cls.__name__} takes no layer_options, got {sorted(options)}")

    @classmethod
    def storage_problem(cls, layer: type[SparseLayer], constraint: Constraint | None) -> str | None:
        """For a storage's layer class (registered under the storage's name): why it cannot hold the links of a
        method whose layers are ``layer`` under ``constraint`` (None: unstructured), or None if it can. The reason
        completes ``"storage=<name> ..."``. Here: a storage replaces the masked layer, nothing else (a subclass adds
        what it asks of ``constraint``)."""
        if layer is not LAYERS.get("masked") and layer is not cls:
            return f"replaces the masked layer, not {layer.__name__}; use storage='masked'"
        return None

    def topology(self) -> Tensor:
        """The links the layer computes with: bool ``(out, in)``."""
        raise NotImplementedError

    def links(self) -> Links | None:
        """The links as :class:`~sparsebrain.topology.links.Links`, for a storage that holds only its links (the
        engine then updates it without any ``(out, in)`` tensor); None: the engine works on :meth:`topology`."""
        return None

    def link_values(self) -> Tensor:
        """The weights at the links, in the order of :meth:`links` (detached)."""
        raise NotImplementedError(f"{type(self).__name__} does not hold its links")

    def link_grad(self) -> Tensor | None:
        """The gradient at the links collected since capture started (see :meth:`capture_dense_grad_`), or None."""
        return None

    def gradient_rows(self, lo: int, hi: int) -> Tensor | None:
        """Rows ``lo .. hi - 1`` of the dense gradient collected since capture started, ``(hi - lo, in)``, or None:
        how gradient-based regrowth scores a layer that holds only its links, a tile at a time."""
        return None

    def dense_weight(self) -> Tensor:
        """The weights as a detached ``(out, in)`` tensor (what magnitude-based rules score)."""
        raise NotImplementedError

    def rewire_(self, mask: Tensor | Links) -> dict[str, Tensor | StateMoved]:
        """Makes ``mask`` the topology: removed links vanish, new links start at 0, kept links keep their weight.

        ``mask``: bool ``(out, in)``, or the :class:`Links` of a storage that has :meth:`links`.

        Returns, per name of a parameter of this layer, what becomes of its optimizer state: a bool tensor of the
        parameter's shape (the state stays valid there and is zeroed elsewhere), or :class:`StateMoved` (the
        parameter's entries moved, and the state moves with them).
        """
        raise NotImplementedError(f"{type(self).__name__} cannot be rewired")

    def weight_parameter(self) -> nn.Parameter:
        """The Parameter that holds the links' weights (what the optimizer must train), whatever its shape."""
        return self.weight

    def state_kept_at_sparsify(self) -> dict[str, Tensor | StateMoved]:
        """Like :meth:`rewire_`'s result, for the moment the layer was made sparse (a fresh state, or none reset)."""
        return {}

    def init_sparse_weights_(self, generator: Any = None) -> None:
        """Sparse weight initialisation (SWI) of the weights on the topology."""
        raise NotImplementedError(f"{type(self).__name__} has no sparse weight initialisation")

    def capture_dense_grad_(self, on: bool) -> None:
        """Starts (and clears) or stops collecting the unmasked gradient of the weight, for gradient-based rules."""
        raise NotImplementedError

    def dense_grad(self) -> Tensor | None:
        """The unmasked ``(out, in)`` gradient collected since capture started, or None."""
        return None

    def to_linear(self) -> nn.Linear:
        """An ``nn.Linear`` computing what this layer computes, sharing its Parameters; this layer stops masking."""
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------------------------
    # the weight's gradient hook, shared by the storages that keep a dense ``weight`` Parameter

    weight: nn.Parameter
    bias: nn.Parameter | None

    def _on_grad(self, grad: Tensor) -> Tensor:
        """Transforms the weight's gradient before it is accumulated (masking, SR-STE's decay...)."""
        return grad

    def _hook_gradient(self) -> None:
        self._hook = self.weight.register_hook(self._on_grad)

    def _linear_sharing_parameters(self) -> nn.Linear:
        """An ``nn.Linear`` holding this layer's own weight and bias; the gradient hook is removed."""
        self._hook.remove()
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = self.weight
        linear.bias = self.bias
        return linear

    def __getstate__(self) -> dict[str, Any]:
        # Hook handles are not picklable; deepcopy/pickle re-registers the hook in __setstate__.
        state = self.__dict__.copy()
        for key in ("_hook", "_hooked", "_graph_grads"):  # handles, weak references and a backward's transients
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._hook_gradient()

    @property
    def density(self) -> float:
        """Fraction of links present."""
        t = self.topology()
        return float(t.sum()) / t.numel()


LAYERS: Registry[type[SparseLayer]] = Registry("layer")
