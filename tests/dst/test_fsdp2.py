"""FSDP2 (``fully_shard``) with 2 CPU processes (gloo): sparse training of a sharded model over 20 topology updates.

Each rank builds its model from another seed and its sparsifier from another seed: the sparsifier must agree on the
seed and the masks. At every step: masks identical across ranks, off-mask weights and optimizer state exactly zero
on every shard, exact link counts (or the N:M pattern). Then a resume from step 20 (full state dicts written by rank
0, the one-file checkpoint of the trainer) into models built from yet other seeds must end bit-identical.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
from helpers import assert_masks_moved_identically, free_port, init_gloo, run_ranks

import sparsebrain as sb

STEPS, RESUME_AT = 27, 20  # update_interval 1, end_fraction 0.75: 20 topology updates

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("torch.distributed.fsdp.fully_shard (FSDP2) needs a newer torch", allow_module_level=True)


def _build(method: str, model_seed: int, engine_seed: int, mesh):  # type: ignore[no-untyped-def]
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(model_seed)
    # the 7-row layer is sharded unevenly over 2 ranks (4 + 3 rows); N:M layers need multiples of 4
    hidden = [24, 24, 24] if method == "chts24" else [24, 24, 7]
    model = sb.models.MLP(20, hidden, 5)
    density = None if method == "chts24" else 0.2
    sp = sb.DynamicSparsifier(
        model, None, method=method, density=density, total_steps=STEPS, update_interval=1, seed=engine_seed
    )
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sp.attach(opt)
    return model, opt, sp


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def _check(model, opt, sp, method: str) -> None:  # type: ignore[no-untyped-def]
    from sparsebrain.nn.sharding import local_view

    for name, layer in sp.layers.items():
        mask = layer.mask
        gathered = [torch.zeros_like(mask, dtype=torch.uint8) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mask.to(torch.uint8))
        assert all(torch.equal(g, gathered[0]) for g in gathered), f"{name}: masks differ across ranks"
        off = ~local_view(layer.weight, mask)
        assert torch.count_nonzero(_local(layer.weight.detach())[off]) == 0, f"{name}: weight off mask"
        for key, value in opt.state.get(layer.weight, {}).items():
            if torch.is_tensor(value) and value.shape == layer.weight.shape:
                assert torch.count_nonzero(_local(value)[off]) == 0, f"{name}: optimizer state {key!r} off mask"
        if method == "chts24":
            assert sb.topology.is_nm(mask, 2, 4), name
        else:
            assert int(mask.sum()) == round(0.2 * mask.numel()), name


def _train(model, opt, sp, start: int, stop: int, method: str, rank: int) -> list[torch.Tensor]:  # type: ignore[no-untyped-def]
    masks = []
    for step in range(start, stop):
        g = torch.Generator().manual_seed(step * 10 + rank)  # each rank sees its own data
        x, y = torch.randn(8, 20, generator=g), torch.randint(0, 5, (8,), generator=g)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if sp.step():
            masks.append(torch.cat([m.mask.flatten() for m in sp.layers.values()]))
        opt.zero_grad()
        _check(model, opt, sp, method)
    return masks


def _snapshot(model, opt, sp) -> dict:  # type: ignore[type-arg]
    return {
        "weights": [_local(layer.weight.detach()).clone() for layer in sp.layers.values()],
        "masks": [layer.mask.clone() for layer in sp.layers.values()],
        "state": [_local(opt.state[layer.weight]["exp_avg"]).clone() for layer in sp.layers.values()],
        "sparsifier": sp.state_dict()["step"],
    }


def _worker(rank: int, world: int, port: int, method: str, out: str) -> None:
    init_gloo(rank, world, port)
    try:
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
            set_model_state_dict,
            set_optimizer_state_dict,
        )
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh("cpu", (world,))
        model, opt, sp = _build(method, model_seed=rank, engine_seed=rank, mesh=mesh)
        assert type(sp.strategy).__name__ == "FSDP2"
        history = _train(model, opt, sp, 0, RESUME_AT, method, rank)
        save = StateDictOptions(full_state_dict=True, cpu_offload=True)
        checkpoint = {
            "model": get_model_state_dict(model, options=save),
            "optimizer": get_optimizer_state_dict(model, opt, options=save),
            "sparsifier": sp.state_dict(),
        }
        # through a file, as a real resume: the CPU state dict shares tensors (Adam's step counts) with the optimizer
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        buffer.seek(0)
        checkpoint = torch.load(buffer, weights_only=True)
        history += _train(model, opt, sp, RESUME_AT, STEPS, method, rank)
        uninterrupted = _snapshot(model, opt, sp)

        model2, opt2, sp2 = _build(method, model_seed=50 + rank, engine_seed=70 + rank, mesh=mesh)
        load = StateDictOptions(full_state_dict=True, broadcast_from_rank0=True)
        set_model_state_dict(model2, checkpoint["model"] if rank == 0 else {}, options=load)
        set_optimizer_state_dict(model2, opt2, checkpoint["optimizer"] if rank == 0 else {}, options=load)
        sp2.load_state_dict(checkpoint["sparsifier"])
        _train(model2, opt2, sp2, RESUME_AT, STEPS, method, rank)
        resumed = _snapshot(model2, opt2, sp2)
        torch.save(
            {
                "masks": torch.stack(history),
                "updates": sp.stats()["updates"],
                "identical": all(
                    all(torch.equal(a, b) for a, b in zip(uninterrupted[k], resumed[k]))
                    for k in ("weights", "masks", "state")
                )
                and uninterrupted["sparsifier"] == resumed["sparsifier"],
            },
            f"{out}.{rank}",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("method", ["rigl", "chts", "chts24"])
def test_sharded_training_keeps_masks_identical_and_weights_sparse(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = run_ranks(_worker, method, tmp_path=tmp_path)
    assert_masks_moved_identically(results, updates=20)
    assert all(r["identical"] for r in results)  # the resume from step 20 ends bit-identical, on every rank


def test_a_sharded_model_without_the_fsdp2_strategy_is_refused() -> None:
    """Sharded weights under another strategy would silently train dense (their hooks never fire): refuse."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        model = sb.models.MLP(20, [24, 24], 5)
        sp = sb.DynamicSparsifier(model, None, method="set", density=0.2, total_steps=20, update_interval=1)
        fully_shard(model, mesh=init_device_mesh("cpu", (1,)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        x, y = torch.randn(4, 20), torch.randint(0, 5, (4,))
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        with pytest.raises(RuntimeError, match=r"sharded DTensors.*attach\(optimizer\)"):
            sp.step()  # built before fully_shard, never attached: still the single-process strategy
        with pytest.raises(RuntimeError, match="sharded DTensors"):
            sb.DynamicSparsifier(model, opt, method="set", density=0.2, strategy=sb.dst.distributed.Local())
        sp.attach(opt)  # the sharded flow: now the FSDP2 strategy masks the gradients
        assert type(sp.strategy).__name__ == "FSDP2"
        torch.nn.functional.cross_entropy(model(x), y).backward()
        for layer in sp.layers.values():
            assert torch.count_nonzero(layer.weight.grad.to_local()[~layer.mask]) == 0
    finally:
        dist.destroy_process_group()
