"""FSDP2 (``fully_shard``) with 2 CPU processes (gloo): sparse training of a sharded model over 20 topology updates,
on both storages (a masked weight sharded by rows; a compressed layer's values sharded in chunks).

Each rank builds its sparsifier from another seed: the sparsifier must agree on the seed and the masks. At every
step: masks identical across ranks, exact link counts (or the N:M pattern), and on masked storage off-mask weights
and optimizer state exactly zero on every shard; on compressed storage new links start at zero, with zero state.
The two storages follow the same topology trajectory with the same weights (within float tolerance). Then a resume
from step 20 (full state dicts written by rank 0, the one-file checkpoint of the trainer) into models built from
other seeds must end bit-identical.
"""

from __future__ import annotations

import io

import pytest
import torch
import torch.distributed as dist
from helpers import assert_masks_moved_identically, free_port, init_gloo, run_ranks

import sparsebrain as sb
from sparsebrain.nn.sharding import full, local

STEPS, RESUME_AT = 27, 20  # update_interval 1, end_fraction 0.75: 20 topology updates

fsdp = pytest.importorskip("torch.distributed.fsdp")
if not hasattr(fsdp, "fully_shard"):
    pytest.skip("torch.distributed.fsdp.fully_shard (FSDP2) needs a newer torch", allow_module_level=True)


def _build(method: str, storage: str, model_seed: int, engine_seed: int, mesh):  # type: ignore[no-untyped-def]
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(model_seed)
    # the 7-row layer is sharded unevenly over 2 ranks (4 + 3 rows); N:M layers need multiples of 4
    hidden = [24, 24, 24] if method == "chts24" else [24, 24, 7]
    model = sb.models.MLP(20, hidden, 5)
    density = None if method == "chts24" else 0.2
    sp = sb.DynamicSparsifier(
        model, None, method=method, density=density, total_steps=STEPS, update_interval=1, seed=engine_seed,
        storage=storage,
    )  # fmt: skip
    for layer in model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    sp.attach(opt)
    return model, opt, sp


def _check(model, opt, sp, method: str, before: dict | None) -> None:  # type: ignore[no-untyped-def,type-arg]
    """The invariants after a step; ``before``: each layer's topology before this step's update, if it had one."""
    from sparsebrain.nn.sharding import local_view

    for name, layer in sp.layers.items():
        mask, weight = layer.topology(), layer.weight_parameter()
        gathered = [torch.zeros_like(mask, dtype=torch.uint8) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, mask.to(torch.uint8))
        assert all(torch.equal(g, gathered[0]) for g in gathered), f"{name}: masks differ across ranks"
        state = {k: v for k, v in opt.state.get(weight, {}).items() if torch.is_tensor(v) and v.shape == weight.shape}
        if isinstance(layer, sb.CompressedSparseLinear):  # the values are the links', in CSR order
            flat = layer.links().flat
            assert weight.shape == flat.shape and bool((flat[1:] > flat[:-1]).all()), name
            if before is not None:
                new = ~before[name].reshape(-1)[flat]
                assert torch.count_nonzero(full(weight.detach())[new]) == 0, f"{name}: a new link is not 0"
                for key, value in state.items():
                    assert torch.count_nonzero(full(value)[new]) == 0, f"{name}: optimizer state {key!r} at new links"
        else:
            off = ~local_view(weight, mask)
            assert torch.count_nonzero(local(weight.detach())[off]) == 0, f"{name}: weight off mask"
            for key, value in state.items():
                assert torch.count_nonzero(local(value)[off]) == 0, f"{name}: optimizer state {key!r} off mask"
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
        before = {n: m.topology() for n, m in sp.layers.items()}
        updated = sp.step()
        if updated:
            masks.append(torch.cat([m.topology().flatten() for m in sp.layers.values()]))
        opt.zero_grad()
        _check(model, opt, sp, method, before if updated else None)
    return masks


