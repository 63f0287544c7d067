"""The semi_structured storage: transposable 2:4 / 1:4 layers whose products run on the sparse tensor cores.

On the CPU (CI) the layer must compute exactly what the masked layer computes, under the engine too (its value slots
trained where the masked layer trains its dense weight), and refuse what it cannot hold; the value slots and their
codes are checked against brute force, checkpoints against the masked layer's both ways. On a CUDA device with
cuSPARSELt its outputs and gradients are compared with the masked dense computation within bfloat16 tolerance,
through optimizer steps, topology updates, loads and moves.
"""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
import torch
from helpers import tiny_batch, tiny_mlp

import sparsebrain as sb
from sparsebrain.kernels import cusparselt
from sparsebrain.kernels.packed24 import (
    dense_from_slots,
    group_codes,
    slot_layout,
    slot_masks,
    slots,
    slots_from_dense,
    transposable_problem,
)
from sparsebrain.topology import is_transposable, random_transposable_mask

CUDA = cusparselt.available()


def _pair(out_f: int, in_f: int, n: int = 2, *, bias: bool = True, device: str = "cpu", seed: int = 0):  # type: ignore[no-untyped-def]
    """A masked layer and a semi_structured one with the same weights, bias and transposable n:4 mask."""
    g = torch.Generator().manual_seed(seed)
    mask = random_transposable_mask((out_f, in_f), n, 4, generator=g)
    torch.manual_seed(seed)
    masked = sb.SparseLinear(in_f, out_f, bias=bias, mask=mask).to(device)
    semi = sb.SemiStructuredSparseLinear(in_f, out_f, bias=bias, mask=mask).to(device)
    semi.load_state_dict(masked.state_dict())  # a masked checkpoint, loaded as value slots
    return masked, semi


def _dense_grad(semi):  # type: ignore[no-untyped-def]
    """The value slots' gradient as an ``(out, in)`` weight gradient."""
    return dense_from_slots(semi.values.grad, *slot_masks(semi.mask))


# ---------------------------------------------------------------------------------------------------------------------
# the value slots, against brute force


def test_slots_complete_each_group_to_two_and_the_codes_name_them() -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 2):
        mask = random_transposable_mask((8, 16), n, 4, generator=g)
        mask[0, :4] = False  # an empty group, and a short one: what a rewiring may leave
        mask[1, 4:8] = torch.tensor([False, False, True, False])
        s = slots(mask)
        groups = s.reshape(8, 4, 4)
        assert bool((s | ~mask).all()), "every kept entry has a slot"
        assert bool((groups.sum(-1) == 2).all())
        codes = group_codes(s)
        own, _, _, _ = slot_layout(mask)  # the mask's own codes: which slots are links, too
        slot, kept = slot_masks(mask)
        assert torch.equal(slot, s) and torch.equal(kept.reshape(-1), mask[s])
        for r, k in itertools.product(range(8), range(4)):  # brute force: the first and last slot of each group
            where = groups[r, k].nonzero().squeeze(1).tolist()
            assert int(codes[r, k]) == where[0] | where[1] << 2 | 1 << 4 | 1 << 5
            links = [int(mask[r, 4 * k + i]) for i in where]
            assert int(own[r, k]) == where[0] | where[1] << 2 | links[0] << 4 | links[1] << 5
        free = ~mask.reshape(8, 4, 4)
        added = (s & ~mask).reshape(8, 4, 4)
        for r, k in itertools.product(range(8), range(4)):  # the added slots are the group's first free positions
            need = int(added[r, k].sum())
            assert added[r, k].nonzero().squeeze(1).tolist() == free[r, k].nonzero().squeeze(1).tolist()[:need]


def test_the_one_pass_layout_is_the_slots_and_codes_of_both_sides() -> None:
    g = torch.Generator().manual_seed(3)
    for n, shape in ((1, (8, 16)), (2, (12, 24)), (2, (32, 8))):
        mask = random_transposable_mask(shape, n, 4, generator=g)
        mask[0, :4] = False
        codes, codes_t, rows, cols_t = slot_layout(mask)
        assert torch.equal(rows, slots(mask)) and torch.equal(cols_t, slots(mask.t().contiguous()))
        assert torch.equal(codes & 15, group_codes(slots(mask)) & 15)  # the slots; the upper bits say which are links
        assert torch.equal(codes_t & 15, group_codes(slots(mask.t().contiguous())).t() & 15)


