"""Bad input gets an error that names the parameter and the allowed values."""

from __future__ import annotations

import pytest
import torch

import sparsebrain as sb


def _model() -> torch.nn.Module:
    return sb.models.MLP(20, [24, 24], 5)


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, float("nan")])
def test_density_out_of_range(density: float) -> None:
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        sb.DynamicSparsifier(_model(), None, method="set", density=density)


def test_unknown_method_lists_and_suggests() -> None:
    with pytest.raises(ValueError, match="unknown method 'chst'.*chtss.*Did you mean"):
        sb.DynamicSparsifier(_model(), None, method="chst", density=0.1)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"regrowth": "ch2l3n"}, "unknown regrowth rule 'ch2l3n'.*Did you mean 'ch2_l3n'"),
        ({"removal": "magnitud"}, "unknown removal rule 'magnitud'.*Did you mean 'magnitude'"),
        ({"init": "bfr"}, "unknown init 'bfr'.*brf"),
        ({"regrowth_sampling": "softmax"}, "unknown regrowth_sampling 'softmax'.*multinomial"),
        ({"zeta_schedule": "cosin"}, "unknown zeta schedule 'cosin'.*Did you mean 'cosine'"),
        ({"update_intervall": 3}, "unknown method option 'update_intervall'.*Did you mean 'update_interval'"),
        ({"update_interval": 0}, "update_interval must be an integer >= 1"),
        ({"zeta": 1.5}, r"zeta must be in \[0, 1\]"),
    ],
)
def test_bad_option(kwargs: dict, pattern: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=pattern):
        sb.DynamicSparsifier(_model(), None, method="set", density=0.1, **kwargs)


def test_schedule_without_total_steps() -> None:
    with pytest.raises(ValueError, match="pass total_steps"):
        sb.DynamicSparsifier(_model(), None, method="chtss", density=0.1)
    # constant schedules run without it (updates never stop)
    sp = sb.DynamicSparsifier(_model(), None, method="set", density=0.1, update_interval=1)
    assert sp.is_update_step(10**6)


def test_filter_fn_matching_nothing() -> None:
    with pytest.raises(ValueError, match="filter_fn matched no nn.Linear.*layers.0"):
        sb.DynamicSparsifier(_model(), None, method="set", density=0.1, filter_fn=lambda fqn, m: False)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_nan_weights_at_update_name_the_layer_and_change_nothing(bad: float) -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.2, update_interval=2)
    opt.step()
    sp.step()  # step 1: no update
    opt.step()
    layer = sp.layers["layers.1"]
    with torch.no_grad():
        layer.weight[layer.mask.nonzero()[0].tolist()[0], layer.mask.nonzero()[0].tolist()[1]] = bad
    masks = {n: m.mask.clone() for n, m in sp.layers.items()}
    with pytest.raises(FloatingPointError, match="'layers.1'.*step 2.*unchanged"):
        sp.step()
    assert all(torch.equal(masks[n], m.mask) for n, m in sp.layers.items())
    assert sp.stats()["step"] == 1 and sp.stats()["updates"] == 0


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"temperature": (float("nan"), 1.0)}, r"temperature must be a pair of finite numbers > 0"),
        ({"temperature": (1.0, float("inf"))}, r"temperature must be a pair of finite numbers > 0"),
        ({"temperature": [1.0, 2.0, 3.0]}, r"temperature must be a pair"),
        ({"temperature": 2.0}, r"temperature must be a pair"),
        ({"options": {"mest_lambda": float("nan")}}, r"options\['mest_lambda'\] must be finite"),
        ({"init_kwargs": {"r": float("inf")}}, r"init_kwargs\['r'\] must be finite"),
    ],
)
def test_non_finite_method_fields_are_refused(kwargs: dict, pattern: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(ValueError, match=pattern):
        sb.DynamicSparsifier(_model(), None, method="chts", density=0.1, total_steps=10, update_interval=1, **kwargs)


@pytest.mark.parametrize("decay", [float("nan"), float("inf"), -1.0, "0.1", True])
def test_bad_sr_ste_decay_is_refused(decay: object) -> None:
    with pytest.raises(ValueError, match=r"layer_options\['decay'\].*must be a finite number >= 0"):
        sb.DynamicSparsifier(_model(), None, method="srste", layer_options={"decay": decay})


def test_layer_options_of_a_layer_that_takes_none_are_refused() -> None:
    with pytest.raises(ValueError, match="SparseLinear takes no layer_options"):
        sb.DynamicSparsifier(_model(), None, method="set", density=0.1, layer_options={"decay": 0.1})


@pytest.mark.parametrize("density", ["0.5", True, b"0.5", [0.5]])
def test_density_of_the_wrong_type_is_a_type_error(density: object) -> None:
    with pytest.raises(TypeError, match=r"density must be a number in \(0, 1\]"):
        sb.DynamicSparsifier(_model(), None, method="set", density=density)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"density must be a number in \(0, 1\]"):
        sb.sparsify_(_model(), density=density)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"initial_density must be a number in \(0, 1\]"):
        sb.DynamicSparsifier(_model(), None, method="gmp", density=0.1, total_steps=10, initial_density=density)


def test_density_of_the_wrong_type_is_a_type_error_for_nm_methods() -> None:
    with pytest.raises(TypeError, match=r"density must be a number in \(0, 1\]"):
        sb.DynamicSparsifier(_model(), None, method="asp", density="0.5")  # type: ignore[arg-type]


def test_density_accepts_ints_and_numpy_floats() -> None:
    import numpy as np

    from sparsebrain.topology import ALLOCATIONS, initial_mask

    assert sb.DynamicSparsifier(_model(), None, method="set", density=np.float32(0.25)).density == 0.25
    assert sb.DynamicSparsifier(_model(), None, method="set", density=1).density == 1.0
    assert ALLOCATIONS.get("erk")([(4, 8)], np.float64(0.5)) == [0.5]
    with pytest.raises(TypeError, match="density must be a number"):
        initial_mask("er", (4, 8), "0.5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="density must be a number"):
        sb.DynamicSparsifier(_model(), None, method="set", density=np.True_)  # type: ignore[arg-type]


@pytest.mark.parametrize("seed", [2**63, -1])
def test_seed_outside_the_int64_range(seed: int) -> None:
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\^63 - 1\]"):
        sb.DynamicSparsifier(_model(), None, method="set", density=0.1, seed=seed)


@pytest.mark.parametrize("seed", ["1", 1.0, True])
def test_seed_of_the_wrong_type(seed: object) -> None:
    with pytest.raises(TypeError, match=r"seed must be an integer in \[0, 2\^63 - 1\]"):
        sb.DynamicSparsifier(_model(), None, method="set", density=0.1, seed=seed)  # type: ignore[arg-type]


def test_seed_at_the_top_of_the_range_updates_the_topology() -> None:
    import numpy as np

    model = _model()
    sp = sb.DynamicSparsifier(model, None, method="set", density=0.2, update_interval=1, seed=2**63 - 1)
    assert sp.step() and sp.stats()["updates"] == 1
    assert sb.DynamicSparsifier(_model(), None, method="set", density=0.2, seed=np.int64(7)).seed == 7
