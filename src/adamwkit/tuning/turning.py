"""Where a run without weight decay turns (its validation loss lowest), and the weight
decay's timescale the evidence puts there: the probe's law (:mod:`.probe`, tune's
budget)."""

from __future__ import annotations

import math
from collections.abc import Sequence

from .. import _calibration as _cal

__all__ = ["probe_tau_epoch", "turning_epoch"]


def turning_epoch(curve: Sequence[float]) -> int:
    """The epoch (counted from 1) at which a validation curve is lowest: where a run
    without weight decay stops improving and starts to overfit. Non-finite points
    (a diverged run) are skipped; raises ``ValueError`` when none is finite.

    Example: ``turning_epoch([1.0, 0.6, 0.5, 0.55, 0.7]) == 3``.
    """
    finite = [(v, i) for i, v in enumerate(curve) if math.isfinite(v)]
    if not finite:
        raise ValueError(f"curve={list(curve)!r} is invalid: expected a finite loss")
    return min(finite)[1] + 1


def probe_tau_epoch(turn: float, epochs: float) -> tuple[float, float, float] | None:
    r"""The calibrated :math:`\tau^*_{\mathrm{epoch}} = c\,t_{\mathrm{turn}}` and its 80%
    range, or ``None`` when the curve did not turn (``turn`` in the last 10% of
    ``epochs``, :data:`adamwkit._calibration.PROBE_TURNED`).

    Example: with :math:`c = 2`, ``probe_tau_epoch(50, 300)`` gives 100 epochs.
    """
    if not (turn > 0 and epochs > 0):
        raise ValueError(f"turn={turn!r} and epochs={epochs!r} are invalid: expected positive")
    if turn >= _cal.PROBE_TURNED * epochs:
        return None
    features = {"log_turn": math.log(turn), "log_T": math.log(epochs)}
    x = sum(c * (1.0 if t == "const" else features[t]) for t, c in _cal.PROBE_COEF.items())
    lo, hi = _cal.PROBE_BAND
    return math.exp(x), math.exp(x + lo), math.exp(x + hi)
