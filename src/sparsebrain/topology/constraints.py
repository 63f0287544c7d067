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

from .nm import LAYOUTS, _check_nm, best_nm_mask, is_nm, nm_shape_error, parse_nm
from .sampling import regrowth_keys, select_regrowth

__all__ = ["CANDIDATE_RULES", "NM", "Constraint", "Regrowth", "Unstructured", "constraint_of"]

# Which non-links regrowth may pick: links absent before the update, or every non-link after removal.
CANDIDATE_RULES = ("absent", "after_removal")


@dataclass(frozen=True)
class Regrowth:
    """One layer's regrowth request.

    Attributes:
        old: the mask before the update, bool ``(out, in)``.
        kept: the links kept after removal (and percolation), bool ``(out, in)``.
        scores: non-negative regrowth scores at every position ``(out, in)``.
        links: the number of links the layer must have after the update (unstructured constraints).
        sampling: ``"topk"``, ``"multinomial"`` or ``"uniform"`` (see :func:`~sparsebrain.topology.regrowth_keys`).
        generator: the update's random generator on the layer's device.
        allowed: positions percolation leaves regrowable (both endpoints alive), or None.
        candidates: ``"absent"`` or ``"after_removal"`` (see :data:`CANDIDATE_RULES`).
        survivor_boost: N:M: surviving links outrank every candidate.
        old_links, kept_links: the numbers of links of ``old`` and ``kept``, when the caller knows them exactly (each
            saves a host sync); None: counted here.
    """

    old: Tensor
    kept: Tensor
    scores: Tensor
    links: int
    sampling: str = "topk"
    generator: torch.Generator | None = None
    allowed: Tensor | None = None
    candidates: str = "absent"
    survivor_boost: bool = True
    old_links: int | None = None
    kept_links: int | None = None

    def n_old(self) -> int:
        return self.old_links if self.old_links is not None else int(self.old.sum())

    def n_kept(self) -> int:
        return self.kept_links if self.kept_links is not None else int(self.kept.sum())


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

    def select(self, r: Regrowth) -> Tensor:
        n_kept = r.n_kept()
        n_grow = r.links - n_kept
        if n_grow <= 0:
            return r.kept
        absent = ~r.old
        n_absent = r.old.numel() - r.n_old()
        if r.candidates == "after_removal":
            grown = self._pick(r, ~r.kept, n_grow, r.kept.numel() - n_kept)
        elif n_absent >= n_grow:
            grown = self._pick(r, absent, n_grow, n_absent)
        else:
            grown = absent | self._pick(r, r.old & ~r.kept, n_grow - n_absent, None)
        return r.kept | grown

    @staticmethod
    def _pick(r: Regrowth, candidates: Tensor, k: int, count: int | None) -> Tensor:
        if r.allowed is not None:
            allowed = candidates & r.allowed
            n_allowed = int(allowed.sum())
            if n_allowed >= k:
                candidates, count = allowed, n_allowed
        return select_regrowth(r.scores, candidates, k, r.sampling, r.generator, count=count)

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


def constraint_of(pattern: str | None, layout: str = "transposable") -> Constraint:
    """``Unstructured()`` for ``None``, else the :class:`NM` constraint of ``"N:M"``.

    Example:
        >>> constraint_of("1:4", "rowwise")
        NM(1, 4, 'rowwise')
    """
    if pattern is None:
        return Unstructured()
    return NM(*parse_nm(pattern), layout)
