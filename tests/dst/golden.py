"""Golden trajectories: what every method preset does to a tiny MLP, recorded so that a redesign of the engine can be
shown to change nothing (bit for bit) except where a documented fix means to.

A trajectory is 30 steps of the tiny MLP of ``helpers.py`` from seed 0, a topology update every 3 steps until step
22 (7 updates), under SGD with momentum and weight decay or AdamW. It is recorded as SHA-256 hashes of each sparse
layer's mask, weight and optimizer state, plus the link counts for a readable diff when a hash changes.

``python tests/dst/golden.py`` rewrites ``golden_trajectories.json``: do it only when a change is meant to alter
trajectories, and say so in the commit.

Floating-point results depend on the CPU's vector instructions and on torch's kernels, so the file also records a
*canary*: the hash of one plain forward and backward pass of the same model. Where the canary differs, this machine
computes differently from the one that recorded the file, and the comparison is skipped rather than failed.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers when run as a script

from helpers import make_optimizer, tiny_batch, tiny_mlp, train_steps

import sparsebrain as sb
from sparsebrain.experiments.checkpoint import checksum

GOLDEN = Path(__file__).with_name("golden_trajectories.json")
STEPS, TOTAL_STEPS, UPDATE_INTERVAL = 30, 30, 3
OPTIMIZERS = ("sgd", "adamw")
# every preset, and the engine's options that choose another code path
VARIANTS: dict[str, dict[str, Any]] = {
    **{name: {} for name in sb.list_methods()},
    "set[after_removal]": {"regrowth_candidates": "after_removal"},
    "chts[topk]": {"regrowth_sampling": "topk"},
    "rigl[erk]": {"allocation": "erk"},
    "chts24[rowwise]": {"pattern_layout": "rowwise"},
    "chts24[magnitude]": {"removal": "magnitude", "regrowth_sampling": "topk"},
}


def _preset(variant: str) -> str:
    return variant.split("[")[0]


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """One CPU thread, whatever other tests set: a kernel's summation order may depend on the thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def canary() -> str:
    """Hash of one forward and backward pass of the tiny MLP: equal where the arithmetic is the recording machine's."""
    with _one_thread():
        model = tiny_mlp(0)
        x, y = tiny_batch(0)
        torch.nn.functional.cross_entropy(model(x), y).backward()
        return checksum({n: p.grad for n, p in model.named_parameters()})


def trajectory(variant: str, optim: str) -> dict[str, Any]:
    """Hashes of the masks, weights and optimizer state of every sparse layer after the trajectory, and link counts."""
    with _one_thread():
        return _trajectory(variant, optim)


def _trajectory(variant: str, optim: str) -> dict[str, Any]:
    torch.manual_seed(0)
    model = tiny_mlp(0)
    opt = make_optimizer(model, optim)
    density = None if sb.dst.METHODS[_preset(variant)].pattern else 0.2
    sp = sb.DynamicSparsifier(
        model,
        opt,
        method=_preset(variant),
        density=density,
        total_steps=TOTAL_STEPS,
        update_interval=UPDATE_INTERVAL,
        seed=0,
        **VARIANTS[variant],
    )
    train_steps(model, opt, sp, 0, STEPS)
    layers = {}
    for name, layer in sp.layers.items():
        state = opt.state.get(layer.weight, {})
        layers[name] = {
            "links": int(layer.mask.sum()),
            "mask": checksum(layer.mask),
            "weight": checksum(layer.weight.detach()),
            "optimizer_state": checksum({k: v for k, v in sorted(state.items()) if torch.is_tensor(v)}),
        }
    return {"updates": sp.stats()["updates"], "layers": layers, "model": checksum(model.state_dict())}


def record() -> dict[str, Any]:
    return {
        "canary": canary(),
        "torch": torch.__version__,
        "trajectories": {f"{v}/{o}": trajectory(v, o) for v in VARIANTS for o in OPTIMIZERS},
    }


if __name__ == "__main__":
    GOLDEN.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {GOLDEN}")
