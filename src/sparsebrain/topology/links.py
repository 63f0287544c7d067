"""A layer's topology as its links alone, and the update's selections on it, never an ``(out, in)`` tensor.

:class:`Links` holds the sorted flat positions ``row * in + col`` of a layer's links: what a layer that stores only
its links (:class:`~sparsebrain.nn.CompressedSparseLinear`) hands the engine. Removal works on the links' values;
regrowth draws positions (uniform rules, :func:`~sparsebrain.topology.sampling.sample_positions`) or streams over
row tiles of scores, keeping the best keys (:func:`select_from_tiles`); percolation cuts rows and columns
(:mod:`sparsebrain.topology.percolation` accepts :class:`Links`). The random numbers are positional, so every
selection here picks what the same selection on the layer's bool mask picks.

Example:
    >>> links = Links.from_mask(torch.tensor([[True, False], [True, True]]))
    >>> links.flat.tolist(), links.count, links.has_link(0).tolist()
    ([0, 2, 3], 3, [True, True])
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .sampling import _alive_at, _is_in_sorted, candidate_keys, draw_seeds, top_indices

__all__ = ["Links", "ScoreTiles", "dense_tiles", "scores_at", "select_from_tiles", "tile_rows"]


@dataclass(frozen=True, eq=False)
class Links:
    """The links of an ``(out, in)`` layer as sorted, distinct flat positions ``row * in + col`` (int64)."""

    flat: Tensor
    shape: tuple[int, int]

    @classmethod
    def from_mask(cls, mask: Tensor) -> Links:
        """The links of a bool ``(out, in)`` mask."""
        return cls(mask.reshape(-1).nonzero().squeeze(1), (int(mask.shape[0]), int(mask.shape[1])))

    @property
    def count(self) -> int:
        """The number of links (no host sync)."""
        return self.flat.numel()

    @property
    def device(self) -> torch.device:
        return self.flat.device

    def numel(self) -> int:
        """The number of positions of the layer, ``out * in`` (as for a mask)."""
        return self.shape[0] * self.shape[1]

    def rows(self) -> Tensor:
        return self.flat.div(self.shape[1], rounding_mode="floor")

    def cols(self) -> Tensor:
        return self.flat.remainder(self.shape[1])

    def has_link(self, dim: int) -> Tensor:
        """``mask.any(dim)``: per input column (``dim=0``) or output row (``dim=1``), whether it has a link."""
        index, n = (self.cols(), self.shape[1]) if dim == 0 else (self.rows(), self.shape[0])
        return torch.bincount(index, minlength=n) > 0

    def keep(self, which: Tensor) -> Links:
        """The links where the bool vector ``which`` (one entry per link) is True."""
        return Links(self.flat[which], self.shape)

    def restrict(self, alive: Tensor, dim: int) -> Links:
        """``mask & alive[:, None]`` (``dim=1``: rows) or ``mask & alive[None, :]`` (``dim=0``: columns)."""
        index = self.rows() if dim == 1 else self.cols()
        return self.keep(alive[index])

    def contains(self, flat: Tensor) -> Tensor:
        """Whether each flat position of ``flat`` is a link."""
        return _is_in_sorted(flat, self.flat)

    def union(self, other: Links) -> Links:
        """The links of either (disjoint or not)."""
        return Links(torch.unique(torch.cat([self.flat, other.flat])), self.shape)

    def minus(self, other: Links) -> Links:
        """The links of ``self`` that are not links of ``other``."""
        return self.keep(~other.contains(self.flat))

    def row_span(self, lo: int, hi: int) -> tuple[int, int]:
        """Where the links of rows ``lo .. hi - 1`` lie in :attr:`flat`: ``flat[a:b]``."""
        a, b = torch.searchsorted(self.flat, torch.tensor([lo, hi], device=self.device) * self.shape[1]).tolist()
        return a, b

    def in_rows(self, lo: int, hi: int) -> Tensor:
        """The flat positions of the links in rows ``lo .. hi - 1``."""
        a, b = self.row_span(lo, hi)
        return self.flat[a:b]

    def to_mask(self) -> Tensor:
        """The bool ``(out, in)`` mask (for small layers and tests: it is the dense tensor this class avoids)."""
        mask = torch.zeros(self.numel(), dtype=torch.bool, device=self.device)
        mask[self.flat] = True
        return mask.view(self.shape)


ScoreTiles = Iterator[tuple[int, int, Tensor]]
"""Row tiles of a layer's regrowth scores: ``(lo, hi, scores)`` with ``scores`` of shape ``(hi - lo, in)``."""


def tile_rows(shape: tuple[int, int], tile_elems: int) -> int:
    """Rows per tile so that a tile has at most about ``tile_elems`` entries (at least one row)."""
    return max(1, min(shape[0], tile_elems // max(1, shape[1])))


def select_from_tiles(
    tiles: ScoreTiles,
    shape: tuple[int, int],
    k: int,
    excluded: Links,
    sampling: str,
    generator: torch.Generator | None,
    *,
    alive: tuple[Tensor | None, Tensor | None] = (None, None),
    temperature: float = 1.0,
) -> Tensor:
    """The ``k`` candidates with the largest keys, streamed over row tiles of scores: sorted flat positions.

    Candidates are the positions that are not in ``excluded`` and have an alive row and column (``alive``: bool
    vectors or None); keys are :func:`~sparsebrain.topology.sampling.candidate_keys` under ``sampling``, drawn from
    two seeds of ``generator`` as :func:`~sparsebrain.topology.sampling.select_regrowth` draws them. Only the best
    ``k`` keys seen so far and one tile are held at a time; the result is the choice ``select_regrowth`` makes over
    the whole layer (up to ties in ``"topk"`` sampling).
    """
    device = excluded.device
    seeds = draw_seeds(generator, 2, device)
    best_pos = torch.zeros(0, dtype=torch.long, device=device)
    best_key = torch.zeros(0, dtype=torch.float32, device=device)
    n_in = shape[1]
    for lo, hi, scores in tiles:
        pos = torch.arange(lo * n_in, hi * n_in, device=device)
        cand = ~_is_in_sorted(pos, excluded.in_rows(lo, hi))
        if alive[0] is not None or alive[1] is not None:
            cand &= _alive_at(pos, n_in, alive[0], alive[1])
        pos = pos[cand]
        key = candidate_keys(scores.reshape(-1)[cand], pos, sampling, seeds, temperature)
        if best_pos.numel():
            pos, key = torch.cat([best_pos, pos]), torch.cat([best_key, key])
        if key.numel() > k:
            top = top_indices(key, k)
            pos, key = pos[top], key[top]
        best_pos, best_key = pos, key
    return best_pos.sort().values


def scores_at(tiles: ScoreTiles, links: Links) -> Tensor:
    """The scores of the tiles at the positions of ``links``, in their order (0 where no tile covers them)."""
    out = torch.zeros(links.count, device=links.device)
    n_in = links.shape[1]
    for lo, hi, scores in tiles:
        a, b = links.row_span(lo, hi)
        out[a:b] = scores.reshape(-1)[links.flat[a:b] - lo * n_in].float()
    return out


def dense_tiles(scores: Callable[[], Tensor]) -> ScoreTiles:
    """The whole ``(out, in)`` score matrix as one tile (small layers, or rules without a tiled form)."""
    s = scores()
    yield 0, s.shape[0], s
