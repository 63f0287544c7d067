"""Training on the 2:4 sparse tensor cores (the semi_structured storage) against dense, per layer and per LLaMA step.

Layers (``--shapes``, ``in->out``; default 4096 <-> 11008 and the 1B-shaped projections): ``--tokens`` (16384)
tokens, float32 master weights under bf16 autocast, one forward and both gradients per call, ``--calls`` (20) calls
queued between two synchronisations, the median over ``--repeats`` (10) rounds: a dense ``nn.Linear``, the masked
``SparseLinear`` (the chts24 default storage) and ``SemiStructuredSparseLinear`` with its compressed ``W`` and
``W^T`` refreshed from its value slots at every call, as after every optimizer step. Also timed alone: that refresh (the
Triton copy kernels, and the plain-torch gather they replace) and a compression of a new mask (the work of a
topology update), the value slots' gradient read from the dense product, and a fused AdamW step over the value slots
against one over the dense weight (:func:`optimizer_row`).

Then a LLaMA-1B-shaped model (``--model``: 24 layers, dim 2048, 16 heads, intermediate 5504, vocabulary 32000) trains
on random tokens, ``--batch`` (8) x ``--seq`` (2048) per step: bf16 autocast, cross-entropy, backward, gradient
clipping at 1, fused AdamW and the sparsifier's step (no topology update falls in the timed steps). Dense against
chts24 on the masked storage and on the semi_structured one (every q/k/v/o/gate/up/down transposable 2:4), each
built fresh, ``--steps`` (8) timed steps after 3 untimed ones, the median step time and the peak memory.

    python benchmarks/semi_structured_training.py --device cuda
    python benchmarks/semi_structured_training.py --tiny --device cpu   # smoke run: the masked fallback only
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

import _llama24
import torch
import torch.nn.functional as F
from _report import write_report
from _timing import per_call, sync

import sparsebrain as sb
from sparsebrain.experiments.tasks.base import autocast
from sparsebrain.kernels import cusparselt
from sparsebrain.kernels.packed24 import Packed24
from sparsebrain.topology import random_transposable_mask

_SHAPES = "4096->11008,11008->4096,2048->2048,2048->5504,5504->2048"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = _llama24.parser(__doc__, _SHAPES, "24,2048,16,5504,32000", "benchmarks/results/semi_structured_training.json")
    p.add_argument("--steps", type=int, default=8)
    args = p.parse_args(argv)
    if args.tiny:
        _llama24.make_tiny(args)
        args.steps = 2
    return args


def layer_row(n_in: int, n_out: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    g = torch.Generator().manual_seed(args.seed)
    mask = random_transposable_mask((n_out, n_in), 2, 4, generator=g).to(device)
    dense = torch.nn.Linear(n_in, n_out, bias=False, device=device)
    masked = sb.SparseLinear(n_in, n_out, bias=False, mask=mask, device=device)
    semi = sb.SemiStructuredSparseLinear(n_in, n_out, bias=False, mask=mask, device=device)
    gd = torch.Generator(device=device).manual_seed(args.seed)
    half = torch.bfloat16 if device.type == "cuda" else torch.float32  # what autocast's products take and give
    x = torch.randn(args.tokens, n_in, generator=gd, device=device).to(half).requires_grad_()
    dy = torch.randn(args.tokens, n_out, generator=gd, device=device).to(half)

    def step(layer: torch.nn.Module, before: Callable[[], None] = lambda: None) -> Callable[[], None]:
        def run() -> None:
            before()
            with autocast(device, "bf16"):
                y = layer(x)
            y.backward(dy)
            x.grad = None
            for p in layer.parameters():
                p.grad = None

        return run

    row: dict[str, Any] = {"in": n_in, "out": n_out, "tokens": args.tokens}
    for name, layer, before in (("dense", dense, None), ("masked", masked, None),
                                ("semi_structured", semi, semi.weights_changed_)):  # fmt: skip
        row[name] = {"ms": per_call(step(layer, before or (lambda: None)), device, args.calls, args.repeats)}
        row[name]["speedup"] = row["dense"]["ms"] / row[name]["ms"]
    row["semi_structured"]["path"] = semi.path
    packed = semi._packed
    if packed is not None:  # the sparse cores ran: time the refresh and the slot gradient alone, both ways, and a
        chosen = packed.kernel  # new mask's compression ("triton" where Triton is installed)
        product = (dy.t() @ x).detach()  # dY^T X, as the backward reads it
        for kernel in sorted({chosen, "gather"}):
            packed.kernel = kernel
            row["semi_structured"][f"refresh_{kernel}_ms"] = per_call(
                lambda: packed.refresh_(semi.values), device, args.calls, args.repeats
            )
            row["semi_structured"][f"slot_grad_{kernel}_ms"] = per_call(
                lambda: packed.slot_grad(product, torch.float32), device, args.calls, args.repeats
            )
        packed.kernel = chosen
        row["semi_structured"]["compress_mask_ms"] = per_call(
            lambda: Packed24(mask, torch.bfloat16), device, 3, max(3, args.repeats // 3)
        )
    print(f"train {n_in}->{n_out}: {row}", flush=True)
    return row


def optimizer_row(n_in: int, n_out: int, args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    """A fused AdamW step over the layer's value slots (``out x in / 2`` float32 entries: what the semi_structured
    storage trains) against one over its dense weight (``out x in``: what the masked storage trains), alone."""
    row: dict[str, Any] = {"in": n_in, "out": n_out}
    for name, shape in (("value_slots", (n_out, n_in // 2)), ("dense_weight", (n_out, n_in))):
        p = torch.nn.Parameter(torch.randn(shape, device=device) * 0.01)
        p.grad = torch.randn_like(p) * 1e-3
        opt = torch.optim.AdamW([p], lr=1e-4, fused=device.type == "cuda")
        row[f"adamw_{name}_ms"] = per_call(opt.step, device, args.calls, args.repeats)
        row[f"bytes_{name}"] = 16 * p.numel()  # parameter, gradient and AdamW's two moments, float32
        del p, opt
    print(f"optimizer {n_in}->{n_out}: {row}", flush=True)
    return row


def _timed_training(config: Any, storage: str | None, ids: torch.Tensor, args: argparse.Namespace,
                    device: torch.device) -> dict[str, Any]:  # fmt: skip
    """Median step time (after 3 untimed steps) and peak memory of a fresh model: dense (``storage`` None) or
    chts24 on ``storage``."""
    torch.manual_seed(args.seed)
    with torch.device(device):
        model = sb.models.LlamaLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    sp = None
    if storage is not None:  # updates every 1000 steps: none in the timed ones
        sp = sb.DynamicSparsifier(
            model, opt, method="chts24", total_steps=10_000, update_interval=1000, seed=args.seed, storage=storage
        )
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, host = [], []  # the whole step, and the host's part (until all its work is queued)
    for batch in ids:
        sync(device)
        t0 = time.perf_counter()
        with autocast(device, "bf16"):
            logits = model(batch[:, :-1])
            loss = F.cross_entropy(logits.reshape(-1, config.vocab_size).float(), batch[:, 1:].reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sp is not None:
            sp.step()
        opt.zero_grad(set_to_none=True)
        host.append((time.perf_counter() - t0) * 1e3)
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    out: dict[str, Any] = {
        "step_ms": statistics.median(times[3:]),
        "host_ms": statistics.median(host[3:]),
        "loss": float(loss),
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    if sp is not None:
        out["sparse_layers"] = len(sp.layers)
        out["paths"] = sorted({getattr(layer, "path", "masked") for layer in sp.layers.values()})
    return out


def model_row(args: argparse.Namespace, device: torch.device) -> dict[str, Any]:
    config, described = _llama24.llama(args)
    vocab = config.vocab_size
    g = torch.Generator(device=device).manual_seed(args.seed)
    ids = torch.randint(0, vocab, (args.steps + 3, args.batch, args.seq + 1), generator=g, device=device)
    row: dict[str, Any] = {
        "config": described,
        "batch": args.batch,
        "seq": args.seq,
    }
    for name, storage in (("dense", None), ("masked", "masked"), ("semi_structured", "semi_structured")):
        row[name] = _timed_training(config, storage, ids, args, device)
        row[name]["speedup"] = row["dense"]["step_ms"] / row[name]["step_ms"]
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        print(f"model {name}: {row[name]}", flush=True)
    return row


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    start = time.perf_counter()
    shapes = _llama24.shapes(args)
    rows = [layer_row(n_in, n_out, args, device) for n_in, n_out in shapes]
    optimizer = [optimizer_row(n_in, n_out, args, device) for n_in, n_out in shapes]
    model = model_row(args, device) if args.model else None
    targets = [
        {"training_layer": f"{r['in']}->{r['out']}", "tokens": args.tokens, "at_least": 1.2,
         "measured": r["semi_structured"]["speedup"]}
        for r in rows if (r["in"], r["out"]) in ((4096, 11008), (11008, 4096))
    ]  # fmt: skip
    if model is not None:
        targets.append({"training_step": model["config"], "tokens": args.batch * args.seq, "at_least": 1.1,
                        "measured": model["semi_structured"]["speedup"]})  # fmt: skip
    for t in targets:
        t["reached"] = t["measured"] >= t["at_least"]
    write_report(
        "semi_structured_training",
        device,
        args.out,
        settings={**{k: v for k, v in vars(args).items() if k != "out"}, "seconds": time.perf_counter() - start},
        definitions={
            "ms": "ms per forward + both gradients, --calls calls queued between two synchronisations (median)",
            "step_ms": "ms per training step (forward, loss, backward, clipping, AdamW, sparsifier), median",
            "host_ms": "ms of the step until the host has queued all its work (below step_ms: bound by the GPU)",
            "speedup": "dense ms / this one's ms (above 1: faster than dense)",
            "optimizer": "a fused AdamW step alone, over the value slots and over a dense weight of the layer",
        },
        cusparselt=device.type == "cuda" and cusparselt.available(),
        targets=targets,
        layers=rows,
        optimizer=optimizer,
        model=model,
    )


if __name__ == "__main__":
    main()
