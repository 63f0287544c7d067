"""Reports on finished runs: a markdown results table (mean ± std over seeds) and PNG plots.

Reads run directories exactly as ``docs/run-directory.md`` defines them (``summary.json`` for finished runs,
``metrics.jsonl`` for the curves; archived runs may hold them gzip-compressed, as ``summary.json.gz`` and
``metrics.jsonl.gz``) and never imports torch, so a report can be built anywhere the run directories can be
read. The plots need matplotlib (``pip install matplotlib``), imported only when :func:`build_report` runs.

The table and the first plot follow the runs' headline metric, the summaries' top-level ``"metric"`` (``"test_acc"``
when absent, as in summaries written before other tasks existed): test accuracy for classification, validation
perplexity (``"val_ppl"``) for language models, BLEU for translation. :func:`higher_is_better` says which way each
metric points; :func:`metric_spec` how it is shown. The table's "best" column is the headline metric at the
evaluation that the run's selection metric (``"selection"`` in the summary: validation accuracy for classification)
found best, never a maximum taken over the test split itself (see :attr:`Run.selection`); :func:`table_caption` says
in words what the table shows.

Example:
    >>> runs = collect_runs(["runs/fmnist_mlp"])  # doctest: +SKIP
    >>> print(markdown_table(summarize(runs), published={"chtss": 90.8}))  # doctest: +SKIP
    >>> build_report(["runs/fmnist_mlp"], "reports/fmnist_mlp")  # doctest: +SKIP
    PosixPath('reports/fmnist_mlp/report.md')
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._atomic import atomic_write
from .rundir import METRICS, SUMMARY

__all__ = [
    "MetricSpec",
    "Row",
    "Run",
    "Stat",
    "best_column",
    "build_report",
    "collect_runs",
    "headline_metric",
    "higher_is_better",
    "markdown_table",
    "metric_spec",
    "plot_files",
    "regrowth_rule",
    "regrowth_rule_of",
    "summarize",
    "table_caption",
    "time_axis",
]

REPORT = "report.md"
DPI = 120
MAX_LAYER_PANELS = 8  # beyond this many sparse layers, degree histograms are summed into one row of panels
MAX_LEGEND_INSIDE = 6  # a longer legend goes beside the panels, once per figure, instead of over the curves
MAX_MARKED_POINTS = 12  # curves of at most this many points get markers: the evaluations are that sparse
DENSE_COLOR = "0.35"  # dark grey: dense is the reference line, not one more method competing for a colour
DEFAULT_METRIC = "test_acc"  # summaries written before the trainer had other tasks name no metric: classification


# ----------------------------------------------------------------------------------------------------------- metrics


def _is_validation(metric: str) -> bool:
    """Whether a metric is measured on a validation split, from its name (``val_acc``, ``val_ppl``, ``valid_bleu``)."""
    return metric.startswith(("val_", "valid_"))


def higher_is_better(metric: str) -> bool:
    """Which way a headline metric points, from its name alone.

    The rule: higher is better for accuracies (names ending in ``"acc"``: ``test_acc``, ``val_acc``), BLEU (names
    ending in ``"bleu"``: ``bleu``, ``valid_bleu``, ``test_bleu``) and cosine similarities (ending in ``"cos"``:
    ``valid_cos``); lower is better for perplexities (ending in
    ``"ppl"``) and losses (ending in ``"loss"``). Any other name is refused rather than guessed, since a guess would
    rank the methods upside down and label "best" the worst value; extend this rule when a task adds a metric.

    Raises:
        ValueError: the name matches none of the endings above.

    Example:
        >>> higher_is_better("test_acc"), higher_is_better("val_ppl"), higher_is_better("valid_bleu")
        (True, False, True)
    """
    if metric.endswith(("acc", "bleu", "cos")):
        return True
    if metric.endswith(("ppl", "loss")):
        return False
    raise ValueError(
        f"unknown headline metric {metric!r}: the report knows names ending in acc, bleu or cos (higher is better) "
        "and ppl or loss (lower is better)"
    )


_WORDS = {"test": "test", "val": "validation", "valid": "validation", "train": "training", "acc": "accuracy"}
_WORDS |= {"ppl": "perplexity", "bleu": "BLEU", "cos": "cosine to the dense model"}


@dataclass(frozen=True)
class MetricSpec:
    """How the report judges and shows one headline metric.

    Attributes:
        name: the metric's key in ``summary.json`` and in the eval events, e.g. ``"val_ppl"``.
        higher_is_better: see :func:`higher_is_better`.
        scale: display value = stored value * ``scale`` (accuracy: a fraction stored, a percentage shown).
        digits: decimals shown in the table.
        column: the table header of the final value; ``best_column`` of the best one; ``published_column`` of the
            published value (given in display units).
        long_name: words for plot titles and axis labels, e.g. ``"validation perplexity"``.
        unit: appended to values in text and to the axis label (``"%"`` for accuracy, else empty).
        plot_file: the file name of the metric-vs-time plot.
    """

    name: str
    higher_is_better: bool
    scale: float
    digits: int
    column: str
    best_column: str
    published_column: str
    long_name: str
    unit: str
    plot_file: str

    def show(self, value: float) -> str:
        """A display-unit value as text with its unit, e.g. ``"90.52 %"`` or ``"64.91"``."""
        return f"{value:.{self.digits}f}" + (f" {self.unit}" if self.unit else "")


def metric_spec(metric: str) -> MetricSpec:
    """The presentation of ``metric``: accuracy in percent as before, anything else raw.

    Accuracy keeps the classification report's columns (``accuracy %``, ``best acc %``, ``published acc %``) and plot
    file (``accuracy.png``); other metrics get columns named after them (``val ppl``, ``best val ppl``,
    ``published val ppl``), 2 decimals for perplexity and BLEU, 4 for a loss, and the plot ``<metric>.png``.

    Raises:
        ValueError: see :func:`higher_is_better`.

    Example:
        >>> spec = metric_spec("val_ppl")
        >>> spec.column, spec.best_column, spec.long_name, spec.plot_file
        ('val ppl', 'best val ppl', 'validation perplexity', 'val_ppl.png')
    """
    higher = higher_is_better(metric)
    short = metric.replace("_", " ")
    long_name = " ".join(_WORDS.get(w, w) for w in metric.split("_"))
    if metric.endswith("acc"):
        if metric == DEFAULT_METRIC:  # the classification report's headers, unchanged
            column, best, published = "accuracy %", "best acc %", "published acc %"
        else:
            column, best, published = f"{short} %", f"best {short} %", f"published {short} %"
        return MetricSpec(metric, higher, 100.0, 2, column, best, published, long_name, "%", "accuracy.png")
    digits = 4 if metric.endswith(("loss", "cos")) else 2
    return MetricSpec(
        metric, higher, 1.0, digits, short, f"best {short}", f"published {short}", long_name, "", f"{metric}.png"
    )


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


# ------------------------------------------------------------------------------------------------------- aggregation


@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation (``ddof=1``) over ``n`` values; ``std`` is 0.0 when ``n == 1``.

    Example:
        >>> Stat.of([90.0, 91.0, 92.0])
        Stat(mean=91.0, std=1.0, n=3)
    """

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Stat:
        vals = [float(v) for v in values]
        if not vals:
            raise ValueError("Stat.of needs at least one value")
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))

    @classmethod
    def of_optional(cls, values: Iterable[float | None]) -> Stat | None:
        """Like :meth:`of` over the non-null values; ``None`` when all are null."""
        vals = [v for v in values if v is not None]
        return cls.of(vals) if vals else None


