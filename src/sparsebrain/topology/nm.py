"""N:M sparsity patterns: the row-wise and transposable pattern libraries, exact best masks, random masks, checks.

Row-wise N:M keeps ``n`` of every ``m`` consecutive entries along the last (input) dimension. Transposable N:M keeps
exactly ``n`` ones in every row *and* every column of each ``m x m`` block, so that both ``W`` and ``W^T`` are N:M and
the forward and backward GEMMs can both use sparse tensor cores. For 2:4 there are 6 row-wise groups and 90 transposable
blocks; for 1:4 the 24 transposable blocks are the 4x4 permutation matrices.

The best transposable mask for a score matrix is found exactly, block by block, by scoring every pattern of the library
with one batched matmul: ``(H/m, W/m, m*m) @ (m*m, P)`` and an argmax. No Python loop runs over blocks, so this is cheap
on CUDA as well.

Masks are boolean and shaped ``(out, in)``, as ``nn.Linear.weight``.

Example:
    >>> scores = torch.randn(8, 16)
    >>> mask = best_transposable_mask(scores, n=2, m=4)
    >>> is_transposable(mask, n=2, m=4), int(mask.sum())
    (True, 64)
"""

from __future__ import annotations

import functools
import itertools
import operator
from collections.abc import Sequence

import torch

from .initial import INITS, _check_shape

__all__ = [
    "LAYOUTS",
    "best_nm_mask",
    "best_rowwise_mask",
    "best_transposable_mask",
    "is_nm",
    "is_rowwise",
    "is_transposable",
    "nm_magnitude",
    "nm_random",
    "parse_nm",
    "random_nm_mask",
    "random_rowwise_mask",
    "random_transposable_mask",
    "rowwise_patterns",
    "transposable_patterns",
]

Device = torch.device | str | None
LAYOUTS = ("transposable", "rowwise")  # the two N:M layouts every helper below accepts


# ---------------------------------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------------------------------


def _check_nm(n: int, m: int) -> tuple[int, int]:
    """Returns ``(n, m)`` as ints if ``m >= 2`` and ``1 <= n < m``, else raises ``ValueError`` naming both."""
    try:
        if isinstance(n, bool) or isinstance(m, bool):
            raise TypeError
        n, m = operator.index(n), operator.index(m)
    except TypeError:
        raise ValueError(f"n and m must be ints, got n={n!r}, m={m!r}") from None
    if m < 2:
        raise ValueError(f"m must be >= 2, got n={n}, m={m}")
    # n = m is dense and n = 0 is empty: neither is a sparsity pattern, and both usually mean swapped arguments
    if not 1 <= n < m:
        raise ValueError(f"n must satisfy 1 <= n < m, got n={n}, m={m}")
    return n, m


def _check_blocked(shape: Sequence[int], m: int) -> tuple[int, int]:
    """Returns ``shape`` as ``(H, W)`` if both are positive multiples of ``m``, else raises ``ValueError``."""
    msg = f"shape must be (out, in) with both dims positive multiples of m={m}, got shape={tuple(shape)!r}"
    try:
        H, W = _check_shape(shape)
    except ValueError:
        raise ValueError(msg) from None
    if H % m or W % m:
        raise ValueError(msg)
    return H, W


# ---------------------------------------------------------------------------------------------------------------------
# pattern libraries
# ---------------------------------------------------------------------------------------------------------------------


@functools.cache
def _rowwise_library(n: int, m: int) -> torch.Tensor:
    """The cached CPU library of row-wise groups; callers copy it to their device, so it is never mutated."""
    rows = torch.zeros(len(list(itertools.combinations(range(m), n))), m, dtype=torch.bool)
    for i, cols in enumerate(itertools.combinations(range(m), n)):
        rows[i, list(cols)] = True
    return rows


