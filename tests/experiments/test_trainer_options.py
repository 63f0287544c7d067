"""How the trainer runs, not what it computes: the optimizer's implementation and torch.compile (CPU).

A compiled run must follow the eager run's trajectory while the sparsifier rewires the masks in place, and the
execution settings must not stop a run from resuming with other ones.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from sparsebrain.experiments.config import ConfigError, load_config
from sparsebrain.experiments.trainer import _optimizer, config_changes, read_run_checkpoint, train

TINY = {"data.name": "synthetic", "model.hidden": [16, 16], "train.epochs": 4, "train.batch_size": 128,
        "train.threads": 1, "sparsity.method": "set", "sparsity.density": 0.5, "sparsity.update_interval": 2,
        "train.optimizer": "adamw", "train.lr": 0.01}  # fmt: skip


def _cfg(**kw: object):  # type: ignore[no-untyped-def]
    return load_config(None, {**TINY, **kw})


def _losses(run: Path) -> list[float]:
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [e["train_loss"] for e in events if e["event"] == "eval"]


@pytest.mark.parametrize(("impl", "defaults"), [("for", {"foreach": False}), ("foreach", {"foreach": True})])
def test_the_optimizer_runs_as_asked(impl: str, defaults: dict[str, bool]) -> None:
    model = torch.nn.Linear(4, 2)
    opt = _optimizer(model, _cfg(**{"train.optimizer_impl": impl}).train, torch.device("cpu"))
    assert all(opt.defaults[k] == v for k, v in defaults.items())
    auto = _optimizer(model, _cfg().train, torch.device("cpu"))
    assert not auto.defaults.get("fused") and auto.defaults.get("foreach") is None  # torch's own choice off CUDA


def test_an_unknown_optimizer_impl_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError, match="train.optimizer_impl.*'auto', 'for', 'foreach', 'fused'"):
        _cfg(**{"train.optimizer_impl": "apex"})
    with pytest.raises(ConfigError, match="train.compile"):
        _cfg(**{"train.compile": "yes"})


def test_execution_settings_do_not_block_a_resume() -> None:
    a = _cfg()
    b = _cfg(**{"train.optimizer_impl": "foreach", "train.compile": True, "train.grad_accum": 2})
    assert config_changes(a, b) == []


def test_a_compiled_run_follows_the_eager_one_through_topology_updates(tmp_path: Path) -> None:
    summaries = {}
    for compiled in (False, True):
        run = tmp_path / f"compile_{compiled}"
        summaries[compiled] = train(_cfg(**{"train.compile": compiled}), run, quiet=True)
        assert summaries[compiled]["status"] == "finished"
    eager, compiled = (_losses(tmp_path / f"compile_{c}") for c in (False, True))
    assert len(eager) == len(compiled) == 4
    assert max(abs(a - b) for a, b in zip(eager, compiled)) < 1e-4
    states = [read_run_checkpoint(tmp_path / f"compile_{c}" / "checkpoint.pt")["model"] for c in (False, True)]
    assert list(states[0]) == list(states[1])  # compiled in place: the same keys, no wrapper prefix
    masks = [k for k in states[0] if k.endswith("mask")]
    assert masks and all(torch.equal(states[0][k], states[1][k]) for k in masks)  # the same rewiring


@pytest.mark.parametrize("parts", [2, 4])
def test_gradient_accumulation_takes_the_same_steps_on_the_same_batches(tmp_path: Path, parts: int) -> None:
    """Slices of each step's batch, gradients summed: the trajectory of the whole batch, to float rounding, with
    the same topology updates."""
    runs = {}
    for accum in (1, parts):
        run = tmp_path / f"accum_{accum}"
        train(_cfg(**{"train.grad_accum": accum}), run, quiet=True)
        runs[accum] = (_losses(run), read_run_checkpoint(run / "checkpoint.pt")["model"])
    (whole, whole_state), (sliced, sliced_state) = runs[1], runs[parts]
    assert max(abs(a - b) for a, b in zip(whole, sliced)) < 1e-5
    for key, value in whole_state.items():
        if key.endswith("mask"):
            assert torch.equal(value, sliced_state[key]), key
        else:
            torch.testing.assert_close(value, sliced_state[key], rtol=1e-4, atol=1e-5)


def test_gradient_accumulation_is_refused_where_it_cannot_slice_batches() -> None:
    from sparsebrain.experiments.tasks.translation import TranslationTask

    with pytest.raises(ConfigError, match=r"train.grad_accum.*a divisor of train.batch_size = 128"):
        _cfg(**{"train.grad_accum": 3})
    with pytest.raises(ConfigError, match="train.grad_accum.*an integer >= 1"):
        _cfg(**{"train.grad_accum": 0})
    assert not TranslationTask.splits_batches  # batches of a token budget: the trainer refuses grad_accum > 1
