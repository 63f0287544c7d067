"""The ``sparsebrain`` command: train, retrain, compare, report, list.

sparsebrain train --config configs/fmnist_mlp.yaml --sparsity.method chts --sparsity.density 0.01 --seed 1
sparsebrain compare --config configs/fmnist_mlp.yaml --methods dense,set,rigl,chts,chtss --seeds 0,1,2
sparsebrain retrain --from runs/fmnist_vit/vit-dense_d1_s0 --to 2:4 --method chts24 --train.epochs 5
sparsebrain report runs/fmnist_mlp
sparsebrain list
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _fail(msg: str, code: int = 2) -> int:
    print(f"sparsebrain: error: {msg}", file=sys.stderr)
    return code


# ------------------------------------------------------------------------------------------------------------------
# train


def _cmd_train(args: argparse.Namespace, extra: list[str]) -> int:
    from .experiments.config import ConfigError, dump_config, load_config
    from .experiments.rundir import default_run_dir

    try:
        cfg = load_config(args.config, extra)
    except ConfigError as e:
        return _fail(str(e))
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    return _run_and_print(cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg), args)


@contextlib.contextmanager
def _warnings_as_notes() -> Iterator[None]:
    """Shows warnings as ``sparsebrain: warning: ...`` lines, without the source line Python adds."""
    import warnings

    def show(message: Warning | str, *args: object, **kwargs: object) -> None:
        print(f"sparsebrain: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield


def _run_and_print(cfg: Any, run_dir: Path, args: argparse.Namespace) -> int:
    from .experiments.config import ConfigError
    from .experiments.trainer import Interrupted, RunError, train

    command = " ".join(shlex.quote(a) for a in ["sparsebrain", *sys.argv[1:]])
    try:
        with _warnings_as_notes():
            summary = train(cfg, run_dir, resume=args.resume, quiet=args.quiet, command=command)
    except (ConfigError, RunError) as e:
        return _fail(str(e))
    except Interrupted as e:
        print(f"sparsebrain: {e}", file=sys.stderr)
        return e.exit_code
    m, key = summary["metrics"], summary["metric"]

    def shown(v: float) -> str:
        return f"{100 * v:.2f}%" if key.endswith("acc") else f"{v:.4g}"

    sel = summary["selection"]
    at = f"{shown(m[key + '_at_best_val'])} at the best {sel['metric']}, epoch {sel['epoch']:g}"
    best = f"best {shown(m['best_' + key])}" if sel["metric"] == key else at
    print(
        f"finished {run_dir}: {key} {shown(m[key])} ({best}), "
        f"density {summary['final_density']:.4f}, ANP {summary['anp']:.3f}, {summary['wall_time_s']:.1f} s"
    )
    ref = summary.get("init_from")
    if ref:
        print(f"  from {ref['run_dir']}: {key} {shown(ref[key])}; recovered {100 * ref['recovered']:.2f}% of it")
    return 0


# ------------------------------------------------------------------------------------------------------------------
# retrain (eDSrT: dense -> N:M)


def retrain_overrides(method: str, pattern: str, layout: str, source: str) -> dict[str, Any]:
    """Config overrides that turn a dense run's config into an N:M retraining of its weights.

    The weights of ``source`` are projected onto the best-magnitude ``pattern`` per block (``init: nm_magnitude``)
    and retrained with ``method``; a dynamic method's soft-removal temperature anneals 1 -> 3, the papers' value
    for retraining.

    Example:
        >>> retrain_overrides("chts24", "2:4", "transposable", "runs/vit/vit-dense_d1_s0")["sparsity.density"]
        0.5
    """
    from .dst.methods import resolve_method
    from .topology.nm import parse_nm

    n, m = parse_nm(pattern)
    options: dict[str, Any] = {"pattern": pattern, "pattern_layout": layout, "init": "nm_magnitude"}
    cfg = resolve_method(method, **options)  # raises with the valid names for an unknown method
    if cfg.dynamic:
        options["temperature"] = [1.0, 3.0]
    return {
        "model.init_from": source,
        "sparsity.method": method,
        "sparsity.density": n / m,
        "sparsity.options": options,
    }


def _cmd_retrain(args: argparse.Namespace, extra: list[str]) -> int:
    from .experiments.config import (
        ConfigError,
        apply_overrides,
        config_from_dict,
        dump_config,
        parse_overrides,
        read_config_file,
    )
    from .experiments.rundir import CONFIG, default_run_dir

    source = Path(args.source)
    if not source.exists():
        return _fail(f"--from {args.source!r} does not exist: give the directory of a finished dense run (or its "
                     "checkpoint file with --config)")  # fmt: skip
    config = args.config or (source / CONFIG if source.is_dir() else None)
    if config is None:
        return _fail(f"--from {args.source!r} is a checkpoint file: pass --config with the config it was trained with")
    try:
        base = read_config_file(config)
        ours = retrain_overrides(args.method, args.to, args.layout, str(source))
        ours["name"] = f"{base.get('name', 'default')}_retrain"
        user = parse_overrides(extra)
        if isinstance(user.get("sparsity.options"), dict):  # add to the retraining options, do not drop them
            user["sparsity.options"] = {**ours["sparsity.options"], **user["sparsity.options"]}
        data = apply_overrides(apply_overrides(base, ours), user)
        cfg = config_from_dict(data).validate()
    except (ConfigError, ValueError) as e:
        return _fail(str(e))
    if args.print_config:
        print(dump_config(cfg), end="")
        return 0
    return _run_and_print(cfg, Path(args.run_dir) if args.run_dir else default_run_dir(cfg), args)


# ------------------------------------------------------------------------------------------------------------------
# compare


def _split(text: str, cast: type, what: str) -> list[Any]:
    try:
        items = [cast(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--{what} must be a comma-separated list, got {text!r}") from None
    if not items:
        raise ValueError(f"--{what} is empty")
    return items


def parse_method(spec: str) -> tuple[str, dict[str, Any]]:
    """``"chts[regrowth=ch3_l3p,zeta=0.2]"`` -> ``("chts", {"regrowth": "ch3_l3p", "zeta": 0.2})``."""
    import yaml

    from .experiments.config import yaml_problem

    spec = spec.strip()
    if "[" not in spec:
        return spec, {}
    if not spec.endswith("]"):
        raise ValueError(f"method variant {spec!r} must look like preset[key=value,key=value]")
    name, _, body = spec[:-1].partition("[")
    options: dict[str, Any] = {}
    for item in body.split(","):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ValueError(f"method variant {spec!r}: {item!r} is not key=value")
        try:
            options[key.strip()] = yaml.safe_load(value.strip())
        except yaml.YAMLError as e:
            raise ValueError(f"method variant {spec!r}: the value of {key.strip()!r}, {value.strip()!r}, is not "
                             f"valid YAML ({yaml_problem(e)})") from None  # fmt: skip
    return name.strip(), options


def _split_methods(text: str) -> list[str]:
    """Splits on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == "," and depth == 0:
            out.append(cur)
            cur = ""
        else:
            cur += ch
    out.append(cur)
    items = [m.strip() for m in out if m.strip()]
    if not items:
        raise ValueError("--methods is empty")
    return items


