"""Honest "best" numbers: classification runs pick their best evaluation on a validation split carved from the
training data, and report the test accuracy at that evaluation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from sparsebrain.data import load_dataset
from sparsebrain.experiments.config import ConfigError, load_config
from sparsebrain.experiments.report import collect_runs, markdown_table, summarize
from sparsebrain.experiments.tasks import ClassificationTask, build_task
from sparsebrain.experiments.trainer import RunError, train

CPU = torch.device("cpu")
TINY = {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 4, "train.batch_size": 64,
        "train.threads": 1, "train.device": "cpu", "sparsity.method": "dense"}  # fmt: skip


def _cfg(**overrides: Any):  # type: ignore[no-untyped-def]
    return load_config(None, {**TINY, **overrides})


def _scripted_evaluations(monkeypatch: pytest.MonkeyPatch, val: list[float], test: list[float]) -> Any:
    """Makes the evaluations return ``val`` and ``test`` accuracies in turn; returns a small data set to train on."""
    val_acc, test_acc = iter(val), iter(test)
    monkeypatch.setattr(
        ClassificationTask,
        "evaluate",
        lambda self: {"val_loss": 1.0, "val_acc": next(val_acc), "test_loss": 1.0, "test_acc": next(test_acc)},
    )
    return load_dataset("synthetic", n=400, dim=8, classes=3, seed=0)


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(r.tolist()) for r in x}


def test_validation_split_is_disjoint_stratified_and_deterministic() -> None:
    from sparsebrain.experiments.tasks.classification import validation_split

    y = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)[torch.randperm(100, generator=torch.Generator().manual_seed(3))]
    train_idx, val_idx = validation_split(y, 0.1, seed=0)
    assert set(train_idx.tolist()).isdisjoint(val_idx.tolist())
    assert sorted(train_idx.tolist() + val_idx.tolist()) == list(range(100))
    assert torch.bincount(y[val_idx]).tolist() == [5, 3, 2]  # a tenth of each class
    again = validation_split(y, 0.1, seed=0)
    assert torch.equal(again[0], train_idx) and torch.equal(again[1], val_idx)
    assert not torch.equal(validation_split(y, 0.1, seed=1)[1], val_idx)
    # Tiny classes still land on both sides: at least one example each.
    small = torch.tensor([0, 0, 1, 1, 1, 2, 2, 2, 2, 2])
    tr, va = validation_split(small, 0.1, seed=0)
    assert torch.bincount(small[va]).tolist() == [1, 1, 1] and torch.bincount(small[tr]).tolist() == [1, 2, 4]


def test_task_holds_out_the_same_validation_rows_for_every_training_seed(tmp_path: Path) -> None:
    data = load_dataset("synthetic", n=400, dim=8, classes=3, seed=0)
    a = build_task(_cfg(seed=0), CPU, tmp_path, data)
    b = build_task(_cfg(seed=5), CPU, tmp_path, data)
    c = build_task(_cfg(**{"data.split_seed": 1}), CPU, tmp_path, data)
    assert isinstance(a, ClassificationTask)
    assert torch.equal(a.x_val, b.x_val) and torch.equal(a.x_train, b.x_train)  # one split for a sweep
    assert not torch.equal(a.x_val, c.x_val)
    train_rows, val_rows, all_rows = _rows(a.x_train), _rows(a.x_val), _rows(data.x_train)
    assert train_rows.isdisjoint(val_rows) and train_rows | val_rows == all_rows
    assert len(a.x_val) == pytest.approx(0.1 * len(data.x_train), abs=3)
    assert a.describe() == {"train_size": len(a.x_train), "val_size": len(a.x_val), "test_size": 100,
                                 "num_classes": 3}  # fmt: skip
    assert torch.equal(a.x_test, data.x_test)  # the test split is untouched
    with torch.no_grad():
        values = a.evaluate()
    assert set(values) == {"val_loss", "val_acc", "test_loss", "test_acc"}


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1])
def test_val_fraction_outside_the_open_interval_is_refused(fraction: float) -> None:
    with pytest.raises(ConfigError, match=r"'data.val_fraction' must be in \(0, 1\)"):
        _cfg(**{"data.val_fraction": fraction})


def test_a_split_that_would_leave_a_class_out_is_refused(tmp_path: Path) -> None:
    data = load_dataset("synthetic", n=400, dim=8, classes=3, seed=0)
    keep = torch.cat([torch.nonzero(data.y_train != 2).squeeze(1), torch.nonzero(data.y_train == 2)[:1, 0]])
    data = dataclasses.replace(data, x_train=data.x_train[keep], y_train=data.y_train[keep])  # class 2: 1 example
    with pytest.raises(ConfigError, match="data.val_fraction.*class 2 has 1 training example"):
        build_task(_cfg(), CPU, tmp_path, data)
    with pytest.raises(ConfigError, match="data.val_fraction"):  # the trainer passes it on, not as a RunError
        train(_cfg(), tmp_path / "run", quiet=True, dataset=data)
    assert not issubclass(ConfigError, RunError)


def test_best_is_the_test_accuracy_at_the_best_validation_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Validation and test disagree: the test accuracy peaks at epoch 3, the validation accuracy at epoch 2 (and ties
    # at epoch 4, where the earlier evaluation wins).
    data = _scripted_evaluations(monkeypatch, val=[0.50, 0.90, 0.70, 0.90], test=[0.60, 0.65, 0.95, 0.80])
    run = tmp_path / "run"
    summary = train(_cfg(), run, quiet=True, dataset=data)
    m = summary["metrics"]
    assert m["test_acc"] == 0.80  # the last evaluation's
    assert m["best_val_acc"] == 0.90 and m["test_acc_at_best_val"] == 0.65
    assert "best_test_acc" not in m  # the maximum of the test accuracy itself is not reported
    spe = summary["steps"] // 4
    assert summary["metric"] == "test_acc"
    assert summary["selection"] == {"metric": "val_acc", "step": 2 * spe, "epoch": 2.0, "evaluations": 4}
    assert json.loads((run / "summary.json").read_text())["metrics"]["test_acc_at_best_val"] == 0.65

    (row,) = summarize(collect_runs([run]))
    assert row.best is not None and row.best.mean == pytest.approx(65.0) and row.value.mean == pytest.approx(80.0)
    assert row.selection == "val_acc"
    header, _, line = markdown_table([row]).splitlines()
    assert "| accuracy % | test acc % at best val acc |" in header
    assert "| 80.00 ± 0.00 | 65.00 ± 0.00 |" in line


def test_only_evaluations_at_the_final_density_compete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # CHTss starts denser than its target: its best validation accuracy while dense must not stand for the sparse run.
    data = _scripted_evaluations(monkeypatch, val=[0.99, 0.50, 0.60, 0.70], test=[0.98, 0.40, 0.55, 0.65])
    cfg = _cfg(**{"sparsity.method": "chtss", "sparsity.density": 0.2})
    summary = train(cfg, tmp_path / "run", quiet=True, dataset=data)
    densities = [json.loads(line)["density"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
                 if json.loads(line)["event"] == "eval"]  # fmt: skip
    assert densities[0] > 2 * densities[-1] and densities[2] == densities[3]  # at the target from epoch 3 on
    assert summary["metrics"]["best_val_acc"] == 0.70 and summary["metrics"]["test_acc_at_best_val"] == 0.65
    assert summary["selection"]["epoch"] == 4.0 and summary["selection"]["evaluations"] == 2


def test_real_run_logs_both_splits_and_selects_from_the_log(tmp_path: Path) -> None:
    data = load_dataset("synthetic", n=400, dim=8, classes=3, seed=0)
    summary = train(_cfg(), tmp_path / "run", quiet=True, dataset=data)
    evals = [e for e in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
             if e["event"] == "eval"]  # fmt: skip
    assert all({"val_loss", "val_acc", "test_loss", "test_acc"} <= set(e) for e in evals)
    best = max(evals, key=lambda e: e["val_acc"])  # max() keeps the first of equal values
    assert summary["metrics"]["best_val_acc"] == best["val_acc"]
    assert summary["metrics"]["test_acc_at_best_val"] == best["test_acc"]
    assert summary["selection"]["step"] == best["step"]
    assert summary["data"]["val_size"] + summary["data"]["train_size"] == len(data.x_train)