@dataclass(frozen=True)
class Row:
    """One line of the results table: the finished runs of one (method, density), aggregated over seeds.

    ``value`` (the headline ``metric`` at the last evaluation) and ``best`` (the headline metric at the evaluation
    that ``selection``, the runs' :attr:`Run.selection`, found best) are in the metric's display units
    (:class:`MetricSpec`: accuracy in percent, other metrics raw). ``best`` is ``None`` when some run has no
    validation selection (``unselected`` counts them: summaries whose only best is a maximum over the test split);
    ``anp`` and ``wall_time_s`` are ``None`` when no run reported them.
    """

    method: str
    density: float
    seeds: tuple[int, ...]
    runs: tuple[Run, ...]
    metric: str
    value: Stat
    best: Stat | None
    final_density: Stat
    anp: Stat | None
    wall_time_s: Stat | None
    selection: str | None = None
    unselected: int = 0

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def spec(self) -> MetricSpec:
        return metric_spec(self.metric)

    # Classification names of ``value`` and ``best``.
    @property
    def test_acc(self) -> Stat:
        self._classification()
        return self.value

    @property
    def test_acc_at_best_val(self) -> Stat | None:
        self._classification()
        return self.best

    def _classification(self) -> None:
        if self.metric != DEFAULT_METRIC:
            raise AttributeError(f"this row's metric is {self.metric!r}, not test accuracy: use .value and .best")


def _require(run: Run, *keys: str) -> Any:
    value: Any = run.summary
    for k in keys:
        if not isinstance(value, dict) or value.get(k) is None:
            raise ValueError(f"{run.path / SUMMARY} lacks {'.'.join(keys)!r}, which docs/run-directory.md requires")
        value = value[k]
    return value


def headline_metric(runs: Iterable[Run]) -> str:
    """The headline metric the finished runs share (``"test_acc"`` when there is none to ask).

    Raises:
        ValueError: two finished runs name different metrics (one table cannot rank perplexity against accuracy);
            the metric is unknown to :func:`higher_is_better`.

    Example:
        >>> headline_metric(collect_runs(["runs/lm"]))  # doctest: +SKIP
        'val_ppl'
    """
    first: Run | None = None
    for run in runs:
        if not run.finished:
            continue
        if first is None:
            first = run
        elif run.metric != first.metric:
            raise ValueError(
                f"finished runs with different headline metrics: {first.path} has {first.metric!r}, {run.path} has "
                f"{run.metric!r}; report them separately"
            )
    metric = DEFAULT_METRIC if first is None or first.metric is None else first.metric
    higher_is_better(metric)  # an unknown metric fails here, before any table or plot is made of it
    return metric


DENSITY_TOLERANCE = 0.01  # a density within 1% of another counts as the same one (exact link counts round)


