"""Objectives for the tune tests: the three examples (plain loop, Hugging Face Trainer,
Lightning), counted and with a failure injected on demand.

``ADAMWKIT_TEST_CALL_LOG`` names a file that gets one line per call (``pid weight_decay
fold``); ``ADAMWKIT_TEST_FAIL_WD`` makes every cross-validation run of that weight decay
raise; ``ADAMWKIT_TEST_SLEEP`` (seconds) slows every call. The examples live at the
repository root, which is put on ``sys.path``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _instrument(trial: Any) -> None:
    log = os.environ.get("ADAMWKIT_TEST_CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()} {trial.weight_decay!r} {trial.fold}\n")
    time.sleep(float(os.environ.get("ADAMWKIT_TEST_SLEEP", "0")))
    fail = os.environ.get("ADAMWKIT_TEST_FAIL_WD")
    if fail is not None and trial.weight_decay == float(fail) and not trial.is_refit:
        raise RuntimeError(f"injected failure at weight decay {trial.weight_decay}")


def plain(trial: Any) -> float:
    from examples import plain_loop

    _instrument(trial)
    return plain_loop.objective(trial)


def trainer(trial: Any) -> Any:
    from examples import hf_trainer

    _instrument(trial)
    return hf_trainer.objective(trial)


def lightning(trial: Any) -> float:
    from examples import lightning_module

    _instrument(trial)
    return lightning_module.objective(trial)


def nan_at_large_decay(trial: Any) -> float:
    """A loss that is NaN for weight decay >= 1, else the weight decay's distance from 0.3."""
    _instrument(trial)
    return (
        math.nan
        if trial.weight_decay >= 1
        else abs(trial.weight_decay - 0.3) + 0.1 * (trial.fold or 0)
    )


def quadratic(trial: Any) -> float:
    """A loss smallest at weight decay 0.3, slightly different per fold: instant and never
    non-finite, for the fault tests."""
    _instrument(trial)
    return abs(trial.weight_decay - 0.3) + 0.1 * (trial.fold or 0)


def _curve(trial: Any, turn: float, epochs: int) -> float:
    """Report a validation curve lowest at epoch ``turn`` (never, for ``turn > epochs``)
    whose level differs by fold; return its last point."""
    loss = math.nan
    for epoch in range(1, epochs + 1):
        loss = 1.0 + 0.1 * trial.fold + 0.01 * (epoch - turn) ** 2 / epochs
        trial.report(loss, epoch)
    return loss


def turns_at_12(trial: Any) -> float:
    """A run without decay that overfits from epoch 12 of 40."""
    return _curve(trial, 12, 40)


def still_falling(trial: Any) -> float:
    """A run without decay still improving at its last epoch (40)."""
    return _curve(trial, 80, 40)


def reports_nothing(trial: Any) -> float:
    return 1.0 + 0.1 * trial.fold
