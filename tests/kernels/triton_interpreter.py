"""Runs the Triton link kernels in Triton's CPU interpreter against the plain-torch references (a subprocess:
``TRITON_INTERPRET`` must be set before Triton compiles anything, and the parent may hold compiled kernels).

Prints one line per case, ``name max_abs_error tolerance``; exits non-zero on the first failure.
"""

from __future__ import annotations

import os
import sys

os.environ["TRITON_INTERPRET"] = "1"

import builtins

import numpy as np
import torch
import triton.runtime.interpreter as interpreter


class _IntOfArray(type):
    # numpy >= 2.4 refuses int() of a one-element array, which the interpreter uses for loop bounds loaded from
    # memory (the kernels' row pointers); this stands in for the builtin int within the interpreter module only.
    def __call__(cls, x: object = 0, *args: object) -> int:
        if isinstance(x, np.ndarray):
            x = x.reshape(-1)[0]
        return builtins.int(x, *args)  # type: ignore[call-overload]

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, builtins.int)


interpreter.int = _IntOfArray("int", (), {})  # type: ignore[attr-defined]

from sparsebrain.kernels import csr_reference, csr_triton, packed24, packed24_triton  # noqa: E402
from sparsebrain.topology import random_transposable_mask  # noqa: E402

CASES = [  # out, in, tokens, density, activation dtype, index dtype
    (7, 5, 3, 0.4, torch.float32, torch.int32),
    (40, 24, 33, 0.1, torch.bfloat16, torch.int64),
    (30, 50, 130, 0.05, torch.float16, torch.int32),
    (16, 16, 1100, 0.2, torch.float32, torch.int64),  # more tokens than one sddmm chunk: atomic partial sums
    (9, 6, 5, 0.0, torch.float32, torch.int32),  # no links at all
]


def main() -> int:
    g = torch.Generator().manual_seed(0)
    for out_f, in_f, tokens, density, dtype, index_dtype in CASES:
        mask = torch.rand(out_f, in_f, generator=g) < density
        flat = mask.reshape(-1).nonzero().squeeze(1)
        rows, cols = (flat // in_f).to(index_dtype), (flat % in_f).to(index_dtype)
        row_ptr = torch.zeros(out_f + 1, dtype=index_dtype)
        row_ptr[1:] = torch.bincount(rows.long(), minlength=out_f).cumsum(0)
        values = torch.randn(flat.numel(), generator=g)
        x_t = torch.randn(in_f, tokens, generator=g).to(dtype)
        a_t = torch.randn(out_f, tokens, generator=g).to(dtype)
        y = csr_triton.spmm(values, row_ptr, cols, x_t, out_f).float()
        y_ref = csr_reference.spmm_reference(values, row_ptr, cols, x_t, out_f).float()
        s = csr_triton.sddmm(a_t, x_t, row_ptr, cols)
        s_ref = csr_reference.sddmm_reference(a_t, x_t, rows, cols)
        name = f"{out_f}x{in_f}/{tokens}/{density}/{str(dtype)[6:]}/{str(index_dtype)[6:]}"
        # one rounding of the output apart: an ulp of the output dtype at its magnitude
        ulp = 1e-5 if dtype == torch.float32 else (2**-7 if dtype == torch.bfloat16 else 2**-10)
        top = lambda t: t.abs().max().item() if t.numel() else 0.0  # noqa: E731
        for label, got, ref, tol in (
            ("spmm", y, y_ref, ulp * (1 + top(y_ref))),
            ("sddmm", s, s_ref, 1e-5 * (1 + top(s_ref)) * (1 + tokens / 1000)),
        ):
            err = (got - ref).abs().max().item() if ref.numel() else 0.0
            print(f"{label} {name} {err:.3g} {tol:.3g}")
            if got.shape != ref.shape or not err <= tol:
                return 1
    x = torch.randn(70, 130, generator=g).to(torch.bfloat16)
    transposed = csr_triton.transpose(x)
    print(f"transpose 70x130 {float((transposed.float() - x.t().float()).abs().max()):.3g} 0")
    if not (transposed.is_contiguous() and torch.equal(transposed, x.t())):
        return 1
    return _packed24_copies(g)


def _packed24_copies(g: torch.Generator) -> int:
    """The 2:4 value-slot kernels against the dense weight of the slots, on 2:4 and 1:4 masks with short groups:
    ``spread_`` must write the slots of ``W`` and of ``W^T`` (zero where a slot is not a link), ``slot_gather_`` a
    dense gradient read at ``W``'s slots."""
    # sides not multiples of the tiles, and one of more than one tile (32 x 256) each way
    for out_f, in_f, n in [(16, 32, 2), (40, 72, 1), (64, 48, 2), (72, 528, 2)]:
        mask = random_transposable_mask((out_f, in_f), n, 4, generator=g)
        mask[0, :4] = False
        slot, kept = packed24.slot_masks(mask)
        values = torch.randn(out_f, in_f // 2, generator=g)  # slots that are not links hold noise: it must not leak
        dense = packed24.dense_from_slots(values, slot, kept)
        codes, codes_t, _, cols_t = packed24.slot_layout(mask)
        refs = {
            "spread_rows": dense[slot],
            "spread_cols": dense.t().contiguous()[cols_t],
        }
        got = {name: torch.full((out_f * in_f // 2,), float("nan"), dtype=torch.bfloat16) for name in refs}
        packed24_triton.spread_(got["spread_rows"], got["spread_cols"], values, codes, codes_t)
        grad_dense = torch.randn(out_f, in_f, generator=g).to(torch.bfloat16)
        refs["slot_gather"] = (grad_dense.float()[slot] * kept.reshape(-1)).reshape(-1)
        got["slot_gather"] = torch.full((out_f, in_f // 2), float("nan"))
        packed24_triton.slot_gather_(got["slot_gather"], grad_dense, codes)
        for name, ref in refs.items():
            value = got[name].reshape(-1).float()
            # the interpreter's float32 -> bfloat16 conversion truncates where the GPU's rounds: one bf16 ulp apart
            err = float(((value - ref).abs() / ref.abs().clamp(min=1e-30)).max())
            print(f"{name} {out_f}x{in_f}/{n}:4 {err:.3g} {2**-7:.3g}")
            if not (err <= 2**-7 and torch.equal(value == 0, ref == 0)):
                return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