def _auto_jobs(n: int, device: str) -> int:
    import torch

    gpu = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    cores = os.cpu_count() or 1
    # A GPU holds many small MLP runs at once; the CPU launches kernels, so one job per core at most.
    # On a CPU-only machine one job uses all cores better than several fighting for them.
    return max(1, min(n, cores)) if gpu else 1


def _cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    from ._validation import check_density, check_seed
    from .dst.methods import METHODS
    from .experiments.config import ConfigError, config_to_dict, load_config
    from .experiments.io import RunError, atomic_write_text
    from .experiments.progress import duration, time_left
    from .experiments.rundir import SUMMARY, TRAIN_LOG, run_leaf

    try:
        methods = _split_methods(args.methods)
        seeds = _split(args.seeds, int, "seeds")
        base = load_config(args.config, extra)
        densities = _split(args.densities, float, "densities") if args.densities else [base.sparsity.density]
        for seed in seeds:  # before anything is written
            check_seed(seed, "each of --seeds")
        for density in densities:
            check_density(density, "each of --densities")
        for m in methods:
            name, options = parse_method(m)
            if name not in METHODS or options:  # raises with the valid names and a suggestion
                # with the grid's density: an N:M method's variant fixes it
                load_config(
                    None, {"sparsity.method": name, "sparsity.options": options, "sparsity.density": densities[0]}
                )
    except (ValueError, TypeError, ConfigError) as e:
        return _fail(str(e))
    import yaml

    out = Path(args.out) if args.out else Path(base.out_dir) / base.name
    try:
        out.mkdir(parents=True, exist_ok=True)
        grid_cfg = out / "compare-config.yaml"
        atomic_write_text(grid_cfg, yaml.safe_dump(config_to_dict(base), sort_keys=False))
    except OSError as e:
        return _fail(f"output directory {str(out)!r} is not writable: {e.strerror or e}")
    grid = [(m, d, s) for d in densities for m in methods for s in seeds]
    # dense ignores the density: run it once per seed
    grid = [(m, d, s) for (m, d, s) in grid if m != "dense" or d == densities[0]]
    jobs = args.jobs if args.jobs else _auto_jobs(len(grid), base.train.device)
    threads = max(1, (os.cpu_count() or 1) // jobs)
    # Each run's config, built exactly as its `train` process builds it (the same config file and overrides), names
    # its directory and decides whether a run already there can be reused.
    runs: dict[tuple[str, float, int], tuple[Path, list[str]]] = {}
    configs = []
    for spec, density, seed in grid:
        method, options = parse_method(spec)
        overrides = ["--sparsity.method", method, "--sparsity.density", repr(density), "--seed", str(seed)]
        if options:
            merged = {**base.sparsity.options, **options}
            overrides += ["--sparsity.options", json.dumps(merged), "--sparsity.label", json.dumps(spec)]
        if base.train.threads is None:
            overrides += ["--train.threads", str(threads)]
        try:
            cfg = load_config(grid_cfg, overrides)
        except ConfigError as e:
            return _fail(f"{spec} at density {density:g}, seed {seed}: {e}")
        run_dir = out / run_leaf(cfg)
        if same := [job for job, (d, _) in runs.items() if d == run_dir]:
            return _fail(
                f"runs {same[0][0]!r} and {spec!r} would share the run directory {str(run_dir)!r}: a "
                "sparsity.label given to compare names every method; drop it, or compare one method at a time"
            )
        runs[(spec, density, seed)] = (run_dir, overrides)
        configs.append(cfg)
    stale = [(d, why) for (d, _), cfg in zip(runs.values(), configs) if (why := _not_reusable(d, cfg))]
    if stale and not args.rerun:
        return _fail(
            "; ".join(f"run directory {str(d)!r} {why}" for d, why in stale)
            + ". Pass --rerun to delete such runs and run them again, or choose another --out"
        )
    for run_dir, why in stale:
        try:
            _clear_run_dir(run_dir)
        except (RunError, OSError) as e:
            return _fail(f"cannot replace {str(run_dir)!r}: {e}")
        print(f"  {run_dir.name}: {why}; deleted, running it again")
    print(f"compare: {len(grid)} runs ({', '.join(methods)} x seeds {seeds} x densities {densities}), {jobs} at once")

    def run_one(job: tuple[str, float, int]) -> tuple[Path, int, float]:
        run_dir, overrides = runs[job]
        if (run_dir / SUMMARY).exists():  # a finished run of the same config (checked above)
            return run_dir, 0, 0.0
        run_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "sparsebrain", "train", "--config", str(grid_cfg), "--run-dir", str(run_dir),
            "--resume", "--quiet", *overrides,
        ]  # fmt: skip
        t0 = time.perf_counter()
        with open(run_dir / TRAIN_LOG, "a") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
        return run_dir, code, time.perf_counter() - t0

    failed = []
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for k, future in enumerate(as_completed([pool.submit(run_one, job) for job in grid]), 1):
            run_dir, code, secs = future.result()
            status = "done" if code == 0 else f"FAILED (exit {code}, see {run_dir / TRAIN_LOG})"
            elapsed = time.perf_counter() - started
            left = time_left(k, len(grid), elapsed) if k < len(grid) else None
            eta = f", about {duration(left)} left" if left is not None else ""
            print(f"  [{k}/{len(grid)}] {run_dir.name:<28} {status} {secs:.1f} s | elapsed {duration(elapsed)}{eta}",
                  flush=True)  # fmt: skip
            if code:
                failed.append(run_dir)
    code = _report([str(out)], out / "report", args.published, title=f"sparsebrain compare: {base.name}")
    if failed:
        return _fail(f"{len(failed)} of {len(grid)} runs failed: {', '.join(str(f) for f in failed)}", 1)
    return code


