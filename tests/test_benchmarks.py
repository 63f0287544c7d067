"""The benchmarks run end to end on the CPU at a tiny size and write the JSON they promise."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_dst_overhead_tiny_run_writes_every_configuration_against_dense(tmp_path: Path) -> None:
    out = tmp_path / "dst_overhead.json"
    cmd = [sys.executable, "benchmarks/dst_overhead.py", "--tiny", "--device", "cpu", "--methods", "set,chts24"]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["benchmark"] == "dst_overhead" and report["device"] and report["torch"]
    assert "--tiny" in report["command"] and "git_commit" in report

    results = report["results"]
    configs = sorted((r["method"], r["density"]) for r in results)
    # every density of set, chts24 at its own 0.5 only; dense before each method's block and after the last
    assert configs == [("chts24", 0.5), ("dense", 1.0), ("dense", 1.0), ("dense", 1.0), ("set", 0.05), ("set", 0.3)]
    assert [r["method"] for r in results] == ["dense", "set", "set", "dense", "chts24", "dense"]
    dense = report["dense"]["tiny"]
    assert dense["runs"] == 3 and all(t > 0 for t in dense["window_seconds_median_per_run"])

    windows = report["settings"]["timed_windows"]
    for r in results:
        assert r["step_seconds_median"] > 0 and r["window_seconds_median"] > 0
        assert len(r["window_seconds_all"]) == windows
        # no CUDA: no memory and no sync figures, rather than made-up ones
        assert r["peak_memory_gib"] == {"no_update": None, "update": None}
        assert r["syncs"]["no_update"] is None and r["syncs"]["update_step"] is None
        if r["method"] == "dense":
            assert "vs_dense" not in r and r["update_step_seconds_median"] is None
            continue
        assert abs(r["measured_density"][-1] - r["density"]) < 1e-3
        assert len(r["update_step_seconds_all"]) == windows and r["update_step_seconds_median"] > 0
        v = r["vs_dense"]
        assert v["dense_window_seconds_median"] > 0 and v["dense_drift_after_over_before"] > 0
        assert v["window_ratio"]["target"] == 1.03 and v["window_ratio"]["measured"] > 0
        assert v["window_ratio"]["met"] == (v["window_ratio"]["measured"] <= 1.03)
        assert v["step_time_ratio"] > 0 and v["update_step_in_dense_steps"] > 0
        for key in ("peak_memory_ratio_no_update", "peak_memory_ratio_update"):
            assert v[key] == {"target": 1.02, "measured": None, "met": None}
        assert r["syncs_no_update"] == {"target": 0, "measured": None, "met": None, "dense_measured": None}
    assert report["summary"]["window_ratio"]["measured"] == 3
    assert "window x" in proc.stdout and "chts24" in proc.stdout  # the table


def test_dst_overhead_refuses_a_run_too_long_for_its_schedules(tmp_path: Path) -> None:
    cmd = [sys.executable, "benchmarks/dst_overhead.py", "--tiny", "--device", "cpu", "--total-steps", "20"]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "x.json")], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "--total-steps" in proc.stderr
    assert not (tmp_path / "x.json").exists()


def _run(script: str, args: list[str], out: Path) -> dict:  # type: ignore[type-arg]
    cmd = [sys.executable, f"benchmarks/{script}", "--device", "cpu", *args, "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["device"] and report["torch"] and report["source_sha256"] and "git_commit" in report
    return report


def test_link_prediction_benchmark_compares_with_the_authors_formula(tmp_path: Path) -> None:
    report = _run("link_prediction.py", ["--shapes", "64x300,90x50", "--repeats", "1"], tmp_path / "lp.json")
    assert [r["shape"] for r in report["results"]] == [[64, 300], [90, 50]]
    for r in report["results"]:
        rows = r["implementations"]
        assert set(rows) == {"authors_fp32", "sparsebrain_fp32"}  # the bf16 variants only where they are real (CUDA)
        assert rows["authors_fp32"]["speedup_vs_authors_fp32"] == 1.0
        for row in rows.values():  # both agree with float64 to float32 rounding
            assert 0 <= row["max_relative_error_vs_float64"] < 1e-5 and row["seconds_median"] > 0
        target = rows["sparsebrain_fp32"]["targets"]["speedup_vs_authors_fp32"]
        assert target["target"] == 5.0 and target["met"] == (target["measured"] >= 5.0)
        assert r["counts_exact_bf16_tensor_cores"] is None and rows["sparsebrain_fp32"]["peak_added_bytes"] is None


def test_sampling_benchmark_times_removal_and_regrowth_against_the_target(tmp_path: Path) -> None:
    report = _run("sampling.py", ["--shape", "128", "256", "--repeats", "2"], tmp_path / "s.json")
    settings = report["settings"]
    assert settings["removed_links"] == round(0.1 * settings["active_links"]) > 0
    for name, row in report["results"].items():
        assert len(row["ms_all"]) == 2 and row["ms_median"] > 0
        if not name.startswith("full_array"):
            assert row["target_ms"] == 5.0 and row["met"] == (row["ms_median"] <= 5.0)
