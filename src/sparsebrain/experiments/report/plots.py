"""The report's PNG plots (matplotlib, imported only when one is drawn): curves against steps or epochs with
seed bands, density and ANP, degree histograms, topology statistics, regrowth-score variance."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..._atomic import atomic_write
from .regrowth import RANDOM_REGROWTH, UNKNOWN_REGROWTH, _row_rule, _scored
from .runs import Run
from .statistics import Row

DPI = 120
MAX_LAYER_PANELS = 8  # beyond this many sparse layers, degree histograms are summed into one row of panels
MAX_LEGEND_INSIDE = 6  # a longer legend goes beside the panels, once per figure, instead of over the curves
MAX_MARKED_POINTS = 12  # curves of at most this many points get markers: the evaluations are that sparse
DENSE_COLOR = "0.35"  # dark grey: dense is the reference line, not one more method competing for a colour


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
