"""Models whose sparse layers and percolation chains are declared."""

from ..registry import Registry
from .mlp import MLP

__all__ = ["MLP", "MODELS"]

MODELS: Registry[type] = Registry("model")
MODELS.register("mlp", MLP)