def at_final_density(evals: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The evaluations at the run's final density (within :data:`DENSITY_TOLERANCE` of the last one's): the only
    ones a best is picked from, since a schedule that starts denser (CHTss, GMP, GraNet) must not report a model with
    many more links than the one it ends with. Events without a density are kept.

    Example:
        >>> [e["step"] for e in at_final_density([{"step": 1, "density": 0.5}, {"step": 2, "density": 0.05}])]
        [2]
    """
    final = evals[-1].get("density") if evals else None
    if final is None:
        return list(evals)
    return [e for e in evals if e.get("density") is None or e["density"] <= final * (1 + DENSITY_TOLERANCE)]


def _pick_from_events(run: Run, selection: str, spec: MetricSpec) -> float | None:
    """The headline at the first evaluation of best ``selection`` among those at the run's final density, as the
    trainer picks it (the selection metric points the way the headline does); ``None`` without such events."""
    evals = [e for e in run.of_kind("eval") if e.get(selection) is not None and e.get(spec.name) is not None]
    if not evals:
        return None
    evals = at_final_density(evals)
    return float((max if spec.higher_is_better else min)(evals, key=lambda e: e[selection])[spec.name])


def _best(run: Run, spec: MetricSpec) -> float | None:
    """The headline value at the run's selected evaluation (see :attr:`Run.selection`); ``None`` without a validation
    selection.

    A summary with ``selection`` holds it as ``metrics.<metric>_at_best_val`` (the eval events give it where that key
    is missing). An older summary whose headline is a validation metric picked its ``metrics.best_<metric>`` over all
    evaluations, the denser ones of a decaying density schedule too; its eval events are read instead, with the
    trainer's rule (:func:`_pick_from_events`), and the summary's value only where there are none.
    """
    selection = run.selection
    if selection is None:
        return None
    summary = run.summary or {}
    metrics = summary.get("metrics") or {}
    if "selection" in summary:
        key = f"{spec.name}_at_best_val"
        value = metrics.get(key)
        if value is None:
            value = _pick_from_events(run, selection, spec)
    else:
        key = f"best_{spec.name}"
        value = _pick_from_events(run, selection, spec)
        if value is None:
            value = metrics.get(key)
    if value is None:
        _require(run, "metrics", key)  # raises, naming the file and the key
    return float(value)


def summarize(runs: Iterable[Run]) -> list[Row]:
    """Aggregates the finished runs over seeds, one :class:`Row` per (method, density).

    Row order: ``dense`` first, then the other methods in the order they first appear in ``runs`` (which
    :func:`collect_runs` returns in the order of its paths, sorted by path within each, so
    ``report runs/set runs/chtss`` lists SET before CHTss), and within a method from the densest to the sparsest.
    Unfinished runs are ignored. Every row holds the headline metric of :func:`headline_metric`: its value at the last
    evaluation (``metrics.<metric>``) and its value at the evaluation the runs' validation metric found best
    (:attr:`Row.best`, from ``metrics.<metric>_at_best_val``; see :func:`_best` for older summaries). A row with a
    run whose summary has no validation selection (an older classification summary: its ``best_test_acc`` is the
    maximum of the test accuracy itself) has ``best`` None, not that number.

    Raises:
        ValueError: no finished run; finished runs name different headline metrics or selection metrics; two
            finished runs of one (method, density) share a seed (a rerun kept next to the original would otherwise
            count twice); a summary lacks a required field.

    Example:
        >>> rows = summarize(collect_runs(["runs/fmnist_mlp"]))  # doctest: +SKIP
        >>> rows[0].method, rows[0].metric, rows[0].value.mean, rows[0].n_seeds  # doctest: +SKIP
        ('dense', 'test_acc', 91.2, 3)
    """
    runs = list(runs)
    spec = metric_spec(headline_metric(runs))
    groups: dict[tuple[str, float], list[Run]] = {}
    first_seen: dict[str, int] = {}
    for run in runs:
        if not run.finished:
            continue
        method = str(_require(run, "method"))
        density = float(_require(run, "density"))
        first_seen.setdefault(method, len(first_seen))
        groups.setdefault((method, density), []).append(run)
    if not groups:
        raise ValueError("no finished runs to summarize (a run is finished once it has written summary.json)")

    def order(key: tuple[str, float]) -> tuple[bool, int, float]:
        method, density = key
        return (method != "dense", first_seen[method], -density)

    selections = {run.selection for members in groups.values() for run in members} - {None}
    if len(selections) > 1:  # one "best" column cannot hold values selected by different rules
        raise ValueError(f"finished runs selected their best evaluation by different metrics {sorted(selections)}")
    selection = selections.pop() if selections else None

    rows = []
    for method, density in sorted(groups, key=order):
        members = sorted(groups[(method, density)], key=lambda r: (int(_require(r, "seed")), str(r.path)))
        seeds = [int(_require(r, "seed")) for r in members]
        for a, b in zip(members, members[1:]):
            if a.seed == b.seed:
                raise ValueError(
                    f"two finished {method} runs at density {density:g} with seed {a.seed}: {a.path} and {b.path}; "
                    "pass only one of them"
                )
        best = [_best(r, spec) for r in members]  # None: a run without validation selection
        rows.append(
            Row(
                method=method,
                density=density,
                seeds=tuple(seeds),
                runs=tuple(members),
                metric=spec.name,
                value=Stat.of(spec.scale * _require(r, "metrics", spec.name) for r in members),
                best=None if None in best else Stat.of(spec.scale * v for v in best if v is not None),
                final_density=Stat.of(_require(r, "final_density") for r in members),
                anp=Stat.of_optional(r.summary.get("anp") for r in members if r.summary is not None),
                wall_time_s=Stat.of_optional(r.summary.get("wall_time_s") for r in members if r.summary is not None),
                selection=selection,
                unselected=best.count(None),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------------------- tables


def _cell(stat: Stat | None, digits: int) -> str:
    return "n/a" if stat is None else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def best_column(metric: str, selection: str | None) -> str:
    """The header of the table's "best" column (:attr:`Row.best`) for a headline ``metric`` and a ``selection``.

    ``best val ppl`` when the metric selects itself (a validation metric); ``test acc % at best val acc`` when another
    metric picks the evaluation; ``test acc % at best validation`` when no run has a validation selection (the cells
    then read n/a).

    Example:
        >>> best_column("test_acc", "val_acc"), best_column("val_ppl", "val_ppl")
        ('test acc % at best val acc', 'best val ppl')
    """
    spec = metric_spec(metric)
    if selection == metric:
        return spec.best_column
    unit = " %" if spec.unit == "%" else ""
    return f"{metric.replace('_', ' ')}{unit} at best {selection.replace('_', ' ') if selection else 'validation'}"


def markdown_table(rows: Sequence[Row], published: Mapping[str, float] | None = None) -> str:
    """A GitHub markdown table, one line per row, values as ``mean ± std`` over seeds.

    The two metric columns follow the rows' headline metric (:func:`metric_spec`) and selection metric
    (:func:`best_column`): ``accuracy %`` (final test accuracy) and ``test acc % at best val acc`` for
    classification, ``val ppl`` and ``best val ppl`` for validation perplexity, and so on; a "best" cell of a row
    without validation selection reads n/a. :func:`table_caption` says the same in words.

    Args:
        rows: from :func:`summarize`, in the order to print.
        published: optional method -> published value of the headline metric **in its display units** (accuracy in
            percent, perplexity and BLEU raw); adds a "published <metric>" column (``published acc %``,
            ``published val ppl``), blank for methods without an entry.

    Example:
        >>> print(markdown_table(rows))  # doctest: +SKIP
        | method | density | seeds | accuracy % | test acc % at best val acc | final density | ANP | wall time s |
        |---|---:|---:|---:|---:|---:|---:|---:|
        | chtss | 0.01 | 3 | 90.52 ± 0.11 | 90.49 ± 0.09 | 0.0100 ± 0.0000 | 0.312 ± 0.004 | 812.4 ± 3.1 |
    """
    spec = metric_spec(rows[0].metric if rows else DEFAULT_METRIC)
    best = best_column(spec.name, rows[0].selection if rows else None)
    header = ["method", "density", "seeds", spec.column, best, "final density", "ANP", "wall time s"]
    if published is not None:
        header.append(spec.published_column)
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        if r.metric != spec.name:
            raise ValueError(f"rows with different metrics ({spec.name!r}, {r.metric!r}) cannot share one table")
        cells = [
            _escape(r.method),
            f"{r.density:g}",
            str(r.n_seeds),
            _cell(r.value, spec.digits),
            _cell(r.best, spec.digits),
            _cell(r.final_density, 4),
            _cell(r.anp, 3),
            _cell(r.wall_time_s, 1),
        ]
        if published is not None:
            cells.append(f"{published[r.method]:.{spec.digits}f}" if published.get(r.method) is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------ curves


def _mean_curve(
    series: Sequence[tuple[Sequence[float], Sequence[float]]], log: bool = False
) -> tuple[Any, Any, Any, Any]:
    """The centre line and the band over seeds of curves that may be sampled at different x: ``(x, centre, lo, hi)``.

    Each curve is linearly interpolated onto the union of all x, inside its own x range only (no extrapolation), so
    seeds logged at the same epochs average point by point and seeds logged at different steps still line up. The
    centre is the mean and the band mean ± sample std; with ``log`` (for a log axis) both are taken of the logarithms
    of the positive values (geometric mean ×/÷ geometric std), since a mean - std at or below zero has no place on a
    log axis and would be drawn as a block down to its bottom edge.
    """
    import numpy as np

    curves = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in series if len(x)]
    if log:
        curves = [(x[y > 0], np.log(y[y > 0])) for x, y in curves]
        curves = [(x, y) for x, y in curves if x.size]
    if not curves:
        return np.empty(0), np.empty(0), np.empty(0), np.empty(0)
    grid = np.unique(np.concatenate([x for x, _ in curves]))
    stack = np.full((len(curves), grid.size), np.nan)
    for i, (x, y) in enumerate(curves):
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        inside = (grid >= x[0]) & (grid <= x[-1])
        stack[i, inside] = np.interp(grid[inside], x, y)
    count = np.sum(~np.isnan(stack), axis=0)
    mean = np.nanmean(stack, axis=0)
    dev = np.where(np.isnan(stack), 0.0, stack - mean) ** 2
    std = np.sqrt(dev.sum(axis=0) / np.maximum(count - 1, 1))  # ddof=1; 0 where a single seed covers the point
    if log:
        return grid, np.exp(mean), np.exp(mean - std), np.exp(mean + std)
    return grid, mean, mean - std, mean + std


def _links_weighted(layers: Mapping[str, Mapping[str, Any]], key: str) -> float | None:
    """Mean of ``layers[*][key]`` weighted by each layer's links, over the layers where it is not null."""
    num = den = 0.0
    for stats in layers.values():
        value, links = stats.get(key), stats.get("links")
        if value is None or links is None:
            continue
        num += float(value) * float(links)
        den += float(links)
    return num / den if den > 0 else None


