"""sparsebrain: brain-inspired sparse neural networks that are born sparse and stay sparse.

Example:
    >>> import torch, sparsebrain as sb
    >>> model = sb.models.MLP(784, [256, 256], 10)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9)
    >>> sparsifier = sb.DynamicSparsifier(model, opt, method="chtss", density=0.05, total_steps=1000)
"""

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
from .nn import SparseLinear, STELinear, sparse_layers, sparsify_, sparsify_nm_, squash_
from .topology import register_init

__version__ = "0.1.0"

__all__ = [
    "DynamicSparsifier",
    "LayerView",
    "MethodConfig",
    "STELinear",
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
