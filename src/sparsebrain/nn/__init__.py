"""Sparse layers and the verbs that put them into (and take them out of) a model."""

from .sparse_linear import SparseLinear
from .sparsify import FilterFn, default_filter, sparse_layers, sparsify_, sparsify_nm_, squash_
from .ste_linear import STELinear

__all__ = [
    "FilterFn",
    "STELinear",
    "SparseLinear",
    "default_filter",
    "sparse_layers",
    "sparsify_",
    "sparsify_nm_",
    "squash_",
]