def time_axis(rows: Sequence[Row]) -> str:
    """The x axis of every curve in a report: ``"epoch"``, or ``"step"`` when some evaluation fell inside an epoch.

    The rule: if any eval event of any run in ``rows`` has a fractional ``epoch`` (step-based runs, e.g. a language
    model evaluated every 250 steps, where an "epoch" of 325 steps is only a token count: epochs 0.77, 1.54, ...),
    every curve is plotted against ``step``, the unit such runs are configured in; otherwise (evaluations at whole
    epochs, as in classification) against ``epoch``.

    Example:
        >>> time_axis(summarize(collect_runs(["runs/lm"])))  # doctest: +SKIP
        'step'
    """
    for r in rows:
        for run in r.runs:
            for e in run.of_kind("eval"):
                epoch = e.get("epoch")
                if epoch is not None and e.get("step") is not None and not float(epoch).is_integer():
                    return "step"
    return "epoch"


def _series(
    run: Run, kinds: Sequence[str], value: Callable[[dict[str, Any]], float | None], x: str = "epoch"
) -> tuple[list, list]:
    """The ``(x, value)`` points of the events of ``kinds``, sorted by ``x`` (``"epoch"`` or ``"step"``)."""
    points = sorted(
        (float(e[x]), v)
        for e in run.events
        if e.get("event") in kinds and e.get(x) is not None and (v := value(e)) is not None
    )
    return [p[0] for p in points], [float(p[1]) for p in points]


# ------------------------------------------------------------------------------------------------------------- plots


def _matplotlib() -> Any:
    try:
        import matplotlib
    except ImportError as e:
        raise ImportError("sparsebrain's report plots need matplotlib: pip install matplotlib") from e
    return matplotlib


class _Style:
    """One colour per method and one line style per sparse density, the same in every plot."""

    def __init__(self, rows: Sequence[Row]) -> None:
        import matplotlib

        methods = list(dict.fromkeys(r.method for r in rows if r.method != "dense"))
        # tab10 while it suffices; beyond ten methods tab20 rather than reusing a colour for two methods.
        palette = matplotlib.colormaps["tab10" if len(methods) <= 10 else "tab20"].colors
        self.color: dict[str, Any] = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
        self.color["dense"] = DENSE_COLOR
        densities = sorted({r.density for r in rows if r.method != "dense"}, reverse=True)
        styles = ["-", "--", ":", "-."]
        self.linestyle = {d: styles[i % len(styles)] for i, d in enumerate(densities)}
        self.several_densities = len(densities) > 1

    def label(self, row: Row) -> str:
        if row.method == "dense" or not self.several_densities:
            return row.method
        return f"{row.method} (d={row.density:g})"

    def kw(self, row: Row) -> dict[str, Any]:
        return {"color": self.color[row.method], "linestyle": self.linestyle.get(row.density, "-"), "lw": 1.6}


def _new_figure(nrows: int, ncols: int, panel: tuple[float, float]) -> tuple[Any, Any]:
    """A pyplot-free figure: no global backend switch, nothing left open, safe inside notebooks and threads."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(panel[0] * ncols, panel[1] * nrows), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _write_atomic(path: Path, write: Callable[[Any], None]) -> None:
    """Writes through a temporary file in the same folder, then renames: readers see the old file or the new one."""
    atomic_write(path, write, fsync=False)  # a report can be written again


def _legend(fig: Any) -> None:
    """Legends: inside every panel while short; else one legend for the figure, to the right of the panels.

    The panels of one figure show the same methods, so a long legend repeated inside each one would only hide curves
    (and tick labels); beside the panels it is drawn once and covers nothing.
    """
    entries: dict[str, Any] = {}
    for ax in fig.axes:
        if ax.get_visible():
            for handle, label in zip(*ax.get_legend_handles_labels()):
                entries.setdefault(label, handle)
    if not entries:
        return
    if len(entries) <= MAX_LEGEND_INSIDE:
        for ax in fig.axes:
            if ax.get_visible() and ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize="small", framealpha=0.85)
        return
    # Anchored just outside the figure's right edge; _save's tight bounding box grows the image to hold it.
    fig.legend(list(entries.values()), list(entries), loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")


def _save(fig: Any, path: Path) -> None:
    _legend(fig)
    _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight", pad_inches=0.1))


_Series = Sequence[tuple[Sequence[float], Sequence[float]]]  # one (x, y) curve per seed


def _band(ax: Any, series: _Series, label: str, kw: dict) -> bool:
    """Draws the curve over seeds with its ± std band (geometric on a log axis: set the scale first)."""
    x, centre, lo, hi = _mean_curve(series, log=ax.get_yscale() == "log")
    if x.size == 0:
        return False
    # Markers show where the evaluations are when there are few (a run evaluated 4 times draws 3 straight segments);
    # a single point would otherwise be invisible.
    marker = "o" if x.size <= MAX_MARKED_POINTS else None
    ax.plot(x, centre, label=label, marker=marker, ms=3, **kw)
    if sum(1 for s in series if len(s[0])) > 1:  # a band needs at least two seeds
        ax.fill_between(x, lo, hi, color=kw["color"], alpha=0.18, lw=0)
    return True


def _draw_bands(bands: Sequence[tuple[Any, _Series, str, dict]]) -> bool:
    """Draws ``(ax, series, label, kw)`` bands, after the axes' scales are set; True if any had data."""
    plotted = False
    for ax, series, label, kw in bands:
        plotted |= _band(ax, series, label, kw)
    return plotted


def _values(bands: Sequence[tuple[Any, _Series, str, dict]], ax: Any = None) -> list[float]:
    """Every y value of the bands (of those drawn on ``ax`` when given)."""
    return [v for a, series, _, _ in bands if ax is None or a is ax for _, ys in series for v in ys]


def _log_if_wide(ax: Any, values: Iterable[float], axis: str = "y", decades: float = 2.0) -> None:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    if pos and max(pos) / min(pos) >= 10**decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _over_seeds(ax: Any) -> str:
    """What the curves of a panel are, for its title (after its scale is set; see :func:`_mean_curve`)."""
    return "(geometric mean ×/÷ std over seeds)" if ax.get_yscale() == "log" else "(mean ± std over seeds)"


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)  # legends come later, from _save, once every panel is drawn


