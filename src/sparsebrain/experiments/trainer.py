"""One training run: data, model, optimizer, sparsifier, evaluation, checkpoints, resume, clean interruption.

The run directory layout is described in ``docs/run-directory.md``.
"""

from __future__ import annotations

import contextlib
import json
import math
import platform
import signal
import sys
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data import ArrayDataset
from ..dst import DynamicSparsifier, ScheduleError
from ..dst.schedules import warm_restart
from .checkpoint import load_checkpoint, save_checkpoint
from .config import ConfigError, ExperimentConfig, config_from_dict, config_to_dict, dump_config
from .io import RunError, append_line, atomic_write_json, atomic_write_text, lock_run_dir, remove_temporaries
from .progress import Progress
from .provenance import git_state, source_hash
from .report import at_final_density, regrowth_rule_of
from .rundir import CHECKPOINT, CONFIG, METRICS, SUMMARY, default_run_dir, run_leaf, run_name
from .tasks.base import Task, autocast

__all__ = ["DivergedError", "Interrupted", "RunError", "default_run_dir", "run_leaf", "run_name", "train"]


class DivergedError(RunError):
    """The training loss became NaN or infinite; the run stops instead of training on garbage."""


class Interrupted(Exception):  # noqa: N818  (a signal, not an error)
    """Raised after SIGINT / SIGTERM once a checkpoint has been written; ``exit_code`` is 130 or 143."""

    def __init__(self, signum: int, run_dir: Path) -> None:
        self.exit_code = 128 + signum
        super().__init__(f"interrupted by signal {signum}; checkpoint written, continue with --resume ({run_dir})")


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"config key 'train.device' must be auto, cpu, cuda or cuda:N, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("config key 'train.device' asks for cuda, but no CUDA device is available here")
    return device


def _versions(device: torch.device) -> dict[str, Any]:
    return {
        "sparsebrain": __version__,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda if device.type == "cuda" else None,
    }


def _degree_hist(degrees: torch.Tensor) -> list[int]:
    return torch.bincount(degrees.long().cpu()).tolist()


def degree_hists(mask: torch.Tensor) -> dict[str, list[int]]:
    """The degree histograms of an ``(out, in)`` mask that a summary keeps per layer.

    ``fan_in_hist[k]``: output neurons (rows) with k links from the layer's inputs; ``fan_out_hist[k]``: input neurons
    (columns) with k links to its outputs. (Summaries before these names held the same two lists as
    ``out_degree_hist`` and ``in_degree_hist``, named after the side of the layer.)

    Example:
        >>> degree_hists(torch.tensor([[True, True], [True, False]]))
        {'fan_in_hist': [0, 1, 1], 'fan_out_hist': [0, 1, 1]}
    """
    return {"fan_in_hist": _degree_hist(mask.sum(1)), "fan_out_hist": _degree_hist(mask.sum(0))}


@dataclass
class _State:
    step: int = 0  # optimizer steps done
    loss_sum: float = 0.0  # training loss summed since the last evaluation
    loss_count: int = 0  # steps in that sum
    wall: float = 0.0  # training seconds before this process
    aside: float = 0.0  # of all the seconds so far, those spent evaluating and checkpointing


class _SignalGuard:
    """Turns SIGINT / SIGTERM into a flag the loop checks between steps (so a checkpoint is never half-made)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _SignalGuard:
        if threading.current_thread() is threading.main_thread():  # signal handlers only work there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signum = signum

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)


def _prepare_run_dir(run_dir: Path, resume: bool) -> bool:
    """Checks the run directory (locked by the caller); returns True if there is a checkpoint to resume from.

    Removes the temporary files of writes that a killed process left (they are never read).
    """
    if (run_dir / SUMMARY).exists():
        raise RunError(f"run directory {str(run_dir)!r} already holds a finished run; choose another --run-dir")
    has_ckpt = (run_dir / CHECKPOINT).exists()
    if has_ckpt and not resume:
        raise RunError(
            f"run directory {str(run_dir)!r} holds an unfinished run; pass --resume to continue it, "
            "or choose another --run-dir"
        )
    remove_temporaries(run_dir)
    return has_ckpt


def _append(path: Path, event: dict[str, Any]) -> None:
    append_line(path, json.dumps(event))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drops events logged after the checkpoint being resumed (a hard kill can leave some).

    Lines that are not JSON events, such as the cut-short last line of a process killed in the middle of an append,
    are dropped with a warning that names them: the events they held are logged again after the checkpoint's step.
    """
    if not path.exists():
        return
    kept, bad = [], []
    for i, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except ValueError:
            event = None
        if not isinstance(event, dict) or not isinstance(event.get("step"), int | float):
            bad.append(i)
        elif event["step"] <= step:
            kept.append(line)
    if bad:
        warnings.warn(
            f"{path}: dropped {len(bad)} line(s) that are not JSON events (line {', '.join(map(str, bad))}), "
            "as a write cut short by a crash leaves",
            stacklevel=2,
        )
    atomic_write_text(path, "".join(line + "\n" for line in kept))


