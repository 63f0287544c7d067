"""Reports from fake run directories written exactly as docs/run-directory.md defines them."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparsebrain.experiments.report import Stat, build_report, collect_runs, markdown_table, summarize

pytest.importorskip("matplotlib")

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLOTS = ["accuracy.png", "density_anp.png", "degree_distribution.png", "links_changed.png", "ch_score_variance.png"]
SHAPES = {"layers.0": (24, 20), "layers.1": (24, 24), "layers.2": (5, 24)}  # (out, in), like nn.Linear.weight
EPOCHS = 4

# Final test accuracy (fraction) and wall time per (method, density) and seed: the table's numbers, by hand below.
ACC = {("dense", 1.0): [0.93, 0.94, 0.95], ("chtss", 0.05): [0.90, 0.91, 0.92], ("set", 0.05): [0.85, 0.87, 0.89]}
ACC[("chtss", 0.2)] = [0.925]  # one seed only: std shown as 0.00
WALL = [10.0, 20.0, 30.0]


def _hist(degrees: np.ndarray) -> list[int]:
    return np.bincount(degrees).tolist()


def write_run(
    root: Path,
    method: str,
    density: float,
    seed: int,
    acc: float,
    wall: float,
    *,
    finished: bool = True,
    shapes: dict[str, tuple[int, int]] = SHAPES,
) -> Path:
    """One run directory: config.yaml, metrics.jsonl (eval + topology events), summary.json if finished."""
    run = root / (f"{method}_s{seed}" if method == "dense" else f"{method}_d{density:g}_s{seed}")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"method: {method}\ndensity: {density}\nseed: {seed}\n")
    rng = np.random.default_rng(zlib.crc32(f"{method}/{density}/{seed}".encode()))  # stable across processes
    steps_per_epoch = 10
    sparse = method != "dense"
    has_scores = method.startswith("cht")  # SET regrows at random: no scores, score_var null
    lines: list[dict[str, Any]] = []
    masks = {n: rng.random(s) < density for n, s in shapes.items()} if sparse else {}
    epochs = EPOCHS if finished else 2
    for epoch in range(1, epochs + 1):
        if sparse:
            for half in (0.5, 1.0):  # two topology updates per epoch
                layers = {}
                for n, m in masks.items():
                    links = int(m.sum())
                    regrown = int(links * 0.3 / epoch)
                    layers[n] = {
                        "density": links / m.size,
                        "links": links,
                        "removed": regrown,
                        "regrown": regrown,
                        "changed_fraction": regrown / links,
                        "score_mean": 0.1 * epoch if has_scores else None,
                        "score_var": 0.05 / epoch + 0.01 * seed if has_scores else None,
                        "anp_in": 0.9,
                        "anp_out": 0.8,
                    }
                e = epoch - 1 + half
                # CHTss-like schedule: sparsity grows towards the target; ANP differs a little between seeds.
                d_now = density * (2 - e / EPOCHS) if method == "chtss" else density
                anp_now = 0.5 + 0.1 * e + 0.02 * seed
                lines.append(
                    {
                        "event": "topology",
                        "step": int(e * steps_per_epoch),
                        "epoch": e,
                        "density": d_now,
                        "anp": anp_now,
                        "layers": layers,
                    }
                )
        lines.append(
            {
                "event": "eval",
                "step": epoch * steps_per_epoch,
                "epoch": float(epoch),
                "train_loss": 1.0 / epoch,
                "test_loss": 1.1 / epoch,
                "test_acc": acc - 0.02 * (EPOCHS - epoch),
                "density": density,
                "anp": 1.0 if not sparse else 0.5 + 0.1 * epoch + 0.02 * seed,
                "lr": 0.01,
                "wall_time_s": wall * epoch / EPOCHS,
            }
        )
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    if finished:
        layers = {
            n: {
                "density": float(m.mean()),
                "links": int(m.sum()),
                "anp_in": 0.9,
                "anp_out": 0.8,
                "in_degree_hist": _hist(m.sum(0)),
                "out_degree_hist": _hist(m.sum(1)),
            }
            for n, m in masks.items()
        }
        summary = {
            "status": "finished",
            "name": "toy_mlp",
            "method": method,
            "seed": seed,
            "density": density,
            "dataset": "toy",
            "model": "mlp",
            "epochs": EPOCHS,
            "steps": EPOCHS * steps_per_epoch,
            "metrics": {"test_acc": acc, "best_test_acc": acc + 0.005, "test_loss": 0.3, "train_loss": 0.2},
            "final_density": 1.0 if not sparse else density + 0.001 * seed,
            "anp": 1.0 if not sparse else 0.9,
            "layers": layers,
            "wall_time_s": wall,
            "device": "cpu",
            "versions": {"sparsebrain": "0.1.0", "torch": "2.13.0", "python": "3.12.3", "cuda": None},
            "git_commit": "0123456789abcdef",
            "command": f"sparsebrain train --method {method} --seed {seed}",
        }
        (run / "summary.json").write_text(json.dumps(summary, indent=2))
    return run


@pytest.fixture(scope="module")
def runs_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "toy_mlp"
    for (method, density), accs in ACC.items():
        for seed, acc in enumerate(accs):
            write_run(root, method, density, seed, acc, WALL[seed])
    write_run(root, "set", 0.05, 7, 0.5, 1.0, finished=False)
    return root


@pytest.fixture(scope="module")
def report(runs_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report([runs_root], tmp_path_factory.mktemp("report"), published={"chtss": 90.5, "dense": 94.2})


def test_collect_runs_finds_finished_and_unfinished(runs_root: Path) -> None:
    runs = collect_runs([runs_root])
    assert len(runs) == 11
    unfinished = [r for r in runs if not r.finished]
    assert [r.path.name for r in unfinished] == ["set_d0.05_s7"]
    assert unfinished[0].summary is None and len(unfinished[0].of_kind("eval")) == 2
    # A run directory given directly, and twice, is one run.
    assert len(collect_runs([runs_root / "dense_s0", runs_root / "dense_s0"])) == 1


def test_summarize_mean_and_sample_std(runs_root: Path) -> None:
    rows = summarize(collect_runs([runs_root]))
    # Dense first; then methods as they first appear in path order (chtss_* sorts before set_*); densest first.
    assert [(r.method, r.density) for r in rows] == [("dense", 1.0), ("chtss", 0.2), ("chtss", 0.05), ("set", 0.05)]
    dense, chtss1, chtss, set_ = rows
    assert chtss.seeds == (0, 1, 2) and chtss.n_seeds == 3
    assert chtss.test_acc.mean == pytest.approx(91.0) and chtss.test_acc.std == pytest.approx(1.0)
    assert set_.test_acc.mean == pytest.approx(87.0) and set_.test_acc.std == pytest.approx(2.0)  # ddof=1
    assert set_.best_test_acc.mean == pytest.approx(87.5) and set_.best_test_acc.std == pytest.approx(2.0)
    assert chtss.final_density.mean == pytest.approx(0.051) and chtss.final_density.std == pytest.approx(0.001)
    assert chtss.wall_time_s == Stat(pytest.approx(20.0), pytest.approx(10.0), 3)
    assert dense.anp == Stat(1.0, 0.0, 3) and dense.final_density.mean == 1.0
    assert chtss1.test_acc == Stat(pytest.approx(92.5), 0.0, 1)  # one seed: std 0.0, n=1
    assert math.isclose(dense.test_acc.std, 1.0)


def test_row_order_follows_path_order(runs_root: Path) -> None:
    paths = [runs_root / "set_d0.05_s0", runs_root / "chtss_d0.05_s0", runs_root / "dense_s0"]
    assert [r.method for r in summarize(collect_runs(paths))] == ["dense", "set", "chtss"]


def test_markdown_table_text(runs_root: Path) -> None:
    rows = summarize(collect_runs([runs_root]))
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| method | density | seeds | accuracy % | best acc % | final density | ANP | wall time s |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| dense | 1 | 3 | 94.00 ± 1.00 | 94.50 ± 1.00 | 1.0000 ± 0.0000 | 1.000 ± 0.000 | 20.0 ± 10.0 |"
    single = "| chtss | 0.2 | 1 | 92.50 ± 0.00 | 93.00 ± 0.00 | 0.2000 ± 0.0000 | 0.900 ± 0.000 | 10.0 ± 0.0 |"
    assert lines[3] == single
    assert lines[5].startswith("| set | 0.05 | 3 | 87.00 ± 2.00 | 87.50 ± 2.00 | 0.0510 ± 0.0010 |")
    assert len(lines) == 6

    pub = markdown_table(rows, published={"chtss": 90.81}).splitlines()
    assert pub[0].endswith("| wall time s | published acc % |") and pub[1].endswith("---:|---:|")
    assert pub[3].endswith("| 90.81 |") and pub[4].endswith("| 90.81 |")
    assert pub[2].endswith("| 20.0 ± 10.0 |  |") and pub[5].endswith(" |  |")  # blank where none


def test_report_md_links_every_plot_and_lists_runs(report: Path) -> None:
    assert report.name == "report.md" and report.is_file()
    text = report.read_text()
    assert text.startswith("# sparsebrain report\n")
    assert "| dense | 1 | 3 | 94.00 ± 1.00 |" in text and "published acc %" in text and "| 94.20 |" in text
    for name in PLOTS:
        assert f"]({name})" in text, name
    unfinished = text.split("## Unfinished runs")[1]
    assert "set_d0.05_s7" in unfinished and "epoch 2" in unfinished
    assert "set_d0.05_s7" not in text.split("## Unfinished runs")[0]  # excluded from the table and run list
    assert "sparsebrain train --method chtss --seed 2" in text and "torch 2.13.0" in text and "on cpu" in text
    assert "(../" in text  # run links are relative to the report
    assert not list(report.parent.glob("*.tmp"))


def test_every_png_is_valid_and_non_trivial(report: Path) -> None:
    for name in PLOTS:
        data = (report.parent / name).read_bytes()
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, name


def test_dense_only_runs(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path / "runs", "dense", 1.0, seed, 0.9 + 0.01 * seed, 5.0)
    # A stale plot from an earlier report must not survive next to a report that skipped it.
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "degree_distribution.png").write_bytes(PNG_MAGIC)
    text = build_report([tmp_path / "runs"], tmp_path / "out").read_text()
    assert "](accuracy.png)" in text and (tmp_path / "out" / "accuracy.png").read_bytes()[:8] == PNG_MAGIC
    assert "](degree_distribution.png)" not in text and "Skipped: no sparse layers" in text
    assert not (tmp_path / "out" / "degree_distribution.png").exists()
    assert "| dense | 1 | 2 | 90.50 ± 0.71 |" in text


def test_no_runs_raises_naming_the_path(tmp_path: Path) -> None:
    empty = tmp_path / "nothing_here"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(ValueError, match="nothing_here"):
        collect_runs([empty])
    with pytest.raises(ValueError, match="missing_dir"):
        collect_runs([tmp_path / "missing_dir"])


def test_only_unfinished_runs_raise(tmp_path: Path) -> None:
    write_run(tmp_path, "set", 0.05, 0, 0.5, 1.0, finished=False)
    with pytest.raises(ValueError, match="no finished runs"):
        build_report([tmp_path], tmp_path / "out")


def test_duplicate_seed_raises(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "set", 0.05, 0, 0.8, 1.0)
    write_run(tmp_path / "b", "set", 0.05, 0, 0.8, 1.0)
    with pytest.raises(ValueError, match="seed 0"):
        summarize(collect_runs([tmp_path]))


def test_metrics_resume_and_cut_last_line(tmp_path: Path) -> None:
    run = tmp_path / "r"
    run.mkdir()
    events = [
        {"event": "eval", "step": 10, "epoch": 1.0, "test_acc": 0.5},
        {"event": "eval", "step": 20, "epoch": 2.0, "test_acc": 0.6},  # lost: the checkpoint was at step 10
        {"event": "resume", "step": 10, "epoch": 1.0},
        {"event": "eval", "step": 20, "epoch": 2.0, "test_acc": 0.7},
    ]
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events) + '{"event": "ev')
    (r,) = collect_runs([run])
    assert [e["test_acc"] for e in r.of_kind("eval")] == [0.5, 0.7]
    (run / "metrics.jsonl").write_text('{"event": "ev\n' + json.dumps(events[0]) + "\n")
    with pytest.raises(ValueError, match="metrics.jsonl:1"):
        collect_runs([run])


def test_many_layers_are_pooled_in_the_degree_plot(tmp_path: Path) -> None:
    shapes = {f"blocks.{i}.fc": (300, 200) for i in range(10)}  # more layers than panels; long histograms
    for method in ("dense", "set"):
        write_run(tmp_path / "runs", method, 1.0 if method == "dense" else 0.3, 0, 0.8, 1.0, shapes=shapes)
    report = build_report([tmp_path / "runs"], tmp_path / "out", title="pooled")
    text = report.read_text()
    assert text.startswith("# pooled\n") and "](degree_distribution.png)" in text
    assert "Skipped: no topology update reported a score_var" in text  # SET has no regrowth scores
    assert not (tmp_path / "out" / "ch_score_variance.png").exists()
    assert (tmp_path / "out" / "degree_distribution.png").read_bytes()[:8] == PNG_MAGIC
