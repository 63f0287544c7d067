"""Constraints on a layer's topology: which masks are allowed, and how regrowth picks links under them.

A topology update keeps some links (after removal), scores every position for regrowth, and asks the layer's
constraint for the new mask. :class:`Unstructured` grows the best-scored candidates until the layer has its target
number of links; :class:`NM` takes, block by block, the N:M pattern that keeps the most surviving links and the best
new ones. One update loop serves both (:class:`~sparsebrain.dst.DynamicSparsifier`), and every rule works under
either.

Example:
    >>> import torch
    >>> c = NM(2, 4)
    >>> mask = c.select(Regrowth(old=torch.ones(4, 4, dtype=torch.bool), kept=torch.eye(4, dtype=torch.bool),
    ...                          scores=torch.rand(4, 4), links=8))
    >>> c.allows(mask), int(mask.sum())
    (True, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .links import Links, ScoreTiles, scores_at, select_from_tiles
from .nm import LAYOUTS, _check_nm, best_nm_mask, is_nm, nm_shape_error, parse_nm
from .sampling import (
    _alive_at,
    count_outside,
    regrowth_keys,
    sample_positions,
    select_at,
    select_regrowth,
    true_indices,
)

__all__ = ["CANDIDATE_RULES", "NM", "Constraint", "Regrowth", "Unstructured", "constraint_of"]

# Which non-links regrowth may pick: links absent before the update, or every non-link after removal.
CANDIDATE_RULES = ("absent", "after_removal")


Alive = tuple[Tensor | None, Tensor | None]
"""Percolation's regrowable neurons of a layer: bool vectors over its rows and its columns (None: all)."""


@dataclass(frozen=True)
class Regrowth:
    """One layer's regrowth request.

    Attributes:
        old: the links before the update: a bool ``(out, in)`` mask, or :class:`~sparsebrain.topology.links.Links`
            for a layer that holds only its links (then ``kept`` is too, and ``tiles`` replaces ``scores``).
        kept: the links kept after removal (and percolation).
        scores: non-negative regrowth scores at every position ``(out, in)``; None with ``tiles`` None: uniformly
            random links (positions are drawn, not scored).
        links: the number of links the layer must have after the update (unstructured constraints).
        sampling: ``"topk"``, ``"multinomial"`` or ``"uniform"`` (see :func:`~sparsebrain.topology.regrowth_keys`).
        generator: the update's random generator on the layer's device.
        allowed: rows and columns percolation leaves regrowable (both endpoints alive), or None.
        candidates: ``"absent"`` or ``"after_removal"`` (see :data:`CANDIDATE_RULES`).
        survivor_boost: N:M: surviving links outrank every candidate.
        old_links, kept_links: the numbers of links of ``old`` and ``kept``, when the caller knows them exactly (each
            saves a host sync); None: counted here.
        tiles: for :class:`Links`: a function giving the scores as row tiles (see ``ScoreTiles``); None with
            ``scores`` None: uniformly random links.
    """

    old: Tensor | Links
    kept: Tensor | Links
    scores: Tensor | None
    links: int
    sampling: str = "topk"
    generator: torch.Generator | None = None
    allowed: Alive | None = None
    candidates: str = "absent"
    survivor_boost: bool = True
    old_links: int | None = None
    kept_links: int | None = None
    tiles: Callable[[], ScoreTiles] | None = None

    def n_old(self) -> int:
        if isinstance(self.old, Links):
            return self.old.count
        return self.old_links if self.old_links is not None else int(self.old.sum())

    def n_kept(self) -> int:
        if isinstance(self.kept, Links):
            return self.kept.count
        return self.kept_links if self.kept_links is not None else int(self.kept.sum())

    @property
    def uniform(self) -> bool:
        return self.scores is None and self.tiles is None


