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
