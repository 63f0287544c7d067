"""Reports on finished runs: a markdown results table (mean ± std over seeds) and PNG plots.

Reads run directories exactly as ``docs/run-directory.md`` defines them (``summary.json`` for finished runs,
``metrics.jsonl`` for the curves) and never imports torch, so a report can be built anywhere the run directories can be
read. The plots need matplotlib (``pip install matplotlib``), imported only when :func:`build_report` runs.

The table and the first plot follow the runs' headline metric, the summaries' top-level ``"metric"`` (``"test_acc"``
when absent, as in summaries written before other tasks existed): test accuracy for classification, validation
perplexity (``"val_ppl"``) for language models, BLEU for translation. :func:`higher_is_better` says which way each
metric points; :func:`metric_spec` how it is shown.

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
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "MetricSpec",
    "Row",
    "Run",
    "Stat",
    "build_report",
    "collect_runs",
    "headline_metric",
    "higher_is_better",
    "markdown_table",
    "metric_spec",
    "summarize",
]

SUMMARY = "summary.json"
METRICS = "metrics.jsonl"
REPORT = "report.md"
DPI = 120
MAX_LAYER_PANELS = 8  # beyond this many sparse layers, degree histograms are summed into one row of panels
DEFAULT_METRIC = "test_acc"  # summaries written before the trainer had other tasks name no metric: classification


# ----------------------------------------------------------------------------------------------------------- metrics


def higher_is_better(metric: str) -> bool:
    """Which way a headline metric points, from its name alone.

    The rule: higher is better for accuracies (names ending in ``"acc"``: ``test_acc``, ``val_acc``) and BLEU (names
    ending in ``"bleu"``: ``bleu``, ``valid_bleu``, ``test_bleu``); lower is better for perplexities (ending in
    ``"ppl"``) and losses (ending in ``"loss"``). Any other name is refused rather than guessed, since a guess would
    rank the methods upside down and label "best" the worst value; extend this rule when a task adds a metric.

    Raises:
        ValueError: the name matches none of the endings above.

    Example:
        >>> higher_is_better("test_acc"), higher_is_better("val_ppl"), higher_is_better("valid_bleu")
        (True, False, True)
    """
    if metric.endswith(("acc", "bleu")):
        return True
    if metric.endswith(("ppl", "loss")):
        return False
    raise ValueError(
        f"unknown headline metric {metric!r}: the report knows names ending in acc or bleu (higher is better) and ppl "
        "or loss (lower is better)"
    )


_WORDS = {"test": "test", "val": "validation", "valid": "validation", "train": "training", "acc": "accuracy"}
_WORDS |= {"ppl": "perplexity", "bleu": "BLEU"}


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
    digits = 4 if metric.endswith("loss") else 2
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

    def of_kind(self, event: str) -> list[dict[str, Any]]:
        """The events of one kind (``"eval"``, ``"topology"`` or ``"resume"``), in logged order."""
        return [e for e in self.events if e.get("event") == event]


def _read_events(path: Path) -> list[dict[str, Any]]:
    """Parses ``metrics.jsonl``, dropping events that a later ``resume`` made stale.

    A run that resumes from the checkpoint at step S re-logs everything after S, so events logged before the resume
    with ``step > S`` describe training that was thrown away. A last line without its newline is a write cut short by
    a crash and is skipped; any other line that is not JSON is an error.
    """
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
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
    if (run_dir / SUMMARY).is_file():
        with open(run_dir / SUMMARY, encoding="utf-8") as f:
            try:
                summary = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{run_dir / SUMMARY}: not valid JSON ({e.msg})") from None
        if not isinstance(summary, dict):
            raise ValueError(f"{run_dir / SUMMARY}: expected a JSON object, got {type(summary).__name__}")
    events = _read_events(run_dir / METRICS) if (run_dir / METRICS).is_file() else []
    return Run(run_dir, summary, events)


def _is_run_dir(path: Path) -> bool:
    return (path / SUMMARY).is_file() or (path / METRICS).is_file()


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
            files = [*root.rglob(SUMMARY), *root.rglob(METRICS)]
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

    Accuracies are in percent; ``anp`` and ``wall_time_s`` are ``None`` when no run reported them.
    """

    method: str
    density: float
    seeds: tuple[int, ...]
    runs: tuple[Run, ...]
    test_acc: Stat
    best_test_acc: Stat
    final_density: Stat
    anp: Stat | None
    wall_time_s: Stat | None

    @property
    def n_seeds(self) -> int:
        return len(self.seeds)


