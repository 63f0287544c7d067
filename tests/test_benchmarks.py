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


def test_sparse_linear_tiny_run_times_compressed_against_dense_in_the_same_run(tmp_path: Path) -> None:
    report = _run("sparse_linear.py", ["--tiny"], tmp_path / "sl.json")
    assert report["benchmark"] == "sparse_linear" and "--tiny" in report["command"]
    settings = report["settings"]
    assert settings["dtype"] == "fp32" and settings["masked"] is True and settings["repeats"] == 2
    shapes, densities, tokens = settings["shapes"], settings["densities"], settings["tokens"]
    assert shapes == [[256, 512]] and densities == [0.1, 0.01] and tokens == [64]

    results = report["results"]
    configs = [(r["shape"], r["tokens"], r["density"]) for r in results]
    assert configs == [(s, t, d) for s in shapes for t in tokens for d in densities]  # every configuration
    for r in results:
        n_out, n_in = r["shape"]
        assert r["links"] == round(r["density"] * n_out * n_in) and r["index_dtype"] == "int32"
        for kind in ("compressed", "masked"):
            row = r[kind]
            for fig in ("fwd", "fwd_bwd"):
                assert row[f"{fig}_ms"] > 0 and len(row[f"{fig}_ms_all"]) == 2 and min(row[f"{fig}_ms_all"]) > 0
            assert row["peak_added_bytes_fwd_bwd"] is None  # no CUDA: no memory figure
        assert r["dense"]["fwd_ms"] > 0 and r["dense"]["fwd_bwd_ms"] > 0  # dense, measured in this run
        for fig in ("fwd", "fwd_bwd"):
            assert abs(r["speedup"][fig] - r["dense"][f"{fig}_ms"] / r["compressed"][f"{fig}_ms"]) < 1e-9
            assert r["masked_over_compressed"][fig] > 0
        state = r["state_bytes"]
        assert state["dense"]["weight"] == 4 * n_out * n_in * 4 and state["compressed"]["weight"] == 4 * r["links"] * 4
        assert state["compressed"]["indices"] == 2 * r["links"] * 4 and state["masked"]["mask"] == n_out * n_in
        ratio = r["state_ratio_vs_density_x_dense"]
        assert abs(ratio["without_indices"] - 1) < 1e-3 and abs(ratio["with_indices"] - 1.5) < 1e-3
        assert ratio["met"] is True and ratio["target_without_indices"] == 1.3
    dense = report["dense"]
    assert [(d["shape"], d["tokens"]) for d in dense] == [(s, t) for s in shapes for t in tokens]
    assert all(d["before"]["fwd_bwd_ms"] > 0 and d["after"]["fwd_bwd_ms"] > 0 for d in dense)

    (check,) = report["checks"]  # once per shape, on its first configuration
    assert check["shape"] == [256, 512] and check["density"] == 0.1 and check["passed"] is True
    assert set(check["max_abs_error"]) == {"y", "dx", "dw", "db"}
    for key, err in check["max_abs_error"].items():
        assert 0 <= err <= 1e-4 * max(1.0, check["max_magnitude"][key])  # fp32: rounding only

    (be,) = report["break_even"]
    assert be["shape"] == [256, 512] and be["tokens"] == 64 and "status" in be and "vs_masked" in be
    if be["largest_faster_density"] is None:
        assert be["break_even_density"] is None and be["status"].startswith("none in range")
    else:
        assert be["largest_faster_density"] in densities

    targets = report["targets"]
    assert [(t["shape"], t["tokens"], t["dtype"], t["density"], t["speedup_fwd_bwd"]) for t in targets] == [
        ([8192, 8192], 16384, "bf16", 0.01, 2.0),
        ([8192, 8192], 16384, "bf16", 0.001, 8.0),
    ]
    assert all(t["measured"] is None and t["reached"] is None for t in targets)  # not run here


def test_sparse_linear_break_even_is_refined_between_the_bracketing_densities() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from sparse_linear import break_even
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    crossed = break_even([0.1, 0.01, 0.001], [0.5, 2.0, 8.0])
    assert crossed["largest_faster_density"] == 0.01
    assert abs(crossed["break_even_density"] - 10**-1.5) < 1e-12  # halfway in log density, log speedup -log 2 .. log 2
    assert break_even([0.1, 0.01], [0.5, 0.9])["status"] == "none in range (dense faster)"
    above = break_even([0.1, 0.01], [1.5, 3.0])
    assert above["largest_faster_density"] == 0.1 and above["break_even_density"] is None
    assert above["status"].startswith("none in range")


