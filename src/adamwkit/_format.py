"""Numbers as adamwkit shows them, in every renderer."""

from __future__ import annotations

import math

__all__ = ["count", "fmt"]


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
