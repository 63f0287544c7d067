"""Test helpers: a tiny MLP task that trains in milliseconds on the CPU."""

from __future__ import annotations

import torch

import sparsebrain as sb


def tiny_mlp(seed: int = 0) -> sb.models.MLP:
    torch.manual_seed(seed)
    return sb.models.MLP(20, [24, 24, 24], 5)


def make_optimizer(model: torch.nn.Module, optim: str) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay (the MLP papers' recipe) or AdamW: the two the invariants must survive."""
    if optim == "sgd":
        return torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    return torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)


def assert_zero_off_mask(opt, sp) -> None:  # type: ignore[no-untyped-def]
    """Boolean masks; weights and same-shaped optimizer state exactly zero wherever the mask is False."""
    for name, layer in sp.layers.items():
        assert layer.mask.dtype == torch.bool
        off = ~layer.mask
        assert torch.count_nonzero(layer.weight.detach()[off]) == 0, f"{name}: weight off mask"
        for key, value in opt.state.get(layer.weight, {}).items():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                assert torch.count_nonzero(value[off]) == 0, f"{name}: optimizer state {key!r} off mask"


def tiny_batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A deterministic batch for ``step`` (independent of any global RNG state)."""
    g = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(16, 20, generator=g)
    y = torch.randint(0, 5, (16,), generator=g)
    return x, y


def train_steps(model, opt, sparsifier, start: int, stop: int, on_update=None) -> None:  # type: ignore[no-untyped-def]
    for step in range(start, stop):
        x, y = tiny_batch(step)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        before = {n: m.mask.clone() for n, m in sparsifier.layers.items()}
        updated = sparsifier.step()
        if updated and on_update is not None:
            on_update(before)
        opt.zero_grad(set_to_none=True)


def dead_ends(masks: dict[str, torch.Tensor], junction) -> int:  # type: ignore[no-untyped-def]
    """Neurons with a link somewhere in the junction that are not alive in all of its layers (0 after percolation)."""
    from sparsebrain.topology.percolation import alive_neurons

    alive = alive_neurons(masks, junction)
    has_link = torch.zeros_like(alive)
    for name in junction.producers:
        has_link |= masks[name].any(1)
    for name in junction.consumers:
        has_link |= masks[name].any(0)
    return int((has_link & ~alive).sum())


# ------------------------------------------------------------------------------------------------------------------
# several processes (gloo, CPU)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def init_gloo(rank: int, world: int, port: int) -> None:
    """Joins the process group of a test's ranks (one CPU thread each: 2 cores run both)."""
    import os

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=world)


def run_ranks(worker, *args, tmp_path, world: int = 2) -> list[dict]:  # type: ignore[no-untyped-def,type-arg]
    """Runs ``worker(rank, world, port, *args, out)`` in ``world`` processes; returns each one's ``out.RANK`` file."""
    import pytest
    import torch.multiprocessing as mp

    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    out = str(tmp_path / "rank")
    mp.spawn(worker, args=(world, free_port(), *args, out), nprocs=world, join=True)
    return [torch.load(f"{out}.{r}", weights_only=True) for r in range(world)]


def assert_masks_moved_identically(results: list[dict], updates: int) -> None:  # type: ignore[type-arg]
    """Every rank made ``updates`` topology updates, with the same masks each time, and the topology moved."""
    assert all(r["updates"] == updates for r in results)
    assert all(torch.equal(r["masks"], results[0]["masks"]) for r in results)
    assert not torch.equal(results[0]["masks"][0], results[0]["masks"][-1])
