"""CompressedSparseLinear: a sparse layer that stores only its active links, so memory shrinks with density.

The links are kept in CSR order (sorted by row, then column): a Parameter ``values`` of ``nnz`` entries and two
index buffers ``rows`` and ``cols`` (int32 while the layer's sides and link count fit, else int64). The weight's
gradient, and the optimizer's momentum or Adam moments, then have ``nnz`` entries too, instead of ``out x in``.
The three products of a training step run on the links alone (:mod:`sparsebrain.kernels.csr_ops`): the forward
``Y = X W^T`` and the input gradient ``dX = dY W`` as sparse-dense products, the weight gradient as a product
sampled at the links, ``dW[l] = (dY^T X)[rows[l], cols[l]]``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..kernels import csr_ops
from ..topology.links import Links
from .layer import LAYERS, SparseLayer, StateMoved
from .sharding import full, is_sharded, write_full_

if TYPE_CHECKING:
    from ..topology.constraints import Constraint

__all__ = ["CompressedSparseLinear", "dense_from_links", "index_dtype_for"]

_INT32_LIMIT = 2**31 - 1
_INDEX_DTYPES = ("auto", "int32", "int64")


def index_dtype_for(shape: tuple[int, int], nnz: int, index_dtype: str = "auto", *, name: str = "") -> torch.dtype:
    """The dtype of a compressed layer's indices: int32 while its sides and link count fit in it, else int64.

    ``index_dtype``: ``"auto"``, or ``"int32"`` / ``"int64"`` to insist (``"int32"`` raises where it does not fit).

    Example:
        >>> index_dtype_for((4, 8), 10)
        torch.int32
    """
    _check_names(index_dtype, "auto")
    fits = max(shape[0], shape[1], nnz) <= _INT32_LIMIT
    if index_dtype == "int32" and not fits:
        where = f"layer {name!r}: " if name else ""
        raise ValueError(
            f"{where}shape {shape} with {nnz} links does not fit int32 indices; pass index_dtype='int64' (or 'auto')"
        )
    return torch.int64 if index_dtype == "int64" or not fits else torch.int32


def _autocast_dtype(device: str) -> torch.dtype | None:
    """The dtype autocast computes linear layers in on ``device``, or None when it is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
    if device == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None


