"""to_semi_structured: 2:4 SparseLinear layers become semi-structured on a GPU and dense with zeros elsewhere.

The CPU tests check the fallback, the strict errors and, with a stand-in backend, the conversion path; the CUDA tests
(compute capability >= 8.0 only) check that real 2:4 kernels are used and agree with the sparse model.
"""

from __future__ import annotations

import copy
import warnings
from collections import OrderedDict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import sparsebrain as sb
from sparsebrain import export
from sparsebrain.export import SEMI_STRUCTURED, SemiStructuredLinear
from sparsebrain.topology import best_rowwise_mask, best_transposable_mask

# ---------------------------------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------------------------------


def _model(
    d_in: int = 16,
    d_hidden: int = 32,
    d_out: int = 8,
    *,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> nn.Sequential:
    """``enc.0`` with a transposable 2:4 mask and ``head`` with a row-wise 2:4 mask, nested to test dotted names."""
    torch.manual_seed(seed)
    kw = {"device": device, "dtype": dtype}
    model = nn.Sequential(
        OrderedDict(
            enc=nn.Sequential(sb.SparseLinear(d_in, d_hidden, **kw)),
            act=nn.ReLU(),
            head=sb.SparseLinear(d_hidden, d_out, **kw),
        )
    )
    model.enc[0].set_mask_(best_transposable_mask(model.enc[0].weight.abs(), 2, 4))
    model.head.set_mask_(best_rowwise_mask(model.head.weight.abs(), 2, 4))
    return model


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Max error relative to the output's scale."""
    got, ref = got.detach().float(), ref.detach().float()
    return float((got - ref).abs().max() / ref.abs().max())


_F32_MINIMUM = {torch.float32: SimpleNamespace(sparse_min_rows=8, sparse_min_cols=16)}


def _stand_in(name: str, compress) -> export._Backend:  # type: ignore[no-untyped-def]
    """A backend whose 'compressed' weight is a dense tensor made by ``compress``."""
    return export._Backend(name, _F32_MINIMUM, lambda w, b, tokens: SemiStructuredLinear(compress(w), b))


def _refuse(w: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("Supported only on GPUs with compute capability 8.x\nsecond line")


_IDENTITY = _stand_in("identity", lambda w: w.clone())
_REFUSES = _stand_in("refuses", _refuse)
# reads the layout wrongly, like ``_sparse_semi_structured_tile(use_cutlass=False)`` on Hopper
_SCRAMBLES = _stand_in("scrambles", lambda w: w.flip(1).contiguous())


# ---------------------------------------------------------------------------------------------------------------------
# CPU: the fallback
# ---------------------------------------------------------------------------------------------------------------------


def test_cpu_falls_back_to_dense_with_zeros_and_same_outputs() -> None:
    model = _model()
    sparse = copy.deepcopy(model)
    masks = {name: layer.mask.clone() for name, layer in sb.sparse_layers(model).items()}
    x = torch.randn(3, 5, 16)
    with pytest.warns(UserWarning, match="2 of 2 sparse layers stay dense"):
        report = sb.to_semi_structured(model)

    assert list(report) == ["enc.0", "head"]
    for reason in report.values():
        assert reason.startswith("dense (") and "needs a CUDA device, weight is on cpu" in reason
        assert "needs float16 or bfloat16, weight is float32" in reason
    assert not sb.sparse_layers(model)
    for name, mask in masks.items():
        layer = model.get_submodule(name)
        assert type(layer) is nn.Linear
        assert not hasattr(layer, "mask") and "mask" not in dict(layer.named_buffers())
        assert torch.count_nonzero(layer.weight[~mask]) == 0
        assert torch.equal(layer.weight, sparse.get_submodule(name).weight)
        assert not layer.weight.requires_grad and not layer.bias.requires_grad
    assert torch.equal(model(x), sparse(x))


def test_cpu_dtype_casts_the_exported_layers() -> None:
    model = _model()
    sparse = copy.deepcopy(model)
    with pytest.warns(UserWarning):
        report = sb.to_semi_structured(model, dtype=torch.bfloat16)
    for reason in report.values():
        assert reason == "dense (needs a CUDA device, weight is on cpu)"
    assert model.enc[0].weight.dtype == torch.bfloat16 and model.head.bias.dtype == torch.bfloat16
    x = torch.randn(64, 16)
    assert _rel_err(model(x.bfloat16()), sparse(x)) < 2e-2


def test_one_in_four_and_emptier_groups_are_2_4() -> None:
    """At most 2 kept of every 4 fits the 2:4 format: the compressed tensor stores the other zeros as values."""
    model = _model()
    model.head.set_mask_(best_rowwise_mask(model.head.weight.abs(), 1, 4))
    model.enc[0].set_mask_(torch.zeros_like(model.enc[0].mask))
    with pytest.warns(UserWarning):
        report = sb.to_semi_structured(model)
    assert all("needs a CUDA device" in r for r in report.values())


def test_no_sparse_layers_gives_an_empty_report() -> None:
    model = nn.Sequential(nn.Linear(4, 4))
    assert sb.to_semi_structured(model) == {}
    assert type(model[0]) is nn.Linear


# ---------------------------------------------------------------------------------------------------------------------
# CPU: masks that are not 2:4
# ---------------------------------------------------------------------------------------------------------------------


def _bad_model() -> nn.Sequential:
    """``enc.0`` unstructured, ``head`` 3:4, ``tail`` with in_features = 6; only ``mid`` is 2:4."""
    model = _model()
    g = torch.Generator().manual_seed(0)
    model.enc[0].set_mask_(torch.rand(32, 16, generator=g) < 0.6)
    model.head.set_mask_(best_rowwise_mask(model.head.weight.abs(), 3, 4))
    model.add_module("mid", sb.SparseLinear(8, 4))
    model.mid.set_mask_(best_rowwise_mask(model.mid.weight.abs(), 2, 4))
    model.add_module("pad", nn.Linear(4, 6))
    model.add_module("tail", sb.SparseLinear(6, 4))
    model.tail.set_mask_(torch.rand(4, 6, generator=g) < 0.5)
    return model


def test_strict_names_every_layer_that_is_not_2_4_and_leaves_the_model_untouched() -> None:
    model = _bad_model()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError) as info:
        sb.to_semi_structured(model)
    msg = str(info.value)
    assert "'enc.0' (out_features, in_features) = (32, 16): mask is not 2:4 along in_features" in msg
    assert "it is unstructured" in msg
    assert "'head' (out_features, in_features) = (8, 32): mask is not 2:4 along in_features, it is 3:4" in msg
    assert "'tail' (out_features, in_features) = (4, 6): in_features=6 is not a multiple of 4" in msg
    assert "'mid'" not in msg and "strict=False" in msg
    assert len(sb.sparse_layers(model)) == 4
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_strict_error_for_a_fully_dense_mask() -> None:
    model = _model()
    model.head.set_mask_(torch.ones_like(model.head.mask))
    with pytest.raises(
        ValueError, match=r"'head' .* = \(8, 32\): mask is not 2:4 along in_features, it is fully dense"
    ):
        sb.to_semi_structured(model)


def test_non_strict_keeps_them_dense_and_says_why() -> None:
    model = _bad_model()
    sparse = copy.deepcopy(model)
    x = torch.randn(7, 16)
    with pytest.warns(UserWarning, match="4 of 4 sparse layers stay dense"):
        report = sb.to_semi_structured(model, strict=False)
    assert report["enc.0"].startswith("dense (mask is not 2:4 along in_features, it is unstructured")
    assert report["head"] == "dense (mask is not 2:4 along in_features, it is 3:4)"
    assert report["tail"] == "dense (in_features=6 is not a multiple of 4, so the mask cannot be 2:4)"
    assert report["mid"].startswith("dense (needs a CUDA device")
    assert not sb.sparse_layers(model)
    assert all(type(model.get_submodule(name)) is nn.Linear for name in report)
    assert torch.equal(model(x), sparse(x))


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="not a SparseLinear itself"):
        sb.to_semi_structured(sb.SparseLinear(8, 4))
    with pytest.raises(ValueError, match="floating torch.dtype"):
        sb.to_semi_structured(_model(), dtype=torch.int8)
    with pytest.raises(ValueError, match="tokens must be a positive int, got 0"):
        sb.to_semi_structured(_model(), tokens=0)


