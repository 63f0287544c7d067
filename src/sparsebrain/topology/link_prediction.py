"""Cannistraci-Hebb (CH) link predictors on the bipartite graph of a sparse layer.

A layer's mask ``M`` of shape ``(out, in)`` is a bipartite graph; an output ``u`` and an input ``i`` are joined only by
paths of length 3, ``u - z1 - z2 - i`` (``z1`` an input, ``z2`` an output). Every predictor returns an ``(out, in)``
score that is 0 at existing links (only non-links are regrowth candidates) and 0 for isolated nodes.

Local community of a candidate (u, i): the intermediate nodes of its L3 paths. For such a node ``z``, ``di(z)`` counts
its links to other community members and ``de(z) = deg(z) - di(z) - 1`` its external links (the ``-1`` is the link to
the seed). In a bipartite layer ``di(z1) = |N(z1) & N(i)|`` and ``di(z2) = |N(z2) & N(u)|``.

- ``ch2_l3n`` / ``ch3_l3n`` (node-based): ``sum_z (1 + di) / (1 + de)`` or ``sum_z 1 / (1 + de)`` over the community;
  dense GEMMs, GPU friendly.
- ``ch2_l3p`` / ``ch3_l3p`` (path-based, exact): ``sum_paths sqrt((1 + di1)(1 + di2) / ((1 + de1)(1 + de2)))`` or
  ``sum_paths 1 / sqrt((1 + de1)(1 + de2))``; one sparse product per chunk, cost proportional to the number of L3 paths.

Example:
    >>> M = torch.tensor([[1, 0], [1, 1]], dtype=torch.bool)  # path u0 - i0 - u1 - i1
    >>> [round(float(f(M)[0, 1]), 4) for f in (ch2_l3n, ch3_l3n, ch2_l3p, ch3_l3p)]  # the only non-link
    [4.0, 2.0, 2.0, 1.0]
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from ..registry import Registry
from .links import Links, ScoreTiles

__all__ = ["LINK_PREDICTORS", "PRECISIONS", "ch2_l3n", "ch2_l3p", "ch3_l3n", "ch3_l3p", "l3n_tiles", "l3p_tiles"]

LINK_PREDICTORS: Registry[Callable[[Tensor], Tensor]] = Registry("link predictor")

_DEFAULT_CHUNK_NNZ = 1 << 22  # L3p: sparse entries built, and output entries computed, per sparse product


def _as_mask(mask: Tensor) -> Tensor:
    """Returns ``mask`` as a 2-D bool tensor (nonzero = link), raising on anything else."""
    if not isinstance(mask, Tensor):
        raise TypeError(f"mask must be a torch.Tensor, got {type(mask).__name__}")
    if mask.dim() != 2:
        raise ValueError(f"mask must be 2-D (out, in), got shape {tuple(mask.shape)}")
    return mask if mask.dtype == torch.bool else mask != 0


def _check_dtype(dtype: torch.dtype) -> None:
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")


# ---------------------------------------------------------------------------------------------------------------------
# Node-based CH-L3n
# ---------------------------------------------------------------------------------------------------------------------


def _node_weights_(C: Tensor, k: Tensor, ch2: bool) -> Tensor:
    """Turns common-neighbour counts ``C[s, z] = di`` into node terms ``f(di, de)`` in place (``C`` is consumed).

    ``k[z]`` is the degree of the intermediate ``z`` (the column), so ``1 + de = k[z] - di``. Pairs with ``di = 0`` are
    not in the local community and get 0. The clamp only matters where ``k[z] - di = 0`` (``z`` entirely inside the
    seed's neighbourhood), which happens only for pairs whose paths end at an existing link, zeroed later.
    """
    denom = (k[None, :] - C).clamp_(min=1)  # 1 + de
    if ch2:
        C.add_(C > 0)  # 1 + di where di > 0, else 0
    else:
        C.gt_(0)  # 1 where di > 0, else 0
    C.div_(denom)
    return C


PRECISIONS = ("auto", "dtype", "bf16x3", "bf16x2")
_BF16_TERMS = {"bf16x3": 3, "bf16x2": 2}
_DEFAULT_TILE_ELEMS = 1 << 24  # L3n: entries of the largest temporary (count or product tile) per GEMM
_TILE_ALIGN = 64  # L3n: tile edges, in elements


def _bf16_gemm_to_fp32_native(device: torch.device) -> bool:
    """Whether torch multiplies bf16 matrices into fp32 results on ``device`` (``aten::mm.dtype``, CUDA)."""
    return device.type == "cuda" and "dtype" in torch.ops.aten.mm.overloads()


def _resolve_precision(precision: str, dtype: torch.dtype, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(map(repr, PRECISIONS))}; got {precision!r}")
    if precision != "auto":
        if precision != "dtype" and dtype != torch.float32:
            raise ValueError(f"precision={precision!r} computes float32 scores; pass dtype=torch.float32 (got {dtype})")
        return precision
    return "bf16x3" if dtype == torch.float32 and _bf16_gemm_to_fp32_native(device) else "dtype"


def _mm_into(out: Tensor, a: Tensor, b: Tensor, accumulate: bool) -> None:
    """``out (+)= a @ b`` with ``out`` in float32 or ``a``'s dtype; bf16 operands accumulate in float32.

    On CUDA the bf16 product runs on the tensor cores straight into float32 (``aten::mm.dtype``); elsewhere it is
    emulated with float32 GEMMs on the same bf16 values (same products, same float32 sums up to their order).
    """
    if a.dtype == out.dtype:
        if accumulate:
            out.addmm_(a, b)
        else:
            torch.mm(a, b, out=out)
        return
    if _bf16_gemm_to_fp32_native(a.device):
        if accumulate:
            torch.ops.aten.addmm.dtype_out(out, a, b, out.dtype, out=out)
        else:
            torch.ops.aten.mm.dtype_out(a, b, out.dtype, out=out)
        return
    a32, b32 = a.to(out.dtype), b.to(out.dtype)
    if accumulate:
        out.addmm_(a32, b32)
    else:
        torch.mm(a32, b32, out=out)


def _split_mm_into(out: Tensor, w: Tensor, m: Tensor, terms: int, w_on_left: bool) -> None:
    """``out += w @ m`` (or ``m @ w``) for float32 ``w`` split into ``terms`` bf16 parts ``w = w1 + w2 + ...``.

    Each part holds the next 8 significant bits of what the earlier ones left out (exact float32 subtractions), so
    three parts carry every bit of a float32 ``w`` and two about 16; ``w`` is consumed. ``terms == 0``: ``w`` is
    used as it is.
    """
    if terms == 0:
        _mm_into(out, w, m, True) if w_on_left else _mm_into(out, m, w, True)
        return
    for t in range(terms):
        part = w.to(torch.bfloat16)
        _mm_into(out, part, m, True) if w_on_left else _mm_into(out, m, part, True)
        if t + 1 < terms:
            w.sub_(part)
        del part


def _degrees(M: Tensor, rows: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Output and input degrees of the bool mask ``M``, summed ``rows`` rows at a time: a bool sum over the whole
    mask may hold an int64 copy of it (8 bytes per entry, 4x the float32 scores)."""
    k_out = torch.empty(M.shape[0], dtype=dtype, device=M.device)
    k_in = torch.zeros(M.shape[1], dtype=dtype, device=M.device)
    for lo in range(0, M.shape[0], rows):
        tile = M[lo : lo + rows]
        k_out[lo : lo + rows] = tile.sum(1)
        k_in += tile.sum(0)
    return k_out, k_in


def _l3n(
    mask: Tensor, ch2: bool, dtype: torch.dtype, precision: str = "auto", tile_elems: int = _DEFAULT_TILE_ELEMS
) -> Tensor:
    M = _as_mask(mask)
    _check_dtype(dtype)
    if isinstance(tile_elems, bool) or not isinstance(tile_elems, int) or tile_elems < 1:
        raise ValueError(f"tile_elems must be an integer >= 1, got {tile_elems!r}")
    precision = _resolve_precision(precision, dtype, M.device)
    terms = _BF16_TERMS.get(precision, 0)
    n_out, n_in = M.shape
    # GEMM operand: 0/1 is exact in bf16, and its counts are exact in float32 accumulation up to 2^24
    Mo = M.to(torch.bfloat16 if terms else dtype)
    S = torch.zeros(n_out, n_in, dtype=dtype, device=M.device)
    if M.numel() == 0:
        return S
    # Tiles bound every temporary (a count tile and a product tile) to about tile_elems entries. Tile edges fall on
    # multiples of 64 elements where they can: a column tile's first element then lies on a 128-byte boundary, which
    # the tensor-core GEMMs need (a misaligned operand sends cuBLAS to slower kernels, or to an aligned copy).
    span = max(n_out, n_in)
    step = max(1, tile_elems // span)
    if step > _TILE_ALIGN:
        step -= step % _TILE_ALIGN
    k_out, k_in = _degrees(M, step, dtype)
    # Output-side intermediates z in N(i): S[r] += A[r] @ M with A[r, z] = f(|N(r) & N(z)|, deg z), z an output.
    for lo in range(0, n_out, step):
        hi = min(lo + step, n_out)
        C = torch.empty(hi - lo, n_out, dtype=dtype, device=M.device)
        _mm_into(C, Mo[lo:hi], Mo.T, False)
        _split_mm_into(S[lo:hi], _node_weights_(C, k_out, ch2), Mo, terms, w_on_left=True)
        del C
    # Input-side intermediates z in N(u): S[:, c] += M @ B[c]^T with B[c, z] = f(|N(c) & N(z)|, deg z), z an input.
    for lo in range(0, n_in, step):
        hi = min(lo + step, n_in)
        C = torch.empty(hi - lo, n_in, dtype=dtype, device=M.device)
        _mm_into(C, Mo[:, lo:hi].T, Mo, False)
        prod = torch.zeros(n_out, hi - lo, dtype=dtype, device=M.device)  # S's column tile is not contiguous
        _split_mm_into(prod, _node_weights_(C, k_in, ch2).T, Mo, terms, w_on_left=False)
        del C
        S[:, lo:hi] += prod
        del prod
    return S.masked_fill_(M, 0)


def ch2_l3n(
    mask: Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    precision: str = "auto",
    tile_elems: int = _DEFAULT_TILE_ELEMS,
) -> Tensor:
    """CH2-L3n node-based scores: ``sum`` over local-community nodes ``z`` of ``(1 + di(z)) / (1 + de(z))``.

    Matrix form (dense GEMMs, ``O(out^2 in + in^2 out)`` time)::

        DD = M M^T, TT = M^T M, A = (DD + [DD > 0]) / (E_D + 1), B = (TT + [TT > 0]) / (E_T + 1)
        S = (A M + (B M^T)^T) * (1 - M)

    computed in row tiles of ``A`` and ``B``, so that beyond the result and one copy of the mask as a GEMM operand
    it holds about ``tile_elems`` entries at a time (``O(out in)`` memory in all). The counts ``DD``, ``TT`` are exact
    (integers, summed in float32 up to 2^24 links per node pair).

    Args:
        mask: ``(out, in)`` mask, bool or numeric (nonzero = link), on any device.
        dtype: floating dtype of the computation and of the result.
        precision: how the GEMMs run. ``"dtype"``: every operand in ``dtype``. ``"bf16x3"``: on the tensor cores,
            the 0/1 mask in bf16 and ``A``, ``B`` as sums of three bf16 parts (every bit of their float32 values),
            accumulated in float32: float32 results up to the order of the sums. ``"bf16x2"``: two parts (about 16
            bits), faster. ``"auto"`` (default): ``"bf16x3"`` on CUDA for float32 (torch >= 2.8), else ``"dtype"``.
            Off CUDA the bf16 variants are emulated with float32 GEMMs (for testing: same values, slower).
        tile_elems: about the most entries of one temporary tile; lower saves memory, higher saves launches.

    Returns:
        ``(out, in)`` scores on ``mask``'s device, 0 at existing links.

    Example:
        >>> ch2_l3n(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
        tensor([[0., 4.],
                [0., 0.]])
    """
    return _l3n(mask, ch2=True, dtype=dtype, precision=precision, tile_elems=tile_elems)


def ch3_l3n(
    mask: Tensor,
    *,
    dtype: torch.dtype = torch.float32,
    precision: str = "auto",
    tile_elems: int = _DEFAULT_TILE_ELEMS,
) -> Tensor:
    """CH3-L3n node-based scores: ``sum`` over local-community nodes ``z`` of ``1 / (1 + de(z))``.

    Same matrix form, tiles, cost and arguments as :func:`ch2_l3n` with ``A = [DD > 0] / (E_D + 1)``,
    ``B = [TT > 0] / (E_T + 1)``.

    Example:
        >>> ch3_l3n(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
        tensor([[0., 2.],
                [0., 0.]])
    """
    return _l3n(mask, ch2=False, dtype=dtype, precision=precision, tile_elems=tile_elems)


# ---------------------------------------------------------------------------------------------------------------------
# Path-based CH-L3p
# ---------------------------------------------------------------------------------------------------------------------


def _path_factors_(C: Tensor, k: Tensor, ch2: bool) -> Tensor:
    """Per-node path factor from common-neighbour counts ``C[s, z] = di(z)`` for seed ``s``, in place.

    CH3: ``1 / sqrt(1 + de)``; CH2: ``sqrt((1 + di) / (1 + de))``, with ``1 + de = k[z] - di``. On a real path
    ``di >= 1`` and ``1 + de >= 1``; the clamp keeps degenerate pairs (paths ending at a link, zeroed later) finite.
    """
    denom = (k[None, :] - C).clamp_(min=1)  # 1 + de
    if ch2:
        return C.add_(1).div_(denom).sqrt_()
    return denom.rsqrt_()


def _expand(ptr: Tensor, keys: Tensor) -> tuple[Tensor, Tensor]:
    """For each key ``k`` lists the CSR positions ``ptr[k] .. ptr[k + 1] - 1``: returns ``(owner, pos)`` flat."""
    start = ptr[keys]
    n = ptr[keys + 1] - start
    total = int(n.sum())  # one host sync, to size the outputs
    owner = torch.repeat_interleave(torch.arange(keys.numel(), device=keys.device), n, output_size=total)
    shift = start - (n.cumsum(0) - n)  # position of each key's first entry minus its first flat index
    return owner, torch.arange(total, device=keys.device) + shift[owner]


@contextlib.contextmanager
def _quiet_sparse() -> Iterator[None]:
    """Silences torch's notices that CSR is beta and that invariant checks are off: our indices are valid by
    construction, and torch goes through CSR internally for a COO product."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        warnings.filterwarnings("ignore", message="Sparse invariant checks are implicitly disabled")
        yield


def _coo(row: Tensor, col: Tensor, val: Tensor, size: tuple[int, int]) -> Tensor:
    """A COO matrix from indices that are sorted and unique by construction (no coalescing, no invariant check).

    COO rather than CSR on purpose: with torch 2.13 on CPU, CSR @ CSR (the MKL path) leaks about the size of its
    right operand at every call, which adds up to gigabytes over one large layer.
    """
    with _quiet_sparse():
        return torch.sparse_coo_tensor(torch.stack([row, col]), val, size, is_coalesced=True, check_invariants=False)


def _spgemm_dense(X: Tensor, Y: Tensor) -> Tensor:
    """Dense ``X @ Y`` of two sparse COO matrices."""
    with _quiet_sparse():
        return torch.sparse.mm(X, Y).to_dense()


def _l3p(mask: Tensor, ch2: bool, dtype: torch.dtype, chunk_nnz: int) -> Tensor:
    M = _as_mask(mask)
    _check_dtype(dtype)
    if isinstance(chunk_nnz, bool) or not isinstance(chunk_nnz, int) or chunk_nnz < 1:
        raise ValueError(f"chunk_nnz must be an integer >= 1, got {chunk_nnz!r}")
    n_out, n_in = M.shape
    device = M.device
    S = torch.zeros(n_out, n_in, dtype=dtype, device=device)
    if n_out == 0 or n_in == 0 or not bool(M.any()):
        return S

    # A path u - z1 - z2 - i contributes a(i, z1) * b(u, z2): the factor of z1 depends on (z1, i) only and that of
    # z2 on (z2, u) only, so S = X @ Y summed over the middle links e = (z2, z1), with
    #   X[u, e] = M[u, z1] * b(u, z2)   (out, E)     Y[e, i] = M[z2, i] * a(i, z1)   (E, in)
    # Both are sparse; their product costs one multiply-add per L3 path.
    Mf = M.to(dtype)
    k_out, k_in = M.sum(1), M.sum(0)  # int64
    b = _path_factors_(Mf @ Mf.T, k_out.to(dtype), ch2)  # (out, out): [u, z2]
    a = _path_factors_(Mf.T @ Mf, k_in.to(dtype), ch2)  # (in, in): [i, z1]
    del Mf

    # Row-major (CSR) links: row_ptr, c_row = input of each link. Column-major links number the middle links e,
    # so that the links of one input z1 are contiguous: col_ptr, (r_col, c_col) = (z2, z1) of link e.
    zero = torch.zeros(1, dtype=torch.long, device=device)
    r_row, c_row = M.nonzero(as_tuple=True)
    row_ptr = torch.cat([zero, k_out.cumsum(0)])
    c_col, r_col = M.T.nonzero(as_tuple=True)
    col_ptr = torch.cat([zero, k_in.cumsum(0)])

    # Chunks of consecutive inputs z1, sized by the sparse entries they create: k_in(z1)^2 in X and
    # sum_{z2 in N(z1)} k_out(z2) in Y. Within a chunk, blocks of output rows bound the product's output
    # (SpGEMM needs tens of bytes per output entry, and the output is nearly dense).
    cost = k_in * k_in + torch.zeros_like(k_in).index_add_(0, c_row, k_out[r_row])
    group = (cost.cumsum(0) - cost) // chunk_nnz  # chunk j: inputs whose cost starts in [j, j + 1) * chunk_nnz
    counts = torch.unique_consecutive(group, return_counts=True)[1]
    bounds = torch.cat([zero, counts.cumsum(0)])
    plan = torch.stack([bounds[:-1], bounds[1:], col_ptr[bounds[:-1]], col_ptr[bounds[1:]]], 1).tolist()
    rows_per_block = max(1, chunk_nnz // n_in)

    for lo, hi, e_lo, e_hi in plan:
        if e_hi == e_lo:
            continue
        # Y chunk (E_c, in): row e = (z2, z1) holds every input i in N(z2), in row-major order.
        z2 = r_col[e_lo:e_hi]
        owner, pos = _expand(row_ptr, z2)
        i = c_row[pos]
        Y = _coo(owner, i, a[i, c_col[e_lo + owner]], (e_hi - e_lo, n_in))
        del owner, pos, i
        r_lo = 0
        while r_lo < n_out:
            r_hi = min(r_lo + rows_per_block, n_out)
            # X block (rows, E_c): row u holds the links e of every input z1 in N(u) & [lo, hi). Row-major
            # enumeration of (u, z1) and contiguous e per z1 keep its entries in row-major order.
            u, z1 = M[r_lo:r_hi, lo:hi].nonzero(as_tuple=True)
            if u.numel() == 0:
                r_lo = r_hi
                continue
            z1 = z1 + lo
            owner, e = _expand(col_ptr, z1)
            u = u[owner]
            X = _coo(u, e - e_lo, b[r_lo + u, r_col[e]], (r_hi - r_lo, e_hi - e_lo))
            del u, z1, owner, e
            try:
                S[r_lo:r_hi] += _spgemm_dense(X, Y)
            except torch.cuda.OutOfMemoryError:
                # cuSPARSE's SpGEMM buffer grows with the block; on a shared or full GPU retry with half the rows.
                del X
                if rows_per_block == 1:
                    raise
                torch.cuda.empty_cache()
                rows_per_block = max(1, rows_per_block // 2)
                continue
            del X
            r_lo = r_hi
    return S.masked_fill_(M, 0)


def ch2_l3p(mask: Tensor, *, dtype: torch.dtype = torch.float32, chunk_nnz: int = _DEFAULT_CHUNK_NNZ) -> Tensor:
    """Exact path-based CH2-L3 scores: ``sum`` over L3 paths ``u - z1 - z2 - i`` of
    ``sqrt((1 + di(z1)) (1 + di(z2)) / ((1 + de(z1)) (1 + de(z2))))``.

    Cost: dense ``M M^T`` and ``M^T M`` (``O(out^2 in + in^2 out)``) plus one multiply-add per L3 path,
    ``sum_{(z2, z1) in links} deg(z1) deg(z2)`` (``O(N d^3)``), done as chunked sparse (COO) products; memory
    ``O(out^2 + in^2 + out in)`` plus about ``chunk_nnz`` sparse entries (and output entries) at a time.
    Measured (torch 2.13): 1568x784 at density 0.01 / 0.05 in about 0.1 s / 0.8 s on 2 CPU cores; 4096x11008 at
    density 0.01 in about 60 s on 2 CPU cores (1.6 GB peak) and 1.1 s on an H100.

    Args:
        mask: ``(out, in)`` mask, bool or numeric (nonzero = link), on any device.
        dtype: floating dtype of the computation and of the result.
        chunk_nnz: about the most sparse entries built, and output entries computed, per sparse product (a
            single node may exceed it); lower it to save memory, raise it to save Python overhead.

    Returns:
        ``(out, in)`` scores on ``mask``'s device, 0 at existing links.

    Example:
        >>> S = ch2_l3p(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))  # path u0 - i0 - u1 - i1
        >>> round(float(S[0, 1]), 4), float(S[0, 0])
        (2.0, 0.0)
    """
    return _l3p(mask, ch2=True, dtype=dtype, chunk_nnz=chunk_nnz)


def ch3_l3p(mask: Tensor, *, dtype: torch.dtype = torch.float32, chunk_nnz: int = _DEFAULT_CHUNK_NNZ) -> Tensor:
    """Exact path-based CH3-L3 scores: ``sum`` over L3 paths ``u - z1 - z2 - i`` of
    ``1 / sqrt((1 + de(z1)) (1 + de(z2)))``. Algorithm, cost and arguments as :func:`ch2_l3p`.

    Example:
        >>> ch3_l3p(torch.tensor([[1, 0], [1, 1]], dtype=torch.bool))
        tensor([[0., 1.],
                [0., 0.]])
    """
    return _l3p(mask, ch2=False, dtype=dtype, chunk_nnz=chunk_nnz)


LINK_PREDICTORS.register("ch2_l3n", ch2_l3n)
LINK_PREDICTORS.register("ch3_l3n", ch3_l3n)
LINK_PREDICTORS.register("ch2_l3p", ch2_l3p)
LINK_PREDICTORS.register("ch3_l3p", ch3_l3p)


# ---------------------------------------------------------------------------------------------------------------------
# CH-L3n from the links alone, in row tiles (layers that store only their links)
# ---------------------------------------------------------------------------------------------------------------------

# Entries of the largest temporary of a links-only tile: 256 MB in float32 on the CPU, 4x that on a GPU. The
# input-side term recomputes its factors once per row tile, so fewer, larger tiles cost proportionally less.
_DEFAULT_LINK_TILE_ELEMS = 1 << 26
_CUDA_TILE_FACTOR = 4


class _LinkGraph:
    """A layer's links in row and column order, with degrees, for the links-only tiles of the CH predictors."""

    def __init__(self, links: Links, tile_elems: int | None, backend: str) -> None:
        self.links, self.backend = links, backend
        if tile_elems is None:
            tile_elems = _DEFAULT_LINK_TILE_ELEMS * (_CUDA_TILE_FACTOR if links.device.type == "cuda" else 1)
        self.tile_elems = tile_elems
        self.n_out, self.n_in = links.shape
        self.step = max(1, tile_elems // max(self.n_out, self.n_in))  # rows of a tile, inputs of a chunk

    def small(self) -> bool:
        """Whether the layer is one tile (computed by the dense predictor on its mask)."""
        return self.n_out * self.n_in <= self.tile_elems or self.links.count == 0

    def prepare(self) -> None:
        device = self.links.device
        self.rows, self.cols = self.links.rows(), self.links.cols()
        self.ones = torch.ones(self.links.count, dtype=torch.float32, device=device)
        self.k_out = torch.bincount(self.rows, minlength=self.n_out)
        self.k_in = torch.bincount(self.cols, minlength=self.n_in)
        zero = torch.zeros(1, dtype=torch.long, device=device)
        self.row_ptr = torch.cat([zero, self.k_out.cumsum(0)])
        self.col_ptr = torch.cat([zero, self.k_in.cumsum(0)])
        perm = torch.sort(self.cols, stable=True).indices  # column order; rows stay increasing within a column
        self.r_col, self.c_col = self.rows[perm], self.cols[perm]  # link e in column order joins (r_col, c_col)
        self.row_bounds, self.col_bounds = self.row_ptr.tolist(), self.col_ptr.tolist()

    def tile_links(self, lo: int, hi: int) -> tuple[Tensor, Tensor]:
        """The links of rows ``lo .. hi - 1``: rows relative to ``lo``, and columns."""
        a, b = self.row_bounds[lo], self.row_bounds[hi]
        return self.rows[a:b] - lo, self.cols[a:b]

    def common_out(self, lo: int, hi: int) -> Tensor:
        """``A[R] A^T`` ``(|R|, out)``: common neighbours of the tile's outputs and every output."""
        from ..kernels import csr_ops

        r, c = self.tile_links(lo, hi)
        x = torch.zeros(self.n_in, hi - lo, device=self.links.device)  # A[R]^T, feature-major
        x[c, r] = 1.0
        return csr_ops.spmm(self.ones, self.row_ptr, self.cols, x, self.n_out, self.backend).t().contiguous()

    def common_in(self, z_lo: int, z_hi: int) -> Tensor:
        """``A^T A[:, Z]`` ``(in, |Z|)``: common neighbours of every input and the chunk's inputs."""
        from ..kernels import csr_ops

        e_lo, e_hi = self.col_bounds[z_lo], self.col_bounds[z_hi]
        x = torch.zeros(self.n_out, z_hi - z_lo, device=self.links.device)  # A[:, Z], feature-major over outputs
        x[self.r_col[e_lo:e_hi], self.c_col[e_lo:e_hi] - z_lo] = 1.0
        return csr_ops.spmm(self.ones, self.col_ptr, self.r_col, x, self.n_in, self.backend)

    def tiles(self) -> Iterator[tuple[int, int, Tensor, Tensor]]:
        """Row tiles ``(lo, hi, r, c)``: bounds and the tile's links (relative rows, columns)."""
        for lo in range(0, self.n_out, self.step):
            hi = min(lo + self.step, self.n_out)
            yield lo, hi, *self.tile_links(lo, hi)

    def chunks(self, c: Tensor) -> Iterator[tuple[int, int, Tensor]]:
        """Input chunks ``(z_lo, z_hi, inside)`` that hold some of the tile's links ``c`` (``inside``: which)."""
        for z_lo in range(0, self.n_in, self.step):
            z_hi = min(z_lo + self.step, self.n_in)
            inside = (c >= z_lo) & (c < z_hi)
            if bool(inside.any()):
                yield z_lo, z_hi, inside


def l3n_tiles(links: Links, *, ch2: bool = True, tile_elems: int | None = None, backend: str = "auto") -> ScoreTiles:
    """Row tiles ``(lo, hi, S[lo:hi])`` of :func:`ch2_l3n` (``ch2``) or :func:`ch3_l3n` scores, from the links alone.

    No ``(out, in)`` tensor is built: each tile's two terms are sparse-dense products over the links
    (:func:`sparsebrain.kernels.csr_ops.spmm`). With ``A`` the layer's 0/1 links and ``R`` the tile's rows:

    - output side: ``C = A[R] A^T`` (common neighbours of ``u`` and every output), ``S[R] += f(C) A``;
    - input side, per chunk ``Z`` of inputs: ``C' = A^T A[:, Z]``, ``S[R] += A[R, Z] f(C')^T``,

    ``f`` the node term of :func:`ch2_l3n` / :func:`ch3_l3n`. Counts are exact in float32; the sums are float32 in
    another order than the dense GEMMs'. Cost per tile about ``4 nnz |R| + 2 nnz in`` multiply-adds; every
    temporary holds at most about ``tile_elems`` entries (default ``2^26``, ``2^28`` on CUDA). A layer of at most
    ``tile_elems`` positions is one tile, computed by the dense predictor on its mask (the masked storage's numbers).

    Example:
        >>> links = Links.from_mask(torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) < 0.4)
        >>> (lo, hi, S), = l3n_tiles(links)
        >>> bool(torch.equal(S, ch2_l3n(links.to_mask())))
        True
    """
    from ..kernels import csr_ops

    g = _LinkGraph(links, tile_elems, backend)
    if g.small():
        yield 0, g.n_out, (ch2_l3n if ch2 else ch3_l3n)(links.to_mask(), tile_elems=g.tile_elems)
        return
    g.prepare()
    for lo, hi, r, c in g.tiles():
        w = _node_weights_(g.common_out(lo, hi), g.k_out.float(), ch2)  # (|R|, out)
        S = csr_ops.transpose(csr_ops.spmm(g.ones, g.col_ptr, g.r_col, w.t().contiguous(), g.n_in, backend), backend)
        del w
        for z_lo, z_hi, inside in g.chunks(c):
            bz = _node_weights_(g.common_in(z_lo, z_hi), g.k_in[z_lo:z_hi].float(), ch2).t().contiguous()  # (|Z|, in)
            rz, cz = r[inside], c[inside] - z_lo  # A[R, Z] in CSR order (rows increasing, columns within)
            ptr = torch.zeros(hi - lo + 1, dtype=torch.long, device=links.device)
            ptr[1:] = torch.bincount(rz, minlength=hi - lo).cumsum(0)
            S += csr_ops.spmm(g.ones[: rz.numel()], ptr, cz, bz, hi - lo, backend)
            del bz
        S.view(-1)[r * g.n_in + c] = 0.0  # existing links are not candidates
        yield lo, hi, S


def l3p_tiles(links: Links, *, ch2: bool = False, tile_elems: int | None = None, backend: str = "auto") -> ScoreTiles:
    """Row tiles ``(lo, hi, S[lo:hi])`` of :func:`ch3_l3p` (or :func:`ch2_l3p` with ``ch2``) scores, from the links.

    The path-based sum of :func:`ch3_l3p`, ``S = X @ Y`` over the middle links ``e = (z2, z1)``, taken a row tile
    ``R`` and a chunk ``Z`` of inputs ``z1`` at a time: the output factors ``b(u, z2)`` of the tile from
    ``A[R] A^T``, the input factors ``a(i, z1)`` of the chunk from ``A^T A[:, Z]`` (sparse-dense products over the
    links, as in :func:`l3n_tiles`), then one sparse product ``X[R, e] Y[e, :]`` per chunk. Every temporary is
    bounded by about ``tile_elems`` entries (plus the chunk's L3 paths); a layer of at most ``tile_elems`` positions
    is one tile, computed by the dense predictor on its mask.

    Example:
        >>> links = Links.from_mask(torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) < 0.4)
        >>> (lo, hi, S), = l3p_tiles(links)
        >>> bool(torch.equal(S, ch3_l3p(links.to_mask())))
        True
    """
    g = _LinkGraph(links, tile_elems, backend)
    if g.small():
        yield 0, g.n_out, (ch2_l3p if ch2 else ch3_l3p)(links.to_mask())
        return
    g.prepare()
    for lo, hi, r, c in g.tiles():
        b = _path_factors_(g.common_out(lo, hi), g.k_out.float(), ch2)  # (|R|, out): [u, z2]
        S = torch.zeros(hi - lo, g.n_in, device=links.device)
        for z_lo, z_hi, inside in g.chunks(c):
            e_lo, e_hi = g.col_bounds[z_lo], g.col_bounds[z_hi]
            a = _path_factors_(g.common_in(z_lo, z_hi), g.k_in[z_lo:z_hi].float(), ch2)  # (in, |Z|): [i, z1]
            # Y (E_c, in): row e = (z2, z1) holds every input i of z2, with a(i, z1)
            owner, pos = _expand(g.row_ptr, g.r_col[e_lo:e_hi])
            i = g.cols[pos]
            Y = _coo(owner, i, a[i, g.c_col[e_lo + owner] - z_lo], (e_hi - e_lo, g.n_in))
            del owner, pos, i, a
            # X (|R|, E_c): row u holds the middle links e of every z1 in N(u) & Z, with b(u, z2)
            owner, e = _expand(g.col_ptr, c[inside])
            u = r[inside][owner]
            X = _coo(u, e - e_lo, b[u, g.r_col[e]], (hi - lo, e_hi - e_lo))
            del owner, e
            S += _spgemm_dense(X, Y)
            del X, Y
        S.view(-1)[r * g.n_in + c] = 0.0  # existing links are not candidates
        yield lo, hi, S
