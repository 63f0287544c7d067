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


def test_nan_weights_at_update_name_the_layer_and_change_nothing() -> None:
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sp = sb.DynamicSparsifier(model, opt, method="set", density=0.2, update_interval=2)
    sp.step()  # step 1: no update
    layer = sp.layers["layers.1"]
    with torch.no_grad():
        layer.weight[layer.mask.nonzero()[0].tolist()[0], layer.mask.nonzero()[0].tolist()[1]] = float("nan")
    masks = {n: m.mask.clone() for n, m in sp.layers.items()}
    with pytest.raises(FloatingPointError, match="'layers.1'.*step 2.*unchanged"):
        sp.step()
    assert all(torch.equal(masks[n], m.mask) for n, m in sp.layers.items())
    assert sp.stats()["step"] == 1 and sp.stats()["updates"] == 0