def _not_reusable(run_dir: Path, cfg: Any) -> str | None:
    """Why the run in ``run_dir`` cannot serve as the run of ``cfg`` (None: it can, or there is none to reuse).

    A finished run counts only if its ``config.yaml`` is ``cfg`` and an unfinished one only if its checkpoint was made
    with ``cfg``, up to :data:`~sparsebrain.experiments.trainer.EXECUTION_ONLY` settings (threads, device).
    """
    from .experiments.config import ConfigError, load_config, read_config_file
    from .experiments.rundir import CHECKPOINT, CONFIG, SUMMARY
    from .experiments.trainer import RunError, config_changes, read_run_checkpoint

    if (run_dir / SUMMARY).exists():
        try:
            load_config(run_dir / CONFIG)
            saved = read_config_file(run_dir / CONFIG)  # as written: keys it lacks are differences
        except ConfigError as e:
            return f"holds a finished run whose {CONFIG} cannot be read ({e})"
        changed = config_changes(saved, cfg)
        return f"holds a finished run of another config (differs in {', '.join(changed)})" if changed else None
    if (run_dir / CHECKPOINT).exists():
        try:
            saved = read_run_checkpoint(run_dir / CHECKPOINT)["config"]
        except RunError as e:
            return f"holds an unfinished run whose checkpoint cannot be used ({e})"
        changed = config_changes(saved, cfg)
        return f"holds an unfinished run of another config (differs in {', '.join(changed)})" if changed else None
    return None


