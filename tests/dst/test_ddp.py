"""DDP with 2 CPU processes (gloo): masks stay identical across ranks over 20 topology updates, on both storages."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from helpers import assert_masks_moved_identically, init_gloo, run_ranks

import sparsebrain as sb


def _worker(rank: int, world: int, port: int, method: str, storage: str, out: str) -> None:
    init_gloo(rank, world, port)
    try:
        torch.manual_seed(0)  # same initial model on every rank (DDP would broadcast it anyway)
        model = sb.models.MLP(20, [24, 24, 24], 5)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(100 + rank)  # different global RNG per rank: the engine must not depend on it
        density = None if method == "chts24" else 0.2  # an N:M method has its own
        sp = sb.DynamicSparsifier(
            model, opt, method=method, density=density, total_steps=27, update_interval=1, storage=storage
        )
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        history = []
        for step in range(27):
            g = torch.Generator().manual_seed(step * 10 + rank)  # each rank sees its own data
            x, y = torch.randn(8, 20, generator=g), torch.randint(0, 5, (8,), generator=g)
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            if sp.step():
                history.append(torch.cat([m.topology().flatten() for m in sp.layers.values()]))
            opt.zero_grad()
        weights = torch.cat([m.dense_weight().flatten() for m in sp.layers.values()])
        torch.save(
            {"masks": torch.stack(history), "updates": sp.stats()["updates"], "weights": weights}, f"{out}.{rank}"
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("method", "storage"),
    [("rigl", "masked"), ("chts", "masked"), ("chts24", "masked"), ("rigl", "compressed"), ("chts", "compressed")],
)
def test_masks_identical_across_ranks(method: str, storage: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = run_ranks(_worker, method, storage, tmp_path=tmp_path)
    assert_masks_moved_identically(results, updates=20)
    torch.testing.assert_close(results[0]["weights"], results[1]["weights"], rtol=0, atol=0)  # gradients averaged