def lr_factor(cfg: ExperimentConfig, total: int, sparsifier: DynamicSparsifier):  # type: ignore[no-untyped-def]
    """Multiplier of ``train.lr`` after ``k`` scheduler steps (used by optimizer step ``k + 1``).

    Linear warmup over ``warmup_steps``, then linear or cosine decay to ``lr_end``; after each topology update a warm
    restart ramps the rate up again over ``restart_warmup`` steps (the Transformer/LLM papers' code does this).
    """
    t = cfg.train
    end = t.lr_end / t.lr

    def decay(k: int) -> float:
        f = min(1.0, (k + 1) / t.warmup_steps) if t.warmup_steps else 1.0
        p = min(max(k - t.warmup_steps, 0) / max(total - t.warmup_steps, 1), 1.0)
        if t.lr_schedule == "cosine":
            return f * (end + (1.0 - end) * 0.5 * (1.0 + math.cos(math.pi * p)))
        return f * (1.0 + (end - 1.0) * p)

    return warm_restart(sparsifier, t.restart_warmup, decay)


def _load_task(cfg: ExperimentConfig, device: torch.device, run_dir: Path, dataset: ArrayDataset | None) -> Task:
    from .tasks import build_task

    try:
        return build_task(cfg, device, run_dir, dataset)
    except ConfigError:
        raise
    except (FileNotFoundError, ImportError, ValueError) as e:
        # missing data or package, an unknown model size, a tokenizer that does not match, an empty corpus...
        raise RunError(str(e)) from None


# Where a run executes, not what it computes: a resumed run may change these (e.g. `compare --jobs` sets threads).
EXECUTION_ONLY = (
    "train.threads", "train.device", "out_dir", "train.optimizer_impl", "train.compile", "train.grad_accum"
)  # fmt: skip


def config_changes(saved: ExperimentConfig | Mapping[str, Any], current: ExperimentConfig) -> list[str]:
    """Dotted keys whose values differ between two configs, ignoring :data:`EXECUTION_ONLY` settings.

    ``saved`` may be the raw mapping a run saved (its ``config.yaml``, its checkpoint's ``"config"``): a key it lacks
    counts as a difference, since a run written before that key existed did not necessarily behave as its default
    does now (before ``data.val_fraction``, classification runs trained on the whole training split).

    Example:
        >>> from sparsebrain.experiments.config import load_config
        >>> a = load_config(None, {"train.threads": 1})
        >>> config_changes(a, load_config(None, {"train.threads": 4, "train.lr": 0.5}))
        ['train.lr']
    """

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "options" else {f"{prefix}{k}": v})
        return out

    absent = object()
    a = flat(dict(saved) if isinstance(saved, Mapping) else config_to_dict(saved))
    b = flat(config_to_dict(current))
    return sorted(k for k in a.keys() | b.keys() if k not in EXECUTION_ONLY and a.get(k, absent) != b.get(k, absent))


