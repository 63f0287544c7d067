"""The papers' wide MLP trained at 1% density: masked against compressed storage (and dense), in the same run.

The model is a plain ``nn.Sequential`` of ``nn.Linear`` and ``nn.ReLU``, 784-1568-1568-1568-10 (``--hidden``): the
three hidden layers are made sparse at ``--density`` (0.01) by ``sparsify_`` (its default filter keeps the last
Linear, the classifier, dense), with ``storage="masked"`` (the masked dense ``SparseLinear``) or
``storage="compressed"`` (``CompressedSparseLinear``: only the links), the same links and weights for both (one
seed); the dense model is the same network unsparsified. A training step is the forward of a ``--batch`` (32) of
inputs ~ N(0, 1), cross-entropy against random labels, the backward and an SGD step (lr 0.01, momentum 0.9), in
``--dtype`` (fp32; bf16 runs under autocast with float32 weights). The figure per model is the median wall time of a
step over ``--steps`` (200) steps after ``--warmup`` (20) untimed ones, timed in 10 interleaved rounds (each round
runs every model in turn, so that a slow spell of a shared machine falls on all of them), synchronised at both ends
on CUDA, on ``--threads`` (2) CPU threads. The first steps of the masked and the compressed model are checked to
give the same losses (relative 1e-4 in fp32, 2e-2 in bf16; the run fails with exit status 1 otherwise).

Target: compressed steps at least 5x faster than masked ones (the default configuration, fp32, on 2 CPU cores);
``reached`` is null for another configuration.

    python benchmarks/wide_mlp.py                 # CPU, 2 threads
    python benchmarks/wide_mlp.py --tiny --device cpu  # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _report import write_report
from _timing import timed
from torch import Tensor, nn

import sparsebrain as sb

DTYPES = {"bf16": torch.bfloat16, "fp32": torch.float32}
IN_FEATURES, CLASSES, HIDDEN_LAYERS = 784, 10, 3
TARGET = {"masked_over_compressed": 5.0}
# the configuration the target is stated for
TARGET_CONFIG = {"device": "cpu", "dtype": "fp32", "hidden": 1568, "density": 0.01, "batch": 32, "threads": 2}
CHECK_STEPS = 3
N_BATCHES = 8  # distinct random batches, cycled through
ROUNDS = 10  # the timed steps are split into rounds, each timing every model in turn


def build(hidden: int, device: torch.device, seed: int) -> nn.Sequential:
    """784-hidden-hidden-hidden-10 with ReLUs, initialised from ``seed``."""
    torch.manual_seed(seed)
    sizes = [IN_FEATURES, *[hidden] * HIDDEN_LAYERS]
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b, device=device), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(hidden, CLASSES, device=device))


class Trainer:
    """One model, its SGD optimizer and the batches it cycles through."""

    def __init__(self, model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float, bf16: bool) -> None:
        self.model, self.batches, self.bf16 = model, batches, bf16
        self.opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        self.i = 0
        self.device = next(model.parameters()).device

    def step(self) -> Tensor:
        x, y = self.batches[self.i % len(self.batches)]
        self.i += 1
        self.opt.zero_grad(set_to_none=True)
        ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16 else contextlib.nullcontext()
        with ctx:
            loss = F.cross_entropy(self.model(x), y)
        loss.backward()
        self.opt.step()
        return loss.detach()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", choices=sorted(DTYPES), default="fp32", help="fp32, or bf16 autocast")
    ap.add_argument("--hidden", type=int, default=None, help="hidden width (default 1568; tiny 128)")
    ap.add_argument("--density", type=float, default=0.01, help="of the three hidden layers")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per model (default 200; tiny 10)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps before (default 20; tiny 2)")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (default 2; tiny 1)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tiny", action="store_true", help="hidden 128, 10 steps (CPU smoke run)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/wide_mlp_<device>.json)")
    args = ap.parse_args(argv)
    for key, (full, tiny) in {"hidden": (1568, 128), "steps": (200, 10), "warmup": (20, 2), "threads": (2, 1)}.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    if not 0 < args.density <= 1:
        ap.error("--density must be in (0, 1]")
    if min(args.hidden, args.batch, args.steps, args.threads) < 1 or args.warmup < 0:
        ap.error("--hidden, --batch, --steps and --threads must be >= 1, --warmup >= 0")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    bf16 = args.dtype == "bf16"
    t_start = time.perf_counter()
    g = torch.Generator(device=device).manual_seed(args.seed)
    batches = [
        (
            torch.randn(args.batch, IN_FEATURES, generator=g, device=device),
            torch.randint(0, CLASSES, (args.batch,), generator=g, device=device),
        )
        for _ in range(N_BATCHES)
    ]
    trainers: dict[str, Trainer] = {}
    layers: dict[str, dict[str, Any]] = {}
    for name in ("masked", "compressed", "dense"):
        model = build(args.hidden, device, args.seed)
        if name != "dense":
            gen = torch.Generator(device=device).manual_seed(args.seed + 1)  # the same links for both storages
            sparse = sb.nn.sparsify_(model, args.density, storage=name, generator=gen)
            layers[name] = {fqn: type(m).__name__ for fqn, m in sparse.items()}
        trainers[name] = Trainer(model, batches, args.lr, bf16)

    # the guard: the two storages train the same network
    losses = {name: [float(trainers[name].step()) for _ in range(CHECK_STEPS)] for name in ("masked", "compressed")}
    rtol = 2e-2 if bf16 else 1e-4
    worst = max(abs(a - b) / abs(b) for a, b in zip(losses["compressed"], losses["masked"]))
    check = {"steps": CHECK_STEPS, "losses": losses, "max_relative_difference": worst, "rtol": rtol}
    check["passed"] = worst <= rtol and all(math.isfinite(v) for v in losses["compressed"])
    print("check", json.dumps(check), flush=True)
    if not check["passed"]:
        sys.exit(f"correctness guard failed: masked and compressed losses differ by {worst:.3g} (rtol {rtol})")

    # Interleaved rounds: each round times every model in turn, so that a slow spell of a shared machine falls on
    # all of them rather than on one; the ratio is also given per round.
    for trainer in trainers.values():
        for _ in range(args.warmup):
            trainer.step()
    rounds = max(1, min(ROUNDS, args.steps))
    times: dict[str, list[float]] = {name: [] for name in trainers}
    per_round: list[dict[str, float]] = []
    for r in range(rounds):
        n = args.steps // rounds + (1 if r < args.steps % rounds else 0)
        this = {}
        for name, trainer in trainers.items():
            ts = [t * 1e3 for t in timed(trainer.step, device, n)]
            times[name] += ts
            this[name] = statistics.median(ts)
        per_round.append(this)
    results: dict[str, dict[str, Any]] = {}
    for name, trainer in trainers.items():
        params = sum(p.numel() for p in trainer.model.parameters())
        results[name] = {
            "step_ms_median": statistics.median(times[name]),
            "step_ms_all": times[name],
            "step_ms_median_per_round": [r[name] for r in per_round],
            "parameters": params,
            "final_loss": float(trainer.step()),
            "sparse_layers": layers.get(name, {}),
        }
        print(f"{name}: step {results[name]['step_ms_median']:.3f} ms ({params} parameters)", flush=True)
    comp = results["compressed"]["step_ms_median"]
    ratios = {
        "masked_over_compressed": results["masked"]["step_ms_median"] / comp,
        "dense_over_compressed": results["dense"]["step_ms_median"] / comp,
        "dense_over_masked": results["dense"]["step_ms_median"] / results["masked"]["step_ms_median"],
        "masked_over_compressed_per_round": [r["masked"] / r["compressed"] for r in per_round],
    }
    config = {
        "device": device.type,
        "dtype": args.dtype,
        "hidden": args.hidden,
        "density": args.density,
        "batch": args.batch,
        "threads": args.threads,
    }
    measured = ratios["masked_over_compressed"]
    targets = {
        "masked_over_compressed": {
            "target": TARGET["masked_over_compressed"],
            "config": TARGET_CONFIG,
            "measured": measured,
            "reached": measured >= TARGET["masked_over_compressed"] if config == TARGET_CONFIG else None,
        }
    }
    settings = {
        **config,
        "sizes": [IN_FEATURES, *[args.hidden] * HIDDEN_LAYERS, CLASSES],
        "optimizer": f"SGD(lr={args.lr}, momentum=0.9)",
        "autocast": "bfloat16" if bf16 else None,
        "steps": args.steps,
        "warmup": args.warmup,
        "batches_cycled": N_BATCHES,
        "cpu_threads": torch.get_num_threads(),
        "seed": args.seed,
        "tiny": args.tiny,
        "seconds": time.perf_counter() - t_start,
    }
    definitions = {
        "step_ms_median": "zero_grad, forward, cross-entropy, backward, SGD step: median wall ms over the timed steps",
        "masked_over_compressed": "masked step ms / compressed step ms (medians over all timed steps)",
        "masked_over_compressed_per_round": "the same ratio within each interleaved round",
        "check": f"losses of the first {CHECK_STEPS} steps of the masked and the compressed model (same links, "
        "weights and batches)",
    }
    out = Path(args.out or f"benchmarks/results/wide_mlp_{device.type}{'_tiny' if args.tiny else ''}.json")
    write_report(
        "wide_mlp",
        device,
        out,
        settings=settings,
        definitions=definitions,
        check=check,
        targets=targets,
        ratios=ratios,
        results=results,
    )
    t = targets["masked_over_compressed"]
    print(f"masked / compressed: {measured:.2f}x (target >= {t['target']}x, reached {t['reached']})")


if __name__ == "__main__":
    main()
