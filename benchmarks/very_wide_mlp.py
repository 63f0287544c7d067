"""An MLP far wider than a dense one can be: 784-100000-100000-100000-10 on Fashion-MNIST with the links of the
dense 784-1568-1568-1568-10 network.

The model is built on the meta device (no dense weight is ever allocated) and made sparse by a ``DynamicSparsifier``
with ``storage="compressed"`` on ``--device``: the three hidden layers share the link budget ``--links`` (default:
the dense 1568-wide network's hidden weights, 784 x 1568 + 2 x 1568^2 = 6,146,560) at one uniform density (about
3.1e-4), the 10-way classifier stays dense. It trains with ``--method`` (chts: soft removal, CH2-L3n regrowth
computed tile by tile from the links, percolation; from an ``--init`` ER topology by default, as in the committed
run; ``--init brf`` is the preset's start, also drawn from the links) for ``--epochs`` (1) epochs at
batch ``--batch`` (32), SGD with momentum 0.9 and lr ``--lr`` (0.01; the classifier's scaled by 1568 / width), a
topology update every ``--update-interval`` (400) steps until 3/4 of the run, then reports the test accuracy, the
time per step and per update, and the peak memory. ``--steps`` stops early (a
CPU check of a few steps). Fashion-MNIST is read from ``--data`` (default: where Debian's dataset-fashion-mnist puts
it).

    python benchmarks/very_wide_mlp.py --device cuda
    python benchmarks/very_wide_mlp.py --device cpu --steps 5      # a few steps on the CPU
    python benchmarks/very_wide_mlp.py --device cpu --tiny         # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _report import write_report
from _timing import sync
from torch import nn

import sparsebrain as sb
from sparsebrain.data.images import load_fashion_mnist

DENSE_HIDDEN = 1568


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--hidden", type=int, default=100_000)
    p.add_argument("--links", type=int, default=784 * DENSE_HIDDEN + 2 * DENSE_HIDDEN**2)
    p.add_argument("--method", default="chts")
    p.add_argument(
        "--init", default="er", help="initial topology: er (default) or brf (the chts preset's), both drawn as links"
    )
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--update-interval", type=int, default=400)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="Fashion-MNIST folder (idx files)")
    p.add_argument("--tiny", action="store_true", help="hidden 2000, 60,000 links, 200 steps (unless --steps)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    if args.tiny:
        args.hidden, args.links, args.update_interval = 2000, 60_000, 50
        args.steps = 200 if args.steps is None else args.steps
    return args


def build(hidden: int) -> nn.Sequential:
    with torch.device("meta"):
        return nn.Sequential(
            nn.Linear(784, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 10),
        )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    data = load_fashion_mnist(args.data)
    x_train, y_train = data.x_train.to(device), data.y_train.to(device)
    x_test, y_test = data.x_test.to(device), data.y_test.to(device)
    mean, std = x_train.mean(), x_train.std()
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std

    positions = 784 * args.hidden + 2 * args.hidden**2
    density = args.links / positions
    model = build(args.hidden)
    steps_per_epoch = len(x_train) // args.batch
    total = steps_per_epoch * args.epochs if args.steps is None else min(args.steps, steps_per_epoch * args.epochs)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_build = time.perf_counter()
    sp = sb.DynamicSparsifier(
        model, None, method=args.method, density=density, total_steps=total, seed=args.seed,
        update_interval=args.update_interval, storage="compressed", device=device, init=args.init,
        init_kwargs={} if args.init == "er" else sb.dst.resolve_method(args.method).init_kwargs,
    )  # fmt: skip
    # The classifier's fan-in is 64x the dense network's: its gradient, and so one SGD step's change of the logits,
    # grows with the width (unscaled, lr 0.01 diverges within two steps). Its learning rate is scaled by
    # 1568 / width, so that its steps move the logits as the dense network's do.
    head = model[-1]
    rest = [p for p in model.parameters() if all(p is not q for q in head.parameters())]
    opt = torch.optim.SGD(
        [{"params": rest}, {"params": list(head.parameters()), "lr": args.lr * DENSE_HIDDEN / args.hidden}],
        lr=args.lr, momentum=0.9,
    )  # fmt: skip
    sp.attach(opt)
    sync(device)
    build_s = time.perf_counter() - t_build
    g = torch.Generator(device=device).manual_seed(args.seed)
    step_ms: list[float] = []
    updates: list[dict[str, Any]] = []
    losses: list[float] = []
    step = 0
    t_start = time.perf_counter()
    while step < total:
        order = torch.randperm(len(x_train), device=device, generator=g)
        for b in range(steps_per_epoch):
            if step >= total:
                break
            idx = order[b * args.batch : (b + 1) * args.batch]
            sync(device)
            t0 = time.perf_counter()
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
            sync(device)
            t1 = time.perf_counter()
            updated = sp.step()
            sync(device)
            t2 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            step += 1
            if updated:
                stats = sp.stats()
                updates.append({"step": step, "update_ms": (t2 - t1) * 1e3, "anp": stats["anp"]})
                print(f"update at step {step}: {(t2 - t1) * 1e3:.0f} ms, ANP {stats['anp']:.3f}", flush=True)
            elif step > 3:
                step_ms.append((t1 - t0) * 1e3)
            if step % 200 == 0 or step == total or (args.steps is not None and args.steps <= 20):
                losses.append(loss.item())
                print(f"step {step}/{total}: loss {losses[-1]:.4f}", flush=True)
    train_s = time.perf_counter() - t_start
    model.eval()
    with torch.no_grad():
        correct = sum(
            int((model(x_test[i : i + 1000]).argmax(1) == y_test[i : i + 1000]).sum())
            for i in range(0, len(x_test), 1000)
        )
    accuracy = correct / len(x_test)
    stats = sp.stats()
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    print(f"test accuracy {accuracy:.4f} after {step} steps; step {statistics.median(step_ms):.2f} ms", flush=True)
    out = args.out or Path(f"benchmarks/results/very_wide_mlp_{device.type}.json")
    write_report(
        "very_wide_mlp",
        device,
        out,
        config={
            "hidden": args.hidden,
            "links_budget": args.links,
            "density": density,
            "method": args.method,
            "init": args.init,
            "batch": args.batch,
            "epochs": args.epochs,
            "steps": step,
            "update_interval": args.update_interval,
            "optimizer": f"SGD(lr={args.lr}, momentum=0.9), classifier lr x {DENSE_HIDDEN}/{args.hidden}",
            "seed": args.seed,
        },
        test_accuracy=accuracy,
        links={n: layer["links"] for n, layer in stats["layers"].items()},
        anp=stats["anp"],
        build_seconds=build_s,
        train_seconds=train_s,
        step_ms_median=statistics.median(step_ms) if step_ms else None,
        updates=updates,
        loss_every_200_steps=losses,
        peak_memory_bytes=peak,
        dense_weights_would_be=positions + 10 * args.hidden,
    )


if __name__ == "__main__":
    main()
