"""Which regrowth rule a run's method scores new links with, for the report's score-variance plot:
:func:`regrowth_rule_of`, :func:`regrowth_rule`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .statistics import Row

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
        from ...dst.methods import METHODS
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