def test_wide_mlp_tiny_run_times_masked_compressed_and_dense_steps(tmp_path: Path) -> None:
    report = _run("wide_mlp.py", ["--tiny"], tmp_path / "mlp.json")
    assert report["benchmark"] == "wide_mlp" and "--tiny" in report["command"]
    settings = report["settings"]
    assert settings["sizes"] == [784, 128, 128, 128, 10] and settings["density"] == 0.01 and settings["steps"] == 10
    results = report["results"]
    assert set(results) == {"masked", "compressed", "dense"}  # all three in the same run
    for row in results.values():
        assert row["step_ms_median"] > 0 and len(row["step_ms_all"]) == 10 and min(row["step_ms_all"]) > 0
        assert row["final_loss"] > 0
    # the three hidden layers sparse, the classifier dense
    assert results["masked"]["sparse_layers"] == {"0": "SparseLinear", "2": "SparseLinear", "4": "SparseLinear"}
    assert set(results["compressed"]["sparse_layers"].values()) == {"CompressedSparseLinear"}
    assert results["dense"]["sparse_layers"] == {}
    assert results["compressed"]["parameters"] < results["masked"]["parameters"] == results["dense"]["parameters"]
    check = report["check"]
    assert check["passed"] is True and check["max_relative_difference"] <= 1e-4
    ratio = report["ratios"]["masked_over_compressed"]
    assert abs(ratio - results["masked"]["step_ms_median"] / results["compressed"]["step_ms_median"]) < 1e-9
    target = report["targets"]["masked_over_compressed"]
    assert target["target"] == 5.0 and target["measured"] == ratio
    assert target["reached"] is None  # the tiny model is not the target's configuration


def test_huge_layer_tiny_run_trains_with_updates_and_dense_beside(tmp_path: Path) -> None:
    report = _run("huge_layer.py", ["--tiny", "--methods", "set,rigl,dense"], tmp_path / "h.json")
    assert report["benchmark"] == "huge_layer" and report["config"]["side"] == 1024
    methods = report["methods"]
    assert set(methods) == {"set", "rigl", "dense"}
    for name in ("set", "rigl"):
        row = methods[name]
        assert row["links"] == round(0.01 * 1024 * 1024) and row["step_ms_median"] > 0
        assert [u["step"] for u in row["updates"]] == [5, 10, 15]  # every 5 steps up to 3/4 of 20
        assert row["updates"][0]["regrown"] > 0
    assert methods["dense"]["updates"] == [] and methods["dense"]["links"] == 1024 * 1024
    assert report["dense_would_need_bytes"]["weight_grad_adamw_fp32"] == 16 * 1024 * 1024


def test_very_wide_mlp_tiny_run_reports_accuracy(tmp_path: Path) -> None:
    import pytest

    from sparsebrain.data.images import FASHION_MNIST_DIR

    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip("Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
    report = _run("very_wide_mlp.py", ["--tiny", "--steps", "120"], tmp_path / "w.json")
    assert report["benchmark"] == "very_wide_mlp" and report["config"]["hidden"] == 2000
    assert report["config"]["steps"] == 120 and [u["step"] for u in report["updates"]] == [50]  # until step 90
    assert abs(sum(report["links"].values()) - 60_000) <= 3  # the budget, up to rounding per layer
    assert 0.1 < report["test_accuracy"] <= 1.0


def test_semi_structured_tiny_run_reports_layers_and_model_against_dense(tmp_path: Path) -> None:
    report = _run("semi_structured.py", ["--tiny"], tmp_path / "ss.json")
    assert report["benchmark"] == "semi_structured" and "--tiny" in report["command"]
    assert [(r["in"], r["out"]) for r in report["layers"]] == [(64, 128), (128, 64)]
    for row in report["layers"]:
        assert row["dense"]["eager_ms"] > 0
        if not report["cusparselt"]:  # the CPU: nothing to compare with, and it says so
            assert row["exported"] is None
    assert report["model"]["dense"]["eager_ms"] > 0 and report["model"]["config"]["n_layers"] == 2
    assert all(t["at_least"] >= 1.0 for t in report["targets"])


def test_semi_structured_training_tiny_run_times_dense_masked_and_2_4_layers_and_steps(tmp_path: Path) -> None:
    report = _run("semi_structured_training.py", ["--tiny"], tmp_path / "sst.json")
    assert report["benchmark"] == "semi_structured_training"
    assert [(r["in"], r["out"]) for r in report["layers"]] == [(64, 128), (128, 64)]
    for row in report["layers"]:
        assert all(row[k]["ms"] > 0 for k in ("dense", "masked", "semi_structured"))
        if not report["cusparselt"]:  # the CPU: the masked fallback, and it says why
            assert row["semi_structured"]["path"] == "dense (needs a CUDA device)"
    model = report["model"]
    assert model["config"]["n_layers"] == 2
    assert all(model[k]["step_ms"] > 0 for k in ("dense", "masked", "semi_structured"))
    assert model["semi_structured"]["sparse_layers"] == 14  # q/k/v/o/gate/up/down of both blocks
    assert report["targets"][-1]["at_least"] == 1.1


def test_trainer_throughput_counts_flops_as_6n_plus_attention() -> None:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from trainer_throughput import ONE_B, flops_per_token
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    # by hand: per layer q, k, v, o (d x d) and gate, up, down (d x intermediate), then the head (vocab x d)
    for size, options, d, layers, inter in (("llama-tiny", {}, 64, 2, 172), ("llama-130m", ONE_B, 2048, 8, 5504)):
        flops, terms = flops_per_token(size, options, 256, 1000)
        n = layers * (4 * d * d + 3 * d * inter) + 1000 * d
        assert terms == {"N_linear": n, "layers": layers, "dim": d, "context": 256}
        assert flops == 6 * n + 12 * layers * 256 * d
