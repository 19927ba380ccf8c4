"""Numbers as adamwkit shows them, in every renderer."""

from __future__ import annotations

import math

__all__ = ["count", "fmt", "plus_minus", "sig", "splits"]


def fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if 1e3 <= abs(x) < 1e9:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def count(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:,.3g}"


def splits(folds: int, repeats: int = 1) -> str:
    """How the runs split the examples, in words: ``"5-fold CV"``, ``"5-fold CV x 3"``,
    ``"one validation split"`` or ``"3 validation splits"`` (repeated holdout)."""
    if folds == 1:
        return "one validation split" if repeats == 1 else f"{repeats} validation splits"
    return f"{folds}-fold CV" + (f" x {repeats}" if repeats > 1 else "")


def sig(x: float | None, digits: int = 4) -> str:
    """``x`` to ``digits`` significant figures; ``"-"`` for a missing or NaN value,
    ``"inf"`` for an infinite one (zero decay's timescale). Every renderer of a tune
    result (terminal, HTML) uses it, so a number reads the same everywhere."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}g}"


def plus_minus(x: float | None, se: float | None, digits: int = 4, signed: bool = False) -> str:
    """``"0.2393 ± 0.021"``: a value and its standard error (2 figures); the value alone
    when there is no finite error, ``"-"`` when there is no value."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    value = f"{x:+.{digits}g}" if signed else sig(x, digits)
    if se is None or not math.isfinite(se):
        return value
    return f"{value} ± {se:.2g}"
