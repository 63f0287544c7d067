"""Which storage holds a sparse layer's links: the masked dense weight, or the links alone (compressed).

``storage="auto"`` picks the compressed storage for an unstructured layer whose density is at most the break-even
density of its device, where the compressed layer's training step becomes faster than the masked dense one
(measured by ``benchmarks/sparse_linear.py``; see the README's storage table).

Example:
    >>> from sparsebrain.nn import SparseLinear
    >>> storage_layer("auto", SparseLinear, structured=False, density=0.001, device=torch.device("cpu")).__name__
    'CompressedSparseLinear'
"""

from __future__ import annotations

import torch

from .layer import LAYERS, SparseLayer

__all__ = ["BREAK_EVEN_DENSITY", "STORAGES", "check_compressible", "check_storage", "storage_layer"]

STORAGES = ("masked", "compressed", "auto")

# The density below which a compressed layer's training step (forward and both gradients) beats the masked dense
# layer's, per device type, from benchmarks/sparse_linear.py, rounded down: CPU (2 cores, fp32, 1568 x 1568 and
# 4096 x 4096, 32-512 tokens) break-even 0.15-0.26; CUDA (H200, bf16 autocast, 16384 tokens, 8192 x 8192,
# 4096 x 11008, 11008 x 4096) 0.0047-0.0077 against dense bf16.
BREAK_EVEN_DENSITY = {"cpu": 0.1, "cuda": 0.004}


def check_storage(storage: str) -> str:
    """``storage`` if it is one of :data:`STORAGES`, else ``ValueError`` naming the allowed values."""
    if storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(map(repr, STORAGES))}; got {storage!r}")
    return storage


def storage_layer(
    storage: str, layer: type[SparseLayer], *, structured: bool, density: float, device: torch.device, name: str = ""
) -> type[SparseLayer]:
    """The layer class that holds a layer of ``density`` on ``device``: ``layer`` itself for ``"masked"``, the
    compressed layer for ``"compressed"`` (or for ``"auto"`` below the device's break-even density).

    Raises ``ValueError`` (naming the layer and the option) where the compressed storage cannot hold what the method
    asks: an N:M pattern (``structured``), or a layer of another kind (dense master weights for STE).
    """
    check_storage(storage)
    compressed = LAYERS.get("compressed")
    if storage == "masked" or layer is compressed:
        return layer
    if storage == "auto":
        fits = not structured and layer is LAYERS.get("masked")
        return compressed if fits and density <= BREAK_EVEN_DENSITY.get(device.type, 0.0) else layer
    check_compressible(layer, structured=structured, name=name)
    return compressed


def check_compressible(layer: type[SparseLayer], *, structured: bool, name: str = "") -> None:
    """Raises ``ValueError`` (naming the layer and the option) where ``storage="compressed"`` cannot hold what a
    method asks: an N:M pattern (``structured``), or a layer other than the masked one (STE's dense master weights).
    """
    where = f"layer {name!r}: " if name else ""
    if structured:
        raise ValueError(f"{where}storage='compressed' holds unstructured links; an N:M pattern needs storage='masked'")
    if layer is not LAYERS.get("masked") and layer is not LAYERS.get("compressed"):
        raise ValueError(
            f"{where}storage='compressed' replaces the masked layer, not {layer.__name__}; use storage='masked'"
        )