def train(
    cfg: ExperimentConfig,
    run_dir: str | Path | None = None,
    *,
    resume: bool = False,
    quiet: bool = False,
    command: str | None = None,
    dataset: ArrayDataset | None = None,
) -> dict[str, Any]:
    """Runs one experiment and returns its summary (also written to ``RUN_DIR/summary.json``).

    Args:
        cfg: a validated :class:`ExperimentConfig`.
        run_dir: where to write; default :func:`default_run_dir`.
        resume: continue from ``RUN_DIR/checkpoint.pt`` if there is one.
        quiet: no progress output.
        command: the command line to record in the summary.
        dataset: an already loaded dataset (tests); default: load ``cfg.data``.

    Raises:
        RunError: the run directory (in use by another process, damaged checkpoint, full disk...) or the data is
            unusable.
        DivergedError: the training loss or the weights became NaN or infinite; the last good checkpoint stays.
        Interrupted: SIGINT / SIGTERM arrived; a checkpoint was written first.

    Example:
        >>> from sparsebrain.experiments.config import load_config
        >>> cfg = load_config(None, {"data.name": "synthetic", "train.epochs": 1, "sparsity.method": "set"})
        >>> train(cfg, "/tmp/sb-doc-run", quiet=True)["status"]  # doctest: +SKIP
        'finished'
    """
    run_dir = Path(run_dir) if run_dir is not None else default_run_dir(cfg)
    device = _device(cfg.train.device)
    with lock_run_dir(run_dir):  # before anything in it is read: one process writes a run directory
        return _train(cfg, run_dir, device, resume, quiet, command, dataset)


def _train(
    cfg: ExperimentConfig,
    run_dir: Path,
    device: torch.device,
    resume: bool,
    quiet: bool,
    command: str | None,
    dataset: ArrayDataset | None,
) -> dict[str, Any]:
    has_ckpt = _prepare_run_dir(run_dir, resume)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    ckpt = read_run_checkpoint(run_dir / CHECKPOINT, device) if has_ckpt else None
    if ckpt is not None and (changed := config_changes(ckpt["config"], cfg)):
        raise RunError(
            f"the checkpoint in {str(run_dir)!r} was made with another config (differs in {', '.join(changed)}); "
            f"resume with the same config (its config.yaml) or choose another --run-dir"
        )
    atomic_write_text(run_dir / CONFIG, dump_config(cfg))

    torch.manual_seed(cfg.seed)
    task = _load_task(cfg, device, run_dir, dataset)
    t = cfg.train
    if t.grad_accum > 1 and not task.splits_batches:
        raise ConfigError(
            f"config key 'train.grad_accum' must be 1 for the {type(task).__name__} (its batches hold a token budget, "
            f"not a number of examples), got {t.grad_accum}"
        )
    reference = load_initial_weights(task.model, cfg.model.init_from) if cfg.model.init_from else None
    opt = _optimizer(task.model, t, device)
    sparsifier = _sparsifier(cfg, task, opt)
    if t.compile:  # after the sparse layers replaced the dense ones; in place, so the state dict keys stay
        task.model.compile()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor(cfg, task.total_steps, sparsifier))
    run = _Run(cfg, run_dir, device, task, opt, sched, sparsifier)
    if ckpt is not None:
        run.restore(ckpt)
    elif run.metrics.exists():
        run.metrics.unlink()
    run.log = Progress(task.total_steps, run.state.step, quiet, task.per_step())
    run.start = time.perf_counter()
    _loop(run)
    return run.finish(command, reference)


def _sparsifier(cfg: ExperimentConfig, task: Task, opt: torch.optim.Optimizer) -> DynamicSparsifier:
    """The config's method on the task's model, with config errors named by their keys."""
    s = cfg.sparsity
    update_interval = s.update_interval or task.steps_per_epoch
    try:
        return DynamicSparsifier(
            task.model,
            opt,
            method=s.method,
            density=s.density,
            total_steps=task.total_steps,
            seed=cfg.seed,
            update_interval=update_interval,
            **s.options,
        )
    except ScheduleError as e:
        default = " (default: one epoch)" if s.update_interval is None else ""
        raise ConfigError(
            f"config key 'sparsity': {e}. Here update_interval is sparsity.update_interval = {update_interval} "
            f"steps{default}, total_steps comes from train.epochs ({task.steps_per_epoch} steps per epoch) or "
            "train.steps, end_fraction from sparsity.options"
        ) from None
    except ValueError as e:  # a layer left empty by the density, an optimizer without the sparse weights, ...
        raise ConfigError(f"config key 'sparsity': {e}") from None


