"""Training with a transposable 2:4 weight on the sparse tensor cores: its value slots trained, ``W`` and ``W^T``
compressed from them.

A weight whose mask keeps at most 2 of every 4 consecutive entries along its rows *and* its columns (transposable
2:4, or 1:4) is held twice in cuSPARSELt's compressed form, as ``W`` and as ``W^T``, so that both the forward
``Y = X W^T`` and the input gradient ``dX = dY W`` run on the sparse tensor cores (:func:`linear24`). The trainable
parameter is the weight's *value slots*: ``(out, in / 2)``, two per group of 4 along the rows, in row-major order,
which is the first part of the compressed ``W`` (the rest is metadata that depends on the mask alone). So the mask
is compressed once per topology (:class:`Packed24`); each step copies the slots into ``W``'s compressed form and
permutes them into ``W^T``'s (:meth:`Packed24.refresh_`), and the weight gradient is the dense ``dY^T X`` read at
the slots (:meth:`Packed24.slot_grad`): one Triton kernel each on CUDA, index gathers elsewhere. The optimizer then
holds half the entries of the dense weight, and nothing off the slots exists.

Every group of 4 holds exactly 2 value slots: a group of the mask with fewer kept entries (1:4, or a group a
rewiring left short) gets slots at its first free positions, which are not links and hold zeros (:func:`slots`;
:func:`slot_masks` says which slots are links). The layout is cuSPARSELt's, not a documented one: it is checked
once per process against the library's own compression (:func:`layout_holds`); where it does not hold,
:meth:`Packed24.refresh_` compresses instead.

Example (CUDA with cuSPARSELt):
    >>> packed = Packed24(mask, torch.bfloat16)  # doctest: +SKIP
    >>> packed.refresh_(values)  # after every change of the value slots  # doctest: +SKIP
    >>> y = linear24(x, values, packed, bias)  # doctest: +SKIP
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from ..topology.nm import best_transposable_mask
from .cusparselt import compress, linear, search

__all__ = [
    "Packed24",
    "dense_from_slots",
    "group_codes",
    "layout_holds",
    "linear24",
    "linear24_reference",
    "link_index",
    "slot_layout",
    "slot_masks",
    "slots",
    "slots_from_dense",
    "transposable_problem",
]


def transposable_problem(mask: Tensor) -> str | None:
    """Why ``mask`` (bool ``(out, in)``) cannot be held as transposable 2:4, or None if it can: at most 2 kept of
    every 4 consecutive entries of each row and of each column.

    Example:
        >>> transposable_problem(torch.ones(4, 8, dtype=torch.bool))
        'up to 4 of every 4 consecutive entries are kept along rows and columns; at most 2 can be'
    """
    out_features, in_features = mask.shape
    if out_features % 4 or in_features % 4:
        return f"shape (out, in) = {(out_features, in_features)} is not made of 4 x 4 blocks"
    along_rows = int(mask.reshape(out_features, in_features // 4, 4).sum(-1).max()) if mask.numel() else 0
    along_cols = int(mask.reshape(out_features // 4, 4, in_features).sum(1).max()) if mask.numel() else 0
    if max(along_rows, along_cols) <= 2:
        return None
    sides = " and ".join(s for s, k in (("rows", along_rows), ("columns", along_cols)) if k > 2)
    most = max(along_rows, along_cols)
    return f"up to {most} of every 4 consecutive entries are kept along {sides}; at most 2 can be"


def _completions() -> tuple[Tensor, Tensor]:
    """Per 4-bit group pattern ``m0 + 2 m1 + 4 m2 + 8 m3``: its slots (the pattern completed to exactly 2 kept by
    its first free positions), as a bool row of 4, and its code ``i0 | i1 << 2 | k0 << 4 | k1 << 5`` (slots
    ``i0 < i1``; ``k0``, ``k1``: whether each is kept); patterns of 3 or 4 kept have none (never looked up:
    :func:`transposable_problem` refuses them first)."""
    table = torch.zeros(16, 4, dtype=torch.bool)
    for pattern in range(16):
        kept = [bool(pattern >> j & 1) for j in range(4)]
        free = [j for j in range(4) if not kept[j]]
        for j in free[: max(0, 2 - sum(kept))]:
            kept[j] = True
        table[pattern] = torch.tensor(kept) if sum(kept) == 2 else False
    where = table.to(torch.uint8)
    first, last = where.argmax(-1), 3 - where.flip(-1).argmax(-1)
    patterns = torch.arange(16)
    k0, k1 = (patterns >> first) & 1, (patterns >> last) & 1
    return table, (first | (last << 2) | (k0 << 4) | (k1 << 5)).to(torch.uint8)


_TABLES: dict[torch.device, tuple[Tensor, Tensor]] = {}


def _patterns(groups: Tensor, axis: int) -> Tensor:
    """The 4-bit pattern of each group of 4 along ``axis`` of the bool ``groups``, as int64 indices."""
    weights = torch.tensor([1, 2, 4, 8], dtype=torch.uint8, device=groups.device)
    shape = [1] * groups.dim()
    shape[axis] = 4
    return (groups.to(torch.uint8) * weights.view(shape)).sum(axis, dtype=torch.uint8).long()


def _tables(device: torch.device) -> tuple[Tensor, Tensor]:
    if device not in _TABLES:
        _TABLES[device] = tuple(t.to(device) for t in _completions())  # type: ignore[assignment]
    return _TABLES[device]


def slots(mask: Tensor) -> Tensor:
    """The value slots of ``mask``'s row groups: ``mask`` (at most 2 kept per group of 4 along each row) with each
    group completed to exactly 2 by its first free positions.

    Example:
        >>> slots(torch.tensor([[True, False, False, False, False, False, True, True]])).int().tolist()
        [[1, 1, 0, 0, 0, 0, 1, 1]]
    """
    out_features, in_features = mask.shape
    table, _ = _tables(mask.device)
    return table[_patterns(mask.reshape(out_features, in_features // 4, 4), 2)].reshape(mask.shape)


def group_codes(slot_mask: Tensor) -> Tensor:
    """One byte per row group of ``slot_mask`` (exactly 2 of 4 set): ``i0 | i1 << 2 | 1 << 4 | 1 << 5`` for its
    slots ``i0 < i1`` (both kept: the codes of a mask's own groups, from :func:`slot_layout`, say which are).

    Example:
        >>> group_codes(torch.tensor([[False, True, False, True]])).tolist()  # slots 1 and 3
        [[61]]
    """
    out_features, in_features = slot_mask.shape
    _, codes = _tables(slot_mask.device)
    return codes[_patterns(slot_mask.reshape(out_features, in_features // 4, 4), 2)]


def slot_layout(mask: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Everything :class:`Packed24` derives from a mask, in one pass over it: the codes of ``W``'s row groups
    (``(out, in / 4)``) and of its column groups (``(out / 4, in)``), and the slot masks of ``W`` (``(out, in)``) and
    of ``W^T`` (``(in, out)``); what :func:`group_codes` of :func:`slots` gives for ``mask`` and for ``mask.t()``."""
    out_features, in_features = mask.shape
    table, codes = _tables(mask.device)
    by_row = _patterns(mask.reshape(out_features, in_features // 4, 4), 2)  # (out, in/4)
    by_col = _patterns(mask.reshape(out_features // 4, 4, in_features), 1)  # (out/4, in)
    rows = table[by_row].reshape(mask.shape)
    cols_t = table[by_col].permute(1, 0, 2).reshape(in_features, out_features)
    return codes[by_row], codes[by_col], rows, cols_t


def slot_masks(mask: Tensor) -> tuple[Tensor, Tensor]:
    """``(slot, kept)``: the value slots of ``mask``'s row groups, bool ``(out, in)`` (:func:`slots`), and which of
    them are links, bool ``(out, in / 2)`` in the slots' row-major order.

    Example:
        >>> slot, kept = slot_masks(torch.tensor([[True, False, False, False]]))
        >>> slot.int().tolist(), kept.int().tolist()
        ([[1, 1, 0, 0]], [[1, 0]])
    """
    slot = slots(mask)
    return slot, mask[slot].view(mask.shape[0], mask.shape[1] // 2)


def dense_from_slots(values: Tensor, slot: Tensor, kept: Tensor) -> Tensor:
    """The dense ``(out, in)`` weight of the value slots ``values`` (``(out, in / 2)``): zero off the links
    (``slot``, ``kept`` from :func:`slot_masks`); differentiable in ``values`` (zero gradient at slots that are not
    links).

    Example:
        >>> slot, kept = slot_masks(torch.tensor([[True, False, False, True]]))
        >>> dense_from_slots(torch.tensor([[2.0, 3.0]]), slot, kept).tolist()
        [[2.0, 0.0, 0.0, 3.0]]
    """
    held = values * kept  # slots that are not links count as zero, whatever they hold
    return torch.zeros(slot.shape, dtype=values.dtype, device=values.device).masked_scatter(slot, held)


def slots_from_dense(weight: Tensor, slot: Tensor, kept: Tensor) -> Tensor:
    """The value slots ``(out, in / 2)`` of the dense ``(out, in)`` ``weight`` (``slot``, ``kept`` from
    :func:`slot_masks`): its entries at the slots, zero at slots that are not links; the inverse of
    :func:`dense_from_slots`.

    Example:
        >>> slot, kept = slot_masks(torch.tensor([[True, False, False, True]]))
        >>> slots_from_dense(torch.tensor([[2.0, 5.0, 0.0, 3.0]]), slot, kept).tolist()
        [[2.0, 3.0]]
    """
    return (weight[slot] * kept.reshape(-1)).view(kept.shape)


def link_index(slot: Tensor, kept: Tensor) -> tuple[Tensor, Tensor]:
    """Where each link's value is among the value slots: for every flat position of ``W``, the index of its slot in
    row-major slot order if it is a link, else -1 (int64, ``out * in``); and the flat positions of the slots.

    Example:
        >>> index, positions = link_index(*slot_masks(torch.tensor([[True, False, False, True]])))
        >>> index.tolist(), positions.tolist()
        ([0, -1, -1, 1], [0, 3])
    """
    positions = slot.reshape(-1).nonzero().squeeze(1)
    links = kept.reshape(-1)
    index = torch.full((slot.numel(),), -1, dtype=torch.int64, device=slot.device)
    index[positions[links]] = torch.arange(positions.numel(), device=slot.device)[links]
    return index, positions


# (out, in, tokens, dtype, device) -> the algorithms of X W^T and dY W (a model has a few shapes and many layers)
_SEARCHED: dict[tuple[Any, ...], tuple[int, int]] = {}


@functools.cache
def _triton() -> Any:
    try:
        from . import packed24_triton
    except ImportError:
        return None
    return packed24_triton


class Packed24:
    """A transposable 2:4 weight held for the sparse tensor cores twice, as ``W`` and as ``W^T``, refreshed from its
    value slots.

    Args:
        mask: bool ``(out, in)``, at most 2 kept of every 4 along rows and columns (see
            :func:`transposable_problem`), on a CUDA device; both sides multiples of 16 (cuSPARSELt's minimum).
        dtype: float16 or bfloat16, the products' dtype.
        kernel: ``"triton"`` (the copy kernels, where Triton is installed) or ``"gather"`` (the plain-torch
            reference), for :meth:`refresh_` and :meth:`slot_grad`.
    """

    def __init__(self, mask: Tensor, dtype: torch.dtype, *, kernel: str = "triton") -> None:
        problem = transposable_problem(mask)
        if problem is not None:
            raise ValueError(f"Packed24: the mask cannot be held as transposable 2:4: {problem}")
        if kernel not in ("triton", "gather"):
            raise ValueError(f"kernel must be one of 'triton', 'gather'; got {kernel!r}")
        self.mask, self.dtype = mask, dtype
        self.codes, self.codes_t, rows, cols_t = slot_layout(mask)
        self.kernel = kernel if _triton() is not None else "gather"
        self.packed = compress(rows.to(dtype))
        self.packed_t = compress(cols_t.to(dtype))
        shape = (int(mask.shape[0]), int(mask.shape[1]))
        self.fast = layout_holds(dtype, mask.device, shape) and layout_holds(dtype, mask.device, shape[::-1])
        self.alg = self.alg_t = 0
        self._indices: tuple[Tensor, Tensor, Tensor] | None = None

    def indices(self) -> tuple[Tensor, Tensor, Tensor]:
        """For the plain-torch gathers (8 bytes per slot, built only for them): the flat positions of ``W``'s value
        slots, which of them are links (bool), and for each value slot of ``W^T`` the index of the same link among
        ``W``'s slots (-1 where that slot is not a link)."""
        if self._indices is None:
            out_features, in_features = self.mask.shape
            slot, kept = slot_masks(self.mask)
            index, rows = link_index(slot, kept)
            by_col = slots(self.mask.t().contiguous()).reshape(-1).nonzero().squeeze(1)  # positions of W^T ...
            at = (by_col % out_features) * in_features + by_col // out_features  # ... as positions of W
            self._indices = rows, kept.reshape(-1), index[at]
        return self._indices

    def search_(self, tokens: int) -> None:
        """Picks the fastest algorithm of both products for ``tokens`` rows of input (searched once per shape)."""
        out_features, in_features = self.mask.shape
        key = (out_features, in_features, tokens, self.dtype, self.mask.device)
        if key not in _SEARCHED:  # the choice depends on the shapes alone: layers of one shape share one search
            x = torch.randn(tokens, in_features, device=self.mask.device).to(self.dtype)
            dy = torch.randn(tokens, out_features, device=self.mask.device).to(self.dtype)
            _SEARCHED[key] = search(self.packed, x), search(self.packed_t, dy)
        self.alg, self.alg_t = _SEARCHED[key]

    @torch.no_grad()
    def refresh_(self, values: Tensor) -> None:
        """Makes the compressed ``W`` and ``W^T`` hold the value slots ``values`` (``(out, in / 2)``, any float
        dtype), in the products' dtype; slots that are not links hold zeros."""
        values = values.detach()
        if not self.fast:
            w = dense_from_slots(values, *slot_masks(self.mask)).to(self.dtype)
            self.packed, self.packed_t = compress(w), compress(w.t())
            return
        n = self.mask.numel() // 2
        prefix, prefix_t = self.packed.view(-1)[:n], self.packed_t.view(-1)[:n]
        if self.kernel == "triton":
            _triton().spread_(prefix, prefix_t, values.contiguous(), self.codes, self.codes_t)
        else:
            _, kept, to_w = self.indices()
            flat = values.reshape(-1) * kept
            prefix.copy_(flat)
            prefix_t.copy_(flat[to_w.clamp(min=0)].masked_fill_(to_w < 0, 0))

    def slot_grad(self, dense: Tensor, dtype: torch.dtype) -> Tensor:
        """The dense ``(out, in)`` gradient ``dense`` read at the value slots, ``(out, in / 2)`` in ``dtype``; zero
        at slots that are not links."""
        out_features, in_features = self.mask.shape
        if self.kernel == "triton":
            grad = torch.empty(out_features, in_features // 2, dtype=dtype, device=dense.device)
            _triton().slot_gather_(grad, dense.contiguous(), self.codes)
            return grad
        rows, kept, _ = self.indices()
        return (dense.reshape(-1)[rows] * kept).to(dtype).view(out_features, in_features // 2)


@functools.cache
def layout_holds(dtype: torch.dtype, device: torch.device, shape: tuple[int, int] = (64, 128)) -> bool:
    """Whether cuSPARSELt's compressed 2:4 form of a ``shape`` weight is the kept entries in row-major order followed
    by metadata that depends on the mask alone (what :class:`Packed24` relies on), on a random probe of that shape:
    value slots bit-equal and the product right."""
    g = torch.Generator(device=device).manual_seed(0)
    w = torch.randn(shape, generator=g, device=device)
    mask = best_transposable_mask(w.abs(), 2, 4)
    w = (w * mask + mask * 1e-3).to(dtype)  # no kept entry exactly 0
    packed = compress(mask.to(dtype))
    n = int(mask.sum())
    packed.view(-1)[:n] = w.reshape(-1)[mask.reshape(-1)]
    reference = compress(w)
    x = torch.randn(32, shape[1], generator=g, device=device).to(dtype)
    same_product = torch.allclose(linear(x, packed, None, 0).float(), F.linear(x, w).float(), rtol=1e-2, atol=1e-2)
    return bool(torch.equal(packed.view(-1)[:n], reference.view(-1)[:n])) and same_product


class _Linear24(torch.autograd.Function):
    """``Y = X W^T + b`` and ``dX = dY W`` on the sparse tensor cores; the value slots' gradient is ``dY^T X`` (dense)
    read at the slots."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, values: Tensor, bias: Tensor | None, packed: Packed24
    ) -> Tensor:
        ctx.packed, ctx.values_dtype = packed, values.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(x)
        return linear(x, packed.packed, None if bias is None else bias.to(packed.dtype), packed.alg)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        packed = ctx.packed
        dx = linear(dy, packed.packed_t, None, packed.alg_t) if ctx.needs_input_grad[0] else None
        dv = packed.slot_grad(dy.t() @ x, ctx.values_dtype) if ctx.needs_input_grad[1] else None
        db = dy.sum(0, dtype=torch.float32).to(ctx.bias_dtype) if ctx.needs_input_grad[2] else None
        return dx, dv, db, None


def linear24(x: Tensor, values: Tensor, packed: Packed24, bias: Tensor | None = None) -> Tensor:
    """``x W^T + b`` for the weight whose value slots ``values`` (``(out, in / 2)``) ``packed`` holds (as of its last
    :meth:`Packed24.refresh_`), with gradients for ``x``, ``values`` (in their dtype, zero at slots that are not
    links) and ``bias``; ``x`` is ``(tokens, in)`` in ``packed.dtype``."""
    return _Linear24.apply(x, values, bias, packed)


def linear24_reference(x: Tensor, values: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
    """The plain-torch definition of :func:`linear24`: the dense product with the weight of the slots."""
    w = dense_from_slots(values, *slot_masks(mask))
    return F.linear(x, w.to(x.dtype), None if bias is None else bias.to(x.dtype))