class Constraint:
    """The allowed masks of a layer; see :class:`Unstructured` and :class:`NM`."""

    density: float | None = None  # fixed by the constraint (N/M), or None: any

    def shape_error(self, shape: Sequence[int]) -> str | None:
        """Why a ``(out, in)`` weight cannot hold this constraint, or None."""
        return None

    def allows(self, mask: Tensor) -> bool:
        """Whether ``mask`` satisfies the constraint."""
        return True

    def accepts_init(self, init: Callable[..., Any]) -> bool:
        """Whether the registered initial topology ``init`` builds masks of this constraint."""
        return getattr(init, "constraint", "unstructured") == "unstructured"

    def init_kwargs(self) -> dict[str, Any]:
        """Arguments an initial topology of this constraint needs beyond ``(shape, density)``."""
        return {}

    def grows(self, kept: Tensor, links: int, kept_links: int | None = None) -> bool:
        """Whether a layer that kept ``kept`` (``kept_links`` links, if known) must regrow (and so score) at all."""
        raise NotImplementedError

    def select(self, r: Regrowth) -> Tensor:
        """The new mask, bool ``(out, in)``."""
        raise NotImplementedError


class Unstructured(Constraint):
    """Any mask; regrowth adds the ``links - |kept|`` best-keyed candidates.

    ``"absent"`` candidates are the links absent before the update, so nothing removed now is regrown now; when fewer
    remain than must grow (dense-ish targets: at density d only 1 - d of a layer is absent, for zeta d removed
    links), all of them grow and the rest come from the just-removed links, so the count stays exact.
    ``"after_removal"`` candidates are every non-link after removal (the references' rule). With percolation the
    picks also avoid neurons it cut (never revived, as in the papers), unless that leaves too few.
    """

    def grows(self, kept: Tensor, links: int, kept_links: int | None = None) -> bool:
        return links - (kept_links if kept_links is not None else int(kept.sum())) > 0

    def select(self, r: Regrowth) -> Tensor | Links:
        n_kept = r.n_kept()
        n_grow = r.links - n_kept
        if n_grow <= 0:
            return r.kept
        total = r.old.numel()
        n_absent = total - r.n_old()
        if r.candidates == "after_removal":
            grown = self._pick_outside(r, r.kept, n_grow, total - n_kept)
        elif n_absent >= n_grow:
            grown = self._pick_outside(r, r.old, n_grow, n_absent)
        else:  # every absent link grows, and the rest among the links removed now
            grown = _union(_complement(r.old), self._pick_among(r, _minus(r.old, r.kept), n_grow - n_absent))
        return _union(r.kept, grown)

    @staticmethod
    def _pick_outside(r: Regrowth, excluded: Tensor | Links, k: int, count: int) -> Tensor | Links:
        """``k`` candidates among the positions that are not links of ``excluded`` (``count`` of them)."""
        shape = tuple(r.old.shape)
        alive: Alive = (None, None)
        if r.allowed is not None:  # avoid neurons percolation cut, unless that leaves too few
            n_alive = _count_outside(excluded, r.allowed, shape)
            if n_alive >= k:
                alive, count = r.allowed, n_alive
        if min(k, count) <= 0:
            return _empty_like(r.old)
        links = isinstance(r.old, Links)
        flat = excluded.flat if isinstance(excluded, Links) else true_indices(excluded)
        if r.uniform:
            picked = sample_positions(
                shape, k, flat, r.generator, alive_rows=alive[0], alive_cols=alive[1], count=count
            )
            return Links(picked, shape) if links else _mask_of(picked, shape, r.old.device)
        if links:
            assert r.tiles is not None and isinstance(excluded, Links)
            return Links(select_from_tiles(r.tiles(), shape, k, excluded, r.sampling, r.generator, alive=alive), shape)
        candidates = ~excluded
        if alive != (None, None):
            candidates &= _alive_at(torch.arange(candidates.numel(), device=candidates.device), shape[1], *alive).view(
                shape
            )
        assert r.scores is not None
        return select_regrowth(r.scores, candidates, k, r.sampling, r.generator, count=count)

    @staticmethod
    def _pick_among(r: Regrowth, among: Tensor | Links, k: int) -> Tensor | Links:
        """``k`` candidates among the links of ``among`` (the links removed now, a small set)."""
        if isinstance(among, Links):
            if r.tiles is None:
                scores = torch.zeros(among.count, device=among.device)
            else:
                scores = scores_at(r.tiles(), among)
            picked = select_at(scores, among.flat, k, r.sampling, r.generator)
            return Links(picked.sort().values, among.shape)
        scores = r.scores if r.scores is not None else torch.zeros(among.shape, device=among.device)
        return select_regrowth(scores, among, k, r.sampling, r.generator)

    def __repr__(self) -> str:
        return "Unstructured()"

    def __str__(self) -> str:
        return "unstructured sparsity"


