"""Run directories through the command line: compare reuses only runs of the same config, one writer per directory,
divergence and damaged files as one-line messages."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli import sb

from sparsebrain.experiments.config import load_config
from sparsebrain.experiments.trainer import train

TINY = ["--data.name", "synthetic", "--model.hidden", "[16]", "--train.threads", "1", "--train.batch_size", "256"]


def _error_line(code: int, err: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsebrain: error: "), err
    return lines[0]


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``sparsebrain ARGS`` in this process (compare still trains each run in a child process)."""
    from sparsebrain.cli import main

    code = main(list(args))
    return code, capsys.readouterr().err


def _steps(run: Path) -> int:
    return json.loads((run / "summary.json").read_text())["steps"]


def test_compare_reuses_only_runs_of_the_same_config_and_rerun_replaces_the_others(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cmp"

    def compare(epochs: int, *more: str) -> tuple[int, str]:
        return _main(capsys, "compare", *TINY, "--train.epochs", str(epochs), "--methods", "set",
                     "--sparsity.density", "0.5", "--out", str(out), *more)  # fmt: skip

    assert compare(1)[0] == 0
    run = out / "mlp-set_d0.5_s0"
    one_epoch = _steps(run)
    summary = (run / "summary.json").read_text()
    error = _error_line(*compare(3))  # a 1-epoch run must not be folded into a 3-epoch grid
    assert str(run) in error and "finished run of another config (differs in train.epochs)" in error
    assert "--rerun" in error
    assert (run / "summary.json").read_text() == summary
    assert compare(1)[0] == 0  # the same config: reused as it is
    assert (run / "summary.json").read_text() == summary
    assert compare(3, "--rerun")[0] == 0
    assert _steps(run) == 3 * one_epoch
    # an unfinished run whose checkpoint was made with another config
    (run / "summary.json").unlink()
    error = _error_line(*compare(2))
    assert str(run) in error and "unfinished run of another config (differs in train.epochs)" in error
    assert compare(2, "--rerun")[0] == 0
    assert _steps(run) == 2 * one_epoch
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1.0, 2.0]  # a new run, not a resumed one


def test_a_second_process_on_a_run_directory_is_refused_and_the_metrics_stay_one_run(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = ["train", *TINY, "--train.epochs", "5000", "--sparsity.method", "set", "--run-dir", str(run), "--quiet"]
    first = subprocess.Popen([sys.executable, "-m", "sparsebrain", *args])
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "checkpoint.pt").exists():
            time.sleep(0.05)
        error = _error_line(*_main(capsys, *args, "--resume"))
        assert f"run directory {str(run)!r} is in use by another process (PID {first.pid})" in error
        assert first.poll() is None  # still training, undisturbed
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=60)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert "resume" not in [e["event"] for e in events]
    steps = [e["step"] for e in events if e["event"] == "eval"]
    assert steps == sorted(set(steps)) and steps == [steps[0] * (i + 1) for i in range(len(steps))]


def test_divergence_at_a_topology_update_is_one_line_naming_train_lr(tmp_path: Path) -> None:
    run = tmp_path / "run"
    proc = sb("train", *TINY, "--train.epochs", "2", "--train.eval_every", "2", "--train.lr", "1e30",
              "--sparsity.method", "set", "--sparsity.update_interval", "1", "--run-dir", str(run),
              check=False)  # fmt: skip
    error = _error_line(proc.returncode, proc.stderr)
    assert "training diverged" in error and "train.lr" in error and "Traceback" not in proc.stderr
    assert not (run / "summary.json").exists()


def test_resume_over_a_cut_short_metrics_line_warns_in_one_line(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cfg = load_config(None, [*TINY, "--train.epochs", "2", "--sparsity.method", "set"])
    train(cfg, run, quiet=True)
    (run / "summary.json").unlink()
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"event": "eval", "st')
    proc = sb("train", "--config", str(run / "config.yaml"), "--run-dir", str(run), "--resume", "--quiet")
    warnings = [line for line in proc.stderr.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and warnings[0].startswith("sparsebrain: warning: "), proc.stderr
    assert "metrics.jsonl: dropped 1 line" in warnings[0]