def _snapshot(model, opt, sp) -> dict:  # type: ignore[type-arg]
    params = [layer.weight_parameter() for layer in sp.layers.values()]
    return {
        "weights": [local(p.detach()).clone() for p in params],
        "masks": [layer.topology().clone() for layer in sp.layers.values()],
        "state": [local(opt.state[p]["exp_avg"]).clone() for p in params],
        "sparsifier": sp.state_dict()["step"],
    }


def _worker(rank: int, world: int, port: int, method: str, storage: str, out: str) -> None:
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
        # one model on every rank (the storages start from the same weights); the sparsifiers' seeds differ
        model, opt, sp = _build(method, storage, model_seed=0, engine_seed=rank, mesh=mesh)
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

        model2, opt2, sp2 = _build(method, storage, model_seed=50 + rank, engine_seed=70 + rank, mesh=mesh)
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
                "weights": torch.cat([full(layer.dense_weight()).flatten() for layer in sp.layers.values()]),
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
@pytest.mark.parametrize("method", ["rigl", "chts"])
def test_sharded_training_on_both_storages_follows_one_trajectory(method: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    runs = {}
    for storage in ("masked", "compressed"):
        (tmp_path / storage).mkdir()
        runs[storage] = run_ranks(_worker, method, storage, tmp_path=tmp_path / storage)
    for results in runs.values():
        assert_masks_moved_identically(results, updates=20)
        assert all(r["identical"] for r in results)  # the resume from step 20 ends bit-identical, on every rank
    masked, compressed = runs["masked"][0], runs["compressed"][0]
    if method == "chts":  # link prediction reads the topology: the same 20 updates, the same weights to rounding
        assert torch.equal(masked["masks"], compressed["masks"])
        torch.testing.assert_close(compressed["weights"], masked["weights"], rtol=1e-4, atol=1e-5)
    else:
        # RigL's first update, on gradients reduced over the ranks tile by tile, picks the same links. Later ones
        # need not: a sampled dot product and a matrix product round differently, AdamW's first steps on new links
        # (about lr * sign(g)) turn that into weights apart by lr, and a near-tie in |w| or |g| then flips
        # (one process shows it too)
        assert torch.equal(masked["masks"][0], compressed["masks"][0])


@pytest.mark.slow
def test_sharded_nm_training_keeps_the_pattern(tmp_path) -> None:  # type: ignore[no-untyped-def]
    results = run_ranks(_worker, "chts24", "masked", tmp_path=tmp_path)
    assert_masks_moved_identically(results, updates=20)
    assert all(r["identical"] for r in results)


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


def test_sharded_compressed_layers_refuse_a_moving_number_of_links() -> None:
    """FSDP2 fixes the number of a compressed layer's sharded values: a density schedule is refused at attach, and
    a rewiring to another number of links raises instead of resizing a shard."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    if dist.is_initialized():
        pytest.skip("a process group is already initialised in this process")
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        model = sb.models.MLP(20, [24, 24], 5)
        sp = sb.DynamicSparsifier(
            model, None, method="chtss", density=0.1, total_steps=40, update_interval=5, storage="compressed"
        )
        fully_shard(model, mesh=mesh)
        with pytest.raises(RuntimeError, match=r"layers\.0, layers\.1 hold only their links.*storage='masked'"):
            sp.attach(torch.optim.AdamW(model.parameters()))

        model = sb.models.MLP(20, [24, 24], 5)
        sp = sb.DynamicSparsifier(
            model, None, method="set", density=0.1, total_steps=40, update_interval=5, storage="compressed"
        )
        fully_shard(model, mesh=mesh)
        sp.attach(torch.optim.AdamW(model.parameters()))
        layer = sp.layers["layers.0"]
        links = layer.links()
        with pytest.raises(ValueError, match=r"sharded.*fixes their number at 48.*47 links"):
            layer.rewire_(sb.topology.Links(links.flat[:-1], links.shape))
        assert layer.nnz == 48 and torch.equal(layer.links().flat, links.flat)  # unchanged
    finally:
        dist.destroy_process_group()
