"""Reports from fake run directories written exactly as docs/run-directory.md defines them."""

from __future__ import annotations

import json
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sparsebrain.experiments.report import (
    Stat,
    build_report,
    collect_runs,
    headline_metric,
    higher_is_better,
    markdown_table,
    metric_spec,
    summarize,
    table_caption,
    time_axis,
)

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


def _lm_curve(final: float) -> list[float]:
    """Validation perplexity at the EPOCHS evaluations of a fake LM run: falls, then ends 5 % above its minimum."""
    return [3.0 * final, 1.5 * final, final / 1.05, final]


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
    lm: bool = False,
    selected: bool = True,
    regrowth: str | bool | None = False,
) -> Path:
    """One run directory: config.yaml, metrics.jsonl (eval + topology events), summary.json if finished.

    ``regrowth`` is the summary's ``"regrowth"`` key (the run's regrowth rule, as the trainer records it); False
    leaves the key out, as in summaries written before it existed, so the report derives it from ``method``.

    With ``lm`` it is a language-model run as the trainer writes one: ``acc`` is then the final validation
    perplexity, the summary names ``"metric": "val_ppl"``, and evaluations every 10 steps of a 13-step epoch fall at
    fractional epochs. Without it, a classification summary: with ``selected`` (the default) as the trainer writes it
    now, with a validation split whose best evaluation (by ``val_acc``) holds a test accuracy of ``acc + 0.005``;
    without ``selected``, one written before validation selection (and before summaries named their metric), whose
    only best is ``best_test_acc`` (``acc + 0.005``: the maximum of the test accuracy itself).
    """
    run = root / (f"{method}_s{seed}" if method == "dense" else f"{method}_d{density:g}_s{seed}")
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(f"method: {method}\ndensity: {density}\nseed: {seed}\n")
    rng = np.random.default_rng(zlib.crc32(f"{method}/{density}/{seed}".encode()))  # stable across processes
    steps_per_epoch = 13 if lm else 10
    eval_interval = 10 if lm else steps_per_epoch
    sparse = method != "dense"
    # The engine reports the statistics of whatever the rule scored: SET's are uniform draws (mean 1/2, var 1/12).
    random_scores = method in ("set", "mest")
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
                        "score_mean": 0.5 if random_scores else 0.1 * epoch,
                        "score_var": 1 / 12 if random_scores else 0.05 / epoch + 0.01 * seed,
                        "anp_in": 0.9,
                        "anp_out": 0.8,
                    }
                e = epoch - 1 + half
                # CHTss-like schedule: sparsity grows towards the target; ANP differs a little between seeds.
                d_now = density * (2 - e / EPOCHS) if method == "chtss" else density
                anp_now = 0.5 + 0.1 * e + 0.02 * seed
                step = int(e * eval_interval)
                lines.append(
                    {
                        "event": "topology",
                        "step": step,
                        "epoch": step / steps_per_epoch,
                        "density": d_now,
                        "anp": anp_now,
                        "layers": layers,
                    }
                )
        if lm:
            ppl = _lm_curve(acc)[epoch - 1]
            values = {"val_loss": math.log(ppl), "val_ppl": ppl}
        else:
            values = {"test_loss": 1.1 / epoch, "test_acc": acc - 0.02 * (EPOCHS - epoch)}
            if selected:
                values = {"val_loss": 1.0 / epoch, "val_acc": acc - 0.01 * (EPOCHS - epoch), **values}
        lines.append(
            {
                "event": "eval",
                "step": epoch * eval_interval,
                "epoch": epoch * eval_interval / steps_per_epoch,
                "train_loss": 1.0 / epoch,
                **values,
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
                "fan_in_hist": _hist(m.sum(1)),  # per output neuron (row of the (out, in) mask)
                "fan_out_hist": _hist(m.sum(0)),  # per input neuron (column)
            }
            for n, m in masks.items()
        }
        summary: dict[str, Any] = {
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
        }
        if selected and not lm:  # what the trainer writes for classification (see trainer._summary)
            summary |= {
                "metric": "test_acc",
                "selection": {"metric": "val_acc", "step": EPOCHS * steps_per_epoch, "epoch": float(EPOCHS)},
                "metrics": {"train_loss": 0.2, "val_loss": 0.25, "val_acc": acc + 0.01, "test_loss": 0.3,
                            "test_acc": acc, "best_val_acc": acc + 0.01, "test_acc_at_best_val": acc + 0.005},
                "data": {"train_size": 90, "val_size": 10, "test_size": 25, "num_classes": 5},
            }  # fmt: skip
        if lm:  # what the trainer writes for a language model (see trainer._summary)
            summary |= {
                "name": "toy_lm",
                "dataset": "toy_text",
                "model": "llama:llama-tiny",
                "epochs": EPOCHS * eval_interval / steps_per_epoch,
                "steps": EPOCHS * eval_interval,
                "metric": "val_ppl",
                "metrics": {
                    "train_loss": 1.0 / EPOCHS,
                    "val_loss": math.log(acc),
                    "val_ppl": acc,
                    "best_val_ppl": min(_lm_curve(acc)),
                },
                "data": {"corpus": "toy_text", "train_tokens": 1000, "valid_tokens": 100, "vocab_size": 64},
            }
        summary |= {
            "final_density": 1.0 if not sparse else density + 0.001 * seed,
            "anp": 1.0 if not sparse else 0.9,
            "layers": layers,
            "wall_time_s": wall,
            "device": "cpu",
            "versions": {"sparsebrain": "0.1.0", "torch": "2.13.0", "python": "3.12.3", "cuda": None},
            "git_commit": "0123456789abcdef",
            "command": f"sparsebrain train --method {method} --seed {seed}",
        }
        if regrowth is not False:
            summary["regrowth"] = regrowth
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
    best = set_.test_acc_at_best_val  # the test accuracy at the best validation evaluation
    assert best is not None and best.mean == pytest.approx(87.5) and best.std == pytest.approx(2.0)
    assert set_.selection == "val_acc" and set_.unselected == 0
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
    best = "test acc % at best val acc"
    assert lines[0] == f"| method | density | seeds | accuracy % | {best} | final density | ANP | wall time s |"
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
    # SET's regrowth scores are uniform random numbers: nothing to compare, so no plot, and the report says why.
    assert "Skipped: the sparse runs regrow at random (set)" in text
    assert not (tmp_path / "out" / "ch_score_variance.png").exists()
    assert (tmp_path / "out" / "degree_distribution.png").read_bytes()[:8] == PNG_MAGIC


