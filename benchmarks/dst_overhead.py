"""What the dynamic sparse training engine costs on LLaMA pre-training steps, against dense training in the same run.

Per model size (``--sizes``: ``1b``, 8 layers of LLaMA-1B's width: dim 2048, 16 heads, intermediate 5504; ``130m``,
the named size llama-130m) and per method x density, a fresh ``LlamaLM`` trains on random token ids (batch 16 x 256,
bf16 autocast, AdamW, fused on CUDA) with every q, k, v, o, gate, up, down projection sparse (the model's own
``sparse_filter``) and a topology update every ``--steps`` (100) steps. Dense training, with no sparsifier at all,
is measured before each method's configurations and after the last; every ratio below is against the dense runs
just before and after the configuration, in this process.

The run of a configuration is cut into windows of ``--steps`` steps, each ending with a topology update: the first
(steps 1-100, whose update is the first, cold one) is warm-up; ``--windows`` timed windows follow, each with 99
steps without an update and a last step with one. Figures, per configuration:

1. step time without an update: median over the timed windows' steps without one (CUDA events, no host sync);
2. the update step's time: median over the timed windows' last steps;
3. the headline ratio: wall time of a timed window (between two synchronisations; median over windows) divided by the
   same for dense; target <= 1.03;
4. peak CUDA memory (max_memory_allocated, reset before the configuration and before each step) of steps without
   and with an update, ratio to dense; target <= 1.02;
5. host-device synchronisations in the warm-up window's steps without an update after the first 10, counted as the
   warnings of ``torch.cuda.set_sync_debug_mode("warn")`` (a canary ``.item()`` checks that they are seen); target 0.
   Dense's count is given beside it: syncs of the training loop itself. The warm-up window's update step is counted
   too (no target: an update may synchronise).

Schedules: the sparsifier is told ``--total-steps`` (10,000: updates until step 7,500 at end_fraction 0.75, 75 in
all), so every measured update is a regular one early in the run: RigL's zeta near its start, CHTs's temperature
near 1 and CHTss's sigmoid barely started, i.e. CHTss runs near its initial density 0.5 whatever its target (its
``measured_density`` says so). On the CPU, memory and sync figures are null. The JSON states every target beside its
figure; a compact table goes to stdout.

    python benchmarks/dst_overhead.py --device cuda     # the full measurement, both sizes, all methods
    python benchmarks/dst_overhead.py --tiny --device cpu --methods set,chts24  # smoke run (seconds)
"""

from __future__ import annotations

import argparse
import gc
import re
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _report import write_report
from _timing import sync

import sparsebrain as sb

METHODS = ["set", "rigl", "mest", "chts", "chtss", "chts24"]
# N:M presets have the density of their pattern and refuse any other.
FIXED_DENSITY = {"chts24": 0.5, "chts14": 0.25}
# Model bodies: a LlamaConfig shape, or a named size of sb.models.LLAMA_SIZES.
SIZES: dict[str, dict[str, int] | str] = {
    "1b": {"dim": 2048, "n_layers": 8, "n_heads": 16, "intermediate": 5504},
    "130m": "llama-130m",
    "tiny": "llama-tiny",
}
TARGETS = {"window_ratio": 1.03, "peak_memory_ratio": 1.02, "syncs_no_update": 0}
SYNC_WARNING = "synchronizing CUDA operation"  # what set_sync_debug_mode("warn") says
WARMUP_STEPS = 10  # steps of the warm-up window before the sync count starts


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _count_syncs(fn: Callable[[], Any], device: torch.device) -> tuple[int | None, Any]:
    """``(number of host-device synchronisations during fn(), fn())``; the count is None off CUDA."""
    if device.type != "cuda":
        return None, fn()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            result = fn()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = 0
    for w in caught:
        if SYNC_WARNING in str(w.message):
            syncs += 1
        else:  # not ours to swallow
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    return syncs, result


