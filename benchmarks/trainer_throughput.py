"""Training throughput of ``sparsebrain train`` itself on a LLaMA language model: the share of the GPU's bf16 peak
it uses, dense and with a sparse method, and many small runs at once (``compare --jobs N``) against one after another.

Each case is one ``sparsebrain train`` run (a subprocess, as a user starts it) on the offline Shakespeare + BBC
corpus: ``--steps`` steps of ``--batch`` x ``--seq`` tokens, evaluated after ``--warm`` steps and at the end. The
throughput is measured between those two evaluations, from their ``train_time_s`` (training alone: evaluations and
checkpoints set aside), so compilation and the first steps do not count. FLOPs per token are the PaLM paper's count,
printed in the JSON: ``6 N + 12 L T d`` (``N`` the weights of every linear layer, the output head included and the
embeddings not, ``L`` layers, ``T`` tokens of context, ``d`` the width: attention's two products, forward and
backward); a sparse run is counted at its dense model's FLOPs, so its utilisation compares with dense at equal
work. Cases (``--cases``): llama-130m and a 1B-shaped model (8 layers, dim 2048, 16 heads, intermediate 5504),
dense and chtss at density 0.3 (a topology update every ``--update-interval`` = 100 steps, so one falls between the
evaluations). Then
``--jobs`` llama-20m runs through ``compare --jobs N`` against the same runs with ``--jobs 1``.

    python benchmarks/trainer_throughput.py --device cuda --tokenizer PATH   # needs the corpus packages
    python benchmarks/trainer_throughput.py --tiny --device cpu --tokenizer PATH   # smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _report import write_report

from sparsebrain.models.llama import LlamaLM, llama_config

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "lm_shakespeare_bbc.yaml"
PEAK_BF16 = {"NVIDIA H200": 989.5e12, "NVIDIA H100 80GB HBM3": 989.5e12}  # dense bf16 tensor-core FLOP/s
ONE_B = {"dim": 2048, "n_layers": 8, "n_heads": 16, "intermediate": 5504}
CASES = {
    "llama-130m dense": ("llama-130m", {}, "dense"),
    "llama-130m chtss 0.3": ("llama-130m", {}, "chtss"),
    "1B-shaped dense": ("llama-130m", ONE_B, "dense"),
    "1B-shaped chtss 0.3": ("llama-130m", ONE_B, "chtss"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tokenizer", required=True, help="the corpus's tokenizer file (trained there if missing)")
    p.add_argument("--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--steps", type=int, default=220)
    p.add_argument("--warm", type=int, default=60, help="steps before the first evaluation (not measured)")
    p.add_argument("--compile", action="store_true", help="train.compile true")
    p.add_argument("--update-interval", type=int, default=100, help="of the sparse cases (the jobs: half of it)")
    p.add_argument("--jobs", type=int, default=4, help="runs at once in the compare measurement (0: skip it)")
    p.add_argument("--job-steps", type=int, default=200)
    p.add_argument("--tiny", action="store_true", help="llama-tiny, a few steps: a smoke run")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/trainer_throughput.json"))
    args = p.parse_args(argv)
    if args.tiny:
        args.batch, args.seq, args.steps, args.warm, args.jobs, args.job_steps = 2, 32, 12, 4, 2, 4
        args.update_interval = 4
    return args


def flops_per_token(size: str, options: dict[str, Any], seq: int, vocab: int) -> tuple[float, dict[str, Any]]:
    """``6 N + 12 L T d`` for the dense model of ``size`` with ``options``, and its terms."""
    config = llama_config(size, vocab_size=vocab, max_seq_len=seq, **options)
    with torch.device("meta"):
        model = LlamaLM(config)
    n = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    attention = 12 * config.n_layers * seq * config.dim
    return 6 * n + attention, {"N_linear": n, "layers": config.n_layers, "dim": config.dim, "context": seq}


def _train(args: argparse.Namespace, run_dir: Path, size: str, options: dict[str, Any], method: str,
           steps: int, eval_interval: int) -> list[str]:  # fmt: skip
    cmd = [
        sys.executable, "-m", "sparsebrain", "train", "--config", str(CONFIG), "--model.size", size,
        "--train.steps", str(steps), "--train.eval_interval", str(eval_interval), "--train.warmup_steps", "10",
        "--train.batch_size", str(args.batch), "--data.seq_len", str(args.seq), "--data.tokenizer", args.tokenizer,
        "--sparsity.method", method, "--train.device", args.device, "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    if options:
        cmd += ["--model.options", json.dumps(options)]
    if method != "dense":
        cmd += ["--sparsity.density", "0.3", "--sparsity.update_interval", str(args.update_interval)]
    if args.compile:
        cmd += ["--train.compile", "true"]
    return cmd


def case_row(name: str, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size, options, method = CASES[name]
    if args.tiny:
        size, options = "llama-tiny", {}
    run_dir = work / name.replace(" ", "_")
    cmd = _train(args, run_dir, size, options, method, args.steps, args.warm)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
    row: dict[str, Any] = {"case": name, "command": " ".join(cmd[1:]), "wall_s": time.perf_counter() - t0}
    if proc.returncode != 0:
        row["error"] = (proc.stderr or proc.stdout)[-2000:]
        return row
    summary = json.loads((run_dir / "summary.json").read_text())
    evals = [e for e in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if e["event"] == "eval"]
    first, last = evals[0], evals[-1]
    tokens = (last["step"] - first["step"]) * args.batch * args.seq
    seconds = last["train_time_s"] - first["train_time_s"]
    flops, terms = flops_per_token(size, options, args.seq, summary["data"]["vocab_size"])
    row.update({
        "method": method, "model": {"size": size, **options, **terms}, "steps_measured": last["step"] - first["step"],
        "tokens_per_s": tokens / seconds, "flops_per_token": flops, "achieved_flops": flops * tokens / seconds,
        "whole_run_tokens_per_s": summary["throughput"].get("tokens_per_s"), "val_ppl": summary["metrics"]["val_ppl"],
    })  # fmt: skip
    peak = PEAK_BF16.get(summary["device"])
    if peak:
        row["mfu"] = row["achieved_flops"] / peak
    print(f"{name}: {row.get('tokens_per_s', 0):.0f} tokens/s, MFU {row.get('mfu', float('nan')):.3f}", flush=True)
    return row


def jobs_row(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``compare`` of ``--jobs`` llama-20m runs (seeds 0..N-1), all at once against one at a time."""
    size = "llama-tiny" if args.tiny else "llama-20m"
    out: dict[str, Any] = {"runs": args.jobs, "model": size, "steps": args.job_steps}
    for jobs in (args.jobs, 1):
        cmd = [
            sys.executable, "-m", "sparsebrain", "compare", "--config", str(CONFIG), "--model.size", size,
            "--seeds", ",".join(map(str, range(args.jobs))), "--methods", "chtss", "--densities", "0.3",
            "--train.steps", str(args.job_steps), "--train.eval_interval", str(args.job_steps),
            "--train.warmup_steps", "10", "--train.batch_size", str(args.batch), "--data.seq_len", str(args.seq),
            "--data.tokenizer", args.tokenizer, "--train.device", args.device,
            "--sparsity.update_interval", str(max(1, args.update_interval // 2)),
            "--jobs", str(jobs), "--out", str(work / f"jobs{jobs}"),
        ]  # fmt: skip
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=os.environ.copy())
        out[f"jobs_{jobs}_s"] = time.perf_counter() - t0
        if proc.returncode != 0:
            out[f"jobs_{jobs}_error"] = (proc.stderr or proc.stdout)[-2000:]
    if f"jobs_{args.jobs}_error" not in out and "jobs_1_error" not in out:
        out["speedup"] = out["jobs_1_s"] / out[f"jobs_{args.jobs}_s"]
        print(f"compare: {args.jobs} runs at once {out['speedup']:.2f}x faster than one at a time", flush=True)
    return out


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [case_row(name, args, work) for name in args.cases.split(",") if name]
        jobs = jobs_row(args, work) if args.jobs > 1 else None
    by = {r["case"]: r for r in rows}
    targets = [
        {"case": n, "mfu_at_least": 0.40, "measured": by[n].get("mfu"), "reached": (by[n].get("mfu") or 0) >= 0.40}
        for n in ("llama-130m dense", "1B-shaped dense") if n in by
    ]  # fmt: skip
    for dense, sparse in (("llama-130m dense", "llama-130m chtss 0.3"), ("1B-shaped dense", "1B-shaped chtss 0.3")):
        if dense in by and sparse in by and "tokens_per_s" in by[dense] and "tokens_per_s" in by[sparse]:
            ratio = by[sparse]["tokens_per_s"] / by[dense]["tokens_per_s"]
            targets.append({"case": sparse, "throughput_of_dense_at_least": 0.97, "measured": ratio,
                            "reached": ratio >= 0.97})  # fmt: skip
    write_report(
        "trainer_throughput",
        torch.device(args.device),
        args.out,
        settings={**{k: v for k, v in vars(args).items() if k != "out"}, "seconds": time.perf_counter() - start},
        definitions={
            "flops_per_token": "6 N + 12 L T d: N the weights of every linear layer (head included, embeddings not), "
            "L layers, T context tokens, d the width; a sparse run counted at its dense model's FLOPs",
            "tokens_per_s": "tokens trained between the first and the last evaluation over the difference of their "
            "train_time_s (evaluations and checkpoints set aside; compilation falls before the first)",
            "mfu": "achieved_flops / the device's dense bf16 peak (H200: 989.5 TFLOP/s)",
            "speedup": "compare --jobs 1 wall time / compare --jobs N wall time, the same N runs",
        },
        targets=targets,
        cases=rows,
        jobs=jobs,
    )


if __name__ == "__main__":
    main()
