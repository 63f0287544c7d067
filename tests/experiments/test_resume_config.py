"""Resuming checks that the config is the same experiment, but not where it runs (threads, device)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sparsebrain.experiments.config import load_config
from sparsebrain.experiments.trainer import RunError, config_changes, train

TINY = {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 1, "train.batch_size": 256,
        "sparsity.method": "set", "sparsity.density": 0.5}  # fmt: skip


def test_config_changes_names_keys_and_ignores_execution_settings() -> None:
    a = load_config(None, {**TINY, "train.threads": 1})
    assert config_changes(a, load_config(None, {**TINY, "train.threads": 3, "train.device": "cpu"})) == []
    b = load_config(None, {**TINY, "train.threads": 1, "train.lr": 0.5, "sparsity.options": {"zeta": 0.2}})
    assert config_changes(a, b) == ["sparsity.options", "train.lr"]


def test_resume_with_other_threads_continues_but_other_lr_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(load_config(None, {**TINY, "train.threads": 1}), run, quiet=True)
    (run / "summary.json").unlink()  # as if killed after the last checkpoint
    with pytest.raises(RunError, match=r"differs in train\.lr"):
        train(load_config(None, {**TINY, "train.threads": 1, "train.lr": 0.123}), run, resume=True, quiet=True)
    summary = train(load_config(None, {**TINY, "train.threads": 2}), run, resume=True, quiet=True)
    assert summary["status"] == "finished"


def test_a_checkpoint_whose_config_lacks_a_key_is_refused_naming_it(tmp_path: Path) -> None:
    """A run from before data.val_fraction trained on the whole training split: its default no longer describes it."""
    import torch

    from sparsebrain.experiments.checkpoint import load_checkpoint, save_checkpoint

    run = tmp_path / "run"
    cfg = load_config(None, {**TINY, "train.epochs": 2, "train.threads": 1})
    train(cfg, run, quiet=True)
    (run / "summary.json").unlink()
    ckpt = load_checkpoint(run / "checkpoint.pt", torch.device("cpu"), advice="")
    del ckpt["config"]["data"]["val_fraction"]
    save_checkpoint(run / "checkpoint.pt", ckpt)
    with pytest.raises(RunError, match=r"differs in data\.val_fraction"):
        train(cfg, run, resume=True, quiet=True)


def test_config_changes_counts_keys_absent_from_a_saved_mapping() -> None:
    from sparsebrain.experiments.config import config_to_dict

    cfg = load_config(None, TINY)
    saved = config_to_dict(cfg)
    assert config_changes(saved, cfg) == []
    del saved["data"]["val_fraction"]
    assert config_changes(saved, cfg) == ["data.val_fraction"]


def test_the_summary_gives_training_time_and_throughput_without_evaluations_and_across_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    from sparsebrain.experiments import trainer

    cfg = load_config(None, {**TINY, "train.epochs": 2, "train.threads": 1})
    slow = trainer._Run.evaluate

    def evaluate(self):  # type: ignore[no-untyped-def]
        with self.aside():
            time.sleep(0.2)  # an evaluation that takes long: it must not count as training
        return slow(self)

    monkeypatch.setattr(trainer._Run, "evaluate", evaluate)
    run = tmp_path / "run"
    first = train(cfg, run, quiet=True)
    assert first["wall_time_s"] - first["train_time_s"] >= 0.2 * 2  # two evaluations set aside
    rate = first["throughput"]
    assert rate["steps_per_s"] == pytest.approx(first["steps"] / first["train_time_s"])
    assert rate["samples_per_s"] == pytest.approx(rate["steps_per_s"] * 256)
    import json

    evals = [e for e in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if e["event"] == "eval"]
    assert len(evals) == 2 and "train_time_s" not in first["metrics"]
    assert 0 < evals[0]["train_time_s"] < evals[1]["train_time_s"] <= evals[1]["wall_time_s"] - 0.4
    (run / "summary.json").unlink()  # killed after the last checkpoint: the resumed run finishes from the state
    resumed = train(cfg, run, resume=True, quiet=True)
    assert resumed["wall_time_s"] - resumed["train_time_s"] >= 0.2  # the first process's evaluations, carried over
    assert 0 < resumed["train_time_s"] <= resumed["wall_time_s"]
