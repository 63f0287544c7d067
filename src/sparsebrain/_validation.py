"""Argument checks shared by the library: every bad value gets an error naming the parameter and what is allowed."""

from __future__ import annotations

import difflib
import math
import operator
from collections.abc import Iterable

__all__ = ["MAX_SEED", "check_density", "check_fraction", "check_positive_int", "check_seed", "unknown_name_error"]

# Seeds are int64 (torch.Generator.manual_seed takes up to 2^64 - 1, but DDP broadcasts them as int64 and
# numpy's generators take no negative seed): [0, MAX_SEED] works everywhere.
MAX_SEED = 2**63 - 1


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


def _is_bool(value: object) -> bool:
    """True for ``bool`` and ``numpy.bool_`` (not a subclass of ``bool``, but ``float()`` takes it as 0 or 1)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _real(value: object, name: str, what: str, error: type[Exception] = TypeError) -> float:
    """``value`` as a float; ``error`` naming ``name`` for a bool, a string or anything ``float()`` refuses.

    A bool or a string would pass ``float()`` (``True`` -> 1.0, ``"0.5"`` -> 0.5) and hide a caller's mistake.
    """
    if _is_bool(value) or isinstance(value, str | bytes):
        raise error(f"{name} must be a number {what}, got {value!r} ({type(value).__name__})")
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise error(f"{name} must be a number {what}, got {value!r} ({type(value).__name__})") from None


def check_density(density: float, name: str = "density") -> float:
    """Returns ``density`` as a float if it is a number in (0, 1], else raises naming ``name``.

    Raises ``TypeError`` for a non-number (bools and strings included) and ``ValueError`` outside (0, 1].

    Example:
        >>> check_density(1)
        1.0
        >>> check_density("0.5")
        Traceback (most recent call last):
        TypeError: density must be a number in (0, 1], got '0.5' (str)
    """
    value = _real(density, name, "in (0, 1]")
    if not (0.0 < value <= 1.0) or math.isnan(value):
        raise ValueError(f"{name} must be in (0, 1], got {density!r}")
    return value


def check_fraction(value: float, name: str, *, closed_low: bool = True, closed_high: bool = True) -> float:
    """Returns ``value`` if it is a number in the interval [0, 1] (ends open or closed as asked), else raises
    ``ValueError`` naming ``name`` (a string or a bool too, like :func:`check_positive_int`)."""
    lo, hi = ("[" if closed_low else "("), ("]" if closed_high else ")")
    v = _real(value, name, f"in {lo}0, 1{hi}", ValueError)
    lo_ok = v >= 0.0 if closed_low else v > 0.0
    hi_ok = v <= 1.0 if closed_high else v < 1.0
    if not (lo_ok and hi_ok) or math.isnan(v):
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value!r}")
    return v


def check_seed(seed: int, name: str = "seed") -> int:
    """Returns ``seed`` as an int if it is an integer in [0, 2^63 - 1], else raises naming ``name``.

    Raises ``TypeError`` for a non-integer (a bool, a float, a string) and ``ValueError`` outside the range.

    Example:
        >>> check_seed(2**63)
        Traceback (most recent call last):
        ValueError: seed must be an integer in [0, 2^63 - 1], got 9223372036854775808
    """
    what = f"{name} must be an integer in [0, 2^63 - 1]"
    if _is_bool(seed):
        raise TypeError(f"{what}, got {seed!r} (bool)")
    try:
        value = operator.index(seed)  # ints and numpy integers, not floats
    except TypeError:
        raise TypeError(f"{what}, got {seed!r} ({type(seed).__name__})") from None
    if not 0 <= value <= MAX_SEED:
        raise ValueError(f"{what}, got {seed!r}")
    return value


def check_positive_int(value: int, name: str) -> int:
    """Returns ``value`` if it is an integer >= 1, else raises ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value