class _Run:
    """One run's parts and its progress: what checkpoints, evaluations and the summary read and write."""

    log: Progress  # set once the starting step is known (after a resume)

    def __init__(
        self,
        cfg: ExperimentConfig,
        run_dir: Path,
        device: torch.device,
        task: Task,
        opt: torch.optim.Optimizer,
        sched: Any,
        sparsifier: DynamicSparsifier,
    ) -> None:
        self.cfg, self.run_dir, self.device, self.task = cfg, run_dir, device, task
        self.model, self.opt, self.sched, self.sparsifier = task.model, opt, sched, sparsifier
        self.state = _State()
        self.metrics = run_dir / METRICS
        self.start = time.perf_counter()  # of this process's part of the run (set again when training starts)

    def wall(self) -> float:
        """Seconds of training so far, over every process that ran it."""
        return self.state.wall + time.perf_counter() - self.start

    @contextlib.contextmanager
    def aside(self) -> Iterator[None]:
        """Times an evaluation or a checkpoint, to be told apart from training in the throughput: the device's
        queued training work is finished first, so that it counts as training."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.state.aside += time.perf_counter() - t0

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Continues from ``ckpt``: model, optimizer, scheduler, sparsifier, counters and random state."""
        try:
            self.model.load_state_dict(ckpt["model"])  # a sparse layer refuses a mask of the wrong shape
            self.opt.load_state_dict(ckpt["optimizer"])
            self.sched.load_state_dict(ckpt["scheduler"])
            self.sparsifier.load_state_dict(ckpt["sparsifier"])
            self.state = _State(**ckpt["state"])
            torch.set_rng_state(ckpt["rng"]["cpu"].cpu())  # map_location moved it to the device
            if self.device.type == "cuda" and ckpt["rng"].get("cuda") is not None:
                torch.cuda.set_rng_state(ckpt["rng"]["cuda"].cpu(), self.device)
        except (RuntimeError, ValueError, KeyError, TypeError, AttributeError) as e:
            # same config, so the same model: the file was altered, or written by code of another layout
            raise RunError(
                f"checkpoint {str(self.run_dir / CHECKPOINT)!r} does not fit the model and optimizer of its config "
                f"({_one_line(e)}); {_START_OVER}"
            ) from None
        _truncate_metrics(self.metrics, self.state.step)
        _append(
            self.metrics,
            {"event": "resume", "step": self.state.step, "epoch": self.state.step / self.task.steps_per_epoch},
        )

    def checkpoint(self) -> None:
        with self.aside():
            self._checkpoint()

    def _checkpoint(self) -> None:
        device = self.device
        rng = {
            "cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
        }
        save_checkpoint(
            self.run_dir / CHECKPOINT,
            {
                "config": config_to_dict(self.cfg),
                "model": self.model.state_dict(),
                "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(),
                "sparsifier": self.sparsifier.state_dict(),
                "state": {**self.state.__dict__, "wall": self.wall()},
                "rng": rng,
            },
        )

    def evaluate(self) -> dict[str, Any]:
        task, state = self.task, self.state
        self.model.eval()
        with self.aside(), torch.no_grad(), autocast(self.device, self.cfg.train.amp):
            values = task.evaluate()
        self.model.train()
        st = self.sparsifier.stats()
        wall = self.wall()
        train_loss = state.loss_sum / max(state.loss_count, 1)
        event = {
            "event": "eval",
            "step": state.step,
            "epoch": state.step / task.steps_per_epoch,
            "train_loss": train_loss,
            **values,
            "density": st["density"],
            "anp": st["anp"],
            "lr": self.opt.param_groups[0]["lr"],
            "wall_time_s": wall,
            "train_time_s": wall - state.aside,  # this evaluation included in what is set aside
        }
        _append(self.metrics, event)
        state.loss_sum, state.loss_count = 0.0, 0
        # the selection metric (validation) beside the headline, so the progress line shows what picks the best
        shown = {k: f"{100 * values[k]:.2f}%" if k.endswith("acc") else f"{values[k]:.4g}"
                 for k in dict.fromkeys((task.selection_metric, task.metric))}  # fmt: skip
        self.log.eval(
            f"step {state.step}/{task.total_steps} (epoch {event['epoch']:.2f}) loss {train_loss:.4f} "
            + "".join(f"{k} {v} " for k, v in shown.items())
            + f"density {st['density']:.4f} anp {st['anp']:.3f} ({wall:.1f} s)",
            {"loss": f"{train_loss:.3f}", **shown, "density": f"{st['density']:.3f}"},
        )
        return event

    def finish(self, command: str | None, reference: dict[str, Any] | None) -> dict[str, Any]:
        """The summary (written to the run directory) of the finished run."""
        task = self.task
        final = task.final_metrics()
        wall = self.wall()
        summary = _summary(
            self.cfg, self.run_dir, task, self.sparsifier, self.metrics, self.device, wall, task.total_steps,
            command, final,
        )  # fmt: skip
        summary.update(_throughput(task, wall - self.state.aside))
        summary.update(_retrain_report(reference, task.metric, summary["metrics"][task.metric], task.higher_is_better))
        atomic_write_json(self.run_dir / SUMMARY, summary)
        return summary