class _LinkLinear(torch.autograd.Function):
    """``Y = X W^T`` for ``W`` given by its links, with both gradients computed on the links alone."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, values: Tensor, layer: CompressedSparseLinear) -> Tensor:
        csr, csc = layer._csr(), layer._csc()
        ctx.layer, ctx.csr, ctx.csc, ctx.values_dtype = layer, csr, csc, values.dtype
        x_t = csr_ops.transpose(x, layer.backend)  # feature-major, kept for the weight gradient instead of x
        ctx.save_for_backward(x_t, values)
        y_t = csr_ops.spmm(values, csr[0], csr[1], x_t, layer.out_features, layer.backend)
        return csr_ops.transpose(y_t, layer.backend)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x_t, values = ctx.saved_tensors
        layer = ctx.layer
        row_ptr, cols, rows = ctx.csr
        col_ptr, csc_rows, perm = ctx.csc
        grad_t = csr_ops.transpose(grad, layer.backend)
        dx = dw = None
        if ctx.needs_input_grad[0]:  # dX^T = W^T dY^T: the rows of W^T are W's links in column order
            dx_t = csr_ops.spmm(values[perm], col_ptr, csc_rows, grad_t, layer.in_features, layer.backend)
            dx = csr_ops.transpose(dx_t, layer.backend)
        if ctx.needs_input_grad[1]:
            dw = csr_ops.sddmm(grad_t, x_t, rows, cols, row_ptr, layer.backend)
            if layer._capture:  # a gradient-based rule scores every position: keep what its tiles are made of
                layer._captured.append((grad_t, x_t))
                layer._link_grad = dw.clone() if layer._link_grad is None else layer._link_grad + dw
            dw = dw.to(ctx.values_dtype)
        return dx, dw, None


class CompressedSparseLinear(SparseLayer):
    """A linear layer ``y = x W^T + b`` that holds only its links: memory and work that shrink with density.

    Built directly (``density``: random links placed uniformly, without ever allocating the dense weight; ``mask``:
    the links of a bool ``(out, in)`` mask) or from an ``nn.Linear`` by :func:`~sparsebrain.nn.sparsify_` with
    ``storage="compressed"``. Under autocast the products run in the autocast dtype with float32 accumulation; the
    values stay in their own dtype (the float32 master weights of mixed precision).

    Args:
        in_features, out_features: the sides of the layer.
        bias: whether the layer has a bias.
        density: fraction of the ``out x in`` positions that are links (``round(density * out * in)`` of them).
        mask: bool ``(out, in)``, the links; exclusive with ``density``.
        device, dtype: of the values and bias (indices are integers on ``device``).
        generator: source of the random links and of the weights' initialisation.
        index_dtype: ``"auto"`` (int32 while it fits), ``"int32"`` or ``"int64"``.
        backend: the products' kernels, one of :data:`sparsebrain.kernels.csr_ops.BACKENDS`.

    Example:
        >>> layer = CompressedSparseLinear(1000, 2000, density=0.01, generator=torch.Generator().manual_seed(0))
        >>> layer.values.shape, layer(torch.randn(3, 1000)).shape
        (torch.Size([20000]), torch.Size([3, 2000]))
    """

    rows: Tensor
    cols: Tensor

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        density: float | None = None,
        mask: Tensor | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        generator: torch.Generator | None = None,
        index_dtype: str = "auto",
        backend: str = "auto",
    ) -> None:
        super().__init__()
        from ..topology.initial import er_links

        if (density is None) == (mask is None):
            raise ValueError("CompressedSparseLinear needs exactly one of density= (random links) or mask=")
        self.in_features, self.out_features = in_features, out_features
        self._setup(index_dtype, backend)
        device = torch.device(device) if device is not None else torch.device("cpu")
        if mask is not None:
            flat = self._flat_links(mask)
        else:
            flat = er_links((out_features, in_features), density, generator=generator, device=device)  # type: ignore[arg-type]
        bound = 1.0 / math.sqrt(in_features)  # nn.Linear's default initialisation, at the links only
        self.values = nn.Parameter(_uniform(flat.numel(), bound, generator, device, dtype))
        self.bias = nn.Parameter(_uniform(out_features, bound, generator, device, dtype)) if bias else None
        self._set_links(flat.to(device))

    @classmethod
    def from_linear(cls, linear: nn.Linear, mask: Tensor, **options: Any) -> CompressedSparseLinear:
        """The links of ``mask`` with ``linear``'s weights there; ``linear``'s own Parameter objects are kept (an
        optimizer built on them keeps training them), the weight now holding only the links' values."""
        cls.check_options(options)
        layer = cls.__new__(cls)
        nn.Module.__init__(layer)
        layer.in_features, layer.out_features = linear.in_features, linear.out_features
        layer._setup(options.get("index_dtype", "auto"), options.get("backend", "auto"))
        flat = layer._flat_links(mask).to(linear.weight.device)
        weight = linear.weight
        with torch.no_grad():
            _swap_data(weight, weight.data.reshape(-1)[flat].clone())  # the same Parameter object, nnz entries now
        layer.values = weight
        layer.bias = linear.bias
        layer._set_links(flat)
        return layer

    @classmethod
    def storage_problem(cls, layer: type[SparseLayer], constraint: Constraint | None) -> str | None:
        if constraint is not None and constraint.density is not None:
            return (
                "holds unstructured links; an N:M pattern needs storage='masked' (or 'semi_structured', for "
                "transposable 2:4 and 1:4 patterns)"
            )
        return super().storage_problem(layer, constraint)

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - {"index_dtype", "backend"})
        if unknown:
            raise ValueError(f"layer {cls.__name__} takes the layer_options index_dtype and backend, got {unknown}")
        _check_names(options.get("index_dtype", "auto"), options.get("backend", "auto"))

    def _setup(self, index_dtype: str, backend: str) -> None:
        _check_names(index_dtype, backend)
        self.index_dtype, self.backend = index_dtype, backend
        self._capture = False
        self._captured: list[tuple[Tensor, Tensor]] = []  # (dY^T, X^T) of each backward since capture started
        self._link_grad: Tensor | None = None
        self._cache: dict[str, tuple[Tensor, ...]] = {}

    def _flat_links(self, mask: Tensor | Links) -> Tensor:
        shape = (self.out_features, self.in_features)
        if isinstance(mask, Links):
            if mask.shape != shape:
                raise ValueError(f"links must be of shape (out_features, in_features) = {shape}, got {mask.shape}")
            return mask.flat
        if tuple(mask.shape) != shape:
            raise ValueError(f"mask must have shape (out_features, in_features) = {shape}, got {tuple(mask.shape)}")
        return mask.reshape(-1).nonzero().squeeze(1)

    def _set_links(self, flat: Tensor) -> None:
        """Makes the sorted flat positions ``flat`` (``row * in + col``) the links; drops the derived orders."""
        dtype = index_dtype_for((self.out_features, self.in_features), flat.numel(), self.index_dtype)
        rows, cols = flat.div(self.in_features, rounding_mode="floor"), flat.remainder(self.in_features)
        for name, t in (("rows", rows), ("cols", cols)):
            if name in self._buffers:
                self._buffers[name] = t.to(dtype)
            else:
                self.register_buffer(name, t.to(dtype), persistent=True)
        self._cache = {}

    def _flat(self) -> Tensor:
        """The links' flat positions ``row * in + col`` (int64, increasing)."""
        return self.rows.long() * self.in_features + self.cols.long()

    def _csr(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(row_ptr, cols, rows)``: the links in row order, as the products read them."""
        if "csr" not in self._cache:
            counts = torch.bincount(self.rows.long(), minlength=self.out_features)
            row_ptr = torch.zeros(self.out_features + 1, dtype=self.rows.dtype, device=self.rows.device)
            row_ptr[1:] = counts.cumsum(0)
            self._cache["csr"] = (row_ptr, self.cols, self.rows)
        return self._cache["csr"]  # type: ignore[return-value]

    def _csc(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(col_ptr, rows in column order, perm)``: the links in column order (the rows of ``W^T``); the values in
        that order are ``values[perm]``."""
        if "csc" not in self._cache:
            perm = torch.sort(self.cols, stable=True).indices  # within a column, rows stay increasing
            counts = torch.bincount(self.cols.long(), minlength=self.in_features)
            col_ptr = torch.zeros(self.in_features + 1, dtype=self.cols.dtype, device=self.cols.device)
            col_ptr[1:] = counts.cumsum(0)
            self._cache["csc"] = (col_ptr, self.rows[perm], perm)
        return self._cache["csc"]  # type: ignore[return-value]

    @property
    def nnz(self) -> int:
        """The number of links."""
        return self.values.numel()

    @property
    def density(self) -> float:
        return self.nnz / (self.out_features * self.in_features)

    # ------------------------------------------------------------------------------------------------------------
    # the storage protocol (through dense tensors of the layer's shape, for the engine's rules)

    def weight_parameter(self) -> nn.Parameter:
        return self.values

    def topology(self) -> Tensor:
        mask = torch.zeros(self.out_features * self.in_features, dtype=torch.bool, device=self.rows.device)
        mask[self._flat()] = True
        return mask.view(self.out_features, self.in_features)

    def dense_weight(self) -> Tensor:
        return self._dense(full(self.values.detach()))  # sharded values (FSDP2): an all-gather

    def _dense(self, values: Tensor) -> Tensor:
        out = torch.zeros(self.out_features * self.in_features, dtype=values.dtype, device=values.device)
        out[self._flat()] = values
        return out.view(self.out_features, self.in_features)

    @torch.no_grad()
    def rewire_(self, mask: Tensor | Links) -> dict[str, Tensor | StateMoved]:
        if isinstance(mask, Links):
            if mask.shape != (self.out_features, self.in_features):
                raise ValueError(
                    f"links of shape {mask.shape} for a layer of shape {(self.out_features, self.in_features)}"
                )
            new = mask.flat.to(self.rows.device)
        else:
            new = self._flat_links(mask).to(self.rows.device)
        old = self._flat()
        source = torch.full_like(new, -1)
        if old.numel():  # where each new link was among the old ones (both sorted), or -1
            pos = torch.searchsorted(old, new).clamp_(max=old.numel() - 1)
            source = torch.where(old[pos] == new, pos, source)
        moved = StateMoved(source, self.values.shape)
        grad = self.values.grad
        if is_sharded(self.values):  # FSDP2 holds a fixed number of values: each rank rewrites its part in place
            if new.numel() != self.nnz:
                raise ValueError(
                    f"CompressedSparseLinear: its values are sharded (fully_shard), which fixes their number at "
                    f"{self.nnz}, but the new topology has {new.numel()} links; a method whose density moves needs "
                    "storage='masked' under FSDP2 (or DDP)"
                )
            for t in (self.values, grad):
                if t is not None:
                    write_full_(t, moved.apply(full(t.detach())))
        else:
            _swap_data(self.values, moved.apply(self.values.data))  # the same Parameter object; new links at 0
            if grad is not None:  # a gradient not yet cleared follows its links too (zero for new ones)
                self.values.grad = moved.apply(grad)
        self._set_links(new)
        return {"values": moved}

    def state_kept_at_sparsify(self) -> dict[str, Tensor | StateMoved]:
        # a fresh state: whatever an optimizer held for the dense weight does not carry over
        dense_shape = torch.Size((self.out_features, self.in_features))
        return {"values": StateMoved(torch.full((self.nnz,), -1, device=self.rows.device), dense_shape)}

    @torch.no_grad()
    def init_sparse_weights_(self, generator: torch.Generator | None = None) -> None:
        # SWI at the links, in CSR (row-major) order: the draws of sparsebrain.topology.swi.swi_ on the masked layer
        from ..topology.swi import swi_std

        if self.nnz:
            self.values.normal_(0.0, swi_std(self.density, self.in_features), generator=generator)

    def capture_dense_grad_(self, on: bool) -> None:
        # Not a dense gradient: the backward's dY^T and X^T, from which gradient_rows computes any tile of it
        self._capture = on
        self._captured = []
        self._link_grad = None

    def link_grad(self) -> Tensor | None:
        return self._link_grad

    def gradient_rows(self, lo: int, hi: int) -> Tensor | None:
        if not self._captured:
            return None
        tile = None
        for grad_t, x_t in self._captured:
            part = _mm_fp32(grad_t[lo:hi], x_t.t())
            tile = part if tile is None else tile + part
        return tile

    def dense_grad(self) -> Tensor | None:
        """The dense gradient, built from :meth:`gradient_rows` (an ``(out, in)`` tensor: the engine never asks)."""
        return self.gradient_rows(0, self.out_features)

    def links(self) -> Links:
        return Links(self._flat(), (self.out_features, self.in_features))

    def link_values(self) -> Tensor:
        return self.values.detach()  # a DTensor when sharded (FSDP2), as a masked layer's weight

    def to_linear(self) -> nn.Linear:
        if is_sharded(self.values):
            raise RuntimeError(
                "CompressedSparseLinear.to_linear: the values are sharded (fully_shard); squash a model loaded from "
                "a full state dict instead"
            )
        return _values_to_linear(self, self._dense)

    def to_sparse_csr(self) -> Tensor:
        """The weight as a ``torch.sparse_csr`` tensor ``(out, in)`` (detached), for inference elsewhere.

        Example:
            >>> layer = CompressedSparseLinear(4, 3, mask=torch.eye(3, 4, dtype=torch.bool))
            >>> layer.to_sparse_csr().to_dense().count_nonzero().item()
            3
        """
        row_ptr, cols, _ = self._csr()
        return torch.sparse_csr_tensor(
            row_ptr.long(),
            cols.long(),
            full(self.values.detach()).clone(),  # sharded values (FSDP2): an all-gather
            (self.out_features, self.in_features),
            check_invariants=True,
        )

    # ------------------------------------------------------------------------------------------------------------

    def forward(self, x: Tensor) -> Tensor:
        device = x.device.type
        values = self.values
        compute = _autocast_dtype(device)
        if compute is not None:  # products in the autocast dtype, accumulated in float32
            x = x.to(compute)
        elif x.dtype != values.dtype:
            raise RuntimeError(
                f"CompressedSparseLinear: input dtype {x.dtype} differs from the weights' {values.dtype} "
                "(cast one of them, or run under autocast)"
            )
        if x.shape[-1] != self.in_features:
            raise RuntimeError(f"CompressedSparseLinear: input has {x.shape[-1]} features, expected {self.in_features}")
        with torch.autocast(device, enabled=False):
            y = _LinkLinear.apply(x.reshape(-1, self.in_features), values, self)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"links={self.nnz}, density={self.density:.4g}, index={str(self.rows.dtype).removeprefix('torch.')}"
        )

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "_cache": {}}  # the derived orders are rebuilt on first use

    def _hook_gradient(self) -> None:  # nothing to mask: off-topology weights do not exist
        pass

    def _load_from_state_dict(  # type: ignore[no-untyped-def]
        self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
    ):
        # A checkpoint of either storage: compressed (values, rows, cols) or masked (weight, mask).
        shape = (self.out_features, self.in_features)
        if prefix + "mask" in state_dict and prefix + "weight" in state_dict:
            mask, weight = state_dict.pop(prefix + "mask"), state_dict.pop(prefix + "weight")
            try:
                flat = self._flat_links(mask)
            except ValueError as e:
                error_msgs.append(f"sparse layer {prefix[:-1]!r}: {e}")
                return
            state_dict[prefix + "values"] = weight.reshape(-1)[flat]
            state_dict[prefix + "rows"] = flat.div(self.in_features, rounding_mode="floor")
            state_dict[prefix + "cols"] = flat.remainder(self.in_features)
        rows, cols = state_dict.get(prefix + "rows"), state_dict.get(prefix + "cols")
        if rows is not None and cols is not None:
            try:
                flat = _checked_links(rows, cols, shape)
            except ValueError as e:
                error_msgs.append(f"sparse layer {prefix[:-1]!r}: {e}")
                return
            self._set_links(flat.to(self.rows.device))
            values = state_dict.get(prefix + "values")
            if values is not None and values.shape != self.values.shape:
                if is_sharded(self.values):  # FSDP2 fixed the number of values when it sharded them
                    error_msgs.append(
                        f"sparse layer {prefix[:-1]!r}: the checkpoint has {values.shape[0]} links, but its values "
                        f"are sharded with {self.nnz}: load it before fully_shard"
                    )
                    return
                with torch.no_grad():
                    _swap_data(self.values, self.values.data.new_empty(values.shape))
            state_dict[prefix + "rows"], state_dict[prefix + "cols"] = self.rows, self.cols
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


