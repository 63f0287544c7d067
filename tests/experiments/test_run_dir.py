"""The run directory: one writer at a time, leftovers of killed writes, a full disk, a damaged metrics log, names."""

from __future__ import annotations

import errno
import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from sparsebrain.experiments import io as run_io
from sparsebrain.experiments.config import load_config
from sparsebrain.experiments.trainer import DivergedError, RunError, default_run_dir, train

TINY = {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 3, "train.batch_size": 256,
        "train.threads": 1, "sparsity.method": "set", "sparsity.density": 0.5}  # fmt: skip
HOLD = "import sys, time\nfrom sparsebrain.experiments.io import lock_run_dir\nwith lock_run_dir(sys.argv[1]):\n" \
       "    print('locked', flush=True)\n    time.sleep(120)\n"  # fmt: skip


def _cfg(**kw: object):  # type: ignore[no-untyped-def]
    return load_config(None, {**TINY, **kw})


def _holder(run: Path) -> subprocess.Popen[str]:
    """Another process that holds ``run`` (as a second ``sparsebrain train`` would)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def _interrupted_run(run: Path) -> None:
    """A run killed after its last checkpoint (before it wrote its summary)."""
    train(_cfg(), run, quiet=True)
    (run / "summary.json").unlink()


# ---------------------------------------------------------------------------------------------------------------
# divergence


def test_non_finite_weights_at_a_topology_update_stop_with_diverged_error(tmp_path: Path) -> None:
    # the weights blow up at the first steps; a topology update every step meets them before any evaluation
    cfg = _cfg(**{"train.lr": 1e30, "sparsity.update_interval": 1, "train.eval_interval": 18})
    with pytest.raises(DivergedError, match=r"diverged.*layers\.0.*train\.lr"):
        train(cfg, tmp_path / "run", quiet=True)
    assert not (tmp_path / "run" / "summary.json").exists()
    assert not (tmp_path / "run" / "checkpoint.pt").exists()  # nothing non-finite was checkpointed


# ---------------------------------------------------------------------------------------------------------------
# one writer per run directory


@pytest.mark.parametrize("resume", [False, True])
def test_a_run_directory_held_by_another_process_is_refused_naming_its_pid(tmp_path: Path, resume: bool) -> None:
    run = tmp_path / "run"
    if resume:
        _interrupted_run(run)
    before = {p.name: p.read_bytes() for p in run.iterdir()} if resume else {}
    holder = _holder(run)
    try:
        with pytest.raises(RunError, match=rf"{run}.*in use by another process \(PID {holder.pid}\)"):
            train(_cfg(), run, resume=resume, quiet=True)
        after = {p.name: p.read_bytes() for p in run.iterdir() if p.name != ".lock"}
        assert after == before  # nothing was read into the run or written
    finally:
        holder.kill()
        holder.wait()
    assert train(_cfg(), run, resume=resume, quiet=True)["status"] == "finished"  # its lock died with it
    assert not (run / ".lock").exists()  # released at the end


def test_a_lock_left_by_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    run = tmp_path / "run"
    holder = _holder(run)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (run / ".lock").read_text().strip() == str(holder.pid)  # the file stays; its flock is gone
    assert train(_cfg(), run, quiet=True)["status"] == "finished"


def test_the_lock_is_released_when_a_run_fails(tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(DivergedError):
        train(_cfg(**{"train.lr": 1e30, "sparsity.update_interval": 1}), run, quiet=True)
    with run_io.lock_run_dir(run):  # would raise if the failed run still held it
        pass


# ---------------------------------------------------------------------------------------------------------------
# leftovers of writes that a kill cut short


@pytest.mark.parametrize("resume", [False, True])
def test_temporary_files_of_killed_writes_are_removed_at_start(tmp_path: Path, resume: bool) -> None:
    run = tmp_path / "run"
    if resume:
        _interrupted_run(run)
    else:
        run.mkdir()
    leftovers = [run / ".checkpoint.pt.k3j2_x9a.tmp", run / ".metrics.jsonl.abc123.tmp", run / ".tokenizer.json.77.tmp"]
    for f in leftovers:
        f.write_bytes(b"half a file")
    keep = [run / "notes.txt", run / ".hidden", run / "data.tmp"]
    for f in keep:
        f.write_text("the user's")
    train(_cfg(), run, resume=resume, quiet=True)
    assert not any(f.exists() for f in leftovers)
    assert all(f.read_text() == "the user's" for f in keep)


# ---------------------------------------------------------------------------------------------------------------
# a full disk


class _FullDisk:
    """A file whose writes fail as on a full disk, after writing part of what they were given."""

    def __init__(self, f) -> None:  # type: ignore[no-untyped-def]
        self.f = f

    def write(self, data: bytes) -> int:
        self.f.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.f, name)


def test_disk_full_during_a_checkpoint_write_keeps_the_last_checkpoint(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    real_save, saves = torch.save, []

    def save(obj, f, *args, **kwargs):  # type: ignore[no-untyped-def]
        saves.append(obj["state"]["step"])
        real_save(obj, f if len(saves) == 1 else _FullDisk(f), *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(RunError, match=r"no space left on the device while writing '.*checkpoint\.pt'"):
        train(_cfg(), run, quiet=True)
    monkeypatch.undo()
    assert len(saves) == 2 and saves[1] == 2 * saves[0]  # the checkpoint of epoch 2 met the full disk
    assert not list(run.glob(".*.tmp"))
    assert torch.load(run / "checkpoint.pt", weights_only=True)["state"]["step"] == saves[0]  # the last good one
    assert not (run / "summary.json").exists()
    assert train(_cfg(), run, resume=True, quiet=True)["status"] == "finished"


def test_disk_full_during_a_metrics_append_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    real_open = open

    def full_open(path, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if "a" in mode and str(path).endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_open)
    with pytest.raises(RunError, match=r"no space left on the device while writing '.*metrics\.jsonl'"):
        train(_cfg(), tmp_path / "run", quiet=True)


# ---------------------------------------------------------------------------------------------------------------
# metrics.jsonl damaged by a crash


@pytest.mark.parametrize(
    ("damage", "at_end"),
    [
        (lambda text: text + '{"event": "eval", "step": 1', True),  # an append cut short
        (lambda text: text + "\x00\x00\x00\x00\n", True),  # garbage that the file system left
        (lambda text: text.replace("\n", '\n{"event": "ev\n', 1), False),  # garbage in the middle: line 2
    ],
)
def test_a_damaged_line_in_metrics_is_dropped_on_resume_with_a_warning(tmp_path: Path, damage, at_end: bool) -> None:  # type: ignore[no-untyped-def]
    run = tmp_path / "run"
    train(_cfg(), run, quiet=True)
    expected = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    _interrupted_run(tmp_path / "cut")
    metrics = tmp_path / "cut" / "metrics.jsonl"
    line = len(metrics.read_text().splitlines()) + 1 if at_end else 2
    metrics.write_text(damage(metrics.read_text()))
    with pytest.warns(UserWarning, match=rf"dropped 1 line.*\(line {line}\)"):
        train(_cfg(), tmp_path / "cut", resume=True, quiet=True)
    events = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [e["event"] for e in events] == [e["event"] for e in expected] + ["resume"]
    assert [e["step"] for e in events if e["event"] == "eval"] == [e["step"] for e in expected if e["event"] == "eval"]


# ---------------------------------------------------------------------------------------------------------------
# names


def test_default_run_dirs_name_the_model() -> None:
    names = {m: default_run_dir(load_config("configs/rsgn_hierarchical.yaml", {"model.name": m, "model.options": {}}))
             for m in ("seq_transformer", "seq_mlp")}  # fmt: skip
    names["rsgn"] = default_run_dir(load_config("configs/rsgn_hierarchical.yaml"))
    assert names["rsgn"] == Path("runs/rsgn_hierarchical/rsgn-dense_d1_s42")
    assert names["seq_transformer"] == Path("runs/rsgn_hierarchical/seq_transformer-dense_d1_s42")
    assert len(set(names.values())) == 3
    cfg = load_config(None, {"sparsity.method": "chts", "sparsity.density": 0.05, "sparsity.label": "chts[zeta=0.1]"})
    assert default_run_dir(cfg) == Path("runs/default/mlp-chts-zeta-0.1_d0.05_s0")


def test_a_dense_run_is_named_at_density_1_whatever_the_config_says() -> None:
    """Its summary and the report say density 1: a directory named d0.05 would say otherwise."""
    cfg = load_config(None, {"sparsity.method": "dense", "sparsity.density": 0.05})
    assert default_run_dir(cfg) == Path("runs/default/mlp-dense_d1_s0")