def test_transposable_problem_names_what_is_wrong() -> None:
    assert transposable_problem(random_transposable_mask((8, 8), 2, 4)) is None
    assert transposable_problem(random_transposable_mask((8, 8), 1, 4)) is None
    rowwise = sb.topology.random_rowwise_mask((8, 8), 2, 4, generator=torch.Generator().manual_seed(1))
    if not is_transposable(rowwise, 2, 4):
        assert "along columns" in (transposable_problem(rowwise) or "")
    assert "4 x 4 blocks" in (transposable_problem(torch.ones(6, 8, dtype=torch.bool)) or "")


# ---------------------------------------------------------------------------------------------------------------------
# the CPU fallback: exactly the masked layer


@pytest.mark.parametrize("n", [1, 2])
def test_on_the_cpu_it_computes_exactly_what_the_masked_layer_computes(n: int) -> None:
    masked, semi = _pair(24, 32, n)
    x = torch.randn(2, 5, 32)
    y_m, y_s = masked(x), semi(x)
    assert torch.equal(y_m, y_s) and semi.path == "dense (needs a CUDA device)"
    assert semi.values.shape == (24, 16) and torch.equal(semi.dense_weight(), masked.weight.detach())
    y_m.square().sum().backward()
    y_s.square().sum().backward()
    assert torch.equal(masked.weight.grad, _dense_grad(semi)) and torch.equal(masked.bias.grad, semi.bias.grad)
    _, kept = slot_masks(semi.mask)
    assert torch.count_nonzero(semi.values.grad[~kept]) == 0  # slots that are not links (1:4) get none


@pytest.mark.parametrize("method", ["chts24", "chts14"])
def test_under_the_engine_the_cpu_fallback_follows_the_masked_trajectory(method: str) -> None:
    runs = {}
    for storage in ("masked", "semi_structured"):
        model = tiny_mlp(0)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        sp = sb.DynamicSparsifier(model, opt, method=method, seed=0, total_steps=12, update_interval=3, storage=storage)
        for step in range(12):
            x, y = tiny_batch(step)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sp.step()
            opt.zero_grad(set_to_none=True)
        runs[storage] = (sp, model)
    (m_sp, m_model), (s_sp, s_model) = runs["masked"], runs["semi_structured"]
    assert all(type(layer) is sb.SemiStructuredSparseLinear for layer in s_sp.layers.values())
    assert all(type(layer) is sb.SparseLinear for layer in m_sp.layers.values())
    assert s_sp.stats()["updates"] == m_sp.stats()["updates"] > 0
    for name, layer in m_sp.layers.items():  # the same links and weights, held as value slots
        other = s_sp.layers[name]
        assert torch.equal(layer.mask, other.mask) and torch.equal(layer.dense_weight(), other.dense_weight()), name
    dense = {k: v for k, v in m_model.state_dict().items() if not k.endswith((".weight", ".mask"))}
    assert all(torch.equal(v, s_model.state_dict()[k]) for k, v in dense.items())
    x, _ = tiny_batch(99)
    assert torch.equal(m_model(x), s_model(x))
    n = 1 if method == "chts14" else 2
    assert all(is_transposable(layer.mask, n, 4) for layer in s_sp.layers.values())


def test_what_the_storage_cannot_hold_is_refused_naming_the_option() -> None:
    with pytest.raises(ValueError, match="storage='semi_structured' holds transposable 2:4 and 1:4 patterns"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="set", total_steps=10, storage="semi_structured")
    with pytest.raises(ValueError, match="pattern_layout='transposable'.*got a rowwise 2:4 pattern"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="asp", pattern_layout="rowwise", storage="semi_structured")
    with pytest.raises(ValueError, match="storage='semi_structured' replaces the masked layer, not STELinear"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="ste", storage="semi_structured")
    with pytest.raises(ValueError, match="'masked', 'compressed', 'semi_structured', 'auto'"):
        sb.DynamicSparsifier(tiny_mlp(), None, method="chts24", storage="nm")


