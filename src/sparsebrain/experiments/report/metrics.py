"""How each metric of a run is named, shown and ordered: :func:`higher_is_better`, :func:`metric_spec`."""

from __future__ import annotations

from dataclasses import dataclass

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
