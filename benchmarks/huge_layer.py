"""A layer no dense layer can match on one GPU: 65536 x 65536 at density 0.001, trained with topology updates.

One ``CompressedSparseLinear(--side, --side, density=--density)`` (4.3 M links at the defaults; its dense float32
weight alone would be 17 GB, 68 GB with gradient and AdamW moments) learns a random linear teacher of the same
shape and density from ``--tokens`` (4096) random bf16 inputs per step (autocast, float32 master weights, AdamW lr
1e-3), for ``--steps`` (200) steps under each ``--methods`` rule (default chts, set, rigl: their removal, regrowth
and, for chts, its CH2-L3n scores computed tile by tile from the links), with a topology update every
``--update-interval`` (50) steps up to 3/4 of the run. Every update runs on the links alone (no ``(out, in)``
tensor). The figures per method: the median time of a training step without an update, the time of each update
(the ``sparsifier.step()`` call, synchronised), the links changed, the loss every 10 steps, and the peak GPU memory
of the run; ``dense`` trains an ``nn.Linear`` of the same shape the same way (68 GB of weight, gradient and AdamW
state at the defaults: it fits an H200; where it does not fit, the report says so).

    python benchmarks/huge_layer.py --device cuda
    python benchmarks/huge_layer.py --tiny --device cpu     # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _report import write_report
from _timing import sync
from torch import nn

import sparsebrain as sb


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--side", type=int, default=65536)
    p.add_argument("--density", type=float, default=0.001)
    p.add_argument("--tokens", type=int, default=4096)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--update-interval", type=int, default=50)
    p.add_argument("--methods", default="chts,set,rigl,dense", help="presets; dense: an nn.Linear of the same shape")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tiny", action="store_true", help="a 1024-wide layer at density 0.01, 20 steps")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/huge_layer.json"))
    args = p.parse_args(argv)
    if args.tiny:
        args.side, args.density, args.tokens, args.steps, args.update_interval = 1024, 0.01, 256, 20, 5
    return args


def run(method: str, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    g = torch.Generator(device=device).manual_seed(args.seed)
    teacher = sb.CompressedSparseLinear(
        args.side, args.side, bias=False, density=args.density, device=device, generator=g
    )
    teacher.requires_grad_(False)
    if method == "dense":  # the same layer dense, float32 weights: what the sparse one replaces
        layer = nn.Linear(args.side, args.side, device=device)
    else:
        layer = sb.CompressedSparseLinear(args.side, args.side, density=args.density, device=device, generator=g)
    model = nn.Sequential(layer)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    sp = None
    if method != "dense":
        sp = sb.DynamicSparsifier(
            model, opt, method=method, density=args.density, total_steps=args.steps, seed=args.seed,
            update_interval=args.update_interval, storage="compressed", percolation=False,
        )  # fmt: skip
    autocast = torch.autocast(device.type, dtype=torch.bfloat16)
    steps_ms: list[float] = []
    updates: list[dict[str, Any]] = []
    losses: list[float] = []
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for step in range(1, args.steps + 1):
        x = torch.randn(args.tokens, args.side, device=device, generator=g, dtype=torch.bfloat16)
        sync(device)
        t0 = time.perf_counter()
        with autocast:
            target = teacher(x)
            loss = (model(x) - target).float().pow(2).mean()
        loss.backward()
        opt.step()
        sync(device)
        t1 = time.perf_counter()
        updated = sp.step() if sp is not None else False
        sync(device)
        t2 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        if updated:
            last = sp.stats()["layers"]["0"]  # type: ignore[union-attr]
            updates.append({"step": step, "update_ms": (t2 - t1) * 1e3, "regrown": last["regrown"]})
            print(f"{method} update at step {step}: {(t2 - t1) * 1e3:.0f} ms, {last['regrown']} links", flush=True)
        elif step > 2:
            steps_ms.append((t1 - t0) * 1e3)
        if step == 1 or step % 10 == 0 or step == args.steps:
            losses.append(loss.item())
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    result = {
        "step_ms_median": statistics.median(steps_ms),
        "updates": updates,
        "update_ms_median": statistics.median(u["update_ms"] for u in updates) if updates else None,
        "loss_every_10_steps": losses,
        "links": layer.nnz if sp is not None else args.side * args.side,
        "peak_memory_bytes": peak,
    }
    shown = f"{peak / 2**30:.2f} GiB" if peak is not None else "not measured"
    print(f"{method}: step {result['step_ms_median']:.1f} ms, peak {shown}", flush=True)
    del teacher, layer, model, opt, sp
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    results: dict[str, Any] = {}
    for m in args.methods.split(","):
        try:
            results[m] = run(m, args, device)
        except torch.OutOfMemoryError as e:  # the dense layer may not fit: say so in the report
            results[m] = {"error": f"out of memory: {e}".splitlines()[0]}
            print(m, results[m]["error"], flush=True)
            torch.cuda.empty_cache()
    dense_params = args.side * args.side
    write_report(
        "huge_layer",
        device,
        args.out,
        config={
            "side": args.side,
            "density": args.density,
            "tokens": args.tokens,
            "steps": args.steps,
            "update_interval": args.update_interval,
            "seed": args.seed,
        },
        dense_would_need_bytes={
            "weight_fp32": 4 * dense_params,
            "weight_grad_adamw_fp32": 16 * dense_params,
        },
        methods=results,
    )


if __name__ == "__main__":
    main()
