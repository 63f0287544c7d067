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

The package's parts: :mod:`.runs` (reading run directories), :mod:`.metrics` (how each metric is named, shown
and ordered), :mod:`.statistics` (grouping runs and their mean ± std over seeds), :mod:`.tables` (the markdown
table), :mod:`.regrowth` (which rule a run regrows with), :mod:`.plots` (the PNG plots) and :mod:`.document` (the
report itself); the public names of all of them are importable from here.

Example:
    >>> runs = collect_runs(["runs/fmnist_mlp"])  # doctest: +SKIP
    >>> print(markdown_table(summarize(runs), published={"chtss": 90.8}))  # doctest: +SKIP
    >>> build_report(["runs/fmnist_mlp"], "reports/fmnist_mlp")  # doctest: +SKIP
    PosixPath('reports/fmnist_mlp/report.md')
"""

from .document import REPORT, build_report, plot_files, table_caption
from .metrics import DEFAULT_METRIC, MetricSpec, higher_is_better, metric_spec
from .plots import time_axis
from .regrowth import RANDOM_REGROWTH, UNKNOWN_REGROWTH, regrowth_rule, regrowth_rule_of
from .runs import Run, collect_runs
from .statistics import DENSITY_TOLERANCE, Row, Stat, at_final_density, headline_metric, summarize
from .tables import best_column, markdown_table

__all__ = [
    "DEFAULT_METRIC",
    "DENSITY_TOLERANCE",
    "RANDOM_REGROWTH",
    "REPORT",
    "UNKNOWN_REGROWTH",
    "MetricSpec",
    "Row",
    "Run",
    "Stat",
    "at_final_density",
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