def _plot_metric(rows: Sequence[Row], style: _Style, path: Path, x: str) -> str | None:
    spec = rows[0].spec
    dense = [r for r in rows if r.method == "dense"]
    sparse = [r for r in rows if r.method != "dense"]
    densities = sorted({r.density for r in sparse}, reverse=True) or [None]
    ncols = min(3, len(densities))
    nrows = math.ceil(len(densities) / ncols)
    fig, axes = _new_figure(nrows, ncols, (6.0, 4.2))
    bands = []
    for i, d in enumerate(densities):
        ax = axes[i // ncols][i % ncols]
        # Dense is the reference every sparse density is judged against, so it appears in every panel.
        for r in dense + [r for r in sparse if r.density == d]:
            series = [
                _series(run, ["eval"], lambda e: None if e.get(spec.name) is None else spec.scale * e[spec.name], x)
                for run in r.runs
            ]
            # The panel already names the density: solid lines and bare method names; dense dashed grey.
            if r.method == "dense" and sparse:
                kw, label = {"color": DENSE_COLOR, "linestyle": "--", "lw": 1.6}, "dense (reference)"
            else:
                kw, label = style.kw(r) | {"linestyle": "-"}, r.method
            bands.append((ax, series, label, kw))
    if not spec.name.endswith("acc"):
        # A perplexity or loss can fall by orders of magnitude early on and by a few percent late; once the curves
        # span a decade a log axis keeps the late differences between methods visible. One scale for all panels.
        for row in axes:
            for ax in row:
                _log_if_wide(ax, _values(bands), decades=1.0)
    plotted = _draw_bands(bands)
    for i, d in enumerate(densities):
        ax = axes[i // ncols][i % ncols]
        title = spec.long_name if d is None else f"{spec.long_name}, density {d:g}"
        ylabel = spec.long_name + (f" ({spec.unit})" if spec.unit else "")
        _finish(ax, f"{title} {_over_seeds(ax)}", x, ylabel)
    for j in range(len(densities), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if not plotted:
        return f"no eval events with {spec.name} in metrics.jsonl"
    _save(fig, path)
    return None


def _plot_density_anp(rows: Sequence[Row], style: _Style, path: Path, x: str) -> str | None:
    sparse = [r for r in rows if r.method != "dense"]
    if not sparse:
        return "dense runs only: density and ANP are 1 throughout"
    fig, axes = _new_figure(1, 2, (6.0, 4.2))
    bands = []
    for r in sparse:
        for ax, key in zip(axes[0], ["density", "anp"]):
            series = [_series(run, ["eval", "topology"], lambda e, k=key: e.get(k), x) for run in r.runs]
            bands.append((ax, series, style.label(r), style.kw(r)))
    _log_if_wide(axes[0][0], _values(bands, axes[0][0]), decades=1.0)
    plotted = _draw_bands(bands)
    _finish(axes[0][0], f"density {_over_seeds(axes[0][0])}", x, "density (fraction of links kept)")
    _finish(axes[0][1], "active neuron percolation (ANP)", x, "ANP (fraction of active neurons)")
    if not plotted:
        return "no density or ANP in the eval and topology events of the sparse runs"
    _save(fig, path)
    return None


def _mean_hist(hists: Sequence[Sequence[float]]) -> list[float]:
    width = max(len(h) for h in hists)
    return [statistics.fmean([h[k] if k < len(h) else 0.0 for h in hists]) for k in range(width)]


# The degree histograms of a summary's layer. A mask is (out, in), like nn.Linear.weight: a column sum is an input
# neuron's fan-out (its links to the layer's outputs), a row sum an output neuron's fan-in (its links from the
# inputs). Older summaries named the histograms after the side of the layer: "in_degree_hist" holds the input
# neurons' fan-out (mask.sum(0)) and "out_degree_hist" the output neurons' fan-in (mask.sum(1)), read as such.
# (key, key in older summaries, panel title, x label, y label)
_DEGREE_SIDES = (
    ("fan_out_hist", "in_degree_hist", "input neurons: fan-out", "fan-out k (links to the layer's outputs)",
     "input neurons"),
    ("fan_in_hist", "out_degree_hist", "output neurons: fan-in", "fan-in k (links from the layer's inputs)",
     "output neurons"),
)  # fmt: skip


def _layer_hist(layer: Mapping[str, Any], key: str, legacy: str) -> list[float] | None:
    """A layer's degree histogram under its key, or under the key older summaries gave it; None (or []) if neither."""
    return layer.get(key) or layer.get(legacy)


def _degree_figure(rows: Sequence[Row], style: _Style) -> tuple[Any, str | None]:
    """The final masks' fan-out (input neurons) and fan-in (output neurons) histograms: ``(figure, None)``, or
    ``(None, why not)``. One row of two panels per sparse layer, or one for all of them summed when there are more
    than :data:`MAX_LAYER_PANELS`; curves are means over seeds."""
    from matplotlib.ticker import MaxNLocator

    sparse = [r for r in rows if r.method != "dense"]
    layer_names = list(
        dict.fromkeys(n for r in sparse for run in r.runs for n in ((run.summary or {}).get("layers") or {}))
    )
    if not layer_names:
        return None, "no layers in the summaries" if sparse else "no sparse layers in the summaries (dense runs only)"
    summed = len(layer_names) > MAX_LAYER_PANELS
    panels = [f"all {len(layer_names)} sparse layers (summed)"] if summed else layer_names
    fig, axes = _new_figure(len(panels), 2, (5.6, 3.4))
    plotted = False
    for p, panel in enumerate(panels):
        names = layer_names if summed else [panel]
        for s, (key, legacy, side, xlabel, ylabel) in enumerate(_DEGREE_SIDES):
            ax = axes[p][s]
            curves: list[tuple[Row, list[float]]] = []
            for r in sparse:
                per_seed = []
                for run in r.runs:
                    layers = (run.summary or {}).get("layers") or {}
                    hists = [h for n in names if n in layers and (h := _layer_hist(layers[n], key, legacy))]
                    if hists:  # one histogram per seed: summed over layers when the layers are pooled
                        width = max(len(h) for h in hists)
                        per_seed.append([sum(h[k] for h in hists if k < len(h)) for k in range(width)])
                if per_seed:
                    curves.append((r, _mean_hist(per_seed)))
            _log_if_wide(ax, [c for _, hist in curves for c in hist])
            log = ax.get_yscale() == "log"
            # Markers help short histograms and smear long ones; decided per panel, since markers on some curves
            # and not on others would look like a distinction between the methods.
            marker = "o" if curves and max(len(hist) for _, hist in curves) <= 60 else None
            for r, hist in curves:
                # On a log axis an empty degree would plunge to the bottom edge; leave a gap instead.
                ys = [c if c > 0 or not log else float("nan") for c in hist]
                ax.plot(range(len(hist)), ys, marker=marker, ms=3.5, label=style.label(r), **style.kw(r))
                plotted = True
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # degrees are whole numbers
            _finish(ax, f"{panel}: {side}", xlabel, f"number of {ylabel} (mean over seeds)")
    if not plotted:
        return None, "the summaries hold no fan_in_hist / fan_out_hist (nor in_degree_hist / out_degree_hist)"
    return fig, None


def _plot_degrees(rows: Sequence[Row], style: _Style, path: Path) -> str | None:
    fig, why = _degree_figure(rows, style)
    if fig is None:
        return why
    _save(fig, path)
    return None


def _plot_topology_stat(
    rows: Sequence[Row], style: _Style, path: Path, x: str, *, key: str, title: str, ylabel: str, what: str
) -> str | None:
    """One panel of a per-update statistic that means the same for every method (e.g. ``changed_fraction``)."""
    sparse = [r for r in rows if r.method != "dense"]
    fig, axes = _new_figure(1, 1, (7.5, 4.5))
    ax = axes[0][0]
    bands = []
    for r in sparse:
        series = [
            _series(run, ["topology"], lambda e: _links_weighted(e.get("layers") or {}, key), x) for run in r.runs
        ]
        bands.append((ax, series, style.label(r), style.kw(r)))
    _log_if_wide(ax, _values(bands))
    if not _draw_bands(bands):
        return f"no topology update reported {what}" if sparse else "dense runs only: no topology updates"
    _finish(ax, title.format(over_seeds=_over_seeds(ax)), x, ylabel)  # the scale is known only now
    _save(fig, path)
    return None


RANDOM_REGROWTH = "random"  # SET's and MEST's rule: its "scores" are uniform random numbers
UNKNOWN_REGROWTH = "unknown"  # what regrowth_rule says of a run whose rule cannot be known

# What each built-in regrowth rule scores (the CH rules are described from their names).
_RULE_SCORES = {"random": "uniform random numbers", "gradient": "|dense gradient| (RigL)"}


def regrowth_rule_of(method: Any) -> str | None:
    """The regrowth rule a :class:`~sparsebrain.dst.MethodConfig` applies in training; None if it never regrows.

    Dense and static training, fixed-mask N:M (ASP) and STE never rewire; prune-only methods (GMP) have no rule.

    Example:
        >>> from sparsebrain.dst.methods import METHODS
        >>> regrowth_rule_of(METHODS["chtss"]), regrowth_rule_of(METHODS["asp"])
        ('ch2_l3n', None)
    """
    if not method.sparse or not method.dynamic:
        return None
    return method.regrowth


def regrowth_rule(summary: Mapping[str, Any]) -> str | None:
    """The regrowth rule of a finished run, from its summary; None when the run never regrows.

    The summary's ``"regrowth"`` when it has one (the trainer records it). Summaries written before that are read
    through the method presets: ``preset`` (else ``method``) with the ``options`` the run was trained with, as
    :func:`regrowth_rule_of` sees them. :data:`UNKNOWN_REGROWTH` when neither tells (a method that is no preset).

    Example:
        >>> regrowth_rule({"preset": "chts", "options": {"regrowth": "ch3_l3p"}})
        'ch3_l3p'
        >>> regrowth_rule({"preset": "rigl"}), regrowth_rule({"regrowth": None, "preset": "set"})
        ('gradient', None)
    """
    if "regrowth" in summary:
        return summary["regrowth"]
    try:  # the presets live with the engine, which needs torch; the rest of this module does not
        from ..dst.methods import METHODS
    except ImportError:
        return UNKNOWN_REGROWTH
    preset = METHODS.get(str(summary.get("preset") or summary.get("method")))
    if preset is None:
        return UNKNOWN_REGROWTH
    from types import SimpleNamespace

    return regrowth_rule_of(SimpleNamespace(**{**vars(preset), **(summary.get("options") or {})}))


def _row_rule(row: Row) -> str | None:
    rules = {regrowth_rule(run.summary or {}) for run in row.runs}
    return rules.pop() if len(rules) == 1 else UNKNOWN_REGROWTH


def _scored(rule: str) -> str:
    """What a regrowth rule's scores are, for a panel title."""
    if rule in _RULE_SCORES:
        return _RULE_SCORES[rule]
    if re.fullmatch(r"ch[23]_l3[np]", rule):  # ch2_l3n -> CH2-L3n
        return f"CH{rule[2]}-L3{rule[-1]} link-prediction scores"
    return f"the {rule!r} rule's scores"


def _score_variance_figure(rows: Sequence[Row], style: _Style, x: str) -> tuple[Any, str]:
    """The variance of the regrowth scores over the candidate links, one panel per regrowth rule.

    Scores of different rules are different quantities (a CH link-prediction score, a gradient magnitude), so no
    panel holds two rules; the methods of one rule share its panel. Methods that regrow at random are left out:
    their scores are uniform random numbers, of variance 1/12 whatever the topology. So are methods of unknown rule,
    each on a panel of its own. Returns ``(figure, note)``, the note naming what was left out (also in the figure's
    title), or ``(None, why nothing was drawn)``.
    """
    sparse = [r for r in rows if r.method != "dense"]
    if not sparse:
        return None, "dense runs only: no topology updates"
    groups: dict[str, list[Row]] = {}
    random_methods: list[str] = []
    for r in sparse:
        rule = _row_rule(r)
        if rule == RANDOM_REGROWTH:
            random_methods.append(style.label(r))
        elif rule is not None:
            groups.setdefault(f"{UNKNOWN_REGROWTH} ({r.method})" if rule == UNKNOWN_REGROWTH else rule, []).append(r)
    random_methods = list(dict.fromkeys(random_methods))
    note = ""
    if random_methods:
        note = (
            f"left out: {', '.join(random_methods)} (random regrowth: its scores are uniform random numbers, "
            "of variance 1/12 whatever the topology)"
        )
    series = {
        rule: [
            (r, [_series(run, ["topology"], lambda e: _links_weighted(e.get("layers") or {}, "score_var"), x)
                 for run in r.runs])
            for r in members
        ]
        for rule, members in groups.items()
    }  # fmt: skip
    series = {rule: curves for rule, curves in series.items() if any(len(s[0]) for _, ss in curves for s in ss)}
    if not series:
        if random_methods and not groups:
            return None, (
                f"the sparse runs regrow at random ({', '.join(random_methods)}): their scores are uniform random "
                "numbers, not a property of the links"
            )
        return None, "no topology update reported a score_var (no method with regrowth scores)"
    ncols = min(3, len(series))
    nrows = math.ceil(len(series) / ncols)
    fig, axes = _new_figure(nrows, ncols, (5.6, 4.0))
    for i, (rule, curves) in enumerate(series.items()):
        ax = axes[i // ncols][i % ncols]
        bands = [(ax, ss, style.label(r), style.kw(r)) for r, ss in curves]
        _log_if_wide(ax, _values(bands))
        _draw_bands(bands)
        title = f"regrowth rule {rule}" + ("" if rule.startswith(UNKNOWN_REGROWTH) else f": {_scored(rule)}")
        _finish(ax, f"{title}\n{_over_seeds(ax)}", x, "variance over the absent links (links-weighted)")
    for j in range(len(series), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    heading = "Variance of the regrowth scores over the candidate (absent) links, one panel per regrowth rule"
    fig.suptitle(heading + (f"\n{note}" if note else ""), fontsize="medium")
    return fig, note


def _plot_score_variance(rows: Sequence[Row], style: _Style, path: Path, x: str) -> str | None:
    fig, why = _score_variance_figure(rows, style, x)
    if fig is None:
        return why
    _save(fig, path)
    return None


# ------------------------------------------------------------------------------------------------------------ report


def plot_files(metric: str) -> tuple[tuple[str, str], ...]:
    """The report's plots as (file name, caption), in report order; the first is the headline metric's.

    Example:
        >>> [name for name, _ in plot_files("val_ppl")][:2]
        ['val_ppl.png', 'density_anp.png']
    """
    spec = metric_spec(metric)
    return (
        (spec.plot_file, spec.long_name[0].upper() + spec.long_name[1:]),
        ("density_anp.png", "Density and active neuron percolation (ANP)"),
        ("degree_distribution.png", "Degree distribution of the final masks"),
        ("links_changed.png", "Links changed per topology update"),
        ("ch_score_variance.png", "Variance of the regrowth scores, one panel per regrowth rule"),
    )


def _make_plots(rows: Sequence[Row], out_dir: Path) -> dict[str, str | None]:
    """Writes every plot it can; returns file name -> ``None`` if written, else why it was skipped."""
    style = _Style(rows)
    x = time_axis(rows)
    spec = rows[0].spec
    makers: dict[str, Callable[[Path], str | None]] = {
        spec.plot_file: lambda p: _plot_metric(rows, style, p, x),
        "density_anp.png": lambda p: _plot_density_anp(rows, style, p, x),
        "degree_distribution.png": lambda p: _plot_degrees(rows, style, p),
        "links_changed.png": lambda p: _plot_topology_stat(
            rows,
            style,
            p,
            x,
            key="changed_fraction",
            what="changed_fraction",
            title="links changed per topology update {over_seeds}",
            ylabel="regrown links / links (links-weighted over layers)",
        ),
        "ch_score_variance.png": lambda p: _plot_score_variance(rows, style, p, x),
    }
    skipped: dict[str, str | None] = {}
    for name, _ in plot_files(spec.name):
        skipped[name] = makers[name](out_dir / name)
        if skipped[name] is not None:
            # A plot from an earlier report of other runs must not sit next to this report as if it belonged to it.
            (out_dir / name).unlink(missing_ok=True)
    return skipped


def _code(text: str) -> str:
    # A command holding a backtick needs a longer fence (and spaces, which markdown strips) to stay one code span.
    return f"`` {text} ``" if "`" in text else f"`{text}`"


def _link(run: Run, out_dir: Path, root: Path) -> str:
    try:
        name = run.path.resolve().relative_to(root).as_posix() or run.path.name
    except ValueError:
        name = str(run.path)
    try:
        target = Path(os.path.relpath(run.path.resolve(), out_dir.resolve())).as_posix()
    except ValueError:  # another drive on Windows: no relative link exists
        target = run.path.resolve().as_uri()
    return f"[`{name}`]({target})"


def _short(spec: MetricSpec) -> str:
    # "test acc" rather than the table's "accuracy %": the unit goes after the value in running text.
    return spec.name.replace("_", " ")


def _run_line(run: Run, out_dir: Path, root: Path, spec: MetricSpec) -> str:
    s = run.summary or {}
    value = (s.get("metrics") or {}).get(spec.name)
    parts = [f"{s.get('method')}, density {float(s.get('density', float('nan'))):g}, seed {s.get('seed')}"]
    if value is not None:
        parts.append(f"{_short(spec)} {spec.show(spec.scale * value)}")
    if s.get("wall_time_s") is not None:
        parts.append(f"{s['wall_time_s']:.1f} s on {s.get('device', 'unknown device')}")
    versions = s.get("versions") or {}
    if versions:
        parts.append(", ".join(f"{k} {v}" for k, v in versions.items() if v is not None))
    if s.get("git_commit"):
        parts.append(f"commit {str(s['git_commit'])[:12]}")
    line = f"- {_link(run, out_dir, root)}: " + "; ".join(parts)
    if s.get("command"):
        line += f"  \n  {_code(str(s['command']))}"
    return line


def _number(x: Any) -> str:
    """``45`` for a whole number, ``3.08`` for a fraction (epochs of step-based runs), else the value as text."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return str(x)
    return f"{x:g}" if float(x).is_integer() else f"{x:.2f}"


def _unfinished_line(run: Run, out_dir: Path, root: Path, spec: MetricSpec) -> str:
    evals = run.of_kind("eval")
    if run.summary is not None:
        state = f"summary.json has status {run.summary.get('status')!r}"
    elif evals:
        last = evals[-1]
        state = f"stopped after epoch {_number(float(last['epoch']))} (step {last.get('step')})"
        if last.get(spec.name) is not None:  # no summary names its metric: the finished runs' one is the guess
            state += f", last {_short(spec)} {spec.show(spec.scale * last[spec.name])}"
    elif run.events:
        state = f"stopped at step {run.events[-1].get('step')}, before its first evaluation"
    else:
        state = "no metrics logged yet"
    resumes = len(run.of_kind("resume"))
    if resumes:
        state += f"; resumed {resumes} time{'s' if resumes > 1 else ''}"
    return f"- {_link(run, out_dir, root)}: {state}"


def _experiment_line(rows: Sequence[Row]) -> str:
    summaries = [run.summary or {} for r in rows for run in r.runs]
    parts = []
    for key in ("name", "dataset", "model", "epochs", "steps"):
        values = list(dict.fromkeys(_number(s[key]) for s in summaries if s.get(key) is not None))
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return "; ".join(parts)


# summary["data"] keys that size the splits, and their words in the caption
_SPLIT_SIZES = {
    "train_size": "training", "val_size": "validation", "test_size": "test examples",
    "train_tokens": "training", "valid_tokens": "validation tokens",
    "train_sentences": "training", "valid_sentences": "validation sentences",
}  # fmt: skip


def _common(values: Iterable[Any]) -> str:
    """The distinct values, in order of first appearance, as text (``"30"``, ``"digits, fashion_mnist"``)."""
    return ", ".join(dict.fromkeys(_number(v) for v in values if v is not None))


def _sizes(summaries: Sequence[Mapping[str, Any]]) -> str:
    """``" (1293 training, 144 validation, 360 test examples)"`` when every run used the same splits, else ``""``."""
    data = [s.get("data") or {} for s in summaries]
    parts = []
    for key, word in _SPLIT_SIZES.items():
        values = {d.get(key) for d in data}
        if len(values) == 1 and None not in values:
            parts.append(f"{values.pop()} {word}")
    return f" ({', '.join(parts)})" if parts else ""


def _schedule_lines(rows: Sequence[Row], x: str) -> list[str]:
    """For each sparse row whose density starts well above its target (a decaying schedule: CHTss, GMP, GraNet),
    where it first reached the target, read from its first run's eval events."""
    lines = []
    for r in rows:
        if r.method == "dense" or not r.runs:
            continue
        evals = [e for e in r.runs[0].of_kind("eval") if e.get("density") is not None and e.get(x) is not None]
        if not evals or evals[0]["density"] < 1.5 * r.density:
            continue
        reached = [e for e in evals if e["density"] <= r.density * (1 + DENSITY_TOLERANCE)]
        start = f"{_escape(r.method)} starts denser than its target: density {evals[0]['density']:.3g} at the first "
        if reached:
            at, last = _number(float(reached[0][x])), _number(float(evals[-1][x]))
            lines.append(
                f"{start}evaluation, {r.density:g} first at {x} {at} of {last} ({len(reached)} of {len(evals)} "
                "evaluations at the target density, the only ones its best is picked from)."
            )
        else:
            final = evals[-1]["density"]
            lines.append(f"{start}evaluation; no evaluation is at the target {r.density:g} (last: {final:.3g}).")
    return lines


def table_caption(rows: Sequence[Row]) -> str:
    """What the table of ``rows`` (:func:`markdown_table`) shows, in words, so that it can be read alone.

    A markdown list: the model, data (split sizes), budget, evaluations and seeds; what the final and the "best"
    column hold and how the best evaluation was picked (validation selection, a validation metric that selects
    itself, or n/a for runs without validation selection); what the density columns mean; and, for methods whose
    density starts above the target (decaying schedules), where they reached it.

    Example:
        >>> print(table_caption(summarize(collect_runs(["runs/default"]))))  # doctest: +SKIP
        - mlp on digits (1293 training, 144 validation, 360 test examples); 30 epochs (1200 steps), 30 evaluations; ...
    """
    spec = rows[0].spec
    selection = rows[0].selection
    runs = [run for r in rows for run in r.runs]
    summaries = [run.summary or {} for run in runs]
    x = time_axis(rows)
    seeds = sorted({seed for r in rows for seed in r.seeds})
    n_evals = _common(len(run.of_kind("eval")) for run in runs)
    lines = [
        f"{_common(s.get('model') for s in summaries)} on {_common(s.get('dataset') for s in summaries)}"
        f"{_sizes(summaries)}; {_common(s.get('epochs') for s in summaries)} epochs "
        f"({_common(s.get('steps') for s in summaries)} steps), {n_evals} evaluations; seeds "
        f"{', '.join(map(str, seeds))}. Values are mean ± sample std (ddof=1) over the seeds of a row (`seeds` "
        "counts them; one seed shows ± 0: no spread measured)."
    ]
    way = "highest" if spec.higher_is_better else "lowest"
    unit = " in percent" if spec.unit == "%" else ""
    lines.append(f"`{spec.column}`: the {spec.long_name}{unit} at the last evaluation.")
    column = best_column(spec.name, selection)
    if selection is not None and selection != spec.name:
        sel_name = " ".join(_WORDS.get(w, w) for w in selection.split("_"))
        lines.append(
            f"`{column}`: the {spec.long_name} at the evaluation of {way} {sel_name} (the first such one) among "
            "those at the run's final density. The validation split is held out from the training data "
            "(`data.val_fraction` of each class, drawn with `data.split_seed`: the same for every method and seed), "
            "so the test split never picks the evaluation it is reported at."
        )
    elif selection is not None:
        tested = sorted({k for s in summaries for k in (s.get("metrics") or {}) if k.startswith("test_")})
        after = f" Test metrics measured once after training ({', '.join(tested)}) are in the summaries."
        better = "higher" if spec.higher_is_better else "lower"
        lines.append(
            f"`{column}`: the {way} {spec.long_name} over the evaluations at the run's final density ({better} is "
            "better), picked on the validation split it is measured on, so slightly optimistic; these evaluations "
            f"have no separate test split.{after if tested else ''}"
        )
    unselected = sum(r.unselected for r in rows)
    if unselected:
        lines.append(
            f"n/a in `{column}`: {unselected} of {len(runs)} runs have summaries written before validation selection; "
            f"their only recorded best (`best_{spec.name}`) is the {way} {spec.long_name} over the evaluations, a "
            "selection on the test split itself, which this table does not show."
        )
    lines.append(
        "`density`: the target share of links kept in the sparse layers (dense: 1); `final density` and `ANP` "
        "(active neuron percolation: the share of neurons still connected input to output) are of the final masks; "
        "`wall time s` is training time per run."
    )
    lines += _schedule_lines(rows, x)
    return "\n".join(f"- {line}" for line in lines) + "\n"


def _axis_sentence(x: str) -> str:
    band = (
        "Curves are means over seeds with a ± std band; on a log axis, geometric means with a ×/÷ geometric std band."
    )
    if x == "step":
        return f"Curves are against the optimizer step: these runs are evaluated inside epochs (step-based). {band}"
    return f"Curves are against the epoch. {band}"


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    title: str = "sparsebrain report",
    published: Mapping[str, float] | None = None,
) -> Path:
    """Writes ``out_dir/report.md`` (results table, runs, unfinished runs, plots) and the PNG plots next to it.

    The plots: the headline metric over training (``accuracy.png`` for test accuracy, ``<metric>.png`` otherwise,
    e.g. ``val_ppl.png``; a panel per sparse density with dense as reference; a log y axis for a perplexity or loss
    that spans a decade), ``density_anp.png``, ``degree_distribution.png`` (the final masks' fan-out per input
    neuron and fan-in per output neuron), ``links_changed.png`` and ``ch_score_variance.png`` (one panel per
    regrowth rule, random regrowth left out: see :func:`regrowth_rule`); curves are means over seeds with a ± std
    band, against epoch or step as :func:`time_axis` decides. A plot without data (dense runs only, no method with
    regrowth scores) is skipped, removed if an earlier report left one, and the report says why. ``report.md`` is
    written to a temporary file and renamed, so a reader never sees half a report.

    Args:
        paths: run directories or directories containing them (see :func:`collect_runs`).
        out_dir: where to write; created if missing.
        title: the report's heading.
        published: optional method -> published value of the headline metric in its display units (accuracy in
            percent, perplexity raw), shown as an extra table column (see :func:`markdown_table`).

    Returns:
        The path of ``report.md``.

    Raises:
        ValueError: see :func:`collect_runs` and :func:`summarize`.
        ImportError: matplotlib is not installed.

    Example:
        >>> build_report(["runs/fmnist_mlp"], "reports/fmnist", published={"chtss": 90.81})  # doctest: +SKIP
        PosixPath('reports/fmnist/report.md')
    """
    _matplotlib()  # fail before reading anything if the plots cannot be drawn
    runs = collect_runs(paths)
    finished = [r for r in runs if r.finished]
    unfinished = [r for r in runs if not r.finished]
    if not finished:
        raise ValueError(f"no finished runs under {', '.join(map(str, paths))} ({len(unfinished)} unfinished)")
    rows = summarize(finished)
    spec = rows[0].spec
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    skipped = _make_plots(rows, out)

    root = Path(os.path.commonpath([r.path.resolve() for r in runs]))
    if len(runs) == 1:
        root = root.parent
    md = [f"# {title}", ""]
    experiment = _experiment_line(rows)
    md += [
        f"{len(finished)} finished run{'s' if len(finished) != 1 else ''}"
        + (f" ({experiment})" if experiment else "")
        + f", {len(unfinished)} unfinished.",
        "",
        "## Results",
        "",
        markdown_table(rows, published),
        table_caption(rows),
        "## Plots",
        "",
        _axis_sentence(time_axis(rows)),
        "",
    ]
    for name, caption in plot_files(spec.name):
        md.append(f"### {caption}")
        md.append("")
        md.append(f"![{caption}]({name})" if skipped[name] is None else f"Skipped: {skipped[name]}.")
        md.append("")
    md += ["## Runs", ""]
    md += [_run_line(run, out, root, spec) for r in rows for run in r.runs]
    md += ["", "## Unfinished runs", ""]
    md += [_unfinished_line(run, out, root, spec) for run in unfinished] or ["None."]
    md.append("")

    report = out / REPORT
    _write_atomic(report, lambda f: f.write("\n".join(md).encode("utf-8")))
    return report
