"""Export for inference: 2:4 ``SparseLinear`` layers become layers on the 2:4 sparse tensor cores.

:func:`to_semi_structured` replaces every ``SparseLinear`` of a model, in place, by a frozen inference layer. A layer
whose mask keeps at most 2 of every 4 consecutive weights along ``in_features`` holds its weight compressed for
cuSPARSELt (or as torch's CUTLASS ``SparseSemiStructuredTensor``) where the platform can run it; everywhere else
it becomes an ``nn.Linear`` holding the dense weight with zeros, so that the exported model runs on any device. The
returned report says, per layer, which of the two happened and why.

Example:
    >>> import warnings, torch, sparsebrain as sb
    >>> model = torch.nn.Sequential(sb.SparseLinear(8, 4))
    >>> model[0].set_mask_(sb.topology.best_rowwise_mask(model[0].weight.abs(), 2, 4))
    >>> with warnings.catch_warnings():
    ...     warnings.simplefilter("ignore")  # the fallback is announced with a UserWarning
    ...     report = sb.to_semi_structured(model)
    >>> report
    {'0': 'dense (needs a CUDA device, weight is on cpu; needs float16 or bfloat16, weight is float32)'}
    >>> type(model[0]).__name__
    'Linear'
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.sparse import (
    SparseSemiStructuredTensor,
    SparseSemiStructuredTensorCUSPARSELT,
    SparseSemiStructuredTensorCUTLASS,
)

from .kernels import cusparselt
from .nn import SparseLayer, sparse_layers
from .topology import is_rowwise

__all__ = ["SEMI_STRUCTURED", "SemiStructuredLinear", "to_semi_structured"]

SEMI_STRUCTURED = "semi_structured"
"""The report value of a layer that became a :class:`SemiStructuredLinear` on the sparse tensor cores."""

_HALF_DTYPES = (torch.float16, torch.bfloat16)
_BACKEND_NAMES = {"cusparselt": "cuSPARSELt", "cutlass": "CUTLASS"}  # of torch's SparseSemiStructuredTensor
# Relative error (to the output's scale) above which a converted layer is taken to compute wrongly. Correct kernels
# agree with the dense bf16 matmul to about 1e-2; a misread layout is off by about 1.
_PROBE_RTOL = 5e-2


class SemiStructuredLinear(nn.Module):
    """An inference-only ``y = x W^T + b`` whose 2:4 weight runs on the sparse tensor cores.

    Two ways to hold the weight: :meth:`from_cusparselt` compresses it once for cuSPARSELt and searches the fastest
    algorithm once (a buffer ``packed`` and an int ``alg_id``; every call is one library product, with no transpose,
    re-compression or dispatch through a tensor subclass, so it also runs under ``torch.compile`` and CUDA graphs);
    the constructor takes a weight tensor as it is, such as a ``SparseSemiStructuredTensor`` (torch's CUTLASS
    kernels) or a dense one. The parameters are frozen (``requires_grad=False``) and of one dtype; inputs must have
    that dtype too, as with ``nn.Linear``. Any number of leading dimensions is accepted: the sparse kernels take 2-D
    inputs only, so ``forward`` flattens them and restores them afterwards.

    Example:
        >>> # on a CUDA device of compute capability >= 8.0, with a 2:4 bf16 weight w of shape (256, 512):
        >>> # layer = SemiStructuredLinear.from_cusparselt(w, bias)
        >>> # y = layer(torch.randn(4, 64, 512, device="cuda", dtype=torch.bfloat16))  # (4, 64, 256)
    """

    packed: Tensor | None

    def __init__(self, weight: Tensor, bias: Tensor | None = None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = int(weight.shape[0]), int(weight.shape[1])
        self.dtype = weight.dtype
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.register_parameter("bias", None if bias is None else nn.Parameter(bias, requires_grad=False))
        self.register_buffer("packed", None)
        self.alg_id: int | None = None

    @classmethod
    def from_cusparselt(cls, weight: Tensor, bias: Tensor | None = None, *, tokens: int = 4096) -> SemiStructuredLinear:
        """The 2:4 ``weight`` (CUDA, float16 / bfloat16) compressed for cuSPARSELt, with the algorithm found fastest
        on ``tokens`` random inputs (the number of tokens a call will typically see)."""
        layer = cls(torch.empty(weight.shape, dtype=weight.dtype, device="meta"), bias)  # no dense copy is kept
        layer.register_parameter("weight", None)
        layer.packed = cusparselt.compress(weight)
        g = torch.Generator(device=weight.device).manual_seed(0)
        x = torch.randn(tokens, weight.shape[1], generator=g, device=weight.device).to(weight.dtype)
        layer.alg_id = cusparselt.search(layer.packed, x, layer.bias)
        return layer

    @property
    def backend(self) -> str:
        """The kernel library behind the weight: ``"cuSPARSELt"``, ``"CUTLASS"``, or ``"dense"``."""
        if self.packed is not None:
            return "cuSPARSELt"
        name = getattr(self.weight, "BACKEND", None)
        return _BACKEND_NAMES.get(name, str(name)) if name is not None else "dense"

    def forward(self, x: Tensor) -> Tensor:
        x2 = x.reshape(-1, self.in_features)  # (B*T, in)
        if self.packed is None:
            y = F.linear(x2, self.weight, self.bias)  # (B*T, out)
        else:
            if x.dtype != self.dtype:
                raise RuntimeError(
                    f"SemiStructuredLinear: input dtype {x.dtype} differs from the weight's {self.dtype}"
                )
            y = cusparselt.linear(x2, self.packed, self.bias, self.alg_id)  # type: ignore[arg-type]
        return y.reshape(*x.shape[:-1], self.out_features)  # (B, T, out)

    def extra_repr(self) -> str:
        searched = f", alg_id={self.alg_id}" if self.alg_id is not None else ""
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
            f"dtype={self.dtype}, backend={self.backend}{searched}"
        )


@dataclass(frozen=True)
class _Backend:
    """A way to hold a 2:4 weight on the sparse tensor cores: its name, minimum shapes and layer builder."""

    name: str
    constraints: Mapping[torch.dtype, Any]  # per dtype: sparse_min_rows, sparse_min_cols (torch's own tables)
    build: Callable[[Tensor, Tensor | None, int], SemiStructuredLinear]  # (weight, bias, tokens)


_CUSPARSELT = _Backend(
    "cuSPARSELt",
    SparseSemiStructuredTensorCUSPARSELT._DTYPE_SHAPE_CONSTRAINTS,
    lambda w, b, tokens: SemiStructuredLinear.from_cusparselt(w, b, tokens=tokens),
)
_CUTLASS = _Backend(
    "CUTLASS",
    SparseSemiStructuredTensorCUTLASS._DTYPE_SHAPE_CONSTRAINTS,
    lambda w, b, tokens: SemiStructuredLinear(SparseSemiStructuredTensorCUTLASS.from_dense(w), b),
)


def to_semi_structured(
    model: nn.Module,
    *,
    dtype: torch.dtype | None = None,
    strict: bool = True,
    tokens: int = 4096,
) -> dict[str, str]:
    """Replaces every ``SparseLinear`` of ``model``, in place, by a frozen inference layer; returns what happened.

    A layer whose mask keeps at most 2 of every 4 consecutive weights along ``in_features`` (row-wise 2:4, which
    transposable 2:4 masks are too) becomes a :class:`SemiStructuredLinear` on the sparse tensor cores when all of
    these hold: the weight is on a CUDA device of compute capability >= 8.0; it is float16 or bfloat16 (after the
    cast to ``dtype``); its shape meets the minimum of a backend (``_DTYPE_SHAPE_CONSTRAINTS`` of the installed
    torch); and the conversion succeeds and a probe matmul agrees with the dense one. Backends are tried in turn:
    cuSPARSELt first (the weight compressed once, the fastest algorithm searched once on ``tokens`` inputs), then
    torch's CUTLASS ``SparseSemiStructuredTensor`` (which refuses Hopper GPUs); the other way round when
    ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set. Otherwise the layer
    becomes an ``nn.Linear`` with the dense weight with zeros (``weight * mask``), and a ``UserWarning`` lists the
    layers that stayed dense.

    Either way the new layers hold no mask, their parameters are cast to ``dtype`` when given and are frozen
    (``requires_grad=False``); their inputs must have their dtype (cast the rest of the model with ``model.to``).

    Args:
        model: A module containing ``SparseLinear`` layers (not a ``SparseLinear`` itself, which cannot be replaced in
            place). Modified in place.
        dtype: Floating dtype for the exported weights and biases; ``None`` keeps each layer's dtype, in which case
            only float16/bfloat16 layers can become semi-structured.
        strict: If True, a layer whose mask is not 2:4 along ``in_features`` (or whose ``in_features`` is not a
            multiple of 4) raises ``ValueError`` before the model is touched. If False, such layers become dense
            ``nn.Linear`` layers too, and the report says why.
        tokens: The number of tokens (rows of the flattened input) a call typically sees: cuSPARSELt's algorithm is
            searched for it, once per layer.

    Returns:
        ``{dotted layer name: "semi_structured" or "dense (<reason>)"}``, in registration order.

    Raises:
        ValueError: If ``model`` is itself a ``SparseLinear``, ``dtype`` is not a floating dtype, or (``strict``) some
            layer's mask is not 2:4; the message names every such layer, its shape and what its mask is.

    Example:
        >>> import torch, sparsebrain as sb
        >>> model = torch.nn.Sequential(sb.SparseLinear(512, 256), torch.nn.ReLU(), sb.SparseLinear(256, 512)).cuda()
        >>> for layer in sb.sparse_layers(model).values():
        ...     layer.set_mask_(sb.topology.best_rowwise_mask(layer.weight.abs(), 2, 4))
        >>> report = sb.to_semi_structured(model, dtype=torch.bfloat16)
        >>> report  # on an Ampere or Hopper GPU
        {'0': 'semi_structured', '2': 'semi_structured'}
        >>> y = model(torch.randn(64, 512, device="cuda", dtype=torch.bfloat16))
    """
    if isinstance(model, SparseLayer):
        raise ValueError(
            "to_semi_structured needs a model that contains SparseLinear layers, not a SparseLinear itself"
        )
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating torch.dtype or None, got {dtype!r}")
    if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
        raise ValueError(f"tokens must be a positive int, got {tokens!r}")
    layers = sparse_layers(model)
    masks = {name: layer.topology() for name, layer in layers.items()}  # STE: the pattern of the current |W|

    # Check every mask first, so that a strict error leaves the model untouched.
    problems = {name: p for name, mask in masks.items() if (p := _mask_problem(mask)) is not None}
    if strict and problems:
        lines = [
            f"  {name!r} (out_features, in_features) = {tuple(masks[name].shape)}: {p}" for name, p in problems.items()
        ]
        raise ValueError(
            "to_semi_structured: these layers cannot be exported as 2:4 (pass strict=False to keep them dense):\n"
            + "\n".join(lines)
        )

    report: dict[str, str] = {}
    with torch.no_grad():
        for name, layer in layers.items():
            dense = layer.dense_weight()  # (out, in), whatever the storage holds
            weight = (dense * masks[name]).to(dtype or dense.dtype).contiguous()
            bias = None if layer.bias is None else layer.bias.detach().to(weight.dtype)  # (out,)
            new: nn.Module | None = None
            if name in problems:
                reason = problems[name]
            else:
                new, reason = _semi_structured(weight, bias, tokens)
            if new is None:
                new = _dense_linear(weight, bias)
                report[name] = f"dense ({reason})"
            else:
                report[name] = SEMI_STRUCTURED
            model.set_submodule(name, new)

    dense = [f"{name!r}: {r}" for name, r in report.items() if r != SEMI_STRUCTURED]
    if dense:
        shown = "; ".join(dense[:3]) + ("; ..." if len(dense) > 3 else "")
        warnings.warn(
            f"to_semi_structured: {len(dense)} of {len(report)} sparse layers stay dense: {shown}",
            UserWarning,
            stacklevel=2,
        )
    return report


# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def _mask_problem(mask: Tensor) -> str | None:
    """Why ``mask`` (bool ``(out, in)``) cannot be stored as 2:4 along ``in``, or ``None`` if it can.

    At most 2 kept of every 4 is enough: the compressed format stores the zeros of a 1:4 or emptier group as values.
    """
    out_features, in_features = mask.shape
    if in_features % 4:
        return f"in_features={in_features} is not a multiple of 4, so the mask cannot be 2:4"
    counts = mask.reshape(out_features, in_features // 4, 4).sum(dim=-1)  # (out, in/4) kept per group
    most = int(counts.max()) if counts.numel() else 0
    if most <= 2:
        return None
    if most == 4 and bool(mask.all()):
        found = "fully dense"
    elif most == 3 and is_rowwise(mask, 3, 4):
        found = "3:4"
    else:
        found = f"unstructured, up to {most} of every 4 kept"
    return f"mask is not 2:4 along in_features, it is {found}"


def _backends() -> list[_Backend]:
    """The 2:4 backends to try, in order: cuSPARSELt (where this torch has it), then CUTLASS; the other way round
    when torch's ``SparseSemiStructuredTensor._FORCE_CUTLASS`` is set."""
    order = [_CUSPARSELT, _CUTLASS]
    if SparseSemiStructuredTensor._FORCE_CUTLASS:
        order.reverse()
    if not cusparselt.available():
        order.remove(_CUSPARSELT)
    return order