def _clear_run_dir(run_dir: Path) -> None:
    """Deletes what ``run_dir`` holds (under its lock, so never under a process writing it)."""
    import shutil

    from .experiments.io import LOCK, lock_run_dir

    with lock_run_dir(run_dir):
        for entry in run_dir.iterdir():
            if entry.name == LOCK:
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


# ------------------------------------------------------------------------------------------------------------------
# report


def _load_published(path: str | None) -> dict[str, float] | None:
    if path is None:
        return None
    import yaml

    from .experiments.config import yaml_problem

    if not Path(path).exists():
        raise ValueError(f"--published {path!r} does not exist")
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"--published {path!r} is not UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ValueError(f"--published {path!r} is not valid YAML ({yaml_problem(e)})") from None
    if not isinstance(data, dict) or not all(isinstance(v, int | float) for v in data.values()):
        raise ValueError(f"--published {path!r} must map method names to accuracies in %")
    return {str(k): float(v) for k, v in data.items()}


def _report(paths: list[str], out: Path, published: str | None, title: str = "sparsebrain report") -> int:
    from .experiments.report import build_report, collect_runs, markdown_table, summarize, table_caption

    try:
        pub = _load_published(published)
        runs = collect_runs(paths)
        report = build_report(paths, out, title=title, published=pub)
    except (ValueError, OSError, ImportError) as e:
        return _fail(str(e))
    rows = summarize(runs)
    print(markdown_table(rows, pub))
    print(table_caption(rows))  # what the numbers are, so the printed table can be read alone
    print(f"report: {report}")
    return 0


def _cmd_report(args: argparse.Namespace, extra: list[str]) -> int:
    if extra:
        return _fail(f"unexpected arguments: {' '.join(extra)}")
    out = Path(args.out) if args.out else Path(args.run_dirs[0]) / "report"
    return _report(args.run_dirs, out, args.published)


# ------------------------------------------------------------------------------------------------------------------
# list


def _cmd_list(args: argparse.Namespace, extra: list[str]) -> int:
    from .data import DATASETS
    from .data.text import CORPORA
    from .dst import DENSITY_SCHEDULES, METHODS, REGROWTHS, REMOVALS, TEMPERATURE_SCHEDULES, ZETA_SCHEDULES
    from .dst.methods import _SAMPLINGS, REGROWTH_CANDIDATES
    from .experiments.tasks.sequence import SEQUENCE_DATA
    from .models import MODELS
    from .nn import LAYERS
    from .topology import ALLOCATIONS, INITS, LINK_PREDICTORS
    from .topology.constraints import NM, Unstructured
    from .topology.nm import LAYOUTS

    presets = sorted({m.pattern for m in METHODS.values() if m.pattern}, key=lambda p: tuple(map(int, p.split(":"))))
    sections = {
        "methods": sorted(METHODS),
        "removal rules": REMOVALS.names(),
        "regrowth rules": REGROWTHS.names(),
        "regrowth sampling": list(_SAMPLINGS),
        "regrowth candidates": list(REGROWTH_CANDIDATES),
        "link predictors": LINK_PREDICTORS.names(),
        "initial topologies": [n for n in INITS.names() if Unstructured().accepts_init(INITS.get(n))],
        "N:M initial topologies": [n for n in INITS.names() if NM(2, 4).accepts_init(INITS.get(n))],
        "N:M patterns": [f"any N:M with 1 <= N < M (presets: {', '.join(presets)})"],
        "N:M layouts": list(LAYOUTS),
        "sparse layers": LAYERS.names(),
        "density allocations": ALLOCATIONS.names(),
        "density schedules": DENSITY_SCHEDULES.names(),
        "zeta schedules": ZETA_SCHEDULES.names(),
        "temperature schedules": TEMPERATURE_SCHEDULES.names(),
        "models": MODELS.names(),
        "datasets": DATASETS.names(),
        "text corpora (llama)": CORPORA.names(),
        "parallel text (seq2seq)": ["bible_en_es"],
        "sequence data (rsgn, seq_*)": sorted(SEQUENCE_DATA),
    }
    width = max(len(title) for title in sections) + 2
    for title, names in sections.items():
        print(f"{title + ':':<{width}}{', '.join(names)}")
    return 0