def _median(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _against(target: float, measured: float | None) -> dict[str, Any]:
    return {"target": target, "measured": measured, "met": None if measured is None else measured <= target}


def _device_kind(device: torch.device) -> str:
    """``h200`` for "NVIDIA H200": the first word of the device name with a digit in it; else the device type."""
    if device.type != "cuda":
        return device.type
    words = [w for w in torch.cuda.get_device_name(device).split() if re.search(r"\d", w)]
    return words[0].split("-")[0].lower() if words else "cuda"


def model_config(size: str, vocab: int, seq_len: int) -> sb.models.LlamaConfig:
    shape = SIZES[size]
    if isinstance(shape, str):
        return sb.models.llama_config(shape, vocab, max_seq_len=seq_len)
    return sb.models.LlamaConfig(vocab_size=vocab, max_seq_len=seq_len, **shape)


class Run:
    """One configuration: a fresh model, its optimizer and (unless dense) its sparsifier, and a training step."""

    def __init__(self, size: str, method: str, density: float | None, args: argparse.Namespace, device: torch.device):
        torch.manual_seed(args.seed)  # the same initial weights for every configuration
        self.device, self.args = device, args
        self.model = sb.models.LlamaLM(model_config(size, args.vocab, args.seq_len), device=device)
        fused = {"fused": True} if device.type == "cuda" else {}
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=args.lr, weight_decay=0.1, **fused)
        self.sp = None
        if method != "dense":
            self.sp = sb.DynamicSparsifier(
                self.model,
                self.opt,
                method=method,
                density=density,
                total_steps=args.total_steps,
                update_interval=args.steps,
                seed=args.seed,
                storage=args.storage,
            )
        self.gen = torch.Generator(device=device).manual_seed(args.seed)

    def step(self) -> bool:
        """One training step on a fresh batch of random token ids; True if it rewired the topology."""
        a = self.args
        idx = torch.randint(0, a.vocab, (a.batch, a.seq_len + 1), device=self.device, generator=self.gen)
        with torch.autocast(self.device.type, dtype=torch.bfloat16):
            logits = self.model(idx[:, :-1])  # (B, T, vocab)
            loss = F.cross_entropy(logits.flatten(0, 1), idx[:, 1:].flatten())
        loss.backward()
        self.opt.step()
        updated = self.sp.step() if self.sp is not None else False
        self.opt.zero_grad(set_to_none=True)
        return updated

    def density(self) -> float:
        return 1.0 if self.sp is None else float(self.sp.stats()["density"])


def timed_window(run: Run, steps: int) -> dict[str, Any]:
    """``steps`` training steps synchronised only at both ends: wall time, per-step times, updates, per-step peaks."""
    device, cuda = run.device, run.device.type == "cuda"
    events = [torch.cuda.Event(enable_timing=True) for _ in range(steps + 1)] if cuda else []
    stamps, updated, peaks = [], [], []
    sync(device)
    t0 = time.perf_counter()
    if cuda:
        events[0].record()
    for i in range(steps):
        if cuda:  # host-side allocator bookkeeping: no synchronisation
            torch.cuda.reset_peak_memory_stats(device)
        updated.append(run.step())
        if cuda:
            peaks.append(torch.cuda.max_memory_allocated(device) / 2**30)
            events[i + 1].record()
        else:
            stamps.append(time.perf_counter())
    sync(device)
    wall = time.perf_counter() - t0
    if cuda:
        step_times = [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(steps)]
    else:
        step_times = [b - a for a, b in zip([t0, *stamps], stamps)]
    return {"wall": wall, "step_times": step_times, "updated": updated, "peaks": peaks}


def _check_updates(label: str, updated: list[bool], dynamic: bool) -> None:
    """A window of a rewiring method must rewire at its last step and only there; a dense one never."""
    want = [False] * (len(updated) - 1) + [dynamic]
    if updated != want:
        where = [i + 1 for i, u in enumerate(updated) if u]
        raise RuntimeError(
            f"{label}: expected a topology update at step {len(updated)} of the window only"
            f"{'' if dynamic else ' (none: dense)'}, got updates at window steps {where} (a method that never "
            "rewires is not what this benchmark measures; updates that stop early need a larger --total-steps)"
        )