def _loop(run: _Run) -> None:
    """Trains from ``run.state.step`` to the task's last step: evaluations, checkpoints, clean interruption."""
    task, state, t, log = run.task, run.state, run.cfg.train, run.log
    total_steps, device = task.total_steps, run.device
    eval_interval = t.eval_interval or task.steps_per_epoch * t.eval_every
    run.model.train()
    evals_done = state.step // eval_interval
    with _SignalGuard() as guard:
        try:
            loss_acc = torch.zeros((), device=device)
            acc_steps = 0
            while state.step < total_steps:
                loss = _accumulated_loss(task, state.step, t.grad_accum, device, t.amp)
                if t.grad_clip:
                    torch.nn.utils.clip_grad_norm_(run.model.parameters(), t.grad_clip)
                run.opt.step()
                task.after_step(loss.detach())
                try:
                    updated = run.sparsifier.step()
                except FloatingPointError as e:  # non-finite weights met a topology update before an evaluation
                    raise _diverged(str(e), run.run_dir) from None
                run.sched.step()
                run.opt.zero_grad(set_to_none=True)
                loss_acc += loss.detach().float()
                acc_steps += 1
                state.step += 1
                log.step(lambda acc=loss_acc, n=acc_steps: float(acc) / max(n, 1))  # read only when a line is printed
                if updated:
                    _append(run.metrics, _topology_event(run.sparsifier, state.step, task.steps_per_epoch))
                boundary = state.step % eval_interval == 0 or state.step == total_steps
                if boundary or guard.signum is not None:
                    state.loss_sum += float(loss_acc)  # one device sync per evaluation, not per step
                    state.loss_count += acc_steps
                    loss_acc.zero_()
                    acc_steps = 0
                if boundary:
                    _check_finite(run.evaluate()["train_loss"], state.step, run.run_dir)
                    evals_done += 1
                    if evals_done % t.checkpoint_every == 0 or state.step == total_steps:
                        run.checkpoint()
                if guard.signum is not None:
                    run.checkpoint()
                    raise Interrupted(guard.signum, run.run_dir)
        finally:
            log.close()


def _accumulated_loss(task: Task, step: int, parts: int, device: torch.device, amp: str) -> torch.Tensor:
    """Forward and backward of step ``step``'s batch, in ``parts`` slices one after the other (their gradients add
    up); the batch's loss, detached."""
    if parts == 1:
        with autocast(device, amp):
            loss = task.loss(step)
        loss.backward()
        return loss.detach()
    total = torch.zeros((), device=device)
    for part in range(parts):
        with autocast(device, amp):
            loss = task.loss(step, part, parts) / parts
        loss.backward()
        total += loss.detach().float()
    return total


