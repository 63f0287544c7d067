"""The sequence classification task (RSGN and its baselines on the RSGN paper's synthetic tasks), CLI included."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebrain.data.rsgn_tasks import make_hierarchical
from sparsebrain.experiments.config import ConfigError, load_config
from sparsebrain.experiments.tasks import build_task
from sparsebrain.experiments.trainer import train
from sparsebrain.models import MODELS, RSGN

ROOT = Path(__file__).resolve().parents[2]
TINY_RSGN = "{variant: sparse, num_nodes: 32, hidden: 16, rank: 8, steps: 2, num_neighbors: 4}"


def sb_train(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sparsebrain", "train", "--config", str(ROOT / "configs/rsgn_hierarchical.yaml"),
         "--train.epochs", "1", "--train.threads", "1", "--train.device", "cpu", *args],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def test_cli_trains_rsgn_and_reports_active_fraction(tmp_path: Path) -> None:
    run = tmp_path / "rsgn"
    out = sb_train("--model.options", TINY_RSGN, "--run-dir", str(run))
    assert "finished" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["model"] == "rsgn" and summary["metric"] == "test_acc"
    m = summary["metrics"]
    assert 0 <= m["test_acc"] <= 1 and 0 <= m["val_acc"] <= 1 and "best_test_acc" not in m
    assert summary["selection"]["metric"] == "val_acc" and m["best_val_acc"] == m["val_acc"]  # one evaluation
    assert m["test_acc_at_best_val"] == m["test_acc"]
    assert 0 < m["active_fraction"] <= 0.1 + 1e-6  # the sparse variant keeps at most 10% of nodes active
    # a tenth of each of the 20 classes of the 4000 training sequences is held out for validation
    assert summary["data"]["train_size"] == 3600 and summary["data"]["val_size"] == 400
    assert summary["data"]["test_size"] == 1000
    tiny = RSGN(32, 20, num_nodes=32, hidden=16, rank=8, steps=2, num_neighbors=4)
    assert summary["data"]["parameters"] == sum(p.numel() for p in tiny.parameters())
    assert summary["layers"] == {} and summary["density"] == 1.0  # method dense: nothing sparsified


def test_cli_trains_a_budget_matched_baseline(tmp_path: Path) -> None:
    run = tmp_path / "tf"
    sb_train("--model.name", "seq_transformer", "--model.options", "{budget: 5000}", "--run-dir", str(run))
    summary = json.loads((run / "summary.json").read_text())
    assert summary["model"] == "seq_transformer" and summary["metric"] == "test_acc"
    assert "active_fraction" not in summary["metrics"]  # an RSGN-only metric
    assert abs(summary["data"]["parameters"] - 5000) < 2500  # budget matching picked a small width


def _cfg(**overrides: object):  # type: ignore[no-untyped-def]
    base = {"model.name": "rsgn", "data.name": "rsgn_hierarchical", "sparsity.method": "dense",
            "train.optimizer": "adamw", "train.lr": 0.001, "train.batch_size": 16, "train.threads": 1,
            "train.device": "cpu", "model.options": {"num_nodes": 32, "hidden": 16, "rank": 8, "steps": 2,
                                                     "num_neighbors": 4}}  # fmt: skip
    return load_config(None, {**base, **overrides})


def test_rsgn_task_calls_hebbian_update_once_per_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rewards: list[float] = []
    original = RSGN.hebbian_update

    def spy(self: RSGN, reward: float) -> float:
        rewards.append(reward)
        return original(self, reward)

    monkeypatch.setattr(RSGN, "hebbian_update", spy)
    small = make_hierarchical(0, n=200)
    summary = train(_cfg(**{"train.steps": 7, "train.eval_interval": 7}), tmp_path / "run", quiet=True, dataset=small)
    assert summary["steps"] == 7 and len(rewards) == 7
    assert all(r < 0 for r in rewards)  # reward = -loss, and cross-entropy is positive


def test_a_diverged_run_stops_with_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sparsebrain.experiments.tasks.sequence import SequenceClassificationTask
    from sparsebrain.experiments.trainer import DivergedError, RunError

    original = SequenceClassificationTask.loss
    monkeypatch.setattr(SequenceClassificationTask, "loss", lambda self, step: original(self, step) * float("nan"))
    small = make_hierarchical(0, n=200)
    with pytest.raises(DivergedError, match="training diverged.*step 4") as err:
        train(_cfg(**{"train.steps": 8, "train.eval_interval": 4}), tmp_path / "run", quiet=True, dataset=small)
    assert isinstance(err.value, RunError) and "train.lr" in str(err.value)
    assert not (tmp_path / "run" / "summary.json").exists()


def test_baseline_task_has_no_slow_learning(tmp_path: Path) -> None:
    task = build_task(_cfg(**{"model.name": "seq_bilstm", "model.options": {"hidden": 8}}), torch.device("cpu"),
                      tmp_path, make_hierarchical(0, n=200))  # fmt: skip
    task.after_step(torch.tensor(1.0))  # a no-op for baselines
    # 160 training sequences of 20 classes: one of each class is held out for validation, 140 train
    assert isinstance(task.model, MODELS.get("seq_bilstm")) and task.steps_per_epoch == 140 // 16
    assert len(task.x_val) == 20 and torch.equal(task.y_val.sort().values, torch.arange(20))


@pytest.mark.parametrize("model", ["rsgn", "seq_mlp", "seq_transformer", "seq_sparse_transformer", "seq_bilstm"])
def test_wrong_data_name_names_the_key_and_the_choices(model: str) -> None:
    with pytest.raises(ConfigError, match="data.name") as err:
        _cfg(**{"model.name": model, "data.name": "digits", "model.options": {}})
    assert "rsgn_hierarchical" in str(err.value) and "rsgn_long_range" in str(err.value) and model in str(err.value)


def test_model_options_that_do_not_fit_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="model.options"):
        build_task(_cfg(**{"model.options": {"no_such_option": 1}}), torch.device("cpu"), tmp_path,
                   make_hierarchical(0, n=200))  # fmt: skip


def test_rsgn_task_anneals_per_epoch_and_rewires_at_each_epoch_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temperatures: list[float] = []
    ends: list[int] = []
    original_start, original_end = RSGN.start_epoch, RSGN.end_epoch

    def start(self: RSGN, epoch: int) -> float:
        temperatures.append(original_start(self, epoch))
        return temperatures[-1]

    def end(self: RSGN) -> tuple[int, int]:
        ends.append(len(temperatures))  # the step (1-based) at which the epoch ended
        return original_end(self)

    monkeypatch.setattr(RSGN, "start_epoch", start)
    monkeypatch.setattr(RSGN, "end_epoch", end)
    small = make_hierarchical(0, n=200)  # 160 training sequences, 140 after the validation split
    cfg = _cfg(**{"train.epochs": 3, "train.batch_size": 64, "train.eval_interval": 2})  # 2 steps per epoch
    train(cfg, tmp_path / "run", quiet=True, dataset=small)
    assert ends == [2, 4, 6]
    assert temperatures == pytest.approx([1.0, 1.0, 0.95, 0.95, 0.95**2, 0.95**2])  # sparse default: x0.95 per epoch


def test_temperature_schedule_is_a_function_of_the_epoch() -> None:
    model = RSGN(8, 3, num_nodes=16, hidden=8, rank=4, num_neighbors=4, temperature=2.0, temperature_decay=0.5)
    assert [model.start_epoch(e) for e in (0, 1, 3, 10)] == [2.0, 1.0, 0.25, 0.1]  # floor: min_temperature 0.1
    assert model.start_epoch(1) == 1.0  # going back (a resumed run) gives the same value
    reference = RSGN(8, 3, variant="reference", num_nodes=16, hidden=8, rank=4)
    assert reference.start_epoch(7) == 1.0 and reference.end_epoch() == (0, 0)  # no annealing, nothing to rewire
    with pytest.raises(ValueError, match="rewire=True needs the sparse variant"):
        RSGN(8, 3, variant="reference", num_nodes=16, hidden=8, rank=4, rewire=True)
