"""The main job: dense vs SET vs CHTss on an embedded synthetic task, finished in well under a minute on a CPU.

Run it with ``python -m sparsebrain``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .dst import DynamicSparsifier
from .models import MLP

__all__ = ["DemoResult", "make_task", "run_demo"]


def make_task(n: int = 4000, dim: int = 64, classes: int = 10, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A 10-class problem: a random two-layer teacher network labels Gaussian inputs (no file, no download)."""
    g = torch.Generator().manual_seed(seed)
    w1 = torch.randn(dim, 128, generator=g) / dim**0.5
    w2 = torch.randn(128, classes, generator=g) / 128**0.5
    x = torch.randn(n, dim, generator=g)
    y = (torch.tanh(x @ w1) @ w2).argmax(1)
    return x, y


@dataclass
class DemoResult:
    method: str
    accuracy: float
    density: float
    anp: float
    seconds: float


def run_demo(
    methods: tuple[str, ...] = ("dense", "set", "chtss"), density: float = 0.05, epochs: int = 10, seed: int = 0
) -> list[DemoResult]:
    """Trains one small MLP per method and returns test accuracy, final density and ANP."""
    x, y = make_task(seed=seed)
    x_train, y_train, x_test, y_test = x[:3000], y[:3000], x[3000:], y[3000:]
    batch = 32
    steps_per_epoch = len(x_train) // batch
    results = []
    for method in methods:
        torch.manual_seed(seed)
        model = MLP(x.shape[1], [256, 256], 10)
        opt = torch.optim.SGD(model.parameters(), lr=0.025, momentum=0.9, weight_decay=5e-4)
        total = steps_per_epoch * epochs
        sched = torch.optim.lr_scheduler.LinearLR(opt, 1.0, 0.01, total_iters=total)
        sp = DynamicSparsifier(
            model, opt, method=method, density=density, total_steps=total, update_interval=steps_per_epoch, seed=seed
        )
        start = time.perf_counter()
        for epoch in range(epochs):
            order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(seed * 1000 + epoch))
            for i in range(steps_per_epoch):
                idx = order[i * batch : (i + 1) * batch]
                loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
                loss.backward()
                opt.step()
                sp.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            acc = (model(x_test).argmax(1) == y_test).float().mean().item()
        stats = sp.stats()
        results.append(DemoResult(method, acc, stats["density"], stats["anp"], time.perf_counter() - start))
    return results


def main() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    print("sparsebrain demo: MLP 64-256-256-10 on an embedded synthetic 10-class task, 10 epochs, density 0.05")
    rows = run_demo()
    print(f"{'method':<8} {'test acc':>9} {'density':>8} {'ANP':>6} {'time (s)':>9}")
    for r in rows:
        print(f"{r.method:<8} {100 * r.accuracy:>8.2f}% {r.density:>8.3f} {r.anp:>6.3f} {r.seconds:>9.1f}")


if __name__ == "__main__":
    main()