def _platform_problems(weight: Tensor) -> list[str]:
    """Reasons, independent of the backend, why ``weight`` cannot become semi-structured here (empty if none)."""
    reasons = []
    if weight.device.type != "cuda":
        reasons.append(f"needs a CUDA device, weight is on {weight.device.type}")
    elif torch.cuda.get_device_capability(weight.device) < (8, 0):
        major, minor = torch.cuda.get_device_capability(weight.device)
        reasons.append(f"needs compute capability >= 8.0 (sparse tensor cores), device has {major}.{minor}")
    if weight.dtype not in _HALF_DTYPES:
        reasons.append(f"needs float16 or bfloat16, weight is {str(weight.dtype).removeprefix('torch.')}")
    return reasons


def _fitting_backends(
    shape: Sequence[int], dtype: torch.dtype, backends: Sequence[_Backend]
) -> tuple[list[_Backend], str]:
    """The backends whose minimum sparse shape for ``dtype`` divides ``shape``, and a reason naming the minimums."""
    rows, cols = shape
    fitting, minimums = [], []
    for backend in backends:
        c = backend.constraints.get(dtype)
        if c is None:
            continue
        if rows % c.sparse_min_rows == 0 and cols % c.sparse_min_cols == 0 and rows > 0 and cols > 0:
            fitting.append(backend)
        minimums.append(f"({c.sparse_min_rows}, {c.sparse_min_cols}) for {backend.name}")
    reason = f"shape {tuple(shape)} is not a multiple of " + (" or ".join(minimums) or "any supported minimum")
    return fitting, reason


