"""Sparse layers and the verbs that put them into (and take them out of) a model."""

from .sparse_linear import SparseLinear
from .sparsify import FilterFn, default_filter, sparse_layers, sparsify_, squash_

__all__ = ["FilterFn", "SparseLinear", "default_filter", "sparse_layers", "sparsify_", "squash_"]
