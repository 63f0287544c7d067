"""The RSGN synthetic tasks: determinism, shapes, balance, and that each task is what it claims."""

from __future__ import annotations

import pytest
import torch

from sparsebrain.data.rsgn_tasks import make_hierarchical, make_long_range


@pytest.fixture(scope="module")
def hier():  # type: ignore[no-untyped-def]
    return make_hierarchical(seed=42)


@pytest.fixture(scope="module")
def longr():  # type: ignore[no-untyped-def]
    return make_long_range(seed=42)


def test_shapes_and_sizes(hier, longr) -> None:  # type: ignore[no-untyped-def]
    assert hier.x_train.shape == (4000, 64, 32) and hier.x_test.shape == (1000, 64, 32)
    assert longr.x_train.shape == (2400, 128, 32) and longr.x_test.shape == (600, 128, 32)
    for ds in (hier, longr):
        assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
        flat = ds.as_array_dataset()
        assert flat.input_shape == (ds.seq_len, ds.input_dim) and flat.num_features == ds.seq_len * ds.input_dim


def test_class_balance(hier, longr) -> None:  # type: ignore[no-untyped-def]
    assert (hier.y_train.bincount(minlength=20) == 200).all() and (hier.y_test.bincount(minlength=20) == 50).all()
    assert (longr.y_train.bincount(minlength=10) == 240).all() and (longr.y_test.bincount(minlength=10) == 60).all()


@pytest.mark.parametrize("make", [make_hierarchical, make_long_range])
def test_deterministic_in_seed(make) -> None:  # type: ignore[no-untyped-def]
    state = torch.get_rng_state()
    a, b, c = make(seed=3, n=400), make(seed=3, n=400), make(seed=4, n=400)
    assert torch.equal(torch.get_rng_state(), state)  # the global RNG is untouched
    for name in ("x_train", "y_train", "x_test", "y_test"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert not torch.equal(a.x_train, c.x_train)


def test_long_range_label_lives_only_at_both_ends(longr) -> None:  # type: ignore[no-untyped-def]
    # Brute force: nearest class template using only the first 8 (or only the last 8) positions is exact, while
    # the 112 middle positions, classified by nearest train class mean, are at chance.
    x, y = longr.x_test, longr.y_test
    start, end = longr.templates["start"], longr.templates["end"]  # (C, 8, D)
    first = torch.cdist(x[:, :8].flatten(1), start.flatten(1)).argmin(1)
    last = torch.cdist(x[:, -8:].flatten(1), end.flatten(1)).argmin(1)
    assert (first == y).float().mean() == 1.0 and (last == y).float().mean() == 1.0
    means = torch.stack([longr.x_train[longr.y_train == c, 8:-8].mean(0) for c in range(10)])  # (C, 112, D)
    mid = torch.cdist(x[:, 8:-8].flatten(1), means.flatten(1)).argmin(1)
    assert (mid == y).float().mean() < 0.2  # chance is 0.1


def test_long_range_require_both_needs_both_ends() -> None:
    ds = make_long_range(seed=0, n=1000, require_both=True)
    x, y = ds.x_train, ds.y_train
    s = torch.cdist(x[:, :8].flatten(1), ds.templates["start"].flatten(1)).argmin(1)
    e = torch.cdist(x[:, -8:].flatten(1), ds.templates["end"].flatten(1)).argmin(1)
    assert ((s + e) % 10 == y).all()  # together the two ends determine the label
    assert (s == y).float().mean() < 0.25 and (e == y).float().mean() < 0.25  # alone each is near chance


def test_hierarchical_each_level_carries_the_class(hier) -> None:  # type: ignore[no-untyped-def]
    x, y = hier.x_test, hier.y_test  # (M, 64, 32)
    tpl = hier.templates
    # Level 1: a matched filter with every class's 5-step patterns at every position; the best match names the class.
    win = x.unfold(1, 5, 1).transpose(2, 3).flatten(2)  # (M, 60, 5 * 32)
    pats = tpl["patterns"].flatten(2)  # (C, 8, 160)
    score = torch.einsum("mwf,cpf->mcpw", win, pats).amax((2, 3))  # (M, C)
    assert (score.argmax(1) == y).float().mean() > 0.8
    # Level 2: marker q correlated with positions 16q .. 16q+3, best offset; the sum over quarters names the class.
    quarters = x[:, :64].reshape(len(x), 4, 16, 32)[:, :, :4]  # (M, 4, 4, D)
    mscore = torch.einsum("mqod,cqd->mcqo", quarters, tpl["markers"]).amax(3).sum(2)  # (M, C)
    assert (mscore.argmax(1) == y).float().mean() > 0.3  # chance 0.05
    # The evidence is faint next to the background noise (std 0.3): the task is meant to be hard.
    assert abs(float(x.std()) - 0.3) < 0.02