class NM(Constraint):
    """N:M patterns: ``n`` links in every ``m`` (row-wise) or in every row and column of each ``m x m`` block
    (transposable).

    Regrowth keys every position (soft regrowth as ``sampling`` says), scales the keys into [-1, 1], adds a survivor
    boost larger than any block's key sum to the links that survived removal, and takes the best library pattern of
    each block: each block keeps as many survivors as a pattern allows and, among those, the best new links. A
    removed link may come back when its block has no better pattern: the pattern, not a candidate set, decides.
    """

    def __init__(self, n: int, m: int, layout: str = "transposable") -> None:
        self.n, self.m = _check_nm(n, m)
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
        self.layout = layout
        self.density = self.n / self.m

    def shape_error(self, shape: Sequence[int]) -> str | None:
        return nm_shape_error(shape, self.m, self.layout)

    def allows(self, mask: Tensor) -> bool:
        return is_nm(mask, self.n, self.m, self.layout)

    def accepts_init(self, init: Callable[..., Any]) -> bool:
        return getattr(init, "constraint", "unstructured") == "nm"

    def init_kwargs(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m, "layout": self.layout}

    def grows(self, kept: Tensor, links: int, kept_links: int | None = None) -> bool:
        return True  # every block takes its best pattern, whatever was removed

    def select(self, r: Regrowth) -> Tensor:
        keys = regrowth_keys(r.scores.float(), r.sampling, r.generator)
        top = float(keys.abs().max()) if keys.numel() else 0.0
        keys = keys / top if top > 0 else keys  # now in [-1, 1]: a block's pattern sums to at most m*m
        if r.survivor_boost:
            keys = keys + (2 * self.m * self.m + 1) * r.kept  # one more survivor beats any key difference
        return best_nm_mask(keys, self.n, self.m, self.layout)

    def __repr__(self) -> str:
        return f"NM({self.n}, {self.m}, {self.layout!r})"

    def __str__(self) -> str:
        return f"a {self.layout} {self.n}:{self.m} pattern"


def _union(a: Tensor | Links, b: Tensor | Links) -> Tensor | Links:
    return a.union(b) if isinstance(a, Links) else a | b  # type: ignore[arg-type]


def _minus(a: Tensor | Links, b: Tensor | Links) -> Tensor | Links:
    return a.minus(b) if isinstance(a, Links) else a & ~b  # type: ignore[arg-type, operator]


def _complement(a: Tensor | Links) -> Tensor | Links:
    """Every non-link (only for dense-ish layers: for :class:`Links` this lists ``out x in`` positions)."""
    return Links.from_mask(~a.to_mask()) if isinstance(a, Links) else ~a


def _empty_like(a: Tensor | Links) -> Tensor | Links:
    if isinstance(a, Links):
        return Links(a.flat[:0], a.shape)
    return torch.zeros_like(a)


def _mask_of(flat: Tensor, shape: tuple[int, ...], device: torch.device) -> Tensor:
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=device)
    mask[flat] = True
    return mask.view(shape[0], shape[1])


def _count_outside(excluded: Tensor | Links, alive: Alive, shape: tuple[int, ...]) -> int:
    """The positions with alive endpoints that are not links of ``excluded``."""
    flat = excluded.flat if isinstance(excluded, Links) else true_indices(excluded)
    return count_outside((shape[0], shape[1]), flat, *alive)


def constraint_of(pattern: str | None, layout: str = "transposable") -> Constraint:
    """``Unstructured()`` for ``None``, else the :class:`NM` constraint of ``"N:M"``.

    Example:
        >>> constraint_of("1:4", "rowwise")
        NM(1, 4, 'rowwise')
    """
    if pattern is None:
        return Unstructured()
    return NM(*parse_nm(pattern), layout)