# ------------------------------------------------------------------------------------------ language-model runs

# Final validation perplexity per (method, density) and seed; each run's best is final / 1.05 (see _lm_curve).
PPL = {("dense", 1.0): [60.0, 62.0, 64.0], ("chtss", 0.1): [66.0, 66.5, 67.0], ("set", 0.1): [70.0, 71.0, 72.0]}
LM_PLOTS = ["val_ppl.png", *PLOTS[1:]]


@pytest.fixture(scope="module")
def lm_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("runs") / "toy_lm"
    for (method, density), ppls in PPL.items():
        for seed, ppl in enumerate(ppls):
            write_run(root, method, density, seed, ppl, WALL[seed], lm=True)
    write_run(root, "set", 0.1, 7, 80.0, 1.0, finished=False, lm=True)
    return root


@pytest.fixture(scope="module")
def lm_report(lm_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_report([lm_root], tmp_path_factory.mktemp("lm_report"), published={"dense": 58.123, "set": 66.5})


def test_lm_rows_hold_perplexity_with_the_minimum_as_best(lm_root: Path) -> None:
    runs = collect_runs([lm_root])
    assert headline_metric(runs) == "val_ppl"
    rows = summarize(runs)
    assert [(r.method, r.density) for r in rows] == [("dense", 1.0), ("chtss", 0.1), ("set", 0.1)]
    dense = rows[0]
    assert dense.metric == "val_ppl"
    assert dense.value == Stat(pytest.approx(62.0), pytest.approx(2.0), 3)  # raw perplexity, not scaled
    assert dense.best.mean == pytest.approx(62.0 / 1.05)  # the lowest evaluation, below the final one
    assert dense.best.mean < dense.value.mean
    with pytest.raises(AttributeError, match="val_ppl"):
        dense.test_acc  # noqa: B018  (the classification name must not hand out a perplexity)


def test_lm_markdown_table_text(lm_root: Path) -> None:
    rows = summarize(collect_runs([lm_root]))
    lines = markdown_table(rows).splitlines()
    assert lines[0] == "| method | density | seeds | val ppl | best val ppl | final density | ANP | wall time s |"
    assert lines[1] == "|---|---:|---:|---:|---:|---:|---:|---:|"
    assert lines[2] == "| dense | 1 | 3 | 62.00 ± 2.00 | 59.05 ± 1.90 | 1.0000 ± 0.0000 | 1.000 ± 0.000 | 20.0 ± 10.0 |"
    assert (
        lines[3] == "| chtss | 0.1 | 3 | 66.50 ± 0.50 | 63.33 ± 0.48 | 0.1010 ± 0.0010 | 0.900 ± 0.000 | 20.0 ± 10.0 |"
    )
    assert lines[4].startswith("| set | 0.1 | 3 | 71.00 ± 1.00 | 67.62 ± 0.95 |")
    assert len(lines) == 5

    pub = markdown_table(rows, published={"dense": 58.123, "set": 66.5}).splitlines()
    assert pub[0].endswith("| wall time s | published val ppl |")
    assert pub[2].endswith("| 58.12 |") and pub[3].endswith("|  |") and pub[4].endswith("| 66.50 |")


def test_lm_report_writes_and_links_the_metric_plot(lm_report: Path) -> None:
    out = lm_report.parent
    text = lm_report.read_text()
    assert "| dense | 1 | 3 | 62.00 ± 2.00 | 59.05 ± 1.90 |" in text and "published val ppl" in text
    assert "lower is better" in text and "Accuracies" not in text
    for name in LM_PLOTS:
        assert f"]({name})" in text, name
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    assert not (out / "accuracy.png").exists() and "accuracy.png" not in text
    assert "### Validation perplexity" in text
    assert "against the optimizer step" in text  # evaluations at epochs 0.77, 1.54, ...: plotted against step
    assert "val ppl 60.00;" in text  # run list: dense seed 0
    assert "epochs 3.08; steps 40" in text
    unfinished = text.split("## Unfinished runs")[1]
    assert "set_d0.1_s7" in unfinished and "stopped after epoch 1.54 (step 20), last val ppl 120.00" in unfinished


def test_time_axis_is_step_only_when_evaluations_fall_inside_epochs(runs_root: Path, lm_root: Path) -> None:
    assert time_axis(summarize(collect_runs([runs_root]))) == "epoch"
    assert time_axis(summarize(collect_runs([lm_root]))) == "step"


def test_mixed_metrics_raise_naming_both_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "runs", "set", 0.05, 0, 0.8, 1.0)
    write_run(tmp_path / "runs", "set", 0.1, 0, 70.0, 1.0, lm=True)
    with pytest.raises(ValueError, match="different headline metrics") as err:
        summarize(collect_runs([tmp_path / "runs"]))
    message = str(err.value)
    assert "set_d0.05_s0" in message and "set_d0.1_s0" in message
    assert "'test_acc'" in message and "'val_ppl'" in message
    with pytest.raises(ValueError, match="different headline metrics"):
        build_report([tmp_path / "runs"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before anything was written


def test_missing_metric_key_means_test_acc(tmp_path: Path) -> None:
    # An older summary (no "metric") next to a newer classification summary that names it: one metric, no error.
    write_run(tmp_path, "set", 0.05, 0, 0.8, 1.0, selected=False)
    newer = write_run(tmp_path, "set", 0.05, 1, 0.9, 1.0)
    assert json.loads((newer / "summary.json").read_text())["metric"] == "test_acc"
    (row,) = summarize(collect_runs([tmp_path]))
    assert row.metric == "test_acc" and row.value.mean == pytest.approx(85.0)


def test_best_falls_back_to_the_eval_events(tmp_path: Path) -> None:
    run = write_run(tmp_path, "set", 0.1, 0, 70.0, 1.0, lm=True)
    summary = json.loads((run / "summary.json").read_text())
    del summary["metrics"]["best_val_ppl"]
    (run / "summary.json").write_text(json.dumps(summary))
    (row,) = summarize(collect_runs([tmp_path]))
    assert row.best.mean == pytest.approx(70.0 / 1.05)  # min, since lower perplexity is better
    (run / "metrics.jsonl").write_text("")
    with pytest.raises(ValueError, match="best_val_ppl"):
        summarize(collect_runs([tmp_path]))


def test_metric_direction_and_presentation() -> None:
    assert all(higher_is_better(m) for m in ("test_acc", "val_acc", "bleu", "valid_bleu", "test_bleu", "valid_cos"))
    assert not any(higher_is_better(m) for m in ("val_ppl", "test_ppl", "val_loss", "valid_loss"))
    with pytest.raises(ValueError, match="f1"):
        higher_is_better("val_f1")
    acc, ppl, bleu = metric_spec("test_acc"), metric_spec("val_ppl"), metric_spec("valid_bleu")
    assert (acc.column, acc.best_column, acc.published_column) == ("accuracy %", "best acc %", "published acc %")
    assert (acc.scale, acc.plot_file, acc.show(90.5)) == (100.0, "accuracy.png", "90.50 %")
    assert (ppl.column, ppl.best_column, ppl.published_column) == ("val ppl", "best val ppl", "published val ppl")
    assert (ppl.scale, ppl.digits, ppl.plot_file, ppl.show(64.912)) == (1.0, 2, "val_ppl.png", "64.91")
    assert (bleu.column, bleu.digits, bleu.long_name, bleu.higher_is_better) == (
        "valid bleu",
        2,
        "validation BLEU",
        True,
    )
    assert metric_spec("val_loss").digits == 4


def test_log_axis_bands_are_geometric() -> None:
    from sparsebrain.experiments.report.plots import _mean_curve

    # Two seeds at 1 and 100: a ± std band would reach below zero, which a log axis cannot show.
    _, centre, lo, hi = _mean_curve([([0.0, 1.0], [1.0, 1.0]), ([0.0, 1.0], [100.0, 100.0])], log=True)
    assert centre == pytest.approx([10.0, 10.0])  # the geometric mean
    assert lo[0] > 0 and lo[0] * hi[0] == pytest.approx(100.0)  # ×/÷ the same factor
    _, mean, lo_lin, _ = _mean_curve([([0.0, 1.0], [1.0, 1.0]), ([0.0, 1.0], [100.0, 100.0])])
    assert mean == pytest.approx([50.5, 50.5]) and lo_lin[0] < 0


def test_archived_runs_with_gzipped_metrics_read_the_same(tmp_path: Path) -> None:
    import gzip
    import shutil

    plain = write_run(tmp_path / "plain", "set", 0.1, 0, 0.9, 1.0)
    archived = tmp_path / "archived" / plain.name
    shutil.copytree(plain, archived)
    for name in ("metrics.jsonl", "summary.json"):
        (archived / f"{name}.gz").write_bytes(gzip.compress((archived / name).read_bytes()))
        (archived / name).unlink()
    a, b = collect_runs([tmp_path / "plain"])[0], collect_runs([tmp_path / "archived"])[0]
    assert a.events == b.events and a.summary == b.summary is not None
    assert markdown_table(summarize([a])) == markdown_table(summarize([b]))


# ------------------------------------------------------------------------------ regrowth scores and degree plots


def _rows(root: Path) -> list[Any]:
    return summarize(collect_runs([root]))


def _figure_lines(fig: Any) -> dict[str, list[str]]:
    """Panel title -> the labels of the curves drawn on it."""
    return {ax.get_title(): [line.get_label() for line in ax.get_lines()] for ax in fig.axes if ax.get_visible()}


def test_regrowth_rule_recorded_or_derived_from_the_preset() -> None:
    from sparsebrain.experiments.report import regrowth_rule

    assert regrowth_rule({"regrowth": "ch3_l3p", "preset": "chts"}) == "ch3_l3p"  # recorded: taken as is
    assert regrowth_rule({"regrowth": None, "preset": "set"}) is None  # recorded: this run never regrew
    # Summaries written before "regrowth" was recorded: the preset and the options the run was trained with.
    variant = {"preset": "chts", "method": "chts[regrowth=ch3_l3p]", "options": {"regrowth": "ch3_l3p"}}
    assert regrowth_rule(variant) == "ch3_l3p"
    assert regrowth_rule({"preset": "chts", "options": {"zeta": 0.1}}) == "ch2_l3n"
    assert regrowth_rule({"method": "rigl"}) == "gradient"  # the oldest summaries name only the method
    assert regrowth_rule({"preset": "set"}) == "random"
    for never in ("dense", "static", "gmp", "asp", "ste", "srste"):  # no topology update ever regrows
        assert regrowth_rule({"preset": never}) is None, never
    assert regrowth_rule({"preset": "set", "options": {"dynamic": False}}) is None
    assert regrowth_rule({"method": "my_method"}) == "unknown"


def test_score_variance_panels_never_mix_regrowth_rules(tmp_path: Path) -> None:
    from sparsebrain.experiments.report import plot_files
    from sparsebrain.experiments.report.plots import _score_variance_figure, _Style

    root = tmp_path / "runs"
    for seed in range(2):
        write_run(root, "dense", 1.0, seed, 0.9, 1.0)
        write_run(root, "chtss", 0.05, seed, 0.85, 1.0)  # old summary: CH2-L3n, derived from the preset
        write_run(root, "cht", 0.05, seed, 0.84, 1.0, regrowth="ch3_l3p")  # recorded by the trainer
        write_run(root, "rigl", 0.05, seed, 0.83, 1.0)  # gradient
        write_run(root, "set", 0.05, seed, 0.8, 1.0)  # random: left out
    rows = _rows(root)
    fig, note = _score_variance_figure(rows, _Style(rows), "epoch")
    panels = _figure_lines(fig)
    assert len(panels) == 3  # one per rule: CH2-L3n, CH3-L3p, gradient
    rules = ("ch2_l3n", "ch3_l3p", "gradient")
    by_rule = {next(r for r in rules if r in title): labels for title, labels in panels.items()}
    assert by_rule == {"ch2_l3n": ["chtss"], "ch3_l3p": ["cht"], "gradient": ["rigl"]}
    assert all("set" not in labels for labels in panels.values())
    assert "set" in note and "random" in note  # what was left out, and why
    assert "regrowth rule" in plot_files("test_acc")[-1][1]
    # The figure's suptitle carries the note, so the PNG says it too.
    assert "set" in fig.get_suptitle()


def test_score_variance_of_runs_with_only_random_regrowth_is_skipped(tmp_path: Path) -> None:
    for method in ("set", "mest"):
        write_run(tmp_path / "runs", method, 0.1, 0, 0.8, 1.0)
    text = build_report([tmp_path / "runs"], tmp_path / "out").read_text()
    assert "Skipped: the sparse runs regrow at random (mest, set)" in text
    assert not (tmp_path / "out" / "ch_score_variance.png").exists()


def _one_layer_summary(root: Path, method: str, seed: int, hists: dict[str, list[int]]) -> None:
    run = write_run(root, method, 0.5, seed, 0.8, 1.0, shapes={"fc": (3, 4)})
    summary = json.loads((run / "summary.json").read_text())
    summary["layers"] = {"fc": {"density": 0.5, "links": 6, "anp_in": 1.0, "anp_out": 1.0, **hists}}
    (run / "summary.json").write_text(json.dumps(summary))


def test_degree_plot_names_fan_in_and_fan_out_of_a_hand_built_mask(tmp_path: Path) -> None:
    import torch

    from sparsebrain.experiments.report.plots import _degree_figure, _Style
    from sparsebrain.experiments.trainer import degree_hists

    # (out, in) = (3, 4), as nn.Linear.weight: output 0 takes every input; outputs 1 and 2 take input 0 only.
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0], [1, 0, 0, 0]], dtype=torch.bool)
    fan_in = [0, 2, 0, 0, 1]  # links into each output neuron (row sums 4, 1, 1)
    fan_out = [0, 3, 0, 1]  # links out of each input neuron (column sums 3, 1, 1, 1)
    assert degree_hists(mask) == {"fan_in_hist": fan_in, "fan_out_hist": fan_out}
    _one_layer_summary(tmp_path / "runs", "set", 0, degree_hists(mask))
    # An archived summary of the old layout: in_degree_hist was mask.sum(0) (inputs), out_degree_hist mask.sum(1).
    _one_layer_summary(tmp_path / "runs", "chts", 0, {"in_degree_hist": fan_out, "out_degree_hist": fan_in})
    rows = _rows(tmp_path / "runs")
    fig, _ = _degree_figure(rows, _Style(rows))
    panels = {ax.get_title(): ax for ax in fig.axes}
    (in_title,) = [t for t in panels if "fan-in" in t]
    (out_title,) = [t for t in panels if "fan-out" in t]
    assert "output neurons" in in_title and "input neurons" in out_title
    assert "fan-in" in panels[in_title].get_xlabel() and "output neurons" in panels[in_title].get_ylabel()
    assert "fan-out" in panels[out_title].get_xlabel() and "input neurons" in panels[out_title].get_ylabel()
    for title, expected in ((in_title, fan_in), (out_title, fan_out)):
        curves = {line.get_label(): list(line.get_ydata()) for line in panels[title].get_lines()}
        assert curves == {"set": expected, "chts": expected}, title


