"""Optimizer state is reset where links change, for every optimizer whose per-parameter state has the parameter's
shape: SGD with momentum, Adam, AdamW, in their plain, foreach and fused forms."""

from __future__ import annotations

import pytest
import torch
from helpers import tiny_batch, tiny_mlp

import sparsebrain as sb

OPTIMIZERS = {
    "sgd": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, weight_decay=5e-4, foreach=False),
    "sgd-foreach": lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, foreach=True),
    "adam": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=False),
    "adam-foreach": lambda p: torch.optim.Adam(p, lr=1e-2, foreach=True),
    "adam-fused": lambda p: torch.optim.Adam(p, lr=1e-2, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, foreach=False),
    "adamw-foreach": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, foreach=True),
    "adamw-fused": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.01, fused=True),
    "adamw-amsgrad": lambda p: torch.optim.AdamW(p, lr=1e-2, amsgrad=True),
}


@pytest.mark.parametrize("method", ["set", "chts24"])
@pytest.mark.parametrize("optim", list(OPTIMIZERS))
def test_state_is_zero_where_links_changed_and_kept_where_they_stayed(optim: str, method: str) -> None:
    model = tiny_mlp(0)
    try:
        opt = OPTIMIZERS[optim](model.parameters())
    except (RuntimeError, TypeError, ValueError) as e:  # e.g. a fused kernel this build lacks on the CPU
        pytest.skip(f"{optim} is not available here: {e}")
    density = None if method == "chts24" else 0.3
    sp = sb.DynamicSparsifier(model, opt, method=method, density=density, total_steps=40, update_interval=2, seed=0)
    tracked = 0
    for step in range(12):
        x, y = tiny_batch(step)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
        before = {
            n: (m.mask.clone(), {k: v.clone() for k, v in opt.state[m.weight].items()}) for n, m in sp.layers.items()
        }
        updated = sp.step()
        opt.zero_grad(set_to_none=True)
        for name, layer in sp.layers.items():
            old_mask, old_state = before[name]
            state = opt.state[layer.weight]
            shaped = [k for k, v in state.items() if torch.is_tensor(v) and v.shape == layer.weight.shape]
            assert shaped, f"{optim}: no per-parameter state"
            for key in shaped:
                assert torch.count_nonzero(state[key][~layer.mask]) == 0, (optim, name, key)
                stay = old_mask & layer.mask
                assert torch.equal(state[key][stay], old_state[key][stay]), (optim, name, key)  # kept: untouched
                tracked += int(updated and bool((old_mask & ~layer.mask).any()))
            assert torch.count_nonzero(layer.weight.detach()[~layer.mask]) == 0
    assert tracked > 0  # links did change under state
