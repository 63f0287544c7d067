"""Sparse Weight Initialisation (SWI): He-style init that accounts for the links a sparse layer does not have.

A dense ``(out, in)`` layer keeps activations' variance with ``sigma = sqrt(2 / fan_in)``; a sparse one has on average
only ``density * fan_in`` inputs per output, so SWI uses ``sigma = sqrt(2 / (density * fan_in))``.
"""

from __future__ import annotations

import math

import torch

__all__ = ["swi_", "swi_std"]


def swi_std(density: float, fan_in: int) -> float:
    """SWI's standard deviation ``sqrt(2 / (density * fan_in))``.

    Example:
        >>> swi_std(0.5, 16)
        0.5
    """
    return math.sqrt(2.0 / (density * fan_in))


@torch.no_grad()
def swi_(weight: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Fills ``weight`` in place with N(0, 2 / (density * fan_in)) on the mask and exact zeros off it.

    ``density = mask.float().mean()`` and ``fan_in = weight.shape[1]``. An empty mask gives an all-zero weight.

    Args:
        weight: ``(out, in)`` weight, as ``nn.Linear.weight``; it may require grad.
        mask: ``(out, in)`` mask, bool or 0/1.
        generator: source of randomness, on the weight's device.

    Returns:
        ``weight``.

    Example:
        >>> w = torch.empty(4, 8); m = torch.rand(4, 8) < 0.5
        >>> bool((swi_(w, m)[~m] == 0).all())
        True
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D (out, in), got shape {tuple(weight.shape)}")
    if tuple(mask.shape) != tuple(weight.shape):
        raise ValueError(f"mask must have the weight's shape {tuple(weight.shape)}, got {tuple(mask.shape)}")
    keep = mask.to(device=weight.device, dtype=torch.bool)
    links = int(keep.sum())
    density = links / keep.numel()
    if density == 0.0:
        return weight.zero_()
    std = swi_std(density, weight.shape[1])
    # Only the links are drawn, in row-major order: a layer that stores just its links (CSR order is row-major)
    # draws the same weights from the same generator, and the work grows with the links, not the layer.
    values = torch.empty(links, dtype=weight.dtype, device=weight.device).normal_(0.0, std, generator=generator)
    weight.zero_()
    weight[keep] = values
    return weight