def _require(run: Run, *keys: str) -> Any:
    value: Any = run.summary
    for k in keys:
        if not isinstance(value, dict) or value.get(k) is None:
            raise ValueError(f"{run.path / SUMMARY} lacks {'.'.join(keys)!r}, which docs/run-directory.md requires")
        value = value[k]
    return value


def summarize(runs: Iterable[Run]) -> list[Row]:
    """Aggregates the finished runs over seeds, one :class:`Row` per (method, density).

    Row order: ``dense`` first, then the other methods in the order they first appear in ``runs`` (which
    :func:`collect_runs` returns in the order of its paths, sorted by path within each, so
    ``report runs/set runs/chtss`` lists SET before CHTss), and within a method from the densest to the sparsest.
    Unfinished runs are ignored.

    Raises:
        ValueError: no finished run; two finished runs of one (method, density) share a seed (a rerun kept next to
            the original would otherwise count twice); a summary lacks a required field.

    Example:
        >>> rows = summarize(collect_runs(["runs/fmnist_mlp"]))  # doctest: +SKIP
        >>> rows[0].method, rows[0].test_acc.mean, rows[0].n_seeds  # doctest: +SKIP
        ('dense', 91.2, 3)
    """
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
        rows.append(
            Row(
                method=method,
                density=density,
                seeds=tuple(seeds),
                runs=tuple(members),
                test_acc=Stat.of(100.0 * _require(r, "metrics", "test_acc") for r in members),
                best_test_acc=Stat.of(100.0 * _require(r, "metrics", "best_test_acc") for r in members),
                final_density=Stat.of(_require(r, "final_density") for r in members),
                anp=Stat.of_optional(r.summary.get("anp") for r in members if r.summary is not None),
                wall_time_s=Stat.of_optional(r.summary.get("wall_time_s") for r in members if r.summary is not None),
            )
        )
    return rows


# ----------------------------------------------------------------------------------------------------------- tables