def _optimizer(model: torch.nn.Module, t: Any, device: torch.device) -> torch.optim.Optimizer:
    """The config's optimizer (``train.optimizer``) run as ``train.optimizer_impl`` says: ``auto`` takes torch's
    fused kernels on CUDA (one launch for all parameters) and torch's default elsewhere."""
    impl = t.optimizer_impl
    if impl == "auto":
        impl = "fused" if device.type == "cuda" else "default"
    options = {"for": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}.get(impl, {})
    try:
        if t.optimizer == "sgd":
            return torch.optim.SGD(
                model.parameters(), lr=t.lr, momentum=t.momentum, weight_decay=t.weight_decay, **options
            )
        return torch.optim.AdamW(model.parameters(), lr=t.lr, weight_decay=t.weight_decay, **options)
    except (RuntimeError, ValueError) as e:  # e.g. fused kernels this torch lacks for this device
        raise ConfigError(f"config key 'train.optimizer_impl' = {t.optimizer_impl!r}: {_one_line(e)}") from None


def _check_finite(train_loss: float, step: int, run_dir: Path) -> None:
    """Stops a run whose training loss became non-finite (before it checkpoints): the last good checkpoint stays."""
    if not math.isfinite(train_loss):
        raise _diverged(f"the mean training loss up to step {step} is {train_loss}", run_dir)


def _diverged(why: str, run_dir: Path) -> DivergedError:
    return DivergedError(
        f"training diverged: {why} ({run_dir}); lower train.lr, set train.grad_clip, or check the model's options"
    )


_START_OVER = "delete it to start the run over, or start again with another --run-dir"
_RUN_KEYS = ("config", "model", "optimizer", "scheduler", "sparsifier", "state", "rng")


def _one_line(e: BaseException) -> str:
    """An exception's message on one line (load_state_dict lists its mismatches on tab-indented lines)."""
    return " ".join(str(e).split()) or type(e).__name__


def read_run_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Loads a run's ``checkpoint.pt`` for ``--resume``; its ``"config"`` is checked to be a valid config and kept as
    the mapping written (keys it lacks are differences, see :func:`config_changes`).

    Raises:
        RunError: naming the file and what to do, when it is unreadable, damaged, or not a run's checkpoint.
    """
    ckpt = load_checkpoint(path, map_location, advice=_START_OVER)
    missing = [k for k in _RUN_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(_RUN_KEYS)
    if missing:
        raise RunError(
            f"checkpoint {str(path)!r} is not a sparsebrain run's checkpoint (no {', '.join(map(repr, missing))}); "
            f"{_START_OVER}"
        )
    try:
        config_from_dict(ckpt["config"])
    except (ConfigError, TypeError, ValueError, AttributeError) as e:
        raise RunError(f"checkpoint {str(path)!r} holds an invalid config ({_one_line(e)}); {_START_OVER}") from None
    return ckpt


def _topology_event(sparsifier: DynamicSparsifier, step: int, steps_per_epoch: int) -> dict[str, Any]:
    st = sparsifier.stats()
    return {
        "event": "topology",
        "step": step,
        "epoch": step / steps_per_epoch,
        "density": st["density"],
        "anp": st["anp"],
        "layers": st["layers"],
    }


def load_initial_weights(model: torch.nn.Module, source: str | Path) -> dict[str, Any] | None:
    """Loads the model weights of a run directory or checkpoint into ``model`` (before it is sparsified).

    ``source`` is a run directory (its ``checkpoint.pt``), a checkpoint written by :func:`train`, or a file holding
    a plain ``state_dict``. Masks of a sparse source are dropped (its weights are already zero off them). Returns the
    source run's ``summary.json`` when there is one, so that a retrained run can report how much it recovered.

    Raises:
        RunError: naming ``model.init_from`` when the source is missing, unreadable, damaged, not a checkpoint or a
            state_dict, or does not fit the model.
    """
    path = Path(source)
    ckpt_path = path / CHECKPOINT if path.is_dir() else path
    key = "config key 'model.init_from'"
    if not ckpt_path.is_file():
        raise RunError(f"{key}: no checkpoint at {str(ckpt_path)!r}")
    advice = "point model.init_from to a finished run directory, its checkpoint.pt, or a file holding a state_dict"
    state = load_checkpoint(ckpt_path, "cpu", what=f"{key}: checkpoint", advice=advice)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise RunError(f"{key}: {str(ckpt_path)!r} holds neither a sparsebrain checkpoint nor a state_dict; {advice}")
    state = {k: v for k, v in state.items() if not k.endswith(".mask")}
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise RunError(f"{key}: {str(ckpt_path)!r} does not fit the model: {_one_line(e)}") from None
    summary = (path if path.is_dir() else path.parent) / SUMMARY
    try:
        return json.loads(summary.read_text()) if summary.is_file() else None
    except (OSError, ValueError):
        warnings.warn(f"{summary} cannot be read: the retrained run will not report what it recovered", stacklevel=2)
        return None


def _retrain_report(reference: dict[str, Any] | None, metric: str, value: float, higher: bool) -> dict[str, Any]:
    """How much of the source model's quality a retrained run keeps (sparse / dense, or dense / sparse for lower)."""
    if reference is None or metric not in reference.get("metrics", {}):
        return {}
    ref = float(reference["metrics"][metric])
    recovered = (value / ref if higher else ref / value) if ref and value else float("nan")
    return {"init_from": {"run_dir": reference.get("run_dir"), "method": reference.get("method"),
                          metric: ref, "recovered": recovered}}  # fmt: skip


