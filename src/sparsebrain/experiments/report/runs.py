"""Finished and unfinished runs read from their directories (``summary.json``, ``metrics.jsonl``, gzip-archived
or not), as ``docs/run-directory.md`` defines them: :class:`Run`, :func:`collect_runs`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..rundir import METRICS, SUMMARY
from .metrics import DEFAULT_METRIC, _is_validation

# ----------------------------------------------------------------------------------------------------------- reading


@dataclass
class Run:
    """One run directory: its summary (``None`` while unfinished) and its metrics events, in order.

    Example:
        >>> run = Run(Path("runs/a"), {"status": "finished", "method": "set"}, [])
        >>> run.finished, run.method
        (True, 'set')
    """

    path: Path
    summary: dict[str, Any] | None
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def finished(self) -> bool:
        # A summary is written only at the very end; a status other than "finished" is treated as not finished
        # rather than trusted, so a half-written or failed run never lands in the table.
        return self.summary is not None and self.summary.get("status", "finished") == "finished"

    @property
    def method(self) -> str | None:
        return None if self.summary is None else self.summary.get("method")

    @property
    def density(self) -> float | None:
        return None if self.summary is None or self.summary.get("density") is None else float(self.summary["density"])

    @property
    def seed(self) -> int | None:
        return None if self.summary is None else self.summary.get("seed")

    @property
    def metric(self) -> str | None:
        """The summary's headline metric (``"test_acc"`` when it names none); ``None`` without a summary."""
        return None if self.summary is None else str(self.summary.get("metric") or DEFAULT_METRIC)

    @property
    def selection(self) -> str | None:
        """The metric that picked the evaluation the run's best value is reported at, or ``None``.

        A summary's ``selection.metric`` (``"val_acc"`` for classification). A summary written before summaries had a
        ``selection`` picked its best on the headline metric itself: that is a validation selection when the headline
        is a validation metric (``val_ppl``, ``valid_bleu``, ``valid_cos``: this returns it), and a selection on the
        test split when it is a test metric (``best_test_acc`` was the maximum of the test accuracy: ``None``).
        """
        if self.summary is None:
            return None
        selection = self.summary.get("selection")
        if isinstance(selection, dict) and selection.get("metric"):
            return str(selection["metric"])
        metric = self.metric
        return metric if metric is not None and _is_validation(metric) else None

    def of_kind(self, event: str) -> list[dict[str, Any]]:
        """The events of one kind (``"eval"``, ``"topology"`` or ``"resume"``), in logged order."""
        return [e for e in self.events if e.get("event") == event]


def _read_events(path: Path) -> list[dict[str, Any]]:
    """Parses ``metrics.jsonl``, dropping events that a later ``resume`` made stale.

    A run that resumes from the checkpoint at step S re-logs everything after S, so events logged before the resume
    with ``step > S`` describe training that was thrown away. A last line without its newline is a write cut short by
    a crash and is skipped; any other line that is not JSON is an error.
    """
    lines = _read_text(path).split("\n")
    events: list[dict[str, Any]] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            event = json.loads(line)
        except json.JSONDecodeError as e:
            if i == len(lines) - 1:  # no newline after it: an interrupted append
                break
            raise ValueError(f"{path}:{i + 1}: not a JSON object ({e.msg})") from None
        if not isinstance(event, dict) or "event" not in event:
            raise ValueError(f"{path}:{i + 1}: expected a JSON object with an 'event' key, got {line[:80]!r}")
        if event["event"] == "resume":
            events = [e for e in events if e.get("step", 0) <= event.get("step", 0)]
        events.append(event)
    return events


def _load_run(run_dir: Path) -> Run:
    summary = None
    path = _archived(run_dir, SUMMARY)
    if path is not None:
        try:
            summary = json.loads(_read_text(path))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e.msg})") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{path}: expected a JSON object, got {type(summary).__name__}")
    metrics = _archived(run_dir, METRICS)
    events = _read_events(metrics) if metrics is not None else []
    return Run(run_dir, summary, events)


def _archived(run_dir: Path, name: str) -> Path | None:
    """``run_dir/name``, or its gzip-compressed ``name.gz`` (archived runs under results/); None if neither exists."""
    for candidate in (name, name + ".gz"):
        if (run_dir / candidate).is_file():
            return run_dir / candidate
    return None


def _read_text(path: Path) -> str:
    if path.suffix == ".gz":
        import gzip

        return gzip.decompress(path.read_bytes()).decode("utf-8")
    return path.read_text(encoding="utf-8")


def _is_run_dir(path: Path) -> bool:
    return _archived(path, SUMMARY) is not None or _archived(path, METRICS) is not None


def collect_runs(paths: Sequence[str | Path]) -> list[Run]:
    """Finds and loads every run directory under ``paths``.

    Each path is a run directory (it holds ``summary.json`` or ``metrics.jsonl``) or a directory searched recursively
    for them. Runs come back in the order of ``paths``, sorted by path within each, without duplicates.

    Args:
        paths: run directories or directories that contain run directories.

    Returns:
        The runs, finished or not (see :attr:`Run.finished`).

    Raises:
        ValueError: a path is not a directory or holds no run; a ``summary.json`` or ``metrics.jsonl`` is malformed.

    Example:
        >>> [r.path.name for r in collect_runs(["runs/fmnist_mlp"])]  # doctest: +SKIP
        ['chtss_s0', 'chtss_s1', 'dense_s0']
    """
    if isinstance(paths, (str, Path)):  # a lone path is a common slip; a str would otherwise iterate by character
        paths = [paths]
    runs: list[Run] = []
    seen: set[Path] = set()
    for p in paths:
        root = Path(p)
        if not root.is_dir():
            raise ValueError(f"{str(p)!r} is not a directory")
        if _is_run_dir(root):
            found = [root]
        else:
            files = [f for name in (SUMMARY, METRICS) for f in (*root.rglob(name), *root.rglob(name + ".gz"))]
            found = sorted({f.parent for f in files if f.is_file()})
        if not found:
            raise ValueError(f"no run directories (with {SUMMARY} or {METRICS}) found under {str(p)!r}")
        for run_dir in found:
            key = run_dir.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(_load_run(run_dir))
    return runs
