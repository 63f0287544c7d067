"""Turning scores into exact numbers of links: the engine's only selection code."""

from __future__ import annotations

import torch
from torch import Tensor

from ..topology.sampling import frechet_scores

__all__ = ["keep_top", "regrowth_keys", "select_regrowth", "topk_mask"]


def topk_mask(key: Tensor, k: int) -> Tensor:
    """Bool mask (shape of ``key``) of the ``k`` largest entries of ``key``; exact count even with ties."""
    out = torch.zeros(key.numel(), dtype=torch.bool, device=key.device)
    if k > 0:
        idx = torch.topk(key.reshape(-1), k, sorted=False).indices
        out[idx] = True
    return out.view_as(key)


def keep_top(scores: Tensor, active: Tensor, k: int) -> Tensor:
    """The ``k`` active positions with the largest ``scores`` (NaN scores count as lowest)."""
    key = torch.nan_to_num(scores.float(), nan=-torch.inf).masked_fill(~active, -torch.inf)
    return topk_mask(key, k) & active


def regrowth_keys(scores: Tensor, sampling: str, generator: torch.Generator | None) -> Tensor:
    """Keys whose largest entries are the regrowth choice under ``sampling``, from non-negative ``scores``.

    ``"topk"``: the scores; ``"multinomial"``: Frechet keys ``s / E``, ``E ~ Exp(1)``, whose top-k is a sample without
    replacement with probability proportional to ``s``; ``"uniform"``: ``s * U[0, 1]`` (the CHTs24 soft rule). Keys
    are non-negative, proportional to the scores (0 where the score is 0), so they can also be summed over a block.

    Example:
        >>> regrowth_keys(torch.tensor([0.0, 2.0]), "topk", None)
        tensor([0., 2.])
    """
    if sampling == "topk":
        return scores
    if sampling == "multinomial":
        return frechet_scores(scores, 1.0, generator)
    if sampling == "uniform":
        return scores * torch.rand(scores.shape, generator=generator, device=scores.device)
    raise ValueError(f"regrowth_sampling must be one of 'topk', 'multinomial', 'uniform'; got {sampling!r}")


def select_regrowth(scores: Tensor, candidates: Tensor, k: int, sampling: str, generator: torch.Generator) -> Tensor:
    """Picks ``k`` new links among ``candidates`` from non-negative ``scores``.

    ``sampling`` is ``"topk"`` (largest scores), ``"multinomial"`` (without replacement, probability proportional to
    score; done with the Gumbel top-k trick so matrices over 2^24 entries work) or ``"uniform"`` (top-k of
    score * U[0, 1], the CHTs24 soft rule). Candidates with a positive score always come before zero-score ones;
    when fewer than ``k`` have a positive score the rest are drawn uniformly among the zero-score candidates (the
    papers add a tiny constant to all non-links for the same purpose).
    """
    k = min(k, int(candidates.sum()))
    if k <= 0:
        return torch.zeros_like(candidates)
    s = torch.nan_to_num(scores.float(), nan=0.0, posinf=torch.finfo(torch.float32).max).clamp_min(0.0)
    positive = candidates & (s > 0)
    pos_key = regrowth_keys(s, sampling, generator)
    # Positive-score candidates get keys > 0 (clamped in case a perturbed key underflowed to 0); zero-score
    # candidates get random keys in (-1, 0]; everything else -inf.
    pos_key = pos_key.clamp_min(torch.finfo(torch.float32).tiny)
    fill = -torch.rand(s.shape, generator=generator, device=s.device)
    key = torch.where(positive, pos_key, torch.where(candidates, fill, torch.full_like(s, -torch.inf)))
    return topk_mask(key, k) & candidates