# ---------------------------------------------------------------------------------------------------------------------
# CPU: the conversion path, with stand-in backends
# ---------------------------------------------------------------------------------------------------------------------


def test_conversion_path_with_a_stand_in_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export, "_platform_problems", lambda w: [])
    monkeypatch.setattr(export, "_backends", lambda: [_REFUSES, _IDENTITY])
    model = _model()
    sparse = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing stays dense, so nothing to warn about
        report = sb.to_semi_structured(model)
    assert report == {"enc.0": SEMI_STRUCTURED, "head": SEMI_STRUCTURED}
    assert isinstance(model.enc[0], SemiStructuredLinear) and isinstance(model.head, SemiStructuredLinear)
    assert not model.head.weight.requires_grad
    x = torch.randn(2, 3, 16)  # leading dims are flattened for the 2-D kernels and restored
    torch.testing.assert_close(model(x), sparse(x))


def test_refusals_and_wrong_results_fall_back_with_each_backend_named() -> None:
    w = best_rowwise_mask(torch.randn(8, 16), 2, 4) * torch.randn(8, 16)
    b = torch.randn(8)
    layer, reason = export._convert(w, b, [_REFUSES, _SCRAMBLES])
    assert layer is None
    assert reason.startswith("platform refused: refuses: Supported only on GPUs with compute capability 8.x; ")
    assert "scrambles: wrong result, relative error" in reason and "second line" not in reason
    layer, reason = export._convert(w, b, [_SCRAMBLES, _IDENTITY])
    assert isinstance(layer, SemiStructuredLinear) and reason == SEMI_STRUCTURED