def test_trainer_records_the_regrowth_rule_and_fan_degrees(tmp_path: Path) -> None:
    from sparsebrain.experiments.config import load_config
    from sparsebrain.experiments.trainer import train

    base = {"data.name": "synthetic", "model.hidden": [16], "train.epochs": 2, "train.threads": 1}
    cases = [("chts", {"regrowth": "ch3_l3p"}, "ch3_l3p"), ("rigl", {}, "gradient"), ("static", {}, None)]
    for method, options, rule in cases:
        cfg = load_config(None, base | {"sparsity.method": method, "sparsity.options": options})
        summary = train(cfg, tmp_path / method, quiet=True)
        assert summary["regrowth"] == rule, method
        layer = summary["layers"]["layers.0"]  # 64 inputs -> 16 hidden
        assert sum(layer["fan_out_hist"]) == 64 and sum(layer["fan_in_hist"]) == 16
        assert json.loads((tmp_path / method / "summary.json").read_text())["regrowth"] == rule


# ------------------------------------------------------------------------------------------ validation selection


def test_caption_says_what_the_table_shows(runs_root: Path, report: Path) -> None:
    caption = table_caption(summarize(collect_runs([runs_root])))
    lines = caption.splitlines()
    assert lines[0].startswith(
        "- mlp on toy (90 training, 10 validation, 25 test examples); 4 epochs (40 steps), 4 evaluations; "
        "seeds 0, 1, 2."
    )
    assert "- `accuracy %`: the test accuracy in percent at the last evaluation." in lines
    assert lines[2].startswith(
        "- `test acc % at best val acc`: the test accuracy at the evaluation of highest validation accuracy"
    )
    assert "the test split never picks the evaluation" in caption and "n/a" not in caption
    assert caption in report.read_text()