@functools.cache
def _transposable_library(n: int, m: int) -> torch.Tensor:
    """The cached CPU library of transposable blocks, built by depth-first search over rows.

    Rows are chosen from the row-wise library in its order, so the blocks come out in lexicographic order of their
    row indices. Pruning on column counts keeps the search to valid prefixes (90 leaves for 2:4, not 6^4 = 1296).
    """
    rows = [cols for cols in itertools.combinations(range(m), n)]
    found: list[tuple[tuple[int, ...], ...]] = []

    def extend(prefix: list[tuple[int, ...]], col_count: list[int]) -> None:
        if len(prefix) == m:
            found.append(tuple(prefix))
            return
        left = m - len(prefix) - 1  # rows still to place after this one
        for cols in rows:
            counts = col_count.copy()
            for c in cols:
                counts[c] += 1
            # every column must be able to reach exactly n with the rows still to come
            if all(n - left <= k <= n for k in counts):
                extend([*prefix, cols], counts)

    extend([], [0] * m)
    lib = torch.zeros(len(found), m, m, dtype=torch.bool)
    for p, block in enumerate(found):
        for r, cols in enumerate(block):
            lib[p, r, list(cols)] = True
    return lib


def rowwise_patterns(n: int, m: int = 4, *, device: Device = None) -> torch.Tensor:
    """All groups of ``m`` entries with exactly ``n`` ones, in lexicographic order of the kept positions.

    Args:
        n: Ones per group, ``1 <= n < m``.
        m: Group size, ``>= 2``.
        device: Device of the result (CPU by default).

    Returns:
        Bool tensor of shape ``(C(m, n), m)``.

    Raises:
        ValueError: If ``n`` or ``m`` is out of range.

    Example:
        >>> rowwise_patterns(2, 4)[0].tolist()
        [True, True, False, False]
        >>> rowwise_patterns(2, 4).shape
        torch.Size([6, 4])
    """
    n, m = _check_nm(n, m)
    return _rowwise_library(n, m).to(device=device, copy=True)


def transposable_patterns(n: int, m: int = 4, *, device: Device = None) -> torch.Tensor:
    """All ``m x m`` binary blocks with exactly ``n`` ones in every row and every column.

    The order is deterministic: lexicographic in the rows, each row ranked by its position in
    :func:`rowwise_patterns`. The count grows very fast with ``m`` (90 for 2:4, 24 for 1:4 and 3:4, 2,040 for 2:5,
    67,950 for 2:6), so the library is meant for small ``m``.

    Args:
        n: Ones per row and per column, ``1 <= n < m``.
        m: Block size, ``>= 2``.
        device: Device of the result (CPU by default).

    Returns:
        Bool tensor of shape ``(P, m, m)``.

    Raises:
        ValueError: If ``n`` or ``m`` is out of range.

    Example:
        >>> transposable_patterns(2, 4).shape
        torch.Size([90, 4, 4])
        >>> transposable_patterns(1, 4).shape  # the permutation matrices
        torch.Size([24, 4, 4])
    """
    n, m = _check_nm(n, m)
    return _transposable_library(n, m).to(device=device, copy=True)


# ---------------------------------------------------------------------------------------------------------------------
# best masks
# ---------------------------------------------------------------------------------------------------------------------


