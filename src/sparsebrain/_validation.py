"""Argument checks shared by the library: every bad value gets an error naming the parameter and what is allowed."""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable

__all__ = ["check_density", "check_fraction", "check_positive_int", "unknown_name_error"]


def unknown_name_error(kind: str, name: str, valid: Iterable[str]) -> ValueError:
    """Builds the error for an unknown registry name, listing the valid names and suggesting the closest.

    Example:
        >>> str(unknown_name_error("method", "chst", ["cht", "chts"]))
        "unknown method 'chst'; valid methods: cht, chts. Did you mean 'cht'?"
    """
    names = sorted(valid)
    msg = f"unknown {kind} {name!r}; valid {kind}s: {', '.join(names)}."
    close = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    if close:
        msg += f" Did you mean {close[0]!r}?"
    return ValueError(msg)


def check_density(density: float, name: str = "density") -> float:
    """Returns ``density`` as a float if it lies in (0, 1], else raises ``ValueError`` naming ``name``."""
    try:
        value = float(density)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a number in (0, 1], got {density!r}") from None
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in (0, 1], got {density!r}")
    return value


def check_fraction(value: float, name: str, *, closed_low: bool = True, closed_high: bool = True) -> float:
    """Returns ``value`` if it lies in the interval [0, 1] (ends open or closed as asked), else raises."""
    v = float(value)
    lo_ok = v >= 0.0 if closed_low else v > 0.0
    hi_ok = v <= 1.0 if closed_high else v < 1.0
    if not (lo_ok and hi_ok) or math.isnan(v):
        lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")
    return v


def check_positive_int(value: int, name: str) -> int:
    """Returns ``value`` if it is an integer >= 1, else raises ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
