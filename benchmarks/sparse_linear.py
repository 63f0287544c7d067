"""One sparse layer's training step, compressed storage against a dense ``nn.Linear`` (and the masked layer), same run.

Per shape (``--shapes``, OUTxIN; default 8192x8192, 4096x11008, 11008x4096), token count (``--tokens``, default
16384) and density (``--densities``, default 0.1 to 0.001), three layers are timed on the same input:

- ``dense``: ``nn.Linear`` with float32 master weights, under ``torch.autocast(device, dtype=torch.bfloat16)`` for
  ``--dtype bf16`` (what dense mixed-precision training does), plain float32 for ``--dtype fp32``;
- ``compressed``: :class:`~sparsebrain.nn.CompressedSparseLinear` at that density (only the links are stored), under
  the same autocast;
- ``masked`` (``--masked``; default on for the CPU, off for CUDA): the masked dense ``SparseLinear`` at that density.

Two figures each: the forward alone (autograd recording, as in training; the output is dropped) and forward + backward
(``y.backward(grad)`` with a fixed random ``grad``; the input requires grad, so both the input gradient and the
weight gradient are computed; gradients are set to None before each call, as ``zero_grad`` does). The input and
``grad`` are in the compute dtype (bf16 activations come from the autocast layer before). Each figure is the median
wall time over ``--repeats`` calls after ``--warmup`` untimed ones (at least 3 on CUDA: the first calls autotune the
Triton kernels), synchronised at both ends of each call. Dense is timed before and after each shape's density sweep
and its samples pooled (``dense_drift_after_over_before`` says how far the machine moved). Speedups are dense time /
compressed time; the break-even density of a shape is the largest density of the list where compressed forward +
backward is faster than dense, refined log-linearly (log speedup against log density) between it and the next larger
density where the speedup crosses 1.

Memory, on CUDA: ``max_memory_allocated`` during one forward + backward minus the memory allocated before it. And,
computed from each layer's parameters: the bytes of parameters + gradients + AdamW state (2 float32 tensors per
parameter); for the compressed layer ``4 x nnz x 4`` bytes plus the indices ``rows`` and ``cols``, for dense
``4 x out x in x 4``; their ratio compressed / (density x dense) is reported without and with the indices (target:
at most 1.3 without them).

Before timing a shape, its first configuration is checked at ``--check-tokens`` (256) tokens: the compressed layer's
output and gradients against the masked layer with the same links and weights; the run fails (exit status 1) if any
max abs error exceeds 2e-2 x the max magnitude of the masked layer's tensor.

The targets (8192x8192, 16384 tokens, bf16): forward + backward at least 2x faster than dense at density 0.01 and at
least 8x at 0.001; ``reached`` is null where that configuration was not run.

    python benchmarks/sparse_linear.py --device cuda
    python benchmarks/sparse_linear.py --device cpu --shapes 1568x1568,4096x4096 --tokens 32,512 --threads 2
    python benchmarks/sparse_linear.py --tiny --device cpu  # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _report import write_report
from _timing import sync, timed
from torch import Tensor, nn

from sparsebrain.nn import CompressedSparseLinear, SparseLinear

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
# (shape, tokens, dtype, density) -> the forward + backward speedup over dense it is to reach
TARGETS = [
    {"shape": [8192, 8192], "tokens": 16384, "dtype": "bf16", "density": 0.01, "speedup_fwd_bwd": 2.0},
    {"shape": [8192, 8192], "tokens": 16384, "dtype": "bf16", "density": 0.001, "speedup_fwd_bwd": 8.0},
]
STATE_RATIO_TARGET = 1.3  # compressed param + grad + AdamW bytes / (density x dense's), indices aside
CHECK_RTOL = 2e-2  # of the masked layer's max magnitude: bf16 rounding of inputs and outputs, with room
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, float32


def _csv(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def _shape(text: str) -> tuple[int, int]:
    n_out, n_in = (int(v) for v in text.lower().split("x"))
    return n_out, n_in


def _device_kind(device: torch.device) -> str:
    """``h200`` for "NVIDIA H200": the first word of the device name with a digit in it; else the device type."""
    if device.type != "cuda":
        return device.type
    words = [w for w in torch.cuda.get_device_name(device).split() if re.search(r"\d", w)]
    return words[0].split("-")[0].lower() if words else "cuda"


def state_bytes(layer: nn.Module) -> dict[str, int]:
    """Bytes of the weight's and the bias's parameter + gradient + AdamW moments, and of the index buffers."""
    weight = layer.values if isinstance(layer, CompressedSparseLinear) else layer.weight

    def per(p: Tensor | None) -> int:
        return 0 if p is None else p.numel() * (2 * p.element_size() + ADAMW_STATES * 4)

    out = {"weight": per(weight), "bias": per(layer.bias), "indices": 0, "mask": 0}
    if isinstance(layer, CompressedSparseLinear):
        out["indices"] = layer.rows.numel() * layer.rows.element_size() + layer.cols.numel() * layer.cols.element_size()
    elif isinstance(layer, SparseLinear):
        out["mask"] = layer.mask.numel() * layer.mask.element_size()
    return out


class Case:
    """A layer's forward and forward + backward on a fixed input, under the run's autocast."""

    def __init__(self, layer: nn.Module, x: Tensor, grad: Tensor, autocast: Callable[[], Any]) -> None:
        self.layer, self.x, self.grad, self.autocast = layer, x, grad, autocast

    def forward(self) -> Tensor:
        with self.autocast():
            return self.layer(self.x)

    def clear(self) -> None:
        self.x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def forward_backward(self) -> None:
        self.clear()
        self.forward().backward(self.grad)


def measure(case: Case, device: torch.device, warmup: int, repeats: int) -> dict[str, Any]:
    """Median and all times (ms) of the forward and of forward + backward; peak memory of one forward + backward."""
    row: dict[str, Any] = {}
    for name, fn in (("fwd", case.forward), ("fwd_bwd", case.forward_backward)):
        for _ in range(warmup):
            fn()
        times = [t * 1e3 for t in timed(fn, device, repeats)]
        row[f"{name}_ms"] = statistics.median(times)
        row[f"{name}_ms_all"] = times
    row["peak_added_bytes_fwd_bwd"] = None
    if device.type == "cuda":
        case.clear()
        torch.cuda.empty_cache()
        sync(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        case.forward_backward()
        sync(device)
        row["peak_added_bytes_fwd_bwd"] = torch.cuda.max_memory_allocated(device) - base
    case.clear()
    return row


def check(
    layer: CompressedSparseLinear, tokens: int, dtype: torch.dtype, autocast: Callable[[], Any], g: torch.Generator
) -> dict[str, Any]:
    """Max abs errors of the compressed layer's output and gradients against the masked layer of the same links and
    weights, with the tolerance each is held to (``CHECK_RTOL`` x the masked tensor's max magnitude)."""
    device = layer.values.device
    masked = SparseLinear(layer.in_features, layer.out_features, mask=layer.topology(), device=device)
    with torch.no_grad():
        masked.weight.copy_(layer.dense_weight())
        masked.bias.copy_(layer.bias)
    x = torch.randn(tokens, layer.in_features, generator=g, device=device, dtype=dtype)
    grad = torch.randn(tokens, layer.out_features, generator=g, device=device, dtype=dtype)
    got: dict[str, Tensor] = {}
    ref: dict[str, Tensor] = {}
    for mod, into in ((layer, got), (masked, ref)):
        xi = x.clone().requires_grad_()
        mod.zero_grad(set_to_none=True)
        with autocast():
            y = mod(xi)
        y.backward(grad)
        weight_grad = mod.values.grad if mod is layer else mod.weight.grad[mod.mask]  # both in CSR (row-major) order
        into.update(y=y.detach(), dx=xi.grad, dw=weight_grad, db=mod.bias.grad)
    layer.zero_grad(set_to_none=True)
    errors = {k: float((got[k].float() - ref[k].float()).abs().max()) for k in ref}
    tolerance = {k: CHECK_RTOL * float(ref[k].float().abs().max()) for k in ref}
    return {
        "tokens": tokens,
        "max_abs_error": errors,
        "tolerance": tolerance,
        "max_magnitude": {k: float(ref[k].float().abs().max()) for k in ref},
        "passed": all(errors[k] <= tolerance[k] for k in ref),
    }


def break_even(densities: list[float], speedups: list[float]) -> dict[str, Any]:
    """The largest density where compressed forward + backward beats dense, refined where the speedup crosses 1."""
    pairs = sorted(zip(densities, speedups), reverse=True)  # from the densest
    faster = [i for i, (_, s) in enumerate(pairs) if s > 1]
    if not faster:
        return {"largest_faster_density": None, "break_even_density": None, "status": "none in range (dense faster)"}
    i = faster[0]
    d, s = pairs[i]
    if i == 0:
        return {
            "largest_faster_density": d,
            "break_even_density": None,
            "status": "none in range (compressed faster already at the largest density)",
        }
    d0, s0 = pairs[i - 1]  # the next larger density, where dense was at least as fast
    # log speedup linear in log density between the two, 0 at the break-even
    t = math.log(s0) / (math.log(s0) - math.log(s))
    crossing = math.exp(math.log(d0) + t * (math.log(d) - math.log(d0)))
    return {"largest_faster_density": d, "break_even_density": crossing, "status": f"crossed between {d0} and {d}"}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shapes", default=None, help="comma-separated OUTxIN (default 8192x8192,4096x11008,11008x4096)")
    ap.add_argument("--densities", default=None, help="comma-separated (default 0.1,0.03,0.01,0.003,0.001)")
    ap.add_argument("--tokens", default=None, help="comma-separated token counts (default 16384)")
    ap.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="bf16 autocast or fp32 (default bf16 on CUDA)"
    )
    ap.add_argument(
        "--masked",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="time the masked SparseLinear too (default: on for the CPU, off for CUDA)",
    )
    ap.add_argument("--repeats", type=int, default=None, help="timed calls per figure (default 10; tiny 2)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed calls before each figure (default 3; tiny 1)")
    ap.add_argument("--check-tokens", type=int, default=256, help="tokens of the correctness guard")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default torch's; tiny 1)")
    ap.add_argument("--backend", default="auto", help="the compressed layer's kernels (sparsebrain.kernels.csr_ops)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="shape 256x512, 64 tokens, densities 0.1,0.01 (CPU smoke run)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sparse_linear_<device>.json)")
    args = ap.parse_args(argv)
    cuda = torch.device(args.device).type == "cuda"
    defaults = {
        "shapes": ("8192x8192,4096x11008,11008x4096", "256x512"),
        "densities": ("0.1,0.03,0.01,0.003,0.001", "0.1,0.01"),
        "tokens": ("16384", "64"),
        "repeats": (10, 2),
        "warmup": (3, 1),
    }
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    args.dtype = args.dtype or ("bf16" if cuda else "fp32")
    args.masked = (not cuda) if args.masked is None else args.masked
    try:
        args.shapes = _csv(args.shapes, _shape)
        args.densities = _csv(args.densities, float)
        args.tokens = _csv(args.tokens, int)
    except ValueError as e:
        ap.error(f"--shapes, --densities, --tokens: {e}")
    if not all(0 < d <= 1 for d in args.densities):
        ap.error("--densities must be in (0, 1]")
    if min(args.tokens) < 1 or args.repeats < 1 or args.warmup < 0 or args.check_tokens < 1:
        ap.error("--tokens, --repeats and --check-tokens must be >= 1, --warmup >= 0")
    if cuda and args.warmup < 3:
        ap.error("--warmup must be >= 3 on CUDA (the first calls autotune the Triton kernels)")
    if args.tiny and args.threads is None and not cuda:
        args.threads = 1  # tiny products gain nothing from threads, and a busy machine's thread pool slows them
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    dtype = DTYPES[args.dtype]
    bf16 = args.dtype == "bf16"

    def autocast() -> Any:
        return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    checks: list[dict[str, Any]] = []
    dense_runs: list[dict[str, Any]] = []
    break_evens: list[dict[str, Any]] = []
    for n_out, n_in in args.shapes:
        g = torch.Generator(device=device).manual_seed(args.seed)
        torch.manual_seed(args.seed)
        dense = nn.Linear(n_in, n_out, device=device)  # float32 master weights
        dense_state = state_bytes(dense)
        for tokens in args.tokens:
            x = torch.randn(tokens, n_in, generator=g, device=device, dtype=dtype).requires_grad_()
            grad = torch.randn(tokens, n_out, generator=g, device=device, dtype=dtype)
            before = measure(Case(dense, x, grad, autocast), device, args.warmup, args.repeats)
            rows = []
            for i, density in enumerate(args.densities):
                gen = torch.Generator(device=device).manual_seed(args.seed + 1 + i)
                comp = CompressedSparseLinear(
                    n_in, n_out, density=density, device=device, generator=gen, backend=args.backend
                )
                if i == 0 and tokens == args.tokens[0]:  # the guard: once per shape, before its figures
                    result = check(comp, args.check_tokens, dtype, autocast, g)
                    checks.append({"shape": [n_out, n_in], "density": density, "dtype": args.dtype, **result})
                    print("check", json.dumps(checks[-1]), flush=True)
                    if not result["passed"]:
                        sys.exit(
                            f"correctness guard failed at {n_out}x{n_in}, density {density}: compressed against "
                            f"masked max abs errors {result['max_abs_error']} exceed {result['tolerance']}"
                        )
                row: dict[str, Any] = {
                    "shape": [n_out, n_in],
                    "tokens": tokens,
                    "density": density,
                    "dtype": args.dtype,
                    "links": comp.nnz,
                    "index_dtype": str(comp.rows.dtype).removeprefix("torch."),
                    "compressed": measure(Case(comp, x, grad, autocast), device, args.warmup, args.repeats),
                    "masked": None,
                }
                comp_state = state_bytes(comp)
                del comp
                if args.masked:
                    masked = SparseLinear(n_in, n_out, density=density, device=device, generator=gen)
                    row["masked"] = measure(Case(masked, x, grad, autocast), device, args.warmup, args.repeats)
                    masked_state = state_bytes(masked)
                    del masked
                dense_weight = density * dense_state["weight"]
                row["state_bytes"] = {"dense": dense_state, "compressed": comp_state}
                if args.masked:
                    row["state_bytes"]["masked"] = masked_state
                without = comp_state["weight"] / dense_weight
                row["state_ratio_vs_density_x_dense"] = {
                    "without_indices": without,
                    "with_indices": (comp_state["weight"] + comp_state["indices"]) / dense_weight,
                    "target_without_indices": STATE_RATIO_TARGET,
                    "met": without <= STATE_RATIO_TARGET,
                }
                rows.append(row)
                print(
                    f"{n_out}x{n_in} tokens {tokens} density {density}: compressed fwd "
                    f"{row['compressed']['fwd_ms']:.3f} ms, fwd+bwd {row['compressed']['fwd_bwd_ms']:.3f} ms"
                    + (f"; masked fwd+bwd {row['masked']['fwd_bwd_ms']:.3f} ms" if row["masked"] else ""),
                    flush=True,
                )
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            after = measure(Case(dense, x, grad, autocast), device, args.warmup, args.repeats)
            ref = {
                f"{k}_ms": statistics.median(before[f"{k}_ms_all"] + after[f"{k}_ms_all"]) for k in ("fwd", "fwd_bwd")
            }
            dense_runs.append(
                {
                    "shape": [n_out, n_in],
                    "tokens": tokens,
                    "dtype": args.dtype,
                    "before": before,
                    "after": after,
                    "pooled": ref,
                    "dense_drift_after_over_before": after["fwd_bwd_ms"] / before["fwd_bwd_ms"],
                    "state_bytes": dense_state,
                }
            )
            for row in rows:
                row["dense"] = {**ref, "peak_added_bytes_fwd_bwd": before["peak_added_bytes_fwd_bwd"]}
                row["speedup"] = {k: ref[f"{k}_ms"] / row["compressed"][f"{k}_ms"] for k in ("fwd", "fwd_bwd")}
                if row["masked"] is not None:
                    row["masked_over_compressed"] = {
                        k: row["masked"][f"{k}_ms"] / row["compressed"][f"{k}_ms"] for k in ("fwd", "fwd_bwd")
                    }
                    row["masked_speedup"] = {k: ref[f"{k}_ms"] / row["masked"][f"{k}_ms"] for k in ("fwd", "fwd_bwd")}
                print(
                    f"{n_out}x{n_in} tokens {tokens} density {row['density']}: dense/compressed fwd "
                    f"{row['speedup']['fwd']:.2f}x, fwd+bwd {row['speedup']['fwd_bwd']:.2f}x",
                    flush=True,
                )
            be = break_even([r["density"] for r in rows], [r["speedup"]["fwd_bwd"] for r in rows])
            entry = {"shape": [n_out, n_in], "tokens": tokens, "dtype": args.dtype, **be}
            if args.masked:  # the choice storage="auto" makes: compressed against masked
                vs_masked = [r["masked_over_compressed"]["fwd_bwd"] for r in rows]
                entry["vs_masked"] = break_even([r["density"] for r in rows], vs_masked)
            break_evens.append(entry)
            print("break-even", json.dumps(break_evens[-1]), flush=True)
            results += rows
            del x, grad
        del dense
        if device.type == "cuda":
            torch.cuda.empty_cache()
    targets = []
    for target in TARGETS:
        found = [
            r
            for r in results
            if r["shape"] == target["shape"]
            and r["tokens"] == target["tokens"]
            and r["dtype"] == target["dtype"]
            and math.isclose(r["density"], target["density"])
        ]
        measured = found[0]["speedup"]["fwd_bwd"] if found else None
        targets.append(
            {
                **target,
                "measured": measured,
                "reached": None if measured is None else measured >= target["speedup_fwd_bwd"],
            }
        )
    settings = {
        "shapes": [list(s) for s in args.shapes],
        "densities": args.densities,
        "tokens": args.tokens,
        "dtype": args.dtype,
        "autocast": "bfloat16" if bf16 else None,
        "masked": args.masked,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "check_tokens": args.check_tokens,
        "backend": args.backend,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cpu_threads": torch.get_num_threads(),
        "seed": args.seed,
        "tiny": args.tiny,
        "seconds": time.perf_counter() - t_start,
    }
    definitions = {
        "fwd_ms": "the layer's forward with autograd recording (output dropped), median wall ms, synchronised",
        "fwd_bwd_ms": "forward + y.backward(grad) (input and weight gradients), grads set to None before each call",
        "dense": "nn.Linear, float32 weights, same autocast; timed before and after the shape's densities, pooled",
        "speedup": "dense ms / compressed ms",
        "masked_over_compressed": "masked SparseLinear ms / compressed ms",
        "peak_added_bytes_fwd_bwd": "max_memory_allocated during one forward + backward minus memory_allocated "
        "before it (input, grad and the layer's parameters); null off CUDA",
        "state_bytes": "per tensor: numel x (2 x element size + 2 x 4): parameter, gradient and AdamW's two float32 "
        "moments; indices: rows + cols bytes; mask: the masked layer's bool mask",
        "state_ratio_vs_density_x_dense": "compressed weight state bytes (without / with indices) / (density x dense "
        "weight state bytes)",
        "break_even_density": "largest listed density where compressed fwd+bwd beats dense, refined by log speedup "
        "linear in log density to the crossing of 1 with the next larger density",
        "break_even.vs_masked": "the same, compressed against the masked SparseLinear (where --masked)",
        "checks": f"compressed against masked (same links and weights), max abs error; passed if each is at most "
        f"{CHECK_RTOL} x the masked tensor's max magnitude (y, dx, dw at the links, db)",
    }
    kind = _device_kind(device) + ("_tiny" if args.tiny else "")
    out = Path(args.out or f"benchmarks/results/sparse_linear_{kind}.json")
    write_report(
        "sparse_linear",
        device,
        out,
        settings=settings,
        definitions=definitions,
        checks=checks,
        targets=targets,
        break_even=break_evens,
        dense=dense_runs,
        results=results,
    )
    for t in targets:
        print(
            f"target {t['shape'][0]}x{t['shape'][1]} tokens {t['tokens']} {t['dtype']} density {t['density']}: "
            f"fwd+bwd >= {t['speedup_fwd_bwd']}x dense, measured {t['measured']}, reached {t['reached']}"
        )


if __name__ == "__main__":
    main()
