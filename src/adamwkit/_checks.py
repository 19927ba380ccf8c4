"""Input validation shared by every public entry point.

Each check raises :class:`ArgumentError` (a ``ValueError``) with one line that names the
argument, the value it got and the range it accepts, so the message is the documentation.

Messages name *arguments* as the Python API spells them (``batch_size``, ``lr``); the
command line maps those names to its flags (``--batch-size``) in one place,
``adamwkit.cli``. An ``ArgumentError`` lists the arguments its message names, so the CLI
knows which words to map; a plain ``ValueError`` gets only ``name=value`` mapped.
"""

from __future__ import annotations

import math
import struct
import sys
from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from ._constants import LR_MAX, LR_MIN

__all__ = [
    "ArgumentError",
    "check_choice",
    "check_lr",
    "check_range",
    "check_whole",
    "is_subnormal",
    "listing",
]


class ArgumentError(ValueError):
    """A bad argument: ``names`` are the arguments the message speaks of."""

    def __init__(self, message: str, *names: str) -> None:
        super().__init__(message)
        self.names: tuple[str, ...] = names


def is_subnormal(x: float) -> bool:
    """Whether ``x`` is a nonzero float smaller in size than the smallest normal one.

    Read from the bits, not by comparison: training runs with subnormals flushed to zero
    (``torch.set_flush_denormal``, which sets the CPU's denormals-are-zero mode), and there
    ``1e-320 == 0`` is True, so a comparison cannot tell.
    """
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    exponent, mantissa = (bits >> 52) & 0x7FF, bits & ((1 << 52) - 1)
    return exponent == 0 and mantissa != 0


def _subnormal_text(x: float) -> str:
    """A subnormal as ``1e-320``, computed in decimal: with subnormals flushed to zero,
    ``repr`` prints ``0.0``."""
    bits = struct.unpack("<Q", struct.pack("<d", x))[0]
    value = Decimal(bits & ((1 << 52) - 1)) * Decimal(2) ** -1074
    mantissa, exponent = f"{value:.2e}".split("e")
    return f"{'-' if bits >> 63 else ''}{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def _as_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ArgumentError(f"{name}={value!r} is invalid: expected a real number", name)
    try:
        x = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ArgumentError(f"{name}={value!r} is invalid: expected a real number", name) from None
    if is_subnormal(x):
        raise ArgumentError(
            f"{name}={_subnormal_text(x)} is invalid: it is below the smallest normal float "
            f"({sys.float_info.min:.3g}) and would be read as 0; give 0 or a larger number",
            name,
        )
    return x


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
        raise ArgumentError(
            f"{name}={value!r} is invalid: expected a finite number in "
            f"{left}{_bound(low)}, {_bound(high)}{right}",
            name,
        )
    return x


def _bound(x: float) -> str:
    """A range's end as people write it: ``4294967295``, ``1e-12``, ``inf``."""
    if math.isinf(x):
        return "inf"
    if x == int(x) and abs(x) < 1e16:
        return str(int(x))
    return f"{x:g}"


def check_whole(name: str, value: Any, low: int = 0, high: float = math.inf) -> int:
    """Return ``int(value)`` if it is a whole number in ``[low, high]``, else raise (one
    line: ``folds=1 is invalid: expected a whole number >= 2``)."""
    top = "" if math.isinf(high) else f" and <= {_bound(high)}"
    whole = f"{name}={value!r} is invalid: expected a whole number >= {low}{top}"
    x = _as_float(name, value)  # a real number (not a subnormal), or its own error
    if not math.isfinite(x) or x != int(x) or not low <= x <= high:
        raise ArgumentError(whole, name)
    return int(x)


def check_lr(name: str, value: Any) -> float:
    """A peak learning rate: a finite number in [:data:`LR_MIN`, :data:`LR_MAX`]."""
    x = _as_float(name, value)
    if not (math.isfinite(x) and LR_MIN <= x <= LR_MAX):
        raise ArgumentError(
            f"{name}={value!r} is invalid: expected a learning rate in [{LR_MIN:g}, {LR_MAX:g}]",
            name,
        )
    return x


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """Return ``value`` if it is one of ``choices``, else raise naming them all."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set-like
        ok = False
    if not ok:
        listed = ", ".join(repr(c) for c in choices)
        raise ArgumentError(f"{name}={value!r} is invalid: expected one of {listed}", name)
    return value


def listing(values: Sequence[float], most: int = 6) -> str:
    """``[0, 0.001, 0.01, ...]``: a list of numbers, shortened for a message."""
    shown = ", ".join(f"{v:g}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"
