"""Which storage holds a sparse layer's links: the masked dense weight, the links alone (compressed), or a
transposable 2:4 weight that is also held compressed for the sparse tensor cores (semi_structured).

Each storage other than ``"masked"`` is a layer class registered in :data:`~sparsebrain.nn.LAYERS` under the
storage's name, which says through :meth:`~sparsebrain.nn.SparseLayer.storage_problem` what it cannot hold.
``storage="auto"`` picks the compressed storage for an unstructured layer whose density is at most the break-even
density of its device, where the compressed layer's training step becomes faster than the masked dense one
(measured by ``benchmarks/sparse_linear.py``; see the README's storage table).

Example:
    >>> from sparsebrain.nn import SparseLinear
    >>> storage_layer("auto", SparseLinear, density=0.001, device=torch.device("cpu")).__name__
    'CompressedSparseLinear'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .layer import LAYERS, SparseLayer

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["BREAK_EVEN_DENSITY", "STORAGES", "check_fits", "check_storage", "storage_layer"]

STORAGES = ("masked", "compressed", "semi_structured", "auto")

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


def _storage_classes() -> tuple[type[SparseLayer], ...]:
    return tuple(LAYERS.get(name) for name in STORAGES if name not in ("masked", "auto"))


def storage_layer(
    storage: str,
    layer: type[SparseLayer],
    *,
    constraint: Constraint | None = None,
    density: float,
    device: torch.device,
    name: str = "",
) -> type[SparseLayer]:
    """The layer class that holds a ``layer`` of ``density`` under ``constraint`` (None: unstructured) on
    ``device``: ``layer`` itself for ``"masked"``, the storage's layer class otherwise (for ``"auto"``: the
    compressed layer where it fits and the density is at most the device's break-even density, else ``layer``).

    Raises ``ValueError`` (naming the layer and the option) where the storage cannot hold what the method asks.
    """
    check_storage(storage)
    if storage == "masked" or layer in _storage_classes():
        return layer
    if storage == "auto":
        compressed = LAYERS.get("compressed")
        fits = compressed.storage_problem(layer, constraint) is None
        return compressed if fits and density <= BREAK_EVEN_DENSITY.get(device.type, 0.0) else layer
    check_fits(storage, layer, constraint, name=name)
    return LAYERS.get(storage)


def check_fits(storage: str, layer: type[SparseLayer], constraint: Constraint | None, *, name: str = "") -> None:
    """Raises ``ValueError`` (naming the layer and the option) where ``storage`` cannot hold a method's ``layer``
    kind under ``constraint`` (None: unstructured); nothing for ``"masked"`` and ``"auto"``."""
    if check_storage(storage) in ("masked", "auto") or layer in _storage_classes():
        return
    problem = LAYERS.get(storage).storage_problem(layer, constraint)
    if problem is not None:
        where = f"layer {name!r}: " if name else ""
        raise ValueError(f"{where}storage={storage!r} {problem}")