def _mm_fp32(a: Tensor, b: Tensor) -> Tensor:
    """``a @ b`` in float32: half-precision operands on CUDA multiply on the tensor cores into float32 (what a
    masked layer's weight gradient under autocast computes), others are converted first."""
    if a.dtype in (torch.bfloat16, torch.float16) and a.is_cuda and "dtype" in torch.ops.aten.mm.overloads():
        return torch.ops.aten.mm.dtype(a, b, torch.float32)
    return a.float() @ b.float()


def _values_to_linear(layer: SparseLayer, dense: Any) -> nn.Linear:
    """An ``nn.Linear`` holding ``layer``'s own ``values`` Parameter, made the dense weight ``dense(values)`` (the same
    object, which optimizers hold), and its bias: the ``to_linear`` of a storage whose parameter is not the weight."""
    values = layer.values  # type: ignore[attr-defined]
    linear = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None, device="meta")
    with torch.no_grad():
        _swap_data(values, dense(values.data))
    linear.weight = values
    linear.bias = layer.bias
    return linear


def _swap_data(p: Tensor, values: Tensor) -> None:
    """Makes ``values`` the data of the Parameter ``p`` (the same object, which optimizers hold), whatever its shape."""
    if values.shape != p.shape:
        # Autograd keeps a leaf's gradient accumulator, and the shape it checks gradients against, across .data
        # swaps of one dtype and device (a graph still alive, e.g. the last loss, holds it): passing through
        # another dtype makes autograd build a fresh accumulator for the new number of links.
        other = torch.float64 if p.dtype != torch.float64 else torch.float32
        p.data = torch.empty(0, dtype=other, device=p.device)
    p.data = values