def test_a_mask_that_is_not_transposable_2_4_is_refused_and_nothing_changes() -> None:
    _, semi = _pair(16, 16)
    before = semi.state_dict()
    bad = torch.zeros(16, 16, dtype=torch.bool)
    bad[0, :3] = True
    for change in (semi.set_mask_, semi.rewire_):
        with pytest.raises(ValueError, match="not transposable 2:4 or 1:4: up to 3 of every 4"):
            change(bad)
        assert all(torch.equal(a, b) for a, b in zip(before.values(), semi.state_dict().values()))
    with pytest.raises(RuntimeError, match="the loaded mask is not usable: .*not transposable 2:4 or 1:4"):
        semi.load_state_dict({**before, "mask": bad})
    with pytest.raises(RuntimeError, match="2 non-zero entries off its mask"):
        weight = semi.dense_weight()
        weight.view(-1)[(~semi.mask).view(-1).nonzero()[:2]] = 1.0  # two weights off the mask
        semi.load_state_dict({"weight": weight, "mask": semi.mask, "bias": before["bias"]})
    assert all(torch.equal(a, b) for a, b in zip(before.values(), semi.state_dict().values()))


@pytest.mark.parametrize("impl", [{"fused": True}, {"foreach": True}, {"foreach": False}])
def test_every_optimizer_step_marks_the_values_changed_fused_ones_too(impl: dict[str, bool]) -> None:
    # fused optimizers change parameters without bumping their version counters: the copies must be refreshed anyway
    _, semi = _pair(16, 32)
    opt = torch.optim.AdamW(semi.parameters(), lr=1e-2, **impl)
    semi(torch.randn(3, 32)).sum().backward()
    before = semi._values_key()
    opt.step()
    assert semi._values_key() != before
    after = semi._values_key()
    semi(torch.randn(3, 32))  # a forward changes nothing
    assert semi._values_key() == after


def test_checkpoints_round_trip_with_the_masked_layer_both_ways_and_across_masks() -> None:
    masked, semi = _pair(24, 32)
    with torch.no_grad():
        semi.values.mul_(3.0)
    assert set(semi.state_dict()) == {"values", "bias", "mask"} and semi.state_dict()["values"].shape == (24, 16)
    masked.load_state_dict(semi.state_dict())  # value slots -> dense weight
    other = sb.SemiStructuredSparseLinear(32, 24, mask=random_transposable_mask((24, 32), 1, 4))
    other.load_state_dict(masked.state_dict())  # dense weight (and another mask) -> value slots
    third = sb.SemiStructuredSparseLinear(32, 24, mask=random_transposable_mask((24, 32), 1, 4))
    third.load_state_dict(semi.state_dict())  # value slots, another mask
    x = torch.randn(7, 32)
    assert all(torch.equal(m(x), semi(x)) for m in (masked, other, third))
    assert torch.equal(other.mask, semi.mask) and torch.equal(masked.weight.detach(), semi.dense_weight())
    for clone in (copy.deepcopy(semi), pickle.loads(pickle.dumps(semi))):
        assert clone._packed is None and torch.equal(clone(x), semi(x))


def test_to_linear_keeps_the_parameter_objects_and_computes_the_same() -> None:
    masked, semi = _pair(16, 32, n=1, seed=2)
    values, x = semi.values, torch.randn(5, 32)
    expected = semi(x)
    linear = semi.to_linear()
    assert linear.weight is values and linear.weight.shape == (16, 32) and torch.equal(linear(x), expected)
    assert torch.equal(linear.weight.detach(), masked.weight.detach())


