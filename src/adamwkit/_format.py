"""Numbers as adamwkit shows them, in every renderer."""

from __future__ import annotations

import math

__all__ = ["count", "fmt", "splits"]


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