def test_shape_minimums_come_from_the_installed_torch() -> None:
    from torch.sparse import SparseSemiStructuredTensorCUSPARSELT as Lt
    from torch.sparse import SparseSemiStructuredTensorCUTLASS as Cutlass

    backends = [export._CUSPARSELT, export._CUTLASS]
    lt, cu = Lt._DTYPE_SHAPE_CONSTRAINTS[torch.bfloat16], Cutlass._DTYPE_SHAPE_CONSTRAINTS[torch.bfloat16]
    both = (lt.sparse_min_rows * cu.sparse_min_rows, lt.sparse_min_cols * cu.sparse_min_cols)
    fitting, _ = export._fitting_backends(both, torch.bfloat16, backends)
    assert fitting == backends
    odd = (lt.sparse_min_rows * cu.sparse_min_rows + 4, both[1])
    fitting, reason = export._fitting_backends(odd, torch.bfloat16, backends)
    assert fitting == []
    assert reason == (
        f"shape {odd} is not a multiple of ({lt.sparse_min_rows}, {lt.sparse_min_cols}) for cuSPARSELt "
        f"or ({cu.sparse_min_rows}, {cu.sparse_min_cols}) for CUTLASS"
    )
    fitting, _ = export._fitting_backends(both, torch.float64, backends)
    assert fitting == []


def test_semi_structured_linear_forward_matches_f_linear() -> None:
    w, b = torch.randn(6, 8), torch.randn(6)
    layer = SemiStructuredLinear(w, b)
    x = torch.randn(2, 3, 8).transpose(0, 1)  # not contiguous: reshape, not view
    torch.testing.assert_close(layer(x), F.linear(x, w, b))
    assert layer(x).shape == (3, 2, 6) and layer.backend == "dense"
    assert "in_features=8, out_features=6" in repr(layer)


# ---------------------------------------------------------------------------------------------------------------------
# CUDA: the real 2:4 kernels
# ---------------------------------------------------------------------------------------------------------------------

_has_sparse_cores = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 0)
cuda_only = pytest.mark.skipif(not _has_sparse_cores, reason="needs a CUDA device of compute capability >= 8.0")
_REFUSED = "dense (platform refused"