def _cell(stat: Stat | None, digits: int) -> str:
    return "n/a" if stat is None else f"{stat.mean:.{digits}f} ± {stat.std:.{digits}f}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table(rows: Sequence[Row], published: Mapping[str, float] | None = None) -> str:
    """A GitHub markdown table, one line per row, values as ``mean ± std`` over seeds.

    Args:
        rows: from :func:`summarize`, in the order to print.
        published: optional method -> published test accuracy **in percent**; adds a "published acc %" column, blank
            for methods without an entry.

    Example:
        >>> print(markdown_table(rows, published={"chtss": 90.81}))  # doctest: +SKIP
        | method | density | seeds | accuracy % | best acc % | final density | ANP | wall time s | published acc % |
        |---|---:|---:|---:|---:|---:|---:|---:|---:|
        | chtss | 0.01 | 3 | 90.52 ± 0.11 | 90.70 ± 0.09 | 0.0100 ± 0.0000 | 0.312 ± 0.004 | 812.4 ± 3.1 | 90.81 |
    """
    header = ["method", "density", "seeds", "accuracy %", "best acc %", "final density", "ANP", "wall time s"]
    if published is not None:
        header.append("published acc %")
    lines = ["| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    for r in rows:
        cells = [
            _escape(r.method),
            f"{r.density:g}",
            str(r.n_seeds),
            _cell(r.test_acc, 2),
            _cell(r.best_test_acc, 2),
            _cell(r.final_density, 4),
            _cell(r.anp, 3),
            _cell(r.wall_time_s, 1),
        ]
        if published is not None:
            cells.append(f"{published[r.method]:.2f}" if published.get(r.method) is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------------ curves


def _mean_curve(series: Sequence[tuple[Sequence[float], Sequence[float]]]) -> tuple[Any, Any, Any]:
    """Mean and sample std over seeds of curves that may be sampled at different x.

    Each curve is linearly interpolated onto the union of all x, inside its own x range only (no extrapolation), so
    seeds logged at the same epochs average point by point and seeds logged at different steps still line up.
    """
    import numpy as np

    curves = [(np.asarray(x, dtype=float), np.asarray(y, dtype=float)) for x, y in series if len(x)]
    if not curves:
        return np.empty(0), np.empty(0), np.empty(0)
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
    return grid, mean, std


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


def _series(run: Run, kinds: Sequence[str], value: Callable[[dict[str, Any]], float | None]) -> tuple[list, list]:
    points = sorted(
        (float(e["epoch"]), v)
        for e in run.events
        if e.get("event") in kinds and e.get("epoch") is not None and (v := value(e)) is not None
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

        palette = matplotlib.colormaps["tab10"].colors
        methods = list(dict.fromkeys(r.method for r in rows))
        self.color = {m: palette[i % len(palette)] for i, m in enumerate(methods)}
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
    """Writes through a temporary file in the same folder, then renames: readers see the old file or the new one.

    ``open(..., "xb")`` rather than ``tempfile.mkstemp``, so the file gets the umask's permissions (mkstemp's 0600
    would hide a shared report from the rest of a group).
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "xb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _save(fig: Any, path: Path) -> None:
    _write_atomic(path, lambda f: fig.savefig(f, format="png", dpi=DPI))


def _band(ax: Any, series: Sequence[tuple[Sequence[float], Sequence[float]]], label: str, kw: dict) -> bool:
    x, mean, std = _mean_curve(series)
    if x.size == 0:
        return False
    marker = "o" if x.size < 3 else None  # a line of one or two points is invisible without a marker
    ax.plot(x, mean, label=label, marker=marker, ms=3, **kw)
    if sum(1 for s in series if len(s[0])) > 1:  # a band needs at least two seeds
        ax.fill_between(x, mean - std, mean + std, color=kw["color"], alpha=0.18, lw=0)
    return True


def _log_if_wide(ax: Any, values: Iterable[float], axis: str = "y", decades: float = 2.0) -> None:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    if pos and max(pos) / min(pos) >= 10**decades:
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


def _finish(ax: Any, title: str, xlabel: str, ylabel: str) -> None:
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", framealpha=0.85)


def _plot_accuracy(rows: Sequence[Row], style: _Style, path: Path) -> str | None:
    dense = [r for r in rows if r.method == "dense"]
    sparse = [r for r in rows if r.method != "dense"]
    densities = sorted({r.density for r in sparse}, reverse=True) or [None]
    ncols = min(3, len(densities))
    nrows = math.ceil(len(densities) / ncols)
    fig, axes = _new_figure(nrows, ncols, (6.0, 4.2))
    plotted = False
    for i, d in enumerate(densities):
        ax = axes[i // ncols][i % ncols]
        # Dense is the reference every sparse density is judged against, so it appears in every panel.
        for r in dense + [r for r in sparse if r.density == d]:
            series = [
                _series(run, ["eval"], lambda e: None if e.get("test_acc") is None else 100 * e["test_acc"])
                for run in r.runs
            ]
            # The panel already names the density: solid lines and bare method names; dense dashed grey.
            if r.method == "dense" and sparse:
                kw, label = {"color": "0.35", "linestyle": "--", "lw": 1.6}, "dense (reference)"
            else:
                kw, label = style.kw(r) | {"linestyle": "-"}, r.method
            plotted |= _band(ax, series, label, kw)
        title = "test accuracy" if d is None else f"test accuracy, density {d:g}"
        _finish(ax, title + " (mean ± std over seeds)", "epoch", "test accuracy (%)")
    for j in range(len(densities), nrows * ncols):
        axes[j // ncols][j % ncols].set_visible(False)
    if not plotted:
        return "no eval events in metrics.jsonl"
    _save(fig, path)
    return None


def _plot_density_anp(rows: Sequence[Row], style: _Style, path: Path) -> str | None:
    sparse = [r for r in rows if r.method != "dense"]
    if not sparse:
        return "dense runs only: density and ANP are 1 throughout"
    fig, axes = _new_figure(1, 2, (6.0, 4.2))
    plotted = False
    all_density: list[float] = []
    for r in sparse:
        for ax, key in zip(axes[0], ["density", "anp"]):
            series = [_series(run, ["eval", "topology"], lambda e, k=key: e.get(k)) for run in r.runs]
            plotted |= _band(ax, series, style.label(r), style.kw(r))
            if key == "density":
                all_density += [v for _, ys in series for v in ys]
    _log_if_wide(axes[0][0], all_density, decades=1.0)
    _finish(axes[0][0], "density (mean ± std over seeds)", "epoch", "density (fraction of links kept)")
    _finish(axes[0][1], "active neuron percolation (ANP)", "epoch", "ANP (fraction of active neurons)")
    if not plotted:
        return "no density or ANP in the eval and topology events of the sparse runs"
    _save(fig, path)
    return None


def _mean_hist(hists: Sequence[Sequence[float]]) -> list[float]:
    width = max(len(h) for h in hists)
    return [statistics.fmean([h[k] if k < len(h) else 0.0 for h in hists]) for k in range(width)]


def _plot_degrees(rows: Sequence[Row], style: _Style, path: Path) -> str | None:
    from matplotlib.ticker import MaxNLocator

    sparse = [r for r in rows if r.method != "dense"]
    layer_names = list(
        dict.fromkeys(n for r in sparse for run in r.runs for n in ((run.summary or {}).get("layers") or {}))
    )
    if not layer_names:
        return "no sparse layers in the summaries (dense runs only)" if not sparse else "no layers in the summaries"
    summed = len(layer_names) > MAX_LAYER_PANELS
    panels = [f"all {len(layer_names)} sparse layers (summed)"] if summed else layer_names
    sides = [("in_degree_hist", "input nodes, in-degree"), ("out_degree_hist", "output nodes, out-degree")]
    fig, axes = _new_figure(len(panels), 2, (5.6, 3.4))
    plotted = False
    for p, panel in enumerate(panels):
        names = layer_names if summed else [panel]
        for s, (key, side) in enumerate(sides):
            ax = axes[p][s]
            curves: list[tuple[Row, list[float]]] = []
            for r in sparse:
                per_seed = []
                for run in r.runs:
                    layers = (run.summary or {}).get("layers") or {}
                    hists = [layers[n][key] for n in names if n in layers and layers[n].get(key)]
                    if hists:  # one histogram per seed: summed over layers when the layers are pooled
                        width = max(len(h) for h in hists)
                        per_seed.append([sum(h[k] for h in hists if k < len(h)) for k in range(width)])
                if per_seed:
                    curves.append((r, _mean_hist(per_seed)))
            _log_if_wide(ax, [c for _, hist in curves for c in hist])
            log = ax.get_yscale() == "log"
            for r, hist in curves:
                # On a log axis an empty degree would plunge to the bottom edge; leave a gap instead.
                ys = [c if c > 0 or not log else float("nan") for c in hist]
                marker = "o" if len(hist) <= 60 else None  # markers help short histograms, smear long ones
                ax.plot(range(len(hist)), ys, marker=marker, ms=3.5, label=style.label(r), **style.kw(r))
                plotted = True
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # degrees are whole numbers
            _finish(ax, f"{panel}: {side}", "degree k", "nodes with degree k (mean over seeds)")
    if not plotted:
        return "the summaries hold no in_degree_hist / out_degree_hist"
    _save(fig, path)
    return None


def _plot_topology_stat(
    rows: Sequence[Row], style: _Style, path: Path, *, key: str, title: str, ylabel: str, what: str
) -> str | None:
    sparse = [r for r in rows if r.method != "dense"]
    fig, axes = _new_figure(1, 1, (7.5, 4.5))
    ax = axes[0][0]
    plotted = False
    values: list[float] = []
    for r in sparse:
        series = [_series(run, ["topology"], lambda e: _links_weighted(e.get("layers") or {}, key)) for run in r.runs]
        if _band(ax, series, style.label(r), style.kw(r)):
            plotted = True
            values += [v for _, ys in series for v in ys]
    if not plotted:
        return f"no topology update reported {what}" if sparse else "dense runs only: no topology updates"
    _log_if_wide(ax, values)
    _finish(ax, title, "epoch", ylabel)
    _save(fig, path)
    return None


# ------------------------------------------------------------------------------------------------------------ report

PLOTS: tuple[tuple[str, str], ...] = (
    ("accuracy.png", "Test accuracy"),
    ("density_anp.png", "Density and active neuron percolation (ANP)"),
    ("degree_distribution.png", "Degree distribution of the final masks"),
    ("links_changed.png", "Links changed per topology update"),
    ("ch_score_variance.png", "Variance of the regrowth scores"),
)


def _make_plots(rows: Sequence[Row], out_dir: Path) -> dict[str, str | None]:
    """Writes every plot it can; returns file name -> ``None`` if written, else why it was skipped."""
    style = _Style(rows)
    makers: dict[str, Callable[[Path], str | None]] = {
        "accuracy.png": lambda p: _plot_accuracy(rows, style, p),
        "density_anp.png": lambda p: _plot_density_anp(rows, style, p),
        "degree_distribution.png": lambda p: _plot_degrees(rows, style, p),
        "links_changed.png": lambda p: _plot_topology_stat(
            rows,
            style,
            p,
            key="changed_fraction",
            what="changed_fraction",
            title="links changed per topology update (mean ± std over seeds)",
            ylabel="regrown links / links (links-weighted over layers)",
        ),
        "ch_score_variance.png": lambda p: _plot_topology_stat(
            rows,
            style,
            p,
            key="score_var",
            what="a score_var (no method with regrowth scores)",
            title="variance of the regrowth scores over the candidate links",
            ylabel="score variance (links-weighted over layers)",
        ),
    }
    skipped: dict[str, str | None] = {}
    for name, _ in PLOTS:
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


def _run_line(run: Run, out_dir: Path, root: Path) -> str:
    s = run.summary or {}
    acc = (s.get("metrics") or {}).get("test_acc")
    parts = [f"{s.get('method')}, density {float(s.get('density', float('nan'))):g}, seed {s.get('seed')}"]
    if acc is not None:
        parts.append(f"test acc {100 * acc:.2f} %")
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


def _unfinished_line(run: Run, out_dir: Path, root: Path) -> str:
    evals = run.of_kind("eval")
    if run.summary is not None:
        state = f"summary.json has status {run.summary.get('status')!r}"
    elif evals:
        last = evals[-1]
        state = f"stopped after epoch {float(last['epoch']):g} (step {last.get('step')})"
        if last.get("test_acc") is not None:
            state += f", last test acc {100 * last['test_acc']:.2f} %"
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
    for key in ("name", "dataset", "model", "epochs"):
        values = list(dict.fromkeys(str(s[key]) for s in summaries if s.get(key) is not None))
        if values:
            parts.append(f"{key} {', '.join(values)}")
    return "; ".join(parts)


def build_report(
    paths: Sequence[str | Path],
    out_dir: str | Path,
    *,
    title: str = "sparsebrain report",
    published: Mapping[str, float] | None = None,
) -> Path:
    """Writes ``out_dir/report.md`` (results table, runs, unfinished runs, plots) and the PNG plots next to it.

    The plots: ``accuracy.png`` (test accuracy per epoch, a panel per sparse density with dense as reference),
    ``density_anp.png``, ``degree_distribution.png`` (final masks), ``links_changed.png`` and
    ``ch_score_variance.png``; curves are means over seeds with a ± std band. A plot without data (dense runs only,
    no method with regrowth scores) is skipped, removed if an earlier report left one, and the report says why.
    ``report.md`` is written to a temporary file and renamed, so a reader never sees half a report.

    Args:
        paths: run directories or directories containing them (see :func:`collect_runs`).
        out_dir: where to write; created if missing.
        title: the report's heading.
        published: optional method -> published test accuracy in percent, shown as an extra table column.

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
        "Values are mean ± sample standard deviation (ddof=1) over seeds; a row with one seed shows ± 0.00 (n=1, no "
        "spread measured). Accuracies are final and best test accuracy in percent; ANP is active neuron percolation "
        "(the fraction of neurons still connected input to output); wall time is per run.",
        "",
        "## Plots",
        "",
    ]
    for name, caption in PLOTS:
        md.append(f"### {caption}")
        md.append("")
        md.append(f"![{caption}]({name})" if skipped[name] is None else f"Skipped: {skipped[name]}.")
        md.append("")
    md += ["## Runs", ""]
    md += [_run_line(run, out, root) for r in rows for run in r.runs]
    md += ["", "## Unfinished runs", ""]
    md += [_unfinished_line(run, out, root) for run in unfinished] or ["None."]
    md.append("")

    report = out / REPORT
    _write_atomic(report, lambda f: f.write("\n".join(md).encode("utf-8")))
    return report
