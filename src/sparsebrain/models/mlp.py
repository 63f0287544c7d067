"""The MLP of the Cannistraci-Hebb papers: 784 -> 1568 x 3 -> 10, every layer sparse but the last."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..topology.percolation import Junction

__all__ = ["MLP"]


class MLP(nn.Module):
    """A ReLU MLP whose hidden layers are declared sparse and chained for active-neuron percolation.

    Example:
        >>> model = MLP(784, [1568, 1568, 1568], 10)
        >>> model(torch.zeros(2, 784)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_features: int = 784,
        hidden: Sequence[int] = (1568, 1568, 1568),
        out_features: int = 10,
        *,
        dropout: float = 0.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b, device=device, dtype=dtype) for a, b in zip(sizes[:-1], sizes[1:]))
        self.head = nn.Linear(sizes[-1], out_features, device=device, dtype=dtype)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for layer in self.layers:
            x = self.dropout(torch.relu(layer(x)))
        return self.head(x)

    def sparse_filter(self, fqn: str, module: nn.Module) -> bool:
        """Hidden layers are sparse, the output head is dense (as in the papers)."""
        return fqn.startswith("layers.")

    def sparse_junctions(self) -> list[Junction]:
        """Hidden neurons between consecutive sparse layers."""
        n = len(self.layers)
        return [Junction(producers=(f"layers.{i}",), consumers=(f"layers.{i + 1}",)) for i in range(n - 1)]
