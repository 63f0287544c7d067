"""CH2-L3n scores of one layer: sparsebrain's tiled GEMMs against the authors' fp32 matrix formula, in the same run.

Per shape (default 4096 x 11008 and 8192 x 28672, a random mask at ``--density``; the time does not depend on it) and
per implementation, the median wall time over ``--repeats`` calls after a warm-up, the peak memory the call adds
(``max_memory_allocated`` minus what was allocated before it; the mask is the only input) in bytes and as a multiple
of the layer's dense bf16 weight, and the largest relative error over the non-links against the float64 scores.
``authors_fp32`` is the reference code's formula, ported line by line (``DD = M M^T``, ``E_D``, ``A``, ...,
``S = A M + (B M^T)^T``) with plain float32 GEMMs (TF32 off); sparsebrain runs with ``precision`` ``bf16x3`` (the
default on CUDA), ``bf16x2`` and ``dtype`` (float32 GEMMs). The JSON also checks that the counts ``M M^T`` from bf16
tensor-core GEMMs are exact integers (against int64 on a tile of rows), and states each target beside its figure:
at least 5x faster than ``authors_fp32`` and at most 2x the layer's bf16 size in peak memory.

    python benchmarks/link_prediction.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections.abc import Callable
from pathlib import Path

import torch
from _report import write_report
from _timing import sync, timed
from torch import Tensor

from sparsebrain.topology.link_prediction import ch2_l3n

TARGETS = {"speedup_vs_authors_fp32": 5.0, "peak_memory_vs_bf16_layer": 2.0}


def authors_ch2_l3n(M: Tensor) -> Tensor:
    """The reference code's CH2-L3n matrix formula, in float32 (the port sparsebrain is measured against)."""
    Mf = M.float()
    k_out, k_in = Mf.sum(1), Mf.sum(0)
    DD = Mf @ Mf.T
    TT = Mf.T @ Mf
    BDD = (DD != 0).float()
    BTT = (TT != 0).float()
    E_D = torch.clamp((k_out[None, :] - DD) * BDD, min=1) - 1
    E_T = torch.clamp((k_in[None, :] - TT) * BTT, min=1) - 1
    A = (DD + BDD) / (E_D + 1)
    B = (TT + BTT) / (E_T + 1)
    S = A @ Mf + (B @ Mf.T).T
    return S * (1 - Mf)


def measure(fn: Callable[[], Tensor], device: torch.device, repeats: int) -> tuple[list[float], int | None, Tensor]:
    """Times ``fn`` (after one warm-up call) and the peak memory one call adds; returns the last result too."""
    times = timed(fn, device, repeats, warmup=True)
    peak = None
    if device.type == "cuda":
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        sync(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        out = fn()
    return times, peak, out


def max_relative_error(S: Tensor, ref: Tensor, candidates: Tensor) -> float:
    """Largest ``|S - ref| / ref`` over the non-links with a positive reference score (column tiles: no big copy)."""
    worst = 0.0
    for lo in range(0, S.shape[1], 1024):
        r = ref[:, lo : lo + 1024]
        c = candidates[:, lo : lo + 1024] & (r > 0)
        err = (S[:, lo : lo + 1024].double() - r).abs() / r.clamp_min(1e-300)
        worst = max(worst, float(err[c].max()) if bool(c.any()) else 0.0)
    return worst


def counts_exact(M: Tensor, rows: int = 256) -> bool | None:
    """Whether bf16 tensor-core GEMMs give the exact integer counts ``M[:rows] M^T`` (None off CUDA)."""
    if M.device.type != "cuda" or "dtype" not in torch.ops.aten.mm.overloads():
        return None
    Mb = M.to(torch.bfloat16)
    got = torch.ops.aten.mm.dtype(Mb[:rows], Mb.T, torch.float32)
    exact = (M[:rows].double() @ M.T.double()).round().long()  # float64 is exact for these integers
    return bool(torch.equal(got.long(), exact)) and bool((got == got.round()).all())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default="4096x11008,8192x28672", help="comma-separated OUTxIN")
    ap.add_argument("--density", type=float, default=0.3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/link_prediction_<device>.json)")
    args = ap.parse_args()
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # the authors' formula in true float32
    results = []
    for shape_text in args.shapes.split(","):
        n_out, n_in = (int(v) for v in shape_text.lower().split("x"))
        g = torch.Generator(device=device).manual_seed(args.seed)
        M = torch.rand(n_out, n_in, generator=g, device=device) < args.density
        ref = ch2_l3n(M, dtype=torch.float64)
        bf16_layer_bytes = n_out * n_in * 2
        impls: dict[str, Callable[[], Tensor]] = {
            "authors_fp32": lambda M=M: authors_ch2_l3n(M),
            "sparsebrain_bf16x3": lambda M=M: ch2_l3n(M, precision="bf16x3"),
            "sparsebrain_bf16x2": lambda M=M: ch2_l3n(M, precision="bf16x2"),
            "sparsebrain_fp32": lambda M=M: ch2_l3n(M, precision="dtype"),
        }
        if device.type != "cuda":  # the bf16 variants are emulated off CUDA: not a measurement of anything
            impls = {k: v for k, v in impls.items() if not k.endswith(("bf16x3", "bf16x2"))}
        rows = {}
        for name, fn in impls.items():
            times, peak, S = measure(fn, device, args.repeats)
            rows[name] = {
                "seconds_median": statistics.median(times),
                "seconds_all": times,
                "peak_added_bytes": peak,
                "peak_vs_bf16_layer": None if peak is None else peak / bf16_layer_bytes,
                "max_relative_error_vs_float64": max_relative_error(S, ref, ~M),
            }
            del S
        base = rows["authors_fp32"]["seconds_median"]
        for name, row in rows.items():
            row["speedup_vs_authors_fp32"] = base / row["seconds_median"]
            if name.startswith("sparsebrain"):
                row["targets"] = {
                    "speedup_vs_authors_fp32": {
                        "target": TARGETS["speedup_vs_authors_fp32"],
                        "measured": row["speedup_vs_authors_fp32"],
                        "met": row["speedup_vs_authors_fp32"] >= TARGETS["speedup_vs_authors_fp32"],
                    },
                    "peak_memory_vs_bf16_layer": {
                        "target": TARGETS["peak_memory_vs_bf16_layer"],
                        "measured": row["peak_vs_bf16_layer"],
                        "met": None
                        if row["peak_vs_bf16_layer"] is None
                        else row["peak_vs_bf16_layer"] <= TARGETS["peak_memory_vs_bf16_layer"],
                    },
                }
        result = {
            "shape": [n_out, n_in],
            "density": args.density,
            "links": int(M.sum()),
            "bf16_layer_bytes": bf16_layer_bytes,
            "float32_scores_bytes": n_out * n_in * 4,
            "counts_exact_bf16_tensor_cores": counts_exact(M),
            "implementations": rows,
        }
        results.append(result)
        print(json.dumps(result), flush=True)
        del M, ref
        if device.type == "cuda":
            torch.cuda.empty_cache()
    out = Path(args.out or f"benchmarks/results/link_prediction_{device.type}.json")
    write_report(
        "link_prediction",
        device,
        out,
        settings={"density": args.density, "repeats": args.repeats, "seed": args.seed, "tf32": False},
        targets=TARGETS,
        definitions={
            "peak_added_bytes": "max_memory_allocated during one call minus memory_allocated before it (the mask); "
            "includes the float32 result, itself 2x the layer's bf16 size",
            "max_relative_error_vs_float64": "max over non-links with a positive float64 score of |S - S64| / S64",
        },
        results=results,
    )


if __name__ == "__main__":
    main()
