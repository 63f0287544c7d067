"""Forward time and memory of RSGN against the number of nodes, for the reference and the sparse variant.

For each variant and N in ``--nodes`` (default 256 ... 16,384) it times the forward pass of one batch of the long-range
task's shape (``--batch`` x 128 x 32, K = 7 propagation steps) in eval mode under ``torch.no_grad``, and records the
peak device memory of that forward (CUDA) or the peak resident memory of the process (CPU, a coarse upper bound).
A point that runs out of memory is recorded as such and the larger N of that variant are skipped. Writes a JSON file
with the device, versions and command, and with ``--plot`` a PNG of time and memory against N on log-log axes.

    python benchmarks/rsgn_scaling.py --device cuda --plot
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from _report import write_report

from sparsebrain.models import RSGN

NODES = [256, 512, 1024, 2048, 4096, 8192, 16384]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench(variant: str, nodes: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """One (variant, N) point: median forward seconds over ``args.repeats`` after one warm-up, and peak memory."""
    torch.manual_seed(args.seed)
    kw: dict[str, Any] = {"num_neighbors": args.neighbors} if variant == "sparse" else {}
    model = RSGN(32, 10, variant=variant, num_nodes=nodes, steps=args.steps, device=device, **kw).eval()
    x = torch.randn(args.batch, args.seq_len, 32, device=device)  # (B, T, D)
    with torch.no_grad():
        model(x)  # warm-up: kernels, caches
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        times = []
        for _ in range(args.repeats):
            _sync(device)
            t0 = time.perf_counter()
            model(x)
            _sync(device)
            times.append(time.perf_counter() - t0)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
        memory_kind = "peak CUDA memory allocated during the timed forwards (MiB)"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
        memory_kind = "peak resident memory of the process so far (MiB; an upper bound)"
    return {
        "variant": variant,
        "nodes": nodes,
        "forward_seconds_median": statistics.median(times),
        "forward_seconds": times,
        "peak_memory_mib": peak,
        "memory": memory_kind,
        "active_fraction": float(model.last_activity.mean()),
        "parameters": sum(p.numel() for p in model.parameters()),
    }


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Time and memory against N, log-log, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for variant in sorted({r["variant"] for r in results}):
        ok = [r for r in results if r["variant"] == variant and "error" not in r]
        n = [r["nodes"] for r in ok]
        axes[0].plot(n, [r["forward_seconds_median"] * 1e3 for r in ok], "o-", label=variant)
        axes[1].plot(n, [r["peak_memory_mib"] for r in ok], "o-", label=variant)
    for ax, label in zip(axes, ("forward time (ms)", "peak memory (MiB)")):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("nodes N")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle("RSGN forward pass against the number of nodes")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--nodes", type=int, nargs="+", default=NODES)
    ap.add_argument("--variants", nargs="+", default=["reference", "sparse"], choices=["reference", "sparse"])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--steps", type=int, default=7, help="propagation steps K (7: the long-range task)")
    ap.add_argument("--neighbors", type=int, default=16, help="k of the sparse variant")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/rsgn_scaling_<device>.json)")
    ap.add_argument("--plot", action="store_true", help="also write the PNG beside the JSON")
    args = ap.parse_args()
    device = torch.device(args.device)
    results: list[dict[str, Any]] = []
    for variant in args.variants:
        for nodes in sorted(args.nodes):
            try:
                r = bench(variant, nodes, args, device)
            except torch.OutOfMemoryError as e:  # record it, and skip the larger N of this variant
                results.append({"variant": variant, "nodes": nodes, "error": f"out of memory: {str(e)[:200]}"})
                print(json.dumps(results[-1]), flush=True)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                break
            results.append(r)
            print(json.dumps(r), flush=True)
    out = Path(args.out or f"benchmarks/results/rsgn_scaling_{device.type}.json")
    settings = {k: getattr(args, k) for k in ("batch", "seq_len", "steps", "neighbors", "repeats", "seed")}
    write_report("rsgn_scaling", device, out, settings=settings, results=results)
    if args.plot:
        plot(results, out.with_suffix(".png"))
        print(f"wrote {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