def measure(size: str, method: str, density: float | None, args: argparse.Namespace, device: torch.device) -> dict:  # type: ignore[type-arg]
    """Every figure of one configuration (see the module docstring); no ratio to dense yet."""
    label = f"{size} {method} density={density}"
    cuda = device.type == "cuda"
    _free(device)
    t_setup = time.perf_counter()
    run = Run(size, method, density, args, device)
    sync(device)
    setup_seconds = time.perf_counter() - t_setup
    dynamic = run.sp is not None
    n = args.steps

    # Warm-up window: kernels, allocator, optimizer state, the first (cold) update; syncs are counted here.
    warm = min(WARMUP_STEPS, n // 2)
    syncs_no_update: int | None = 0 if cuda else None
    syncs_update: int | None = None
    warm_updates = []
    for i in range(n - 1):
        if i < warm:
            warm_updates.append(run.step())
            continue
        count, upd = _count_syncs(run.step, device)
        warm_updates.append(upd)
        if count is not None:
            syncs_no_update = (syncs_no_update or 0) + count
    syncs_update, upd = _count_syncs(run.step, device)  # not timed: recording each sync's warning takes time
    warm_updates.append(upd)
    _check_updates(f"{label}, warm-up window", warm_updates, dynamic)
    resident = torch.cuda.memory_allocated(device) / 2**30 if cuda else None
    densities = [run.density()]

    windows = []
    for w in range(args.windows):
        result = timed_window(run, n)
        _check_updates(f"{label}, timed window {w + 1}", result["updated"], dynamic)
        windows.append(result)
        densities.append(run.density())
    plain = [t for r in windows for t in r["step_times"][:-1]]
    at_update = [r["step_times"][-1] for r in windows]
    plain_peaks = [p for r in windows for p in r["peaks"][:-1]]
    update_peaks = [r["peaks"][-1] for r in windows if r["peaks"]]
    entry = {
        "size": size,
        "method": method,
        "density": 1.0 if method == "dense" else density if density is not None else run.density(),
        "measured_density": densities,  # after the warm-up window and after each timed window's update
        "setup_seconds": setup_seconds,
        "step_seconds_median": _median(plain),
        "step_seconds_p90": statistics.quantiles(plain, n=10)[-1] if len(plain) > 1 else None,
        "update_step_seconds_median": _median(at_update) if dynamic else None,
        "update_step_seconds_all": at_update if dynamic else None,
        "window_seconds_all": [r["wall"] for r in windows],
        "window_seconds_median": _median([r["wall"] for r in windows]),
        "peak_memory_gib": {
            "no_update": max(plain_peaks) if plain_peaks else None,
            "update": (max(update_peaks) if update_peaks else None) if dynamic else None,
        },
        "resident_memory_gib": resident,  # allocated after the warm-up window: weights, optimizer state, masks
        "syncs": {
            "no_update": syncs_no_update,
            "no_update_steps_checked": n - 1 - warm if cuda else None,
            "update_step": syncs_update,
        },
    }
    if not dynamic:  # the last step of a dense window is an ordinary step
        entry["step_seconds_median"] = _median([t for r in windows for t in r["step_times"]])
        entry["peak_memory_gib"]["no_update"] = max([p for r in windows for p in r["peaks"]], default=None)
        entry["syncs"]["update_step"] = None
    del run, windows
    _free(device)
    return entry


def _measure_and_print(
    size: str, method: str, density: float | None, args: argparse.Namespace, device: torch.device
) -> dict:  # type: ignore[type-arg]
    entry = measure(size, method, density, args, device)
    print(
        f"{size} {method} {entry['density']:g}: step {_fmt(entry['step_seconds_median'], '.2f', 1e3)} ms, "
        f"update step {_fmt(entry['update_step_seconds_median'], '.1f', 1e3)} ms, "
        f"window {entry['window_seconds_median']:.3f} s",
        flush=True,
    )
    return entry


def _reference(before: dict, after: dict) -> dict:  # type: ignore[type-arg]
    """The dense figures a configuration is compared with: the dense runs just before and just after it, pooled."""
    windows = before["window_seconds_all"] + after["window_seconds_all"]
    return {
        "window": statistics.median(windows),
        "drift": _ratio(after["window_seconds_median"], before["window_seconds_median"]),
        "step_seconds_median": statistics.mean([before["step_seconds_median"], after["step_seconds_median"]]),
        "peak_memory_gib": before["peak_memory_gib"],
        "syncs": before["syncs"]["no_update"],
    }


def compare(entry: dict, dense: dict, sync_ok: bool) -> None:  # type: ignore[type-arg]
    """Adds each figure's ratio to dense, with its target, to a sparse ``entry``."""
    peak, dpeak = entry["peak_memory_gib"], dense["peak_memory_gib"]
    entry["vs_dense"] = {
        "dense_window_seconds_median": dense["window"],
        "dense_drift_after_over_before": dense["drift"],
        "window_ratio": _against(TARGETS["window_ratio"], _ratio(entry["window_seconds_median"], dense["window"])),
        "step_time_ratio": _ratio(entry["step_seconds_median"], dense["step_seconds_median"]),
        "update_step_in_dense_steps": _ratio(entry["update_step_seconds_median"], dense["step_seconds_median"]),
        "peak_memory_ratio_no_update": _against(
            TARGETS["peak_memory_ratio"], _ratio(peak["no_update"], dpeak["no_update"])
        ),
        "peak_memory_ratio_update": _against(TARGETS["peak_memory_ratio"], _ratio(peak["update"], dpeak["no_update"])),
    }
    syncs = entry["syncs"]["no_update"] if sync_ok else None
    entry["syncs_no_update"] = {
        **_against(TARGETS["syncs_no_update"], syncs),
        "dense_measured": dense["syncs"] if sync_ok else None,
    }


def _fmt(x: float | None, spec: str, scale: float = 1.0) -> str:
    return "-" if x is None else format(x * scale if scale != 1.0 else x, spec)


def _mark(check: dict) -> str:  # type: ignore[type-arg]
    return "" if check["met"] is None else " ok" if check["met"] else " NO"


def table(results: list[dict]) -> str:  # type: ignore[type-arg]
    """One line per configuration: times in ms, ratios to dense (ok / NO against the target), peaks in GiB."""
    cols = ["size", "method", "dens", "meas", "step ms", "x dense", "upd ms", "window x", "peak GiB", "upd GiB"]
    cols += ["mem x", "upd mem x", "syncs", "upd syncs"]
    rows = []
    for r in results:
        v, peak = r.get("vs_dense"), r["peak_memory_gib"]
        row = [r["size"], r["method"], f"{r['density']:.2f}", f"{r['measured_density'][-1]:.3f}"]
        row += [_fmt(r["step_seconds_median"], ".1f", 1e3), _fmt(v and v["step_time_ratio"], ".3f")]
        row += [_fmt(r["update_step_seconds_median"], ".1f", 1e3)]
        if v is None:  # the dense reference
            row += ["(ref)", _fmt(peak["no_update"], ".2f"), "-", "-", "-", _fmt(r["syncs"]["no_update"], "d"), "-"]
        else:
            row += [_fmt(v["window_ratio"]["measured"], ".4f") + _mark(v["window_ratio"])]
            row += [_fmt(peak["no_update"], ".2f"), _fmt(peak["update"], ".2f")]
            for key in ("peak_memory_ratio_no_update", "peak_memory_ratio_update"):
                row += [_fmt(v[key]["measured"], ".3f") + _mark(v[key])]
            row += [_fmt(r["syncs_no_update"]["measured"], "d") + _mark(r["syncs_no_update"])]
            row += [_fmt(r["syncs"]["update_step"] if r["syncs_no_update"]["measured"] is not None else None, "d")]
        rows.append(row)
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.rjust(w) for c, w in zip(cols, widths))]
    lines.append("-" * len(lines[0]))
    lines += ["  ".join(x.rjust(w) for x, w in zip(row, widths)) for row in rows]
    return "\n".join(lines)