def _checked_links(rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> Tensor:
    """The flat positions of the links ``(rows, cols)``, checked to be distinct positions of ``shape`` in row order."""
    r, c = rows.long().reshape(-1), cols.long().reshape(-1)
    flat = r * shape[1] + c
    inside = rows.shape == cols.shape and (
        not r.numel()
        or (int(r.min()) >= 0 and int(r.max()) < shape[0] and int(c.min()) >= 0 and int(c.max()) < shape[1])
    )
    if not inside or (flat.numel() > 1 and not bool((flat[1:] > flat[:-1]).all())):
        raise ValueError(f"the loaded links are not distinct positions of a {shape} layer in row order")
    return flat


def dense_from_links(values: Tensor, rows: Tensor, cols: Tensor, shape: tuple[int, int]) -> tuple[Tensor, Tensor]:
    """The ``(out, in)`` weight (zero off the links) and bool mask of the links ``(values, rows, cols)``.

    Example:
        >>> w, m = dense_from_links(torch.tensor([2.0]), torch.tensor([1]), torch.tensor([0]), (2, 2))
        >>> w.tolist(), m.sum().item()
        ([[0.0, 0.0], [2.0, 0.0]], 1)
    """
    flat = _checked_links(rows, cols, shape)
    if values.shape != flat.shape:
        raise ValueError(f"the loaded values have shape {tuple(values.shape)}, but there are {flat.numel()} links")
    weight = torch.zeros(shape[0] * shape[1], dtype=values.dtype, device=values.device)
    weight[flat.to(values.device)] = values
    mask = torch.zeros(shape[0] * shape[1], dtype=torch.bool, device=values.device)
    mask[flat.to(values.device)] = True
    return weight.view(shape), mask.view(shape)


def _check_names(index_dtype: str, backend: str) -> None:
    if index_dtype not in _INDEX_DTYPES:
        raise ValueError(f"index_dtype must be one of {', '.join(map(repr, _INDEX_DTYPES))}; got {index_dtype!r}")
    if backend not in csr_ops.BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(map(repr, csr_ops.BACKENDS))}; got {backend!r}")


def _uniform(n: int, bound: float, generator: torch.Generator | None, device: torch.device, dtype: Any) -> Tensor:
    """U(-bound, bound) drawn on the generator's device (torch refuses another's), then moved to ``device``."""
    work = generator.device if generator is not None else device
    return torch.empty(n, device=work, dtype=dtype).uniform_(-bound, bound, generator=generator).to(device)


LAYERS.register("compressed", CompressedSparseLinear)