def _check_semi_structured(model: nn.Module, report: dict[str, str]) -> dict[str, str]:
    """Every layer is semi-structured, or else refused by the platform (returned, for the caller to skip on)."""
    refused = {name: r for name, r in report.items() if r.startswith(_REFUSED)}
    for name, reason in report.items():
        assert reason == SEMI_STRUCTURED or name in refused, f"{name}: {reason}"
        if reason == SEMI_STRUCTURED:
            layer = model.get_submodule(name)
            assert isinstance(layer, SemiStructuredLinear)
            if layer.backend == "cuSPARSELt":  # compressed once, with its searched algorithm; no dense weight kept
                assert layer.packed is not None and isinstance(layer.alg_id, int) and layer.weight is None
            else:
                assert isinstance(layer.weight, torch.sparse.SparseSemiStructuredTensor)
    return refused


@cuda_only
def test_cuda_bf16_layers_become_semi_structured_and_agree() -> None:
    model = _model(512, 256, 512, device="cuda", dtype=torch.bfloat16)  # weights (256, 512) and (512, 256)
    sparse = copy.deepcopy(model)
    x = torch.randn(2, 64, 512, device="cuda", dtype=torch.bfloat16)  # 128 tokens
    report = sb.to_semi_structured(model)
    refused = _check_semi_structured(model, report)
    with torch.no_grad():
        assert _rel_err(model(x), sparse(x)) < 2e-2
    if refused:
        pytest.skip(f"this platform refuses 2:4 kernels: {refused}")


@cuda_only
def test_cuda_fp32_model_exported_as_bf16() -> None:
    model = _model(512, 256, 512, device="cuda")
    sparse = copy.deepcopy(model)
    x = torch.randn(128, 512, device="cuda")
    report = sb.to_semi_structured(model, dtype=torch.bfloat16)
    refused = _check_semi_structured(model, report)
    with torch.no_grad():
        assert _rel_err(model(x.bfloat16()), sparse(x)) < 3e-2
    if refused:
        pytest.skip(f"this platform refuses 2:4 kernels: {refused}")


@cuda_only
def test_cuda_fallback_reasons_for_dtype_and_shape() -> None:
    model = _model(512, 256, 512, device="cuda")  # float32
    with pytest.warns(UserWarning, match="stay dense"):
        report = sb.to_semi_structured(model)
    assert set(report.values()) == {"dense (needs float16 or bfloat16, weight is float32)"}

    model = _model(64, 24, 64, device="cuda", dtype=torch.bfloat16)  # weight (24, 64): 24 is no multiple of 16
    sparse = copy.deepcopy(model)
    with pytest.warns(UserWarning, match="stay dense"):
        report = sb.to_semi_structured(model)
    assert report["enc.0"].startswith("dense (shape (24, 64) is not a multiple of (")
    assert type(model.enc[0]) is nn.Linear
    x = torch.randn(16, 64, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        assert _rel_err(model(x), sparse(x)) < 2e-2


@cuda_only
def test_cuda_exported_layers_run_under_compile_and_cuda_graphs() -> None:
    """The cuSPARSELt layers do no host work that a graph could not replay: compiled and graphed outputs are the
    eager ones."""
    from sparsebrain.kernels import cusparselt

    if not cusparselt.available():
        pytest.skip("this torch build has no cuSPARSELt")
    model = _model(512, 256, 512, device="cuda", dtype=torch.bfloat16)
    report = sb.to_semi_structured(model, tokens=128)
    assert set(report.values()) == {SEMI_STRUCTURED}
    assert {layer.backend for layer in model.modules() if isinstance(layer, SemiStructuredLinear)} == {"cuSPARSELt"}
    x = torch.randn(128, 512, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        eager = model(x)
        compiled = torch.compile(model, fullgraph=True)(x)
        torch.testing.assert_close(compiled, eager, rtol=1e-2, atol=1e-2)
        static = x.clone()
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            model(static)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = model(static)
        static.copy_(x * 2)
        graph.replay()
        torch.testing.assert_close(out, model(x * 2), rtol=0, atol=0)
