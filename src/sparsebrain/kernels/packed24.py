"""Training with a transposable 2:4 weight on the sparse tensor cores: ``W`` and ``W^T`` compressed, refreshed.

A weight whose mask keeps at most 2 of every 4 consecutive entries along its rows *and* its columns (transposable
2:4, or 1:4) is held twice in cuSPARSELt's compressed form, as ``W`` and as ``W^T``, so that both the forward
``Y = X W^T`` and the input gradient ``dX = dY W`` run on the sparse tensor cores; the weight gradient at the links is
the masked dense ``dY^T X`` (:func:`linear24`). The weights change at every optimizer step, the mask only at topology
updates, and the compressed form splits the same way: its value slots are the kept entries in row-major order, a
prefix of the buffer, and the rest is metadata that depends on the mask alone. So the mask is compressed once per
topology (:class:`Packed24`) and each step only copies the weights into the value slots (:meth:`Packed24.refresh_`:
one Triton kernel for both copies on CUDA, a gather elsewhere), which costs a fraction of compressing ``W`` and ``W^T``.

Every group of 4 holds exactly 2 value slots: a group of the mask with fewer kept entries (1:4, or a group a
rewiring left short) gets slots at its first free positions, holding zeros (:func:`slots`). The layout is
cuSPARSELt's, not a documented one: it is checked once per process against the library's own compression
(:func:`layout_holds`); where it does not hold, :meth:`Packed24.refresh_` compresses instead.

Example (CUDA with cuSPARSELt):
    >>> packed = Packed24(mask, torch.bfloat16)  # doctest: +SKIP
    >>> packed.refresh_(weight)  # after every change of the weights  # doctest: +SKIP
    >>> y = linear24(x, weight, packed, bias)  # doctest: +SKIP
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
    "group_codes",
    "layout_holds",
    "linear24",
    "linear24_reference",
    "slot_layout",
    "slots",
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
    its first free positions), as a bool row of 4 and as the code ``i0 | i1 << 2``; patterns of 3 or 4 kept have
    none (never looked up: :func:`transposable_problem` refuses them first)."""
    table = torch.zeros(16, 4, dtype=torch.bool)
    for pattern in range(16):
        kept = [bool(pattern >> j & 1) for j in range(4)]
        free = [j for j in range(4) if not kept[j]]
        for j in free[: max(0, 2 - sum(kept))]:
            kept[j] = True
        table[pattern] = torch.tensor(kept) if sum(kept) == 2 else False
    where = table.to(torch.uint8)
    first, last = where.argmax(-1), 3 - where.flip(-1).argmax(-1)
    return table, (first | (last << 2)).to(torch.uint8)


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
    """One byte per row group of ``slot_mask`` (exactly 2 of 4 set): ``i0 | i1 << 2`` for its slots ``i0 < i1``.

    Example:
        >>> group_codes(torch.tensor([[False, True, False, True]])).tolist()  # slots 1 and 3
        [[13]]
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
    """A transposable 2:4 weight held for the sparse tensor cores twice, as ``W`` and as ``W^T``.

    Args:
        mask: bool ``(out, in)``, at most 2 kept of every 4 along rows and columns (see
            :func:`transposable_problem`), on a CUDA device; both sides multiples of 16 (cuSPARSELt's minimum).
        dtype: float16 or bfloat16, the products' dtype.
        kernel: ``"triton"`` (the copy kernels, where Triton is installed) or ``"gather"`` (the plain-torch
            reference), for :meth:`refresh_`'s copy into the value slots.
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
        self._positions: tuple[Tensor, Tensor] | None = None

    def positions(self) -> tuple[Tensor, Tensor]:
        """The value slots of ``W`` and of ``W^T`` in their row-major order, as flat positions of ``W`` (int64, 8
        bytes per value: built only for the plain-torch gather)."""
        if self._positions is None:
            out_features, in_features = self.mask.shape
            rows = slots(self.mask).reshape(-1).nonzero().squeeze(1)
            by_col = slots(self.mask.t().contiguous()).reshape(-1).nonzero().squeeze(1)  # as positions of W^T ...
            self._positions = rows, (by_col % out_features) * in_features + by_col // out_features  # ... and of W
        return self._positions

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
    def refresh_(self, weight: Tensor) -> None:
        """Makes the compressed ``W`` and ``W^T`` hold ``weight``'s entries at the slots (in the products' dtype):
        its kept entries, and the zeros it holds off the mask."""
        weight = weight.detach()
        if not self.fast:
            w = (weight * self.mask).to(self.dtype)
            self.packed, self.packed_t = compress(w), compress(w.t())
            return
        n = self.mask.numel() // 2
        values, values_t = self.packed.view(-1)[:n], self.packed_t.view(-1)[:n]
        if self.kernel == "triton":
            _triton().gather_(values, values_t, weight, self.codes, self.codes_t)
        else:
            flat = weight.reshape(-1)
            positions, positions_t = self.positions()
            values.copy_(flat[positions])
            values_t.copy_(flat[positions_t])


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
    """``Y = X W^T + b`` and ``dX = dY W`` on the sparse tensor cores, ``dW = (dY^T X) * mask`` dense."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, x: Tensor, weight: Tensor, bias: Tensor | None, packed: Packed24, sink: list[Tensor] | None
    ) -> Tensor:
        ctx.packed, ctx.sink, ctx.weight_dtype = packed, sink, weight.dtype
        ctx.bias_dtype = bias.dtype if bias is not None else None
        ctx.save_for_backward(x)
        return linear(x, packed.packed, None if bias is None else bias.to(packed.dtype), packed.alg)

    @staticmethod
    def backward(ctx: Any, dy: Tensor) -> tuple[Tensor | None, ...]:
        (x,) = ctx.saved_tensors
        packed = ctx.packed
        dx = linear(dy, packed.packed_t, None, packed.alg_t) if ctx.needs_input_grad[0] else None
        dw = db = None
        if ctx.needs_input_grad[1]:
            dw = torch.empty(packed.mask.shape, dtype=ctx.weight_dtype, device=dy.device)
            torch.mul(dy.t() @ x, packed.mask, out=dw)  # one kernel: masked, and stored in the weight's dtype
            if ctx.sink is not None:
                ctx.sink.append(dw)
                # The sink (the layer's list, until its hook takes it) holds the only other reference: this node
                # must not keep one too, or autograd copies the gradient into .grad instead of taking it.
                ctx.sink = None
        if ctx.needs_input_grad[2]:
            db = dy.sum(0, dtype=torch.float32).to(ctx.bias_dtype)
        return dx, dw, db, None, None


def linear24(
    x: Tensor, weight: Tensor, packed: Packed24, bias: Tensor | None = None, *, sink: list[Tensor] | None = None
) -> Tensor:
    """``x W^T + b`` for the dense ``weight`` held (as of its last :meth:`Packed24.refresh_`) in ``packed``, with
    gradients for ``x``, ``weight`` (masked, in the weight's dtype) and ``bias``; ``x`` is ``(tokens, in)`` in
    ``packed.dtype``. ``sink``, if given, receives the weight's gradient as it is made (so that a hook on the weight
    can tell it is masked already)."""
    return _Linear24.apply(x, weight, bias, packed, sink)


def linear24_reference(x: Tensor, weight: Tensor, mask: Tensor, bias: Tensor | None = None) -> Tensor:
    """The plain-torch definition of :func:`linear24`: the masked dense product."""
    return F.linear(x, (weight * mask).to(x.dtype), None if bias is None else bias.to(x.dtype))
