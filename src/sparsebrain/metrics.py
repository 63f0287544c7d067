"""Evaluation metrics that are not a loss, apart from the data they are computed on: corpus BLEU for translation
(:func:`bleu`)."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["bleu"]


def bleu(hypotheses: Sequence[str], references: Sequence[str]) -> float:
    """Corpus BLEU (0-100) of detokenized hypotheses against one reference each, with sacreBLEU's defaults.

    Raises:
        ImportError: ``sacrebleu`` is missing (``pip install sacrebleu``).
        ValueError: the two lists differ in length or are empty.

    Example:
        >>> round(bleu(["Y lloró Jesús."], ["Y lloró Jesús."]), 6)  # sacreBLEU's float can be 100.00000000000004
        100.0
    """
    try:
        import sacrebleu  # lazy: only translation experiments need it
    except ImportError as e:
        raise ImportError("bleu() needs sacrebleu: `pip install sacrebleu`") from e
    if len(hypotheses) != len(references):
        raise ValueError(f"bleu: {len(hypotheses)} hypotheses but {len(references)} references")
    if not hypotheses:
        raise ValueError("bleu: no sentences")
    return float(sacrebleu.corpus_bleu(list(hypotheses), [list(references)]).score)
