"""The report itself: ``report.md`` with the table, its caption, the plots and a line per run
(:func:`build_report`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .metrics import _WORDS, MetricSpec, metric_spec
from .plots import (
    _matplotlib,
    _plot_degrees,
    _plot_density_anp,
    _plot_metric,
    _plot_score_variance,
    _plot_topology_stat,
    _Style,
    _write_atomic,
    time_axis,
)
from .runs import Run, collect_runs
from .statistics import DENSITY_TOLERANCE, Row, summarize
from .tables import _escape, best_column, markdown_table

REPORT = "report.md"


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
