"""What a model may tell the sparsifier about itself: which layers are sparse, and which hidden neurons they share.

A model that implements :class:`SparseModel` is sparsified through its own ``sparse_filter`` and percolates along
its own ``sparse_junctions``; any other model gets the default filter (every ``nn.Linear`` but the output head) and
junctions inferred from a plain chain of layers (:func:`~sparsebrain.dst.sparsifier.auto_junctions`). Every model
of the registry is checked against this protocol by ``tests/models/test_protocol.py``: each junction names real
sparse layers, whose shapes agree on the junction's neurons.

Example:
    >>> from sparsebrain.models import MLP
    >>> isinstance(MLP(8, [16], 2), SparseModel)
    True
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

from torch import nn

if TYPE_CHECKING:
    from ..topology.percolation import Junction

__all__ = ["SparseModel"]


@runtime_checkable
class SparseModel(Protocol):
    """A model that names its sparse layers and their junctions."""

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """Whether the ``nn.Linear`` at ``fqn`` becomes sparse."""
        ...

    def sparse_junctions(self) -> list[Junction]:
        """The hidden neurons shared by the sparse layers (by fully qualified name), for percolation."""
        ...