def _semi_structured(weight: Tensor, bias: Tensor | None, tokens: int) -> tuple[SemiStructuredLinear | None, str]:
    """A :class:`SemiStructuredLinear` for the masked 2:4 ``weight``, or ``None`` and the reason it cannot be made."""
    reasons = _platform_problems(weight)
    if reasons:
        return None, "; ".join(reasons)
    backends, shape_reason = _fitting_backends(weight.shape, weight.dtype, _backends())
    if not backends:
        return None, shape_reason
    return _convert(weight, bias, backends, tokens)


def _convert(
    weight: Tensor, bias: Tensor | None, backends: Sequence[_Backend], tokens: int = 64
) -> tuple[SemiStructuredLinear | None, str]:
    """Builds the layer with each backend in turn and keeps the first one whose probe matmul is right."""
    refusals = []
    for backend in backends:
        try:
            layer = backend.build(weight, bias, tokens)
            error = _probe_error(layer, weight, bias)
        # a platform may refuse in any way: RuntimeError (CUTLASS on Hopper), NotImplementedError, a CUDA error...
        except Exception as e:
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            refusals.append(f"{backend.name}: {first_line[:200]}")
            continue
        if error <= _PROBE_RTOL:
            return layer, SEMI_STRUCTURED
        refusals.append(f"{backend.name}: wrong result, relative error {error:.2g}")
    return None, "platform refused: " + "; ".join(refusals)


def _probe_error(layer: nn.Module, weight: Tensor, bias: Tensor | None) -> float:
    """Relative max error of ``layer`` against the dense ``F.linear`` on a fixed random batch of 32 rows."""
    g = torch.Generator(device=weight.device).manual_seed(0)
    x = torch.randn(32, weight.shape[1], generator=g, device=weight.device).to(weight.dtype)  # (32, in)
    ref = F.linear(x, weight, bias).float()  # (32, out)
    got = layer(x).float()  # (32, out)
    if got.shape != ref.shape:
        return float("inf")
    err = float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-6))
    return err if err == err else float("inf")  # NaN counts as wrong


def _dense_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A frozen ``nn.Linear`` holding ``weight`` (dense, zeros off the mask) and ``bias`` as they are."""
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight, requires_grad=False)
    if bias is not None:
        linear.bias = nn.Parameter(bias, requires_grad=False)
    return linear
