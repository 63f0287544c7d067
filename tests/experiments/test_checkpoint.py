"""Checkpoints are verified when read: a damaged, cut-short or foreign file stops the run with one clear message."""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from sparsebrain.experiments.checkpoint import checksum, load_checkpoint, save_checkpoint
from sparsebrain.experiments.config import load_config
from sparsebrain.experiments.trainer import RunError, load_initial_weights, train
from sparsebrain.models import MLP

TINY = {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 2, "train.batch_size": 256,
        "train.threads": 1, "sparsity.method": "set", "sparsity.density": 0.5}  # fmt: skip
CLI_TINY = ["--data.name", "synthetic", "--model.hidden", "[16]", "--train.epochs", "2", "--train.batch_size", "256",
            "--train.threads", "1", "--sparsity.method", "set", "--sparsity.density", "0.5"]  # fmt: skip


class _Evil:
    """A pickle that would run a command when loaded without weights_only."""

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("echo this must never run",))


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("ckpt") / "run"
    train(load_config(None, TINY), run, quiet=True)
    return run


@pytest.fixture
def interrupted(finished: Path, tmp_path: Path) -> Path:
    """A copy of a run killed after its last checkpoint, before it wrote its summary."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    (run / "summary.json").unlink()
    return run


def _flip_a_weight_bit(path: Path, weight: torch.Tensor) -> None:
    """Flips the lowest mantissa bit of a non-zero element of ``weight`` where the file stores it."""
    data = bytearray(path.read_bytes())
    w = weight.detach().cpu().contiguous()
    offset = data.find(w.numpy().tobytes())  # torch.save stores each tensor's bytes uncompressed
    assert offset >= 0 and data.find(w.numpy().tobytes(), offset + 1) < 0
    i = int(torch.nonzero(w.reshape(-1))[0])
    data[offset + i * w.element_size()] ^= 1  # little endian: the first byte holds the lowest mantissa bits
    path.write_bytes(bytes(data))


def test_checksum_sees_every_value_and_ignores_where_it_lives() -> None:
    w = torch.randn(4, 3)
    base = {"model": {"w": w, "b": torch.zeros(3)}, "state": {"step": 3, "lr": 0.1}, "rng": [torch.ones(2)]}
    same = {"model": {"w": w.t().contiguous().t(), "b": torch.zeros(3)}, "state": {"step": 3, "lr": 0.1},
            "rng": [torch.ones(2)]}  # fmt: skip
    assert checksum(base) == checksum(same)  # other strides, same values
    bumped = w.clone()
    bumped.view(torch.int32)[0, 0] ^= 1
    for other in (
        {**base, "model": {"w": bumped, "b": torch.zeros(3)}},
        {**base, "model": {"w": w, "b": torch.zeros(3, dtype=torch.float64)}},
        {**base, "state": {"step": 3.0, "lr": 0.1}},
        {**base, "state": {"step": 3, "lr": 0.1 + 1e-17}},
        {**base, "rng": (torch.ones(2),)},
    ):
        assert checksum(other) != checksum(base)


def test_a_flipped_bit_in_a_stored_weight_refuses_the_resume(interrupted: Path) -> None:
    ckpt = interrupted / "checkpoint.pt"
    _flip_a_weight_bit(ckpt, torch.load(ckpt, weights_only=True)["model"]["layers.0.weight"])
    with pytest.raises(RunError) as e:
        train(load_config(None, TINY), interrupted, resume=True, quiet=True)
    message = str(e.value)
    assert str(ckpt) in message and "damaged" in message and "checksum" in message
    assert "delete it" in message and "--run-dir" in message
    assert not (interrupted / "summary.json").exists()


def test_a_checkpoint_without_checksum_still_resumes_with_a_warning(interrupted: Path) -> None:
    ckpt = interrupted / "checkpoint.pt"
    old = torch.load(ckpt, weights_only=True)
    del old["checksum"]
    torch.save(old, ckpt)  # as written before checksums
    with pytest.warns(UserWarning, match="no checksum"):
        assert train(load_config(None, TINY), interrupted, resume=True, quiet=True)["status"] == "finished"


def test_save_then_load_round_trips(tmp_path: Path) -> None:
    payload = {"config": {"seed": 1}, "model": {"w": torch.randn(3)}, "state": {"step": 2}}
    save_checkpoint(tmp_path / "c.pt", payload)
    got = load_checkpoint(tmp_path / "c.pt", advice="-")
    assert got.keys() == payload.keys() and torch.equal(got["model"]["w"], payload["model"]["w"])


def _real(run: Path) -> bytes:
    return (run / "checkpoint.pt").read_bytes()


def _wrong_mask(run: Path) -> None:
    ckpt = load_checkpoint(run / "checkpoint.pt", advice="-")
    ckpt["model"]["layers.0.mask"] = ckpt["model"]["layers.0.mask"][:, :-1]
    save_checkpoint(run / "checkpoint.pt", ckpt)


# each writes a bad checkpoint.pt into a run directory; the words the message must hold
BAD: dict[str, tuple[Callable[[Path], object], str]] = {
    "empty": (lambda run: (run / "checkpoint.pt").write_bytes(b""), "is empty"),
    "truncated": (lambda run: (run / "checkpoint.pt").write_bytes(_real(run)[:3000]), "cut short or damaged"),
    "random": (lambda run: (run / "checkpoint.pt").write_bytes(os.urandom(5000)), "was not written by torch.save"),
    "text": (
        lambda run: (run / "checkpoint.pt").write_text("step: 3\nweights: none\n"),
        "was not written by torch.save",
    ),
    "list": (lambda run: torch.save([1, 2, 3], run / "checkpoint.pt"), "not a sparsebrain run's checkpoint"),
    "no config": (lambda run: torch.save({"model": {}}, run / "checkpoint.pt"), "no 'config'"),
    "pickled code": (lambda run: torch.save({"config": _Evil()}, run / "checkpoint.pt"), "refuses"),
    "raw pickle": (lambda run: (run / "checkpoint.pt").write_bytes(pickle.dumps(_Evil())), "refuses"),
    "wrong mask": (_wrong_mask, "does not fit the model"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_checkpoint_file_is_one_clear_error_on_resume(interrupted: Path, kind: str) -> None:
    write, words = BAD[kind]
    write(interrupted)
    with pytest.raises(RunError) as e:
        train(load_config(None, TINY), interrupted, resume=True, quiet=True)
    message = str(e.value)
    assert str(interrupted / "checkpoint.pt") in message and words in message, message
    assert "delete it" in message and "another --run-dir" in message
    assert "\n" not in message and "weights_only" not in message and "Traceback" not in message


@pytest.mark.parametrize("kind", ["empty", "truncated", "random", "text", "list", "pickled code", "raw pickle"])
def test_a_bad_checkpoint_file_is_one_clear_error_for_init_from(interrupted: Path, kind: str) -> None:
    write, _ = BAD[kind]
    write(interrupted)
    with pytest.raises(RunError) as e:
        load_initial_weights(MLP(64, [16], 10), interrupted)
    message = str(e.value)
    assert message.startswith("config key 'model.init_from'") and str(interrupted / "checkpoint.pt") in message
    assert "\n" not in message and "weights_only" not in message


def test_init_from_a_damaged_checkpoint_or_a_foreign_dict_is_refused(interrupted: Path) -> None:
    ckpt = interrupted / "checkpoint.pt"
    _flip_a_weight_bit(ckpt, torch.load(ckpt, weights_only=True)["model"]["layers.0.weight"])
    with pytest.raises(RunError, match=r"model\.init_from.*is damaged"):
        load_initial_weights(MLP(64, [16], 10), interrupted)
    torch.save({"lr": 0.1, "weights": [1.0]}, ckpt)
    with pytest.raises(RunError, match="neither a sparsebrain checkpoint nor a state_dict"):
        load_initial_weights(MLP(64, [16], 10), interrupted)


@pytest.mark.parametrize("kind", ["flipped bit", "random", "pickled code"])
def test_the_cli_reports_a_bad_checkpoint_in_one_line(interrupted: Path, kind: str) -> None:
    ckpt = interrupted / "checkpoint.pt"
    if kind == "flipped bit":
        _flip_a_weight_bit(ckpt, torch.load(ckpt, weights_only=True)["model"]["layers.0.weight"])
    else:
        BAD[kind][0](interrupted)
    proc = subprocess.run(
        [sys.executable, "-m", "sparsebrain", "train", *CLI_TINY, "--run-dir", str(interrupted), "--resume"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("sparsebrain: error: ") and str(ckpt) in lines[0], proc.stderr
    assert "weights_only" not in proc.stderr and "this must never run" not in proc.stdout