def test_summaries_without_validation_selection_show_na_not_their_test_maximum(tmp_path: Path) -> None:
    for seed in range(2):
        write_run(tmp_path / "old", "set", 0.05, seed, 0.8, 1.0, selected=False)
    (row,) = summarize(collect_runs([tmp_path / "old"]))
    assert row.best is None and row.unselected == 2 and row.selection is None
    header, _, line = markdown_table([row]).splitlines()
    assert "| accuracy % | test acc % at best validation |" in header
    assert "| 80.00 ± 0.00 | n/a |" in line and "80.50" not in line  # best_test_acc (80.5) is not shown
    caption = table_caption([row])
    assert "n/a in `test acc % at best validation`: 2 of 2 runs" in caption and "test split itself" in caption
    # One newer seed beside an older one: still n/a for the row, never a mean of two kinds of number.
    write_run(tmp_path / "mixed", "set", 0.05, 0, 0.8, 1.0)
    write_run(tmp_path / "mixed", "set", 0.05, 1, 0.8, 1.0, selected=False)
    (row,) = summarize(collect_runs([tmp_path / "mixed"]))
    assert row.best is None and row.unselected == 1 and row.selection == "val_acc"
    assert "| n/a |" in markdown_table([row]) and "1 of 2 runs" in table_caption([row])


