"""Input validation shared by every public entry point.

Each check raises ``ValueError`` with one line that names the argument, the value
it got and the range it accepts, so the message is the documentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def _as_float(name: str, value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}={value!r} is invalid: expected a real number") from None


def check_range(
    name: str,
    value: Any,
    low: float = 0.0,
    high: float = math.inf,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``float(value)`` if it is a finite number in the interval, else raise.

    The interval is ``[low, high]``; ``low_open``/``high_open`` exclude an end.
    NaN and infinities are always rejected.
    """
    x = _as_float(name, value)
    ok = math.isfinite(x)
    ok = ok and (x > low if low_open else x >= low)
    ok = ok and (x < high if high_open else x <= high)
    if not ok:
        left = "(" if low_open else "["
        right = ")" if high_open or math.isinf(high) else "]"
        hi = "inf" if math.isinf(high) else f"{high:g}"
        raise ValueError(
            f"{name}={value!r} is invalid: expected a finite number in {left}{low:g}, {hi}{right}"
        )
    return x


def check_whole(name: str, value: Any, low: int = 0) -> int:
    """Return ``int(value)`` if it is a whole number >= ``low``, else raise."""
    x = check_range(name, value, low)
    if x != int(x):
        raise ValueError(f"{name}={value!r} is invalid: expected a whole number >= {low}")
    return int(x)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise naming them all."""
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={value!r} is invalid: expected one of {listed}")
    return value
