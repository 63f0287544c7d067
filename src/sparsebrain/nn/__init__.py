"""Sparse layers (the storage protocol and its storages) and the verbs that put them into, and take them out of, a
model."""

from .compressed_linear import CompressedSparseLinear
from .layer import LAYERS, SparseLayer, StateMoved
from .semi_structured_linear import SemiStructuredSparseLinear
from .sparse_linear import SparseLinear
from .sparsify import FilterFn, chosen_linears, default_filter, sparse_layers, sparsify_, sparsify_nm_, squash_
from .ste_linear import STELinear

__all__ = [
    "LAYERS",
    "CompressedSparseLinear",
    "FilterFn",
    "STELinear",
    "SemiStructuredSparseLinear",
    "SparseLayer",
    "SparseLinear",
    "StateMoved",
    "chosen_linears",
    "default_filter",
    "sparse_layers",
    "sparsify_",
    "sparsify_nm_",
    "squash_",
]
