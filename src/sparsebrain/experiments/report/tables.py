"""The markdown results table: :func:`markdown_table`, :func:`best_column`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .metrics import DEFAULT_METRIC, metric_spec
from .statistics import Row, Stat

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