def _csv(text: str, kind: Callable[[str], Any]) -> list[Any]:
    return [kind(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--sizes", default="1b,130m", help=f"comma-separated, of {', '.join(s for s in SIZES if s != 'tiny')}"
    )
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method presets (dense is always run)")
    ap.add_argument("--densities", default="0.3,0.05", help="comma-separated; N:M methods use their own (chts24: 0.5)")
    ap.add_argument("--steps", type=int, default=None, help="steps per window = update interval (default 100; tiny 6)")
    ap.add_argument("--windows", type=int, default=None, help="timed windows, one update each (default 3; tiny 2)")
    ap.add_argument("--total-steps", type=int, default=10_000, help="run length the schedules are told")
    ap.add_argument("--batch", type=int, default=None, help="sequences per batch (default 16; tiny 2)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per sequence (default 256; tiny 16)")
    ap.add_argument("--vocab", type=int, default=None, help="vocabulary size (default 32000; tiny 128)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--storage", default="masked", choices=["masked", "compressed", "auto"], help="how sparse layers hold links"
    )
    ap.add_argument(
        "--tiny", action="store_true", help="a 2-layer dim-64 model, small batch, few steps (CPU smoke run)"
    )
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/dst_overhead_<device>.json)")
    args = ap.parse_args(argv)
    defaults = {"steps": (100, 6), "windows": (3, 2), "batch": (16, 2), "seq_len": (256, 16), "vocab": (32000, 128)}
    for key, (full, tiny) in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, tiny if args.tiny else full)
    args.sizes = ["tiny"] if args.tiny else _csv(args.sizes, str)
    args.methods = [m for m in _csv(args.methods, str) if m != "dense"]
    args.densities = _csv(args.densities, float)
    for s in args.sizes:
        if s not in SIZES:
            ap.error(f"--sizes: unknown size {s!r}; choose from {', '.join(x for x in SIZES if x != 'tiny')}")
    for m in args.methods:
        if m not in sb.list_methods():
            ap.error(f"--methods: unknown method {m!r}; choose from {', '.join(sb.list_methods())}")
    for d in args.densities:
        if not 0 < d <= 1:
            ap.error(f"--densities: {d} is not in (0, 1]")
    for key in ("steps", "windows", "batch", "seq_len", "vocab", "total_steps"):
        if getattr(args, key) < 1:
            ap.error(f"--{key.replace('_', '-')} must be >= 1")
    if args.steps < 2:
        ap.error("--steps must be >= 2 (a window has steps without and one step with an update)")
    run_steps = (args.windows + 1) * args.steps
    if run_steps > int(0.75 * args.total_steps):  # presets stop updating at end_fraction 0.75 of total_steps
        ap.error(f"--total-steps {args.total_steps}: updates stop at 75% of it, before the {run_steps} steps measured")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.tiny and not cuda:  # tiny ops gain nothing from threads, and on a busy machine a thread pool slows them 10x
        torch.set_num_threads(1)
    sync_ok = False
    if cuda:  # the sync count is reported only if a known synchronisation is seen
        canary, _ = _count_syncs(lambda: torch.ones(1, device=device).item(), device)
        sync_ok = bool(canary)
        if not sync_ok:
            print("warning: set_sync_debug_mode reported no sync for .item(); sync counts are left null")
    results: list[dict[str, Any]] = []
    dense_refs: dict[str, dict[str, Any]] = {}
    t_start = time.perf_counter()
    for size in args.sizes:
        blocks = [
            [(m, FIXED_DENSITY[m])] if m in FIXED_DENSITY else [(m, d) for d in args.densities] for m in args.methods
        ]
        # Dense before every method's block and after the last: each configuration is compared with the dense runs
        # on either side of it (seconds to a minute away), so a drift of the machine over the run cancels out.
        entries = [_measure_and_print(size, "dense", None, args, device)]
        dense_runs = [entries[0]]
        for block in blocks:
            done = [_measure_and_print(size, m, d, args, device) for m, d in block]
            dense_runs.append(_measure_and_print(size, "dense", None, args, device))
            for entry in done:
                compare(entry, _reference(dense_runs[-2], dense_runs[-1]), sync_ok)
            entries += [*done, dense_runs[-1]]
        medians = [r["window_seconds_median"] for r in dense_runs]
        dense_refs[size] = {
            "config": dict(vars(model_config(size, args.vocab, args.seq_len))),
            "runs": len(dense_runs),
            "window_seconds_median_per_run": medians,
            "window_spread_max_over_min": max(medians) / min(medians),
            "step_seconds_median_per_run": [r["step_seconds_median"] for r in dense_runs],
            "peak_memory_gib": dense_runs[0]["peak_memory_gib"],
        }
        results += entries
    sparse = [r for r in results if "vs_dense" in r]
    summary = {
        name: {
            "target": target,
            "met": sum(bool(get(r)["met"]) for r in sparse),
            "measured": sum(get(r)["met"] is not None for r in sparse),
        }
        for name, target, get in (
            ("window_ratio", TARGETS["window_ratio"], lambda r: r["vs_dense"]["window_ratio"]),
            (
                "peak_memory_ratio_no_update",
                TARGETS["peak_memory_ratio"],
                lambda r: r["vs_dense"]["peak_memory_ratio_no_update"],
            ),
            (
                "peak_memory_ratio_update",
                TARGETS["peak_memory_ratio"],
                lambda r: r["vs_dense"]["peak_memory_ratio_update"],
            ),
            ("syncs_no_update", TARGETS["syncs_no_update"], lambda r: r["syncs_no_update"]),
        )
    }
    settings = {
        "batch": args.batch,
        "seq_len": args.seq_len,
        "vocab": args.vocab,
        "autocast": "bfloat16",
        "optimizer": f"AdamW(lr={args.lr}, weight_decay=0.1{', fused=True' if cuda else ''})",
        "update_interval": args.steps,
        "window_steps": args.steps,
        "timed_windows": args.windows,
        "total_steps": args.total_steps,
        "steps_run_per_configuration": (args.windows + 1) * args.steps,
        "sync_warmup_steps": min(WARMUP_STEPS, args.steps // 2),
        "seed": args.seed,
        "storage": args.storage,
        "tiny": args.tiny,
        "cpu_threads": torch.get_num_threads(),
        "seconds": time.perf_counter() - t_start,
    }
    definitions = {
        "window_ratio": (
            f"wall time of {args.steps} consecutive steps ({args.steps - 1} without and the last with a topology "
            "update, its dense-gradient capture included where the regrowth needs one), synchronised at both ends "
            f"only, median over {args.windows} windows after a warm-up window, divided by the median of the same "
            "windows of dense training (no sparsifier; the dense runs just before and after the method pooled); same "
            "model, batch, autocast and optimizer"
        ),
        "step_seconds_median": "median over the timed windows' steps without an update; CUDA events, no host sync",
        "update_step_seconds_median": (
            "median over the timed windows' last steps (forward, backward, optimizer step, update)"
        ),
        "peak_memory_gib": "max_memory_allocated per step (reset before each), max over steps without / with an update",
        "peak_memory_ratio": "peak of the method's steps without (with) an update / peak of dense steps",
        "syncs": (
            "set_sync_debug_mode('warn') warnings during the warm-up window's steps without an update after the "
            "first ones (no_update) and during its update step (update_step); null where not measurable (CPU). "
            "PyTorch calls the mode a prototype that does not see every synchronising operation: a count of 0 is "
            "no proof, a count above 0 is a sync"
        ),
        "measured_density": (
            "overall density after the warm-up window and after each timed window's update; measured early in a "
            f"run of total_steps={args.total_steps} (CHTss still near its initial density)"
        ),
    }
    kind = _device_kind(device) + ("_tiny" if args.tiny else "")
    out = Path(args.out or f"benchmarks/results/dst_overhead_{kind}.json")
    write_report(
        "dst_overhead",
        device,
        out,
        settings=settings,
        targets=TARGETS,
        definitions=definitions,
        summary=summary,
        dense=dense_refs,
        results=results,
    )
    print(table(results))
    print(
        "summary: "
        + ", ".join(f"{k} met {v['met']}/{v['measured']} (target {v['target']})" for k, v in summary.items())
    )


if __name__ == "__main__":
    main()
