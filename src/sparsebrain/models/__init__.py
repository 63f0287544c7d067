"""Models whose sparse layers and percolation chains are declared."""

from .mlp import MLP

__all__ = ["MLP"]
