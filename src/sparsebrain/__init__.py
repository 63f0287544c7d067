"""sparsebrain: brain-inspired sparse neural networks that are born sparse and stay sparse.

Example:
    >>> import torch, sparsebrain as sb
    >>> model = sb.models.MLP(784, [256, 256], 10)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9)
    >>> sparsifier = sb.DynamicSparsifier(model, opt, method="chtss", density=0.05, total_steps=1000)
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import models, topology
    from .dst import (
        DynamicSparsifier,
        LayerView,
        MethodConfig,
        UpdateContext,
        list_methods,
        register_regrowth,
        register_removal,
    )
    from .export import to_semi_structured
    from .nn import (
        CompressedSparseLinear,
        SemiStructuredSparseLinear,
        SparseLinear,
        STELinear,
        sparse_layers,
        sparsify_,
        sparsify_nm_,
        squash_,
    )
    from .topology import register_init

__version__ = "0.1.0"

# The public names are imported on first use (PEP 562), not here: importing torch takes seconds, and the
# ``sparsebrain`` command must be inside its main() (which turns Ctrl-C into one line and exit code 130) before it
# starts; ``sparsebrain --version`` and ``--help`` need no torch at all.
_LAZY = {
    **dict.fromkeys(
        ["DynamicSparsifier", "LayerView", "MethodConfig", "UpdateContext", "list_methods", "register_regrowth",
         "register_removal"],
        ".dst",
    ),
    "to_semi_structured": ".export",
    **dict.fromkeys(
        ["CompressedSparseLinear", "SemiStructuredSparseLinear", "SparseLinear", "STELinear", "sparse_layers",
         "sparsify_", "sparsify_nm_", "squash_"],
        ".nn",
    ),
    "register_init": ".topology",
}  # fmt: skip


def __getattr__(name: str) -> Any:
    if name.startswith("__"):  # dunder probes (inspect, pickle, doctest) are no submodules
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
    else:  # a subpackage or module: sb.models, sb.dst, sb.data, ...
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise  # a missing dependency of an existing module: say so, not "no attribute"
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


__all__ = [
    "CompressedSparseLinear",
    "DynamicSparsifier",
    "LayerView",
    "MethodConfig",
    "STELinear",
    "SemiStructuredSparseLinear",
    "SparseLinear",
    "UpdateContext",
    "__version__",
    "list_methods",
    "models",
    "register_init",
    "register_regrowth",
    "register_removal",
    "sparse_layers",
    "sparsify_",
    "sparsify_nm_",
    "squash_",
    "to_semi_structured",
    "topology",
]
