"""``sparsebrain retrain`` (eDSrT): a dense run projected onto N:M patterns and retrained, as a user would run it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_cli import TINY, sb

from sparsebrain.topology import best_transposable_mask, is_rowwise, is_transposable


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("retrain") / "dense"
    sb("train", *TINY, "--train.epochs", "3", "--sparsity.method", "dense", "--run-dir", str(run))
    return run


def _checkpoint(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize(("method", "to"), [("chts24", "2:4"), ("asp", "2:4"), ("chts24", "1:4")])
def test_retrain_projects_and_keeps_valid_patterns(dense_run: Path, tmp_path: Path, method: str, to: str) -> None:
    run = tmp_path / method
    out = sb("retrain", "--from", str(dense_run), "--method", method, "--to", to, "--train.epochs", "2",
             "--sparsity.update_interval", "3", "--run-dir", str(run))  # fmt: skip
    assert "recovered" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    n = int(to[0])
    assert summary["final_density"] == pytest.approx(n / 4)
    dense = json.loads((dense_run / "summary.json").read_text())
    ref = summary["init_from"]
    assert ref["test_acc"] == dense["metrics"]["test_acc"]
    assert ref["recovered"] == pytest.approx(summary["metrics"]["test_acc"] / dense["metrics"]["test_acc"])
    weights, start = _checkpoint(run), _checkpoint(dense_run)
    for key in ("layers.0", "layers.1"):
        mask = weights[f"{key}.mask"]
        assert is_transposable(mask, n, 4)
        assert torch.count_nonzero(weights[f"{key}.weight"][~mask]) == 0
        if method == "asp":  # the fixed mask is the best-magnitude projection of the dense weights
            assert torch.equal(mask, best_transposable_mask(start[f"{key}.weight"].abs(), n, 4))


def test_retrain_rowwise_layout(dense_run: Path, tmp_path: Path) -> None:
    run = tmp_path / "rowwise"
    sb("retrain", "--from", str(dense_run), "--layout", "rowwise", "--train.epochs", "1", "--run-dir", str(run))
    assert is_rowwise(_checkpoint(run)["layers.0.mask"], 2, 4)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "chtz"], "unknown method 'chtz'"),
        (["--to", "4:4"], "1 <= n < m"),
        (["--layout", "diagonal"], "pattern_layout"),
    ],
)
def test_retrain_bad_input(dense_run: Path, tmp_path: Path, args: list[str], message: str) -> None:
    proc = sb("retrain", "--from", str(dense_run), *args, "--run-dir", str(tmp_path / "x"), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr


def test_retrain_from_a_missing_run_or_an_unfitting_checkpoint(dense_run: Path, tmp_path: Path) -> None:
    proc = sb("retrain", "--from", str(tmp_path / "nope"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = sb("retrain", "--from", str(dense_run), "--model.hidden", "[64, 64]", "--run-dir", str(tmp_path / "y"),
              check=False)  # fmt: skip
    assert proc.returncode == 2 and "model.init_from" in proc.stderr and "does not fit" in proc.stderr