def test_rewiring_keeps_the_kept_links_and_moves_their_optimizer_state() -> None:
    masked, semi = _pair(16, 32, seed=4)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-2) for m in (masked, semi)]
    x = torch.randn(9, 32)
    for layer, opt in zip((masked, semi), opts):
        layer(x).square().sum().backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    new = random_transposable_mask((16, 32), 2, 4, generator=torch.Generator().manual_seed(9))
    moved = semi.rewire_(new)["values"]
    kept = masked.rewire_(new)["weight"]
    for key in ("exp_avg", "exp_avg_sq"):  # what the engine does with each: move the slots' state, mask the dense
        state = opts[1].state[semi.values][key]
        state.copy_(moved.apply(state))
        opts[0].state[masked.weight][key].mul_(kept)
        assert torch.equal(dense_from_slots(state, *slot_masks(new)), opts[0].state[masked.weight][key])
    assert torch.equal(semi.dense_weight(), masked.weight.detach()) and torch.equal(semi.mask, new)
    assert torch.equal(semi(x), masked(x))


# ---------------------------------------------------------------------------------------------------------------------
# the sparse tensor cores (CUDA with cuSPARSELt)

needs_cuda = pytest.mark.skipif(not CUDA, reason="needs cuSPARSELt and sparse tensor cores")


def _rel(got: torch.Tensor, ref: torch.Tensor) -> float:
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max().clamp(min=1e-30))


@needs_cuda
@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize(("out_f", "in_f", "shape"), [(256, 512, (4, 75)), (528, 272, (64,)), (1024, 256, (2, 512))])
def test_outputs_and_gradients_match_the_masked_layer_through_optimizer_steps(
    n: int, bias: bool, out_f: int, in_f: int, shape: tuple[int, ...]
) -> None:
    masked, semi = _pair(out_f, in_f, n, bias=bias, device="cuda", seed=out_f + n)
    opts = [torch.optim.AdamW(m.parameters(), lr=1e-3, fused=True) for m in (masked, semi)]
    g = torch.Generator(device="cuda").manual_seed(0)
    for _ in range(3):
        x = torch.randn(*shape, in_f, generator=g, device="cuda")
        x_m, x_s = x.clone().requires_grad_(), x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y_m, y_s = masked(x_m), semi(x_s)
        assert semi.path == "2:4 sparse tensor cores" and y_s.dtype == torch.bfloat16 and y_s.shape == y_m.shape
        assert _rel(y_s, y_m) < 1e-2
        dy = torch.randn(y_m.shape, generator=g, device="cuda").bfloat16()
        y_m.backward(dy)
        y_s.backward(dy)
        assert _rel(x_s.grad, x_m.grad) < 1e-2
        _, kept = slot_masks(semi.mask)
        assert semi.values.grad.dtype == torch.float32 and torch.count_nonzero(semi.values.grad[~kept]) == 0
        assert _rel(_dense_grad(semi), masked.weight.grad) < 1e-2
        if bias:
            assert _rel(semi.bias.grad, masked.bias.grad) < 1e-2
        # the same gradient for both (the masked one, at the slots), so that the fused steps keep them on one
        # trajectory: the next forward must see that the fused step (which bumps no version counter) changed them
        semi.values.grad = slots_from_dense(masked.weight.grad, *slot_masks(semi.mask))
        for opt in opts:
            opt.step()
            opt.zero_grad(set_to_none=True)