def test_selection_falls_back_to_the_eval_events(tmp_path: Path) -> None:
    run = write_run(tmp_path, "set", 0.05, 0, 0.8, 1.0)
    summary = json.loads((run / "summary.json").read_text())
    del summary["metrics"]["test_acc_at_best_val"]
    (run / "summary.json").write_text(json.dumps(summary))
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    val = iter([0.5, 0.9, 0.7, 0.9])  # peaks at epoch 2 (ties: the first), while test_acc peaks at epoch 4
    for e in events:
        if e["event"] == "eval":
            e["val_acc"] = next(val)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (row,) = summarize(collect_runs([tmp_path]))
    assert row.best is not None and row.best.mean == pytest.approx(76.0)  # test_acc at epoch 2: 0.8 - 2 * 0.02


def test_older_summaries_are_judged_at_their_final_density(tmp_path: Path) -> None:
    # An LM summary from before selection: its best_val_ppl (final / 1.05, at the third evaluation) came from an
    # evaluation at 5x the final density here, so the report reads the events and keeps the final-density ones.
    run = write_run(tmp_path, "chtss", 0.1, 0, 70.0, 1.0, lm=True)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    densities = iter([0.5, 0.5, 0.5, 0.1])
    for e in events:
        if e["event"] == "eval":
            e["density"] = next(densities)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    (row,) = summarize(collect_runs([tmp_path]))
    assert row.best is not None and row.best.mean == pytest.approx(70.0)  # the one evaluation at density 0.1


