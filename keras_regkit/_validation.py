"""Argument checks shared by every public object.

Each helper raises ``ValueError`` (bad value) or ``TypeError`` (bad type) with a
message of the form ``"<Owner>: <name> must be <what is allowed>, got <value>"``,
so a user sees at once which argument of which object is wrong.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable


def _fail(owner: str, name: str, allowed: str, value: Any, error=ValueError):
    raise error(f"{owner}: {name} must be {allowed}, got {value!r}")


def check_number(owner: str, name: str, value: Any) -> float:
    """Returns ``value`` as a float, or raises ``TypeError`` if it is not a real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        _fail(owner, name, "a real number", value, TypeError)
    return float(value)


def check_int(owner: str, name: str, value: Any, minimum: int | None = None) -> int:
    """Returns ``value`` as an int; ``TypeError`` for non-integers, ``ValueError`` below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(owner, name, "an integer", value, TypeError)
    if minimum is not None and value < minimum:
        _fail(owner, name, f"an integer >= {minimum}", value)
    return int(value)


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Checks ``low <= value <= high`` (bounds optional, inclusiveness selectable).

    The value must be finite: a missing bound means any finite number, never +-inf or NaN.
    """
    value = check_number(owner, name, value)
    ok = math.isfinite(value)
    if low is not None:
        ok = ok and (value >= low if low_inclusive else value > low)
    if high is not None:
        ok = ok and (value <= high if high_inclusive else value < high)
    if not ok:
        left = "[" if low_inclusive and low is not None else "("
        right = "]" if high_inclusive and high is not None else ")"
        lo = "-inf" if low is None else f"{low:g}"
        hi = "inf" if high is None else f"{high:g}"
        _fail(owner, name, f"in {left}{lo}, {hi}{right}", value)
    return value


def check_choice(owner: str, name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Checks that ``value`` is one of ``choices``."""
    choices = tuple(choices)
    if value not in choices:
        _fail(owner, name, "one of " + ", ".join(repr(c) for c in choices), value)
    return value


def check_pair(owner: str, name: str, value: Any, low=None, high=None) -> tuple[float, float]:
    """Checks a ``(min, max)`` range with ``min <= max`` and both inside ``[low, high]``."""
    try:
        first, second = value
    except (TypeError, ValueError):
        _fail(owner, name, "a pair (min, max)", value, TypeError)
    first = check_range(owner, f"{name}[0]", first, low, high)
    second = check_range(owner, f"{name}[1]", second, low, high)
    if first > second:
        _fail(owner, name, "a pair with min <= max", value)
    return first, second


def check_finite(owner: str, name: str, value: Any) -> Any:
    """Checks a finite real number (not NaN or +-inf) and returns it as given."""
    checked = check_number(owner, name, value)
    if not math.isfinite(checked):
        _fail(owner, name, "a finite real number", value)
    return value


def check_whole(owner: str, name: str, value: Any, minimum: int | None = None) -> Any:
    """Checks a whole number (an int, or a float such as ``3.0``) and returns it as given.

    Keras's callbacks take ``patience=3.0``; ``3.5`` is meaningless and rejected.
    """
    checked = check_number(owner, name, value)
    allowed = "a whole number" if minimum is None else f"a whole number >= {minimum}"
    if not checked.is_integer() or (minimum is not None and checked < minimum):
        _fail(owner, name, allowed, value)
    return value
