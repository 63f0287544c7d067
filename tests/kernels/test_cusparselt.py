"""The cuSPARSELt 2:4 product against its plain-torch reference, on random shapes, token counts and dtypes.

Needs a CUDA device with sparse tensor cores and a torch build with cuSPARSELt (skipped elsewhere, as in CI).
"""

from __future__ import annotations

import pytest
import torch

from sparsebrain.kernels import cusparselt
from sparsebrain.topology import best_rowwise_mask, best_transposable_mask

pytestmark = pytest.mark.skipif(not cusparselt.available(), reason="needs cuSPARSELt and sparse tensor cores")


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("out_features", "in_features"), [(64, 128), (256, 512), (528, 272)])
@pytest.mark.parametrize("tokens", [8, 100, 1024])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_matches_the_dense_reference(
    dtype: torch.dtype, out_features: int, in_features: int, tokens: int, bias: bool
) -> None:
    g = torch.Generator(device="cuda").manual_seed(out_features + tokens)
    w = torch.randn(out_features, in_features, generator=g, device="cuda")
    w = (w * best_rowwise_mask(w.abs(), 2, 4)).to(dtype)
    b = torch.randn(out_features, generator=g, device="cuda").to(dtype) if bias else None
    x = torch.randn(tokens, in_features, generator=g, device="cuda").to(dtype)
    packed = cusparselt.compress(w)
    alg = cusparselt.search(packed, x, b)
    assert alg == 0 if dtype == torch.float16 else alg >= 0  # float16: the default, unsearched
    got = cusparselt.linear(x, packed, b, alg)
    assert got.shape == (tokens, out_features) and got.dtype == dtype
    assert _rel(got, cusparselt.linear_reference(x, w, b)) < 1e-2


def test_the_transposed_weight_of_a_transposable_mask_is_2_4_too() -> None:
    """What training with transposable 2:4 relies on: ``dY W`` is a 2:4 product with the compressed ``W^T``."""
    g = torch.Generator(device="cuda").manual_seed(0)
    w = torch.randn(256, 512, generator=g, device="cuda")
    w = (w * best_transposable_mask(w.abs(), 2, 4)).bfloat16()
    dy = torch.randn(300, 256, generator=g, device="cuda").bfloat16()
    packed_t = cusparselt.compress(w.t())
    got = cusparselt.linear(dy, packed_t, None, cusparselt.search(packed_t, dy))
    assert _rel(got, dy @ w) < 1e-2


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("out_features", "in_features", "tokens"), [(64, 128, 8), (528, 272, 100), (2048, 5504, 4096)])
def test_kept_plans_compute_bit_for_bit_what_torchs_operator_computes(
    dtype: torch.dtype, out_features: int, in_features: int, tokens: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparsebrain.kernels import cusparselt_plans

    assert cusparselt_plans.available(), "the C API should bind wherever torch has cuSPARSELt"
    g = torch.Generator(device="cuda").manual_seed(tokens)
    w = torch.randn(out_features, in_features, generator=g, device="cuda")
    w = (w * best_rowwise_mask(w.abs(), 2, 4)).to(dtype)
    b = torch.randn(out_features, generator=g, device="cuda").to(dtype)
    x = torch.randn(tokens, in_features, generator=g, device="cuda").to(dtype)
    packed = cusparselt.compress(w)
    alg = cusparselt.search(packed, x)
    planned = [cusparselt.linear(x, packed, bias, alg) for bias in (None, b)]
    monkeypatch.setattr(cusparselt_plans, "available", lambda: False)
    operator = [cusparselt.linear(x, packed, bias, alg) for bias in (None, b)]
    assert torch.equal(planned[0], operator[0])
    assert _rel(planned[1], operator[1]) < 1e-2  # the bias added after the product, not in its epilogue
    assert _rel(planned[1], cusparselt.linear_reference(x, w, b)) < 1e-2
