"""Runs grouped by method and density, each group's metrics as mean and sample standard deviation over its
seeds: :class:`Stat`, :class:`Row`, :func:`summarize`."""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..rundir import SUMMARY
from .metrics import DEFAULT_METRIC, MetricSpec, higher_is_better, metric_spec
from .runs import Run

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