def _throughput(task: Task, train_s: float) -> dict[str, Any]:
    """The summary's ``train_time_s`` (training alone: evaluations and checkpoints left out) and ``throughput``:
    optimizer steps per second and, where a step's size is fixed, its units (tokens, samples) per second."""
    rate: dict[str, float] = {}
    if train_s > 0:
        rate["steps_per_s"] = task.total_steps / train_s
        size = task.per_step()
        if size is not None:
            rate[f"{size[1]}_per_s"] = task.total_steps * size[0] / train_s
    return {"train_time_s": train_s, "throughput": rate}


def _summary(
    cfg: ExperimentConfig,
    run_dir: Path,
    task: Task,
    sparsifier: DynamicSparsifier,
    metrics: Path,
    device: torch.device,
    wall: float,
    total_steps: int,
    command: str | None,
    final: dict[str, Any],
) -> dict[str, Any]:
    evals = [e for e in map(json.loads, metrics.read_text().splitlines()) if e["event"] == "eval"]
    last = evals[-1]
    sel = task.selection_metric
    # The best evaluation is the one of best selection metric (a validation split) among those at the final density,
    # the earliest of equal values (max and min keep the first); the headline is reported at it, so the test split
    # never picks its own evaluation.
    at_final = at_final_density(evals)
    pick = (max if task.higher_is_better else min)(at_final, key=lambda e: e[sel])
    reserved = {"event", "step", "epoch", "density", "anp", "lr", "wall_time_s", "train_time_s"}
    st = sparsifier.stats()
    commit, dirty = git_state()
    layers = {}
    for name, layer in sparsifier.layers.items():
        layers[name] = {
            **{k: st["layers"][name][k] for k in ("density", "links", "anp_in", "anp_out")},
            **degree_hists(layer.topology()),
        }
    return {
        "status": "finished",
        "name": cfg.name,
        "method": cfg.sparsity.label or cfg.sparsity.method,
        "preset": cfg.sparsity.method,
        "options": cfg.sparsity.options,
        "regrowth": regrowth_rule_of(sparsifier.config),  # the rule the report groups score statistics by
        "seed": cfg.seed,
        "density": cfg.sparsity.density if sparsifier.config.sparse else 1.0,
        "dataset": cfg.data.name,
        "model": cfg.model.name if cfg.model.size is None else f"{cfg.model.name}:{cfg.model.size}",
        "epochs": total_steps // task.steps_per_epoch
        if total_steps % task.steps_per_epoch == 0
        else total_steps / task.steps_per_epoch,
        "steps": total_steps,
        "metric": task.metric,
        "selection": {"metric": sel, "step": pick["step"], "epoch": pick["epoch"], "evaluations": len(at_final)},
        "metrics": {
            **{k: v for k, v in last.items() if k not in reserved},
            f"best_{sel}": pick[sel],
            f"{task.metric}_at_best_val": pick[task.metric],
            **final,
        },
        "data": task.describe(),
        "final_density": st["density"],
        "anp": st["anp"],
        "layers": layers,
        "wall_time_s": wall,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or "cpu"),
        "versions": _versions(device),
        "git_commit": commit,
        "git_dirty": dirty,
        "source_sha256": source_hash(),
        "command": command or " ".join(sys.argv),
        "run_dir": str(run_dir),
    }
