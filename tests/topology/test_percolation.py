"""Tests for active-neuron percolation and the active-neuron fraction, against a neuron-by-neuron brute force."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from sparsebrain.topology.percolation import (
    Junction,
    active_neuron_fraction,
    alive_neurons,
    junction_active_fraction,
    layer_active_fraction,
    percolate,
)


def _t(rows: list[list[int]]) -> Tensor:
    return torch.tensor(rows, dtype=torch.bool)


def _random_chain(shapes: list[tuple[int, int]], density: float, seed: int) -> tuple[dict[str, Tensor], list[Junction]]:
    """An MLP chain ``l0 -> l1 -> ...`` with masks (out, in) and one junction between consecutive layers."""
    g = torch.Generator().manual_seed(seed)
    masks = {f"l{i}": torch.rand(shape, generator=g) < density for i, shape in enumerate(shapes)}
    junctions = [Junction((f"l{i}",), (f"l{i + 1}",)) for i in range(len(shapes) - 1)]
    return masks, junctions


def _brute_percolate(masks: dict[str, Tensor], junctions: list[Junction]) -> dict[str, Tensor]:
    """Reference: plain Python lists, one neuron at a time, cutting immediately, until a full pass changes nothing."""
    m = {name: mask.tolist() for name, mask in masks.items()}
    changed = True
    while changed:
        changed = False
        for j in junctions:
            n = len(m[j.producers[0]]) if j.producers else len(m[j.consumers[0]][0])
            for i in range(n):
                alive = all(any(m[p][i]) for p in j.producers) and all(any(row[i] for row in m[c]) for c in j.consumers)
                if alive:
                    continue
                for p in j.producers:
                    if any(m[p][i]):
                        m[p][i] = [False] * len(m[p][i])
                        changed = True
                for c in j.consumers:
                    for row in m[c]:
                        if row[i]:
                            row[i] = False
                            changed = True
    return {name: torch.tensor(rows, dtype=torch.bool).reshape(masks[name].shape) for name, rows in m.items()}


def _assert_percolated(masks: dict[str, Tensor], junctions: list[Junction]) -> None:
    """No dead end: every junction neuron with any link is alive in all of its producers and consumers."""
    for j in junctions:
        has_any = torch.zeros(0, dtype=torch.bool)
        for p in j.producers:
            row = masks[p].any(dim=1)
            has_any = row if has_any.numel() == 0 else has_any | row
        for c in j.consumers:
            col = masks[c].any(dim=0)
            has_any = col if has_any.numel() == 0 else has_any | col
        assert torch.equal(alive_neurons(masks, j), has_any), f"dead end left in {j}"


# ---------------------------------------------------------------------------------------------------------------------
# Junction


def test_junction_validation() -> None:
    with pytest.raises(ValueError, match="at least one"):
        Junction(())
    with pytest.raises(ValueError, match="unique"):
        Junction(("a", "a"))
    with pytest.raises(ValueError, match="unique"):
        Junction(("a",), ("a",))
    with pytest.raises(TypeError):
        Junction(("a", ""))
    j = Junction(["q", "k"], ["o"])  # lists are stored as tuples, so junctions stay hashable
    assert j.producers == ("q", "k") and j.consumers == ("o",) and j.layers == ("q", "k", "o")
    assert hash(j) == hash(Junction(("q", "k"), ("o",)))
    assert Junction((), ("w",)).producers == ()


def test_shape_mismatch_names_layers_and_shapes() -> None:
    masks = {"l1": torch.ones(5, 3, dtype=torch.bool), "l2": torch.ones(2, 4, dtype=torch.bool)}
    j = Junction(("l1",), ("l2",))
    for fn in (
        lambda: alive_neurons(masks, j),
        lambda: percolate(masks, [j]),
        lambda: active_neuron_fraction(masks, [j]),
    ):
        with pytest.raises(ValueError, match=r"l1 \(5, 3\).*l2 \(2, 4\)"):
            fn()
    with pytest.raises(ValueError, match=r"q \(5, 3\).*k \(4, 3\)"):
        alive_neurons(
            {"q": torch.ones(5, 3, dtype=torch.bool), "k": torch.ones(4, 3, dtype=torch.bool)}, Junction(("q", "k"))
        )


def test_bad_inputs() -> None:
    masks = {"l1": torch.ones(3, 2, dtype=torch.bool)}
    with pytest.raises(KeyError, match="'l9'"):
        percolate(masks, [Junction(("l1",), ("l9",))])
    with pytest.raises(TypeError, match="bool"):
        alive_neurons({"l1": torch.ones(3, 2)}, Junction(("l1",)))
    with pytest.raises(TypeError, match="2-D"):
        alive_neurons({"l1": torch.ones(3, dtype=torch.bool)}, Junction(("l1",)))
    with pytest.raises(ValueError, match="max_iter"):
        percolate(masks, [Junction(("l1",))], max_iter=0)
    with pytest.raises(TypeError, match="Junction"):
        percolate(masks, [("l1",)])  # type: ignore[list-item]


# ---------------------------------------------------------------------------------------------------------------------
# percolate


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [0.05, 0.1, 0.2, 0.4])
@pytest.mark.parametrize("shapes", [[(8, 6), (7, 8), (5, 7)], [(8, 6), (7, 8), (5, 7), (4, 5)]])
def test_matches_brute_force_on_small_chains(shapes: list[tuple[int, int]], density: float, seed: int) -> None:
    masks, junctions = _random_chain(shapes, density, seed)
    new, _ = percolate(masks, junctions)
    expected = _brute_percolate(masks, junctions)
    for name in masks:
        assert torch.equal(new[name], expected[name]), name


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("density", [0.005, 0.02, 0.05, 0.3])
@pytest.mark.parametrize("n_layers", [3, 4])
def test_random_chain_invariants(n_layers: int, density: float, seed: int) -> None:
    shapes = [(96, 80), (64, 96), (72, 64), (10, 72)][:n_layers]
    masks, junctions = _random_chain(shapes, density, seed)
    originals = {name: mask.clone() for name, mask in masks.items()}

    new, cut = percolate(masks, junctions)

    for name in masks:
        assert torch.equal(masks[name], originals[name]), "input masks must not change"
        assert not (new[name] & ~masks[name]).any(), "percolation only removes links"
        assert cut[name] == int(masks[name].sum()) - int(new[name].sum())
    _assert_percolated(new, junctions)
    again, cut_again = percolate(new, junctions)
    assert all(torch.equal(again[name], new[name]) for name in new), "percolate must be idempotent"
    assert set(cut_again.values()) == {0}
    # Same fixed point in any junction order, and a chain listed input to output settles in 3 sweeps.
    reverse, _ = percolate(masks, junctions[::-1])
    assert all(torch.equal(reverse[name], new[name]) for name in new)
    percolate(masks, junctions, max_iter=3)


def test_low_density_kills_many_neurons() -> None:
    masks, junctions = _random_chain([(96, 80), (64, 96), (72, 64), (10, 72)], 0.01, 0)
    new, cut = percolate(masks, junctions)
    assert sum(cut.values()) > 0
    for j in junctions:
        assert junction_active_fraction(new, j) < 0.5  # at ~1 link per neuron most junction neurons are dead ends
    _assert_percolated(new, junctions)


def test_backward_cascade_through_two_junctions() -> None:
    l1 = _t([[1, 1], [1, 1]])  # (h=2, in=2)
    l2 = _t([[1, 0], [0, 1]])  # (g=2, h=2): g1 only hears h1
    l3 = _t([[1, 0]])  # (out=1, g=2): g1 has no output
    masks = {"l1": l1, "l2": l2, "l3": l3}
    junctions = [Junction(("l1",), ("l2",)), Junction(("l2",), ("l3",))]
    new, cut = percolate(masks, junctions)
    # g1 dies (no output) -> its input link from h1 goes -> h1 has no output -> its inputs go.
    assert new["l1"].int().tolist() == [[1, 1], [0, 0]]
    assert new["l2"].int().tolist() == [[1, 0], [0, 0]]
    assert new["l3"].int().tolist() == [[1, 0]]
    assert cut == {"l1": 2, "l2": 1, "l3": 0}


def test_forward_cascade_through_two_junctions() -> None:
    l1 = _t([[1, 1], [0, 0]])  # h1 has no input
    l2 = _t([[1, 0], [0, 1]])  # g1 only hears h1
    l3 = _t([[1, 1]])
    masks = {"l1": l1, "l2": l2, "l3": l3}
    junctions = [Junction(("l1",), ("l2",)), Junction(("l2",), ("l3",))]
    new, cut = percolate(masks, junctions)
    assert new["l2"].int().tolist() == [[1, 0], [0, 0]]
    assert new["l3"].int().tolist() == [[1, 0]]
    assert cut == {"l1": 0, "l2": 1, "l3": 1}


def test_max_iter_too_small_raises() -> None:
    masks = {"l1": _t([[1, 1], [0, 0]]), "l2": _t([[1, 0], [0, 1]]), "l3": _t([[1, 1]])}
    junctions = [Junction(("l1",), ("l2",)), Junction(("l2",), ("l3",))]
    with pytest.raises(RuntimeError, match="max_iter=1"):
        percolate(masks, junctions, max_iter=1)


def test_qk_pairing() -> None:
    q = _t([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]])  # (4 head dims, 3 model dims): dim 1 dead in q
    k = _t([[0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])  # dim 2 dead in k
    j = Junction(("q", "k"))
    assert alive_neurons({"q": q, "k": k}, j).tolist() == [True, False, False, True]
    new, cut = percolate({"q": q, "k": k}, [j])
    assert new["q"].int().tolist() == [[1, 0, 1], [0, 0, 0], [0, 0, 0], [1, 1, 1]]  # q row 2 dies with k row 2
    assert new["k"].int().tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0], [1, 0, 0]]  # k row 1 dies with q row 1
    assert cut == {"q": 1, "k": 2}


def test_gated_mlp() -> None:
    gate = _t([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]])  # (4 hidden, 3 model): hidden 1 dead in gate
    up = _t([[0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])  # hidden 3 dead in up
    down = _t([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]])  # (3 model, 4 hidden): hidden 2 has no output
    masks = {"gate": gate, "up": up, "down": down}
    j = Junction(("gate", "up"), ("down",))
    assert alive_neurons(masks, j).tolist() == [True, False, False, False]
    new, cut = percolate(masks, [j])
    assert new["gate"].int().tolist() == [[1, 0, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert new["up"].int().tolist() == [[0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0]]
    assert new["down"].int().tolist() == [[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]]
    assert cut == {"gate": 3, "up": 3, "down": 3}
    # LLaMA-style pairwise junctions (gate,up), (gate,down), (up,down) reach the same fixed point.
    pairwise = [Junction(("gate", "up")), Junction(("gate",), ("down",)), Junction(("up",), ("down",))]
    new_pairwise, cut_pairwise = percolate(masks, pairwise)
    assert all(torch.equal(new_pairwise[name], new[name]) for name in masks) and cut_pairwise == cut


def test_layers_outside_junctions_pass_through() -> None:
    masks, junctions = _random_chain([(8, 6), (7, 8), (5, 7)], 0.1, 0)
    head = torch.zeros(3, 5, dtype=torch.bool)  # would look dead, but belongs to no junction
    masks["head"] = head
    new, cut = percolate(masks, junctions)
    assert new["head"] is head and cut["head"] == 0
    assert set(new) == set(masks) == set(cut)
    assert all(new[name] is not masks[name] for name in ("l0", "l1", "l2"))


def test_transformer_block_junctions_are_independent_and_respected() -> None:
    g = torch.Generator().manual_seed(1)
    d, hd = 12, 8
    masks = {
        name: torch.rand(d if name == "o" else hd, hd if name == "o" else d, generator=g) < 0.15 for name in "qkvo"
    }
    junctions = [Junction(("q", "k")), Junction(("v",), ("o",))]
    new, _ = percolate(masks, junctions)
    expected = _brute_percolate(masks, junctions)
    assert all(torch.equal(new[name], expected[name]) for name in masks)
    _assert_percolated(new, junctions)


# ---------------------------------------------------------------------------------------------------------------------
# Active-neuron fraction


def test_layer_active_fraction() -> None:
    mask = _t([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])  # (3, 4): columns 0,1 and rows 0,2 have links
    assert layer_active_fraction(mask) == (0.5, 2 / 3)
    assert layer_active_fraction(torch.zeros(2, 5, dtype=torch.bool)) == (0.0, 0.0)
    assert layer_active_fraction(torch.ones(2, 5, dtype=torch.bool)) == (1.0, 1.0)


def test_anp_by_hand_on_mlp_chain() -> None:
    l1 = _t([[1, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 0]])  # (h=3, x=4): inputs x0, x1 used; h1 has no input
    l2 = _t([[1, 1, 0], [0, 0, 0]])  # (g=2, h=3): h2 has no output; g1 has no input
    l3 = _t([[1, 0], [1, 1]])  # (y=2, g=2): both outputs used
    masks = {"l1": l1, "l2": l2, "l3": l3}
    junctions = [Junction(("l1",), ("l2",)), Junction(("l2",), ("l3",))]
    assert junction_active_fraction(masks, junctions[0]) == 1 / 3  # only h0
    assert junction_active_fraction(masks, junctions[1]) == 1 / 2  # only g0
    # nodes: x (4) + h (3, once) + g (2, once) + y (2) = 11; active: x0, x1, h0, g0, y0, y1 = 6
    assert active_neuron_fraction(masks, junctions) == pytest.approx(6 / 11)
    new, cut = percolate(masks, junctions)
    assert cut == {"l1": 2, "l2": 1, "l3": 1}
    # After percolation x1 loses its only link (from dead h2); y1 keeps its link from g0.
    assert new["l3"].int().tolist() == [[1, 0], [1, 0]]
    assert active_neuron_fraction(new, junctions) == pytest.approx(5 / 11)  # x0, h0, g0, y0, y1
    # Without junctions every layer side counts on its own: 2+2 | 2+1 | 2+2 active of 4+3 | 3+2 | 2+2.
    assert active_neuron_fraction(masks) == pytest.approx(11 / 16)


def test_anp_by_hand_on_qk_and_gated_mlp() -> None:
    q = _t([[1, 0, 1], [0, 0, 0], [0, 1, 0], [1, 1, 1]])
    k = _t([[0, 1, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])
    # q inputs: 3/3 active, k inputs: 2/3 active (column 2 unused), head dims counted once: 2/4 alive.
    assert active_neuron_fraction({"q": q, "k": k}, [Junction(("q", "k"))]) == pytest.approx((3 + 2 + 2) / (3 + 3 + 4))

    gate = _t([[1, 0, 0], [0, 0, 0], [1, 1, 0], [0, 1, 0]])
    up = _t([[0, 1, 0], [1, 1, 0], [0, 0, 1], [0, 0, 0]])
    down = _t([[1, 1, 0, 1], [0, 0, 0, 1], [1, 0, 0, 0]])
    masks = {"gate": gate, "up": up, "down": down}
    # gate inputs 2/3, up inputs 3/3, hidden 1/4 (counted once), down outputs 3/3.
    expected = (2 + 3 + 1 + 3) / (3 + 3 + 4 + 3)
    assert active_neuron_fraction(masks, [Junction(("gate", "up"), ("down",))]) == pytest.approx(expected)
    # Pairwise junctions over the same hidden neurons are merged, not counted three times.
    pairwise = [Junction(("gate", "up")), Junction(("gate",), ("down",)), Junction(("up",), ("down",))]
    assert active_neuron_fraction(masks, pairwise) == pytest.approx(expected)


def test_anp_dense_and_empty() -> None:
    masks, junctions = _random_chain([(8, 6), (7, 8), (5, 7)], 1.0, 0)
    assert active_neuron_fraction(masks, junctions) == 1.0
    empty = {name: torch.zeros_like(mask) for name, mask in masks.items()}
    assert active_neuron_fraction(empty, junctions) == 0.0
    with pytest.raises(ValueError, match="at least one mask"):
        active_neuron_fraction({}, [])