def best_transposable_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """The transposable N:M mask that maximises the sum of kept scores, solved exactly per ``m x m`` block.

    Each block's pattern is ``argmax_P sum(P * S)`` over :func:`transposable_patterns`; all blocks are scored together
    with one matmul. Ties go to the pattern that comes first in the library (``torch.argmax`` returns the first
    maximum), up to floating-point rounding of the block sums. Infinite scores are clamped to huge finite values so
    that they still dominate without producing ``0 * inf = nan``; NaN scores are not supported.

    Args:
        scores: Tensor of shape ``(out, in)``, both multiples of ``m``; any real dtype, any device.
        n: Ones per row and per column of every block, ``1 <= n < m``.
        m: Block size.

    Returns:
        Bool mask with the shape and device of ``scores``.

    Raises:
        ValueError: If ``n``/``m`` are out of range, or ``scores`` is not 2-D with both dims multiples of ``m``.

    Example:
        >>> mask = best_transposable_mask(torch.randn(16, 32), n=2, m=4)
        >>> is_transposable(mask) and is_transposable(mask.T)
        True
    """
    n, m = _check_nm(n, m)
    H, W = _check_blocked(scores.shape, m)
    # at least float32: half-precision block sums would turn near-ties into spurious ties
    dtype = torch.promote_types(scores.dtype, torch.float32)
    lib = _transposable_library(n, m).to(device=scores.device)  # (P, m, m)
    S = scores.to(dtype)
    if S.is_floating_point():
        # a block sum adds at most m*m terms, so this bound cannot overflow back to inf
        big = torch.finfo(dtype).max / (m * m)
        S = S.clamp(-big, big)
    blocks = S.reshape(H // m, m, W // m, m).permute(0, 2, 1, 3).reshape(H // m, W // m, m * m)  # (Hb, Wb, m*m)
    value = blocks @ lib.reshape(-1, m * m).to(dtype).T  # (Hb, Wb, P)
    best = value.argmax(dim=-1)  # (Hb, Wb)
    return lib[best].permute(0, 2, 1, 3).reshape(H, W)  # (Hb, m, Wb, m) -> (H, W)


def best_rowwise_mask(scores: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """The row-wise N:M mask keeping the ``n`` largest scores of every ``m`` consecutive entries along the last dim.

    Exactly ``n`` entries are kept per group, whatever the ties (``torch.topk`` picks among tied entries).

    Args:
        scores: Tensor of shape ``(..., in)`` with ``in`` a multiple of ``m``.
        n: Entries kept per group, ``1 <= n < m``.
        m: Group size.

    Returns:
        Bool mask with the shape and device of ``scores``.

    Raises:
        ValueError: If ``n``/``m`` are out of range, or the last dim of ``scores`` is not a multiple of ``m``.

    Example:
        >>> best_rowwise_mask(torch.tensor([[0.1, 0.9, 0.5, 0.2]]), n=2, m=4).tolist()
        [[False, True, True, False]]
    """
    n, m = _check_nm(n, m)
    if scores.dim() < 1 or scores.shape[-1] % m or scores.shape[-1] == 0:
        raise ValueError(
            f"the last dim of scores must be a positive multiple of m={m}, got shape={tuple(scores.shape)}"
        )
    groups = scores.reshape(*scores.shape[:-1], -1, m)  # (..., in/m, m)
    keep = groups.topk(n, dim=-1).indices  # (..., in/m, n)
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=scores.device)
    return mask.scatter_(-1, keep, True).reshape(scores.shape)


# ---------------------------------------------------------------------------------------------------------------------
# random masks
# ---------------------------------------------------------------------------------------------------------------------


def random_transposable_mask(
    shape: Sequence[int],
    n: int = 2,
    m: int = 4,
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """A transposable N:M mask with every block drawn independently and uniformly from the pattern library.

    Randomness is drawn on the generator's device (or on ``device`` when no generator is given) and the mask is then
    moved to ``device``, as in :mod:`sparsebrain.topology.initial`: one seeded CPU generator gives the same mask on
    every device.

    Args:
        shape: ``(out, in)``, both positive multiples of ``m``.
        n: Ones per row and per column of every block, ``1 <= n < m``.
        m: Block size.
        generator: Source of randomness.
        device: Device of the result.

    Returns:
        Bool mask of shape ``shape``.

    Raises:
        ValueError: If ``n``/``m`` are out of range, or ``shape`` is not two positive multiples of ``m``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> mask = random_transposable_mask((8, 8), n=2, m=4, generator=g)
        >>> is_transposable(mask), int(mask.sum())
        (True, 32)
    """
    n, m = _check_nm(n, m)
    H, W = _check_blocked(shape, m)
    result = torch.device(device) if device is not None else None
    # draw on the generator's device: torch refuses a generator of another device, and this keeps seeds portable
    work = generator.device if generator is not None else (result or torch.device("cpu"))
    lib = _transposable_library(n, m).to(device=work)  # (P, m, m)
    pick = torch.randint(lib.shape[0], (H // m, W // m), generator=generator, device=work)  # (Hb, Wb)
    mask = lib[pick].permute(0, 2, 1, 3).reshape(H, W)  # (Hb, m, Wb, m) -> (H, W)
    return mask.to(result or work)


# ---------------------------------------------------------------------------------------------------------------------
# checks
# ---------------------------------------------------------------------------------------------------------------------


def is_transposable(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every ``m x m`` block of ``mask`` has exactly ``n`` non-zeros in each row and each column.

    A mask whose shape is not 2-D with both dims multiples of ``m`` is not transposable N:M, and gives ``False``.

    Args:
        mask: Tensor of shape ``(out, in)``; non-zero entries count as kept (a masked weight can be checked directly).
        n: Required non-zeros per block row and block column, ``1 <= n < m``.
        m: Block size.

    Raises:
        ValueError: If ``n`` or ``m`` is out of range.

    Example:
        >>> is_transposable(torch.eye(4, dtype=torch.bool), n=1, m=4)
        True
    """
    n, m = _check_nm(n, m)
    if mask.dim() != 2 or mask.numel() == 0 or mask.shape[0] % m or mask.shape[1] % m:
        return False
    H, W = mask.shape
    blocks = (mask != 0).reshape(H // m, m, W // m, m)  # (Hb, m, Wb, m)
    rows_ok = blocks.sum(dim=3) == n  # (Hb, m, Wb): ones per block row
    cols_ok = blocks.sum(dim=1) == n  # (Hb, Wb, m): ones per block column
    return bool(rows_ok.all() and cols_ok.all())


def is_rowwise(mask: torch.Tensor, n: int = 2, m: int = 4) -> bool:
    """Whether every group of ``m`` consecutive entries along the last dim of ``mask`` has exactly ``n`` non-zeros.

    A mask whose last dim is not a multiple of ``m`` is not row-wise N:M, and gives ``False``.

    Args:
        mask: Tensor of shape ``(..., in)``; non-zero entries count as kept.
        n: Required non-zeros per group, ``1 <= n < m``.
        m: Group size.

    Raises:
        ValueError: If ``n`` or ``m`` is out of range.

    Example:
        >>> is_rowwise(torch.tensor([[1, 0, 1, 0, 0, 1, 1, 0]]), n=2, m=4)
        True
    """
    n, m = _check_nm(n, m)
    if mask.dim() < 1 or mask.numel() == 0 or mask.shape[-1] % m:
        return False
    counts = (mask != 0).reshape(*mask.shape[:-1], -1, m).sum(dim=-1)  # (..., in/m)
    return bool((counts == n).all())


def random_rowwise_mask(
    shape: Sequence[int],
    n: int = 2,
    m: int = 4,
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """A row-wise N:M mask with every group of ``m`` entries drawn uniformly from the ``C(m, n)`` groups.

    Randomness is drawn on the generator's device, as in :func:`random_transposable_mask`.

    Example:
        >>> mask = random_rowwise_mask((4, 8), n=2, m=4, generator=torch.Generator().manual_seed(0))
        >>> is_rowwise(mask), int(mask.sum())
        (True, 16)
    """
    n, m = _check_nm(n, m)
    H, W = _check_shape(shape)
    if W % m:
        raise ValueError(f"shape[1] (in_features) must be a multiple of m={m}, got shape={(H, W)}")
    result = torch.device(device) if device is not None else None
    work = generator.device if generator is not None else (result or torch.device("cpu"))
    lib = _rowwise_library(n, m).to(device=work)  # (P, m)
    pick = torch.randint(lib.shape[0], (H, W // m), generator=generator, device=work)  # (H, W/m)
    return lib[pick].reshape(H, W).to(result or work)


# ---------------------------------------------------------------------------------------------------------------------
# one entry point per operation, for code that takes the layout as a setting
# ---------------------------------------------------------------------------------------------------------------------


def parse_nm(pattern: str) -> tuple[int, int]:
    """``"2:4"`` -> ``(2, 4)``, with ``1 <= n < m`` checked.

    Example:
        >>> parse_nm("1:4")
        (1, 4)
    """
    try:
        n_str, m_str = str(pattern).split(":")
        n, m = int(n_str), int(m_str)
    except ValueError:
        raise ValueError(
            f"pattern must be written 'N:M' with integers 1 <= N < M, e.g. '2:4'; got {pattern!r}"
        ) from None
    return _check_nm(n, m)


def _check_layout(layout: str) -> str:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUTS))}; got {layout!r}")
    return layout


def best_nm_mask(scores: torch.Tensor, n: int, m: int, layout: str = "transposable") -> torch.Tensor:
    """:func:`best_transposable_mask` or :func:`best_rowwise_mask`, chosen by ``layout``.

    Example:
        >>> best_nm_mask(torch.tensor([[0.1, 0.9, 0.5, 0.2]]), 2, 4, "rowwise").tolist()
        [[False, True, True, False]]
    """
    if _check_layout(layout) == "transposable":
        return best_transposable_mask(scores, n, m)
    return best_rowwise_mask(scores, n, m)


def random_nm_mask(
    shape: Sequence[int],
    n: int,
    m: int,
    layout: str = "transposable",
    *,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """:func:`random_transposable_mask` or :func:`random_rowwise_mask`, chosen by ``layout``.

    Example:
        >>> is_nm(random_nm_mask((8, 8), 1, 4, "transposable"), 1, 4, "transposable")
        True
    """
    fn = random_transposable_mask if _check_layout(layout) == "transposable" else random_rowwise_mask
    return fn(shape, n, m, generator=generator, device=device)


def is_nm(mask: torch.Tensor, n: int, m: int, layout: str = "transposable") -> bool:
    """:func:`is_transposable` or :func:`is_rowwise`, chosen by ``layout``.

    Example:
        >>> is_nm(torch.eye(4, dtype=torch.bool), 1, 4, "rowwise")
        True
    """
    if _check_layout(layout) == "transposable":
        return is_transposable(mask, n, m)
    return is_rowwise(mask, n, m)


def nm_shape_error(shape: Sequence[int], m: int, layout: str = "transposable") -> str | None:
    """Why a weight of ``shape`` (out, in) cannot hold an N:M mask of this layout, or None if it can."""
    out_f, in_f = shape
    if layout == "transposable" and (out_f % m or in_f % m):
        return f"both dimensions must be multiples of {m} for a transposable pattern"
    if in_f % m:
        return f"in_features must be a multiple of {m} for a row-wise pattern"
    return None


# ---------------------------------------------------------------------------------------------------------------------
# initial topologies of the N:M constraint (registered inits: the constraint passes n, m and layout)
# ---------------------------------------------------------------------------------------------------------------------


def _check_pattern_density(density: float | None, n: int, m: int) -> None:
    if density is not None and abs(float(density) - n / m) > 1e-9:
        raise ValueError(f"an {n}:{m} pattern has density {n / m:g}, got density={density!r}")


def nm_random(
    shape: Sequence[int],
    density: float | None = None,
    *,
    n: int,
    m: int,
    layout: str = "transposable",
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """A pattern drawn uniformly per block (or group): :func:`random_nm_mask`, as a registered initial topology.

    Example:
        >>> is_nm(nm_random((8, 8), 0.5, n=2, m=4), 2, 4)
        True
    """
    _check_pattern_density(density, n, m)
    return random_nm_mask(shape, n, m, layout, generator=generator, device=device)


def nm_magnitude(
    shape: Sequence[int],
    density: float | None = None,
    *,
    n: int,
    m: int,
    layout: str = "transposable",
    weight: torch.Tensor,
    generator: torch.Generator | None = None,
    device: Device = None,
) -> torch.Tensor:
    """The best pattern of ``|weight|`` (a one-shot magnitude projection: NVIDIA's recipe, eDSrT), as an init.

    Example:
        >>> w = torch.tensor([[0.1, 0.9, 0.5, 0.2]])
        >>> nm_magnitude((1, 4), n=2, m=4, layout="rowwise", weight=w).tolist()
        [[False, True, True, False]]
    """
    _check_pattern_density(density, n, m)
    if tuple(weight.shape) != tuple(shape):
        raise ValueError(f"weight must have the layer's shape {tuple(shape)}, got {tuple(weight.shape)}")
    mask = best_nm_mask(weight.detach().abs(), n, m, layout)
    return mask if device is None else mask.to(device)


for _init in (nm_random, nm_magnitude):
    _init.constraint = "nm"  # type: ignore[attr-defined]  (see topology.constraints: which inits fit which masks)
    INITS.register(_init.__name__, _init)
nm_magnitude.needs_weight = True  # type: ignore[attr-defined]  (the sparsify path passes the layer's weight)
