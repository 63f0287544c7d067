"""DDP with 2 CPU processes (gloo): masks stay identical across ranks over 20 topology updates."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import sparsebrain as sb


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _worker(rank: int, world: int, port: int, method: str, out: str) -> None:
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # same initial model on every rank (DDP would broadcast it anyway)
        model = sb.models.MLP(20, [24, 24, 24], 5)
        opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        torch.manual_seed(100 + rank)  # different global RNG per rank: the engine must not depend on it
        density = None if method == "chts24" else 0.2  # an N:M method has its own
        sp = sb.DynamicSparsifier(model, opt, method=method, density=density, total_steps=27, update_interval=1)
        ddp = torch.nn.parallel.DistributedDataParallel(model)
        history = []
        for step in range(27):
            g = torch.Generator().manual_seed(step * 10 + rank)  # each rank sees its own data
            x, y = torch.randn(8, 20, generator=g), torch.randint(0, 5, (8,), generator=g)
            torch.nn.functional.cross_entropy(ddp(x), y).backward()
            opt.step()
            if sp.step():
                history.append(torch.cat([m.mask.flatten() for m in sp.layers.values()]))
            opt.zero_grad()
        torch.save({"masks": torch.stack(history), "updates": sp.stats()["updates"]}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rigl", "chts", "chts24"])
def test_masks_identical_across_ranks(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = str(tmp_path / "masks")
    mp.spawn(_worker, args=(2, _free_port(), method, out), nprocs=2, join=True)
    r0, r1 = (torch.load(f"{out}.{r}", weights_only=True) for r in (0, 1))
    assert r0["updates"] == r1["updates"] == 20
    assert torch.equal(r0["masks"], r1["masks"])
    assert not torch.equal(r0["masks"][0], r0["masks"][-1])  # the topology really moved