def test_lm_caption_says_the_validation_metric_selects_itself(lm_root: Path) -> None:
    rows = summarize(collect_runs([lm_root]))
    assert rows[0].selection == "val_ppl" and rows[0].unselected == 0  # older LM summaries: selected on validation
    caption = table_caption(rows)
    assert "`best val ppl`: the lowest validation perplexity over the evaluations at the run's final density" in caption
    assert "no separate test split" in caption and "n/a" not in caption
    assert "llama:llama-tiny on toy_text (1000 training, 100 validation tokens); 3.08 epochs (40 steps)" in caption


def test_caption_says_when_a_decaying_density_reaches_its_target(tmp_path: Path) -> None:
    run = write_run(tmp_path, "chtss", 0.05, 0, 0.9, 1.0)
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    densities = iter([0.5, 0.2, 0.0502, 0.05])  # a sigmoid-like decay; exact link counts land near the target
    for e in events:
        if e["event"] == "eval":
            e["density"] = next(densities)
    (run / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    caption = table_caption(summarize(collect_runs([tmp_path])))
    assert (
        "- chtss starts denser than its target: density 0.5 at the first evaluation, 0.05 first at epoch 3 of 4 "
        "(2 of 4 evaluations at the target density, the only ones its best is picked from)."
    ) in caption.splitlines()


def test_printed_report_table_carries_its_caption(
    runs_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sparsebrain.cli import main

    assert main(["report", str(runs_root), "--out", str(tmp_path / "rep")]) == 0
    out = capsys.readouterr().out
    assert "| test acc % at best val acc |" in out
    assert "- `test acc % at best val acc`: the test accuracy at the evaluation of highest validation accuracy" in out


def test_the_report_package_imports_no_torch() -> None:
    """A report is built wherever run directories can be read: its modules (and the two helpers they import from
    the rest of the package) import neither torch nor anything that does."""
    import ast
    from pathlib import Path

    import sparsebrain.experiments.report as report

    root = Path(report.__file__).parent
    files = [*root.glob("*.py"), root.parent / "rundir.py", root.parents[1] / "_atomic.py"]
    assert len(files) >= 9
    for path in files:
        tree = ast.parse(path.read_text())
        typing_only = {  # imports under `if TYPE_CHECKING:` never run; one in `try: ... except ImportError` is optional
            id(n)
            for block in ast.walk(tree)
            if (isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING")
            or (
                isinstance(block, ast.Try) and any(getattr(h.type, "id", None) == "ImportError" for h in block.handlers)
            )
            for n in ast.walk(block)
        }
        # the report's own modules: every import; the helpers: their module-level ones (the report calls no function
        # of rundir that imports more)
        nodes = ast.walk(tree) if path.parent == root else iter(tree.body)
        for node in nodes:
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
                if node.level:  # relative: only the report's own modules, rundir and _atomic
                    assert node.module is None or node.module.split(".")[-1] in {
                        *(p.stem for p in root.glob("*.py")),
                        "rundir",
                        "_atomic",
                    }, (path.name, node.module)
            else:
                continue
            assert not any(n == "torch" or n.startswith("torch.") for n in names), (path.name, names)
