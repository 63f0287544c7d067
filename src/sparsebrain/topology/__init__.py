"""Pure functions on masks: initial topologies, density allocation, link predictors, sampling, percolation.

Tensors in, tensors out: nothing here knows about optimizers or modules. A mask is bool ``(out, in)``, like
``nn.Linear.weight``: the bipartite graph between ``in`` input nodes and ``out`` output nodes.
"""

from __future__ import annotations

from collections.abc import Callable

from .allocation import ALLOCATIONS, erk, uniform
from .initial import INITS, brf, brf_links, bsf, bsw, csti, er, er_links, initial_mask
from .link_prediction import LINK_PREDICTORS, ch2_l3n, ch2_l3p, ch3_l3n, ch3_l3p, l3n_tiles, l3p_tiles
from .links import Links
from .nm import (
    best_nm_mask,
    best_rowwise_mask,
    best_transposable_mask,
    is_nm,
    is_rowwise,
    is_transposable,
    parse_nm,
    random_nm_mask,
    random_rowwise_mask,
    random_transposable_mask,
    rowwise_patterns,
    transposable_patterns,
)
from .percolation import (
    Junction,
    active_neuron_fraction,
    alive_neurons,
    attention_junctions,
    layer_active_fraction,
    percolate,
)
from .sampling import (
    frechet_scores,
    positional_uniform,
    sample_positions,
    uniform_scaled_topk,
    weighted_sample_without_replacement,
)
from .swi import swi_

__all__ = [
    "ALLOCATIONS",
    "INITS",
    "LINK_PREDICTORS",
    "Junction",
    "Links",
    "active_neuron_fraction",
    "alive_neurons",
    "attention_junctions",
    "best_nm_mask",
    "best_rowwise_mask",
    "best_transposable_mask",
    "brf",
    "brf_links",
    "bsf",
    "bsw",
    "ch2_l3n",
    "ch2_l3p",
    "ch3_l3n",
    "ch3_l3p",
    "csti",
    "er",
    "er_links",
    "erk",
    "frechet_scores",
    "initial_mask",
    "is_nm",
    "is_rowwise",
    "is_transposable",
    "l3n_tiles",
    "l3p_tiles",
    "layer_active_fraction",
    "parse_nm",
    "percolate",
    "positional_uniform",
    "random_nm_mask",
    "random_rowwise_mask",
    "random_transposable_mask",
    "register_init",
    "rowwise_patterns",
    "sample_positions",
    "swi_",
    "transposable_patterns",
    "uniform",
    "uniform_scaled_topk",
    "weighted_sample_without_replacement",
]


def register_init(name: str) -> Callable[[Callable[..., object]], Callable[..., object]]:
    """Registers an initial topology ``fn(shape, density, *, generator=None, device=None, **kw) -> bool mask``.

    Example:
        >>> @register_init("diagonal_band")
        ... def diagonal_band(shape, density, *, generator=None, device=None): ...
    """

    def deco(fn: Callable[..., object]) -> Callable[..., object]:
        INITS.register(name, fn)
        return fn

    return deco