@needs_cuda
def test_the_slots_gradient_is_taken_into_grad_not_copied_and_two_uses_add_up() -> None:
    masked, semi = _pair(256, 512, device="cuda")
    arrived: list[int] = []
    semi.values.register_hook(lambda g: arrived.append(g.data_ptr()))
    x = torch.randn(64, 512, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = semi(x)
    assert semi.path == "2:4 sparse tensor cores"
    y.float().pow(2).sum().backward()
    # autograd stores the kernel's buffer as .grad only if nothing else holds it; otherwise it copies it
    assert semi.values.grad.data_ptr() == arrived[-1]
    # used twice in one graph, the sum of both products' gradients arrives
    semi.values.grad = masked.weight.grad = None
    for layer in (masked, semi):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            (layer(x).float().sum() + layer(x * 2).float().sum()).backward()
    assert _rel(_dense_grad(semi), masked.weight.grad) < 1e-2


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_weights_run_on_the_sparse_cores_without_autocast(
    dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sparsebrain.nn import semi_structured_linear

    monkeypatch.setattr(semi_structured_linear, "_warned", set())  # each reason is announced once per process
    masked, semi = _pair(256, 256, device="cuda")
    masked.to(dtype), semi.to(dtype)
    x = torch.randn(100, 256, device="cuda", dtype=dtype)
    y = semi(x)
    assert semi.path == "2:4 sparse tensor cores" and y.dtype == dtype
    assert _rel(y, masked(x)) < 1e-2
    with pytest.warns(UserWarning, match="runs the dense product: needs bfloat16 or float16"):
        semi.float()(x.float())
    assert semi.path.startswith("dense (needs bfloat16 or float16")


@needs_cuda
def test_rewiring_loading_and_moving_compress_again() -> None:
    masked, semi = _pair(256, 512, device="cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    x = torch.randn(300, 512, generator=g, device="cuda")

    def agree() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            assert _rel(semi(x), masked(x)) < 1e-2 and semi.path == "2:4 sparse tensor cores"

    agree()
    new = random_transposable_mask((256, 512), 2, 4, generator=torch.Generator().manual_seed(5)).cuda()
    new[0, :4] = False  # a group the rewiring left empty
    masked.rewire_(new)
    semi.rewire_(new)
    with torch.no_grad():
        masked.weight.add_(torch.randn(masked.weight.shape, generator=g, device="cuda") * new)
    semi.load_state_dict(masked.state_dict())
    agree()
    state = {k: v.clone() for k, v in masked.state_dict().items()}
    state["weight"] = state["weight"] * 0.5
    masked.load_state_dict(state)
    semi.load_state_dict(state)
    agree()
    semi.cpu().cuda()
    agree()
    with torch.no_grad():
        semi.values.data.mul_(2.0)  # not seen by the version counter...
        masked.weight.mul_(2.0)
    semi.weights_changed_()  # ... so say so
    agree()


@needs_cuda
def test_chts24_training_on_the_sparse_cores_follows_the_masked_run() -> None:
    """The same seed and data: losses agree within bfloat16 noise, the topology stays transposable 2:4, and the
    updates re-compress (the sparse layers keep running on the sparse cores)."""
    losses = {}
    for storage in ("masked", "semi_structured"):
        torch.manual_seed(0)
        model = sb.models.MLP(64, [256, 256], 16).cuda()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        sp = sb.DynamicSparsifier(model, opt, method="chts24", seed=0, total_steps=40, update_interval=5,
                                  storage=storage)  # fmt: skip
        g = torch.Generator(device="cuda").manual_seed(0)
        curve = []
        for _ in range(40):
            x = torch.randn(512, 64, generator=g, device="cuda")
            y = (x[:, :16] > 0).long().argmax(1)
            with torch.autocast("cuda", dtype=torch.bfloat16):
                loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            sp.step()
            opt.zero_grad(set_to_none=True)
            curve.append(float(loss))
        assert sp.stats()["updates"] > 0
        for layer in sp.layers.values():
            assert is_transposable(layer.mask, 2, 4)
            if storage == "semi_structured":
                assert layer.path == "2:4 sparse tensor cores"
        losses[storage] = curve
    m, s = torch.tensor(losses["masked"]), torch.tensor(losses["semi_structured"])
    assert float(m[-5:].mean()) < float(m[:5].mean())  # it learns
    assert float((m - s).abs().max()) < 0.05 * float(m[0])


def test_inside_a_compiled_model_it_runs_eagerly_and_computes_the_same() -> None:
    torch.manual_seed(0)
    mask = random_transposable_mask((16, 24), 2, 4, generator=torch.Generator().manual_seed(0))
    eager = torch.nn.Sequential(torch.nn.Linear(8, 24), sb.SemiStructuredSparseLinear(24, 16, mask=mask))
    compiled = copy.deepcopy(eager)
    compiled.compile()
    x = torch.randn(5, 8)
    y_e, y_c = eager(x), compiled(x)
    torch.testing.assert_close(y_c, y_e)
    y_e.sum().backward()
    y_c.sum().backward()
    torch.testing.assert_close(compiled[1].values.grad, eager[1].values.grad)
    assert compiled[1].values.grad.shape == (16, 12)