# ------------------------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(
        prog="sparsebrain",
        allow_abbrev=False,  # so that a dotted override like --seed is never taken for --seeds
        description="Brain-inspired dynamic sparse training: train, compare methods over seeds, report.",
        epilog="Any config key can be overridden with a dotted option, e.g. --train.epochs 10 --sparsity.density 0.01",
    )
    p.add_argument("--version", action="version", version=f"sparsebrain {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{train,retrain,compare,report,list}")
    t = sub.add_parser("train", allow_abbrev=False, help="train one run from a YAML config plus dotted overrides")
    t.add_argument("--config", help="YAML config (default: the built-in digits MLP job)")
    t.add_argument("--run-dir", help="run directory (default OUT_DIR/NAME/MODEL-METHOD_dDENSITY_sSEED)")
    t.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    t.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    t.add_argument("--quiet", action="store_true", help="no progress output")
    rt = sub.add_parser(
        "retrain",
        allow_abbrev=False,
        help="eDSrT: project a trained dense run onto N:M patterns and retrain it (chts24, or asp: NVIDIA's recipe)",
    )
    rt.add_argument("--from", dest="source", required=True, help="the dense run directory (or a checkpoint file)")
    rt.add_argument("--to", default="2:4", help="N:M pattern (default 2:4)")
    rt.add_argument("--layout", default="transposable", help="transposable (default) or rowwise")
    rt.add_argument("--method", default="chts24", help="chts24 (default), asp, srste, ... (any method)")
    rt.add_argument("--config", help="YAML config (default: the source run's config.yaml)")
    rt.add_argument("--run-dir", help="run directory (default OUT_DIR/NAME_retrain/MODEL-METHOD_dDENSITY_sSEED)")
    rt.add_argument("--resume", action="store_true", help="continue from the run directory's checkpoint")
    rt.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    rt.add_argument("--quiet", action="store_true", help="no progress output")
    c = sub.add_parser("compare", allow_abbrev=False, help="run a grid of methods x seeds (x densities) and report it")
    c.add_argument("--config", help="YAML config (default: the built-in digits MLP job)")
    c.add_argument(
        "--methods",
        default="dense,set,chtss",
        help="comma-separated presets, or variants like chts[regrowth=ch3_l3p] (default dense,set,chtss)",
    )
    c.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    c.add_argument("--densities", help="comma-separated densities (default: the config's)")
    c.add_argument("--jobs", type=int, default=0, help="runs at once (default: auto; several on a GPU)")
    c.add_argument("--out", help="output directory (default OUT_DIR/NAME)")
    c.add_argument("--published", help="YAML mapping method -> published accuracy %%, shown beside ours")
    c.add_argument("--rerun", action="store_true", help="delete and run again the runs in --out of another config")
    r = sub.add_parser("report", allow_abbrev=False, help="markdown table and plots from run directories")
    r.add_argument("run_dirs", nargs="+", help="run directories, or directories holding them")
    r.add_argument("--out", help="report directory (default FIRST_RUN_DIR/report)")
    r.add_argument("--published", help="YAML mapping method -> published accuracy %%")
    sub.add_parser("list", help="methods, rules, initialisations, schedules, models, datasets")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sparsebrain`` console script."""
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    handler = {
        "train": _cmd_train,
        "retrain": _cmd_retrain,
        "compare": _cmd_compare,
        "report": _cmd_report,
        "list": _cmd_list,
    }
    try:
        return handler[args.command](args, extra)
    except KeyboardInterrupt:
        # Ctrl-C before the training loop guards against it (loading data, building the model) or after it: no
        # checkpoint is half-written, so one line and the shell's code for SIGINT, not a traceback
        print(
            "sparsebrain: interrupted; run the same command again (add --resume where a run directory holds a "
            "checkpoint)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
