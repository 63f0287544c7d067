"""Offline datasets: in-memory image classification sets and a registry to load them by name.

Example:
    >>> from sparsebrain.data import load_dataset
    >>> ds = load_dataset("digits", test_fraction=0.2, seed=0)
    >>> ds.num_features, ds.num_classes
    (64, 10)
"""

from .idx import read_idx
from .images import (
    DATASETS,
    FASHION_MNIST_DIR,
    ArrayDataset,
    load_dataset,
    load_digits,
    load_fashion_mnist,
    load_mnist_idx,
    load_mnist_subset,
    load_synthetic,
)

__all__ = [
    "DATASETS",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "load_dataset",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist_idx",
    "load_mnist_subset",
    "load_synthetic",
    "read_idx",
]
