"""A weight decay from what you already know, with no training: :func:`suggest`.

The rules live in :mod:`adamwkit.rules`; :func:`suggest` computes every one that can run,
picks the one that fits the regime, and returns a :class:`Suggestion`. Reading an
existing weight decay is :func:`adamwkit.explain`; both are rendered by
:mod:`adamwkit.render`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import render
from .equilibrium import angular_update
from .rules import RULES, RuleValue, TrainingSetup, choose_rule, training_setup

__all__ = ["Suggestion", "suggest", "suggest_for_setup"]


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` returns: the weight decay, the rule behind it, and every rule's value.

    ``weight_decay`` is in PyTorch's convention (``decay_scale="lr"``) and
    ``weight_decay_independent`` in the paper's (``decay_scale="schedule"``); ``value`` is
    the one for the ``decay_scale`` asked for. ``low`` and ``high`` (PyTorch's convention;
    ``low_value`` and ``high_value`` in ``decay_scale``'s) bound the range that held 80% of
    the CV optima of the evidence studies around the rule's value (``None`` when the rule
    used has no calibrated range).
    """

    setup: TrainingSetup
    rule: str
    reason: str
    weight_decay: float
    weight_decay_independent: float
    tau_iter: float
    tau_epoch: float | None
    tau_run: float | None
    angular_update: float
    rules: tuple[RuleValue, ...]
    warnings: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None

    @property
    def decay_scale(self) -> str:
        return self.setup.decay_scale

    def _in_scale(self, wd: float | None) -> float | None:
        if wd is None or self.decay_scale != "schedule":
            return wd
        return wd * self.setup.lr

    @property
    def low_value(self) -> float | None:
        """``low`` in the convention of ``decay_scale``."""
        return self._in_scale(self.low)

    @property
    def high_value(self) -> float | None:
        """``high`` in the convention of ``decay_scale``."""
        return self._in_scale(self.high)

    @property
    def value(self) -> float:
        """The weight decay to pass to ``AdamW(..., decay_scale=self.decay_scale)``."""
        if self.decay_scale == "schedule":
            return self.weight_decay_independent
        return self.weight_decay

    def to_dict(self) -> dict[str, Any]:
        return {
            "weight_decay": self.weight_decay,
            "weight_decay_independent": self.weight_decay_independent,
            "decay_scale": self.decay_scale,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "low_value": self.low_value,
            "high_value": self.high_value,
            "rule": self.rule,
            "reason": self.reason,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "tau_run": self.tau_run,
            "angular_update": self.angular_update,
            "rules": [r.to_dict() for r in self.rules],
            "warnings": list(self.warnings),
            "notes": list(self.notes),
            "setup": self.setup.to_dict(),
        }

    def blocks(self) -> list[render.Block]:
        """What ``str()`` and the ``adamwkit suggest`` command show (:mod:`adamwkit.render`)."""
        return render.suggestion(self)

    def __str__(self) -> str:
        return render.plain(self.blocks())


def suggest(
    *,
    lr: float,
    batch_size: float,
    dataset_size: float | None = None,
    epochs: float | None = None,
    steps: float | None = None,
    tokens: float | None = None,
    params: float | None = None,
    decay_scale: str = "lr",
    beta1: float = 0.9,
) -> Suggestion:
    """A weight decay for a training setup, from the rule that fits its regime.

    Multi-epoch training (``dataset_size`` with ``epochs`` or ``steps``) uses Wang &
    Aitchison's timescale; single-pass pre-training (``tokens`` with ``params``) uses Power
    Lines. Every rule that can run is computed side by side; a rule missing a quantity is
    skipped with a note naming it. Raises ``ValueError`` on bad input or when no rule can run.

    Example: ``suggest(lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)``
    gives tau_epoch = sqrt(100) = 10, so wd = 256 / (1e-3 * 10 * 100,000) = 0.256.
    """
    s = training_setup(
        lr=lr,
        batch_size=batch_size,
        dataset_size=dataset_size,
        epochs=epochs,
        steps=steps,
        tokens=tokens,
        params=params,
        decay_scale=decay_scale,
        beta1=beta1,
    )
    return suggest_for_setup(s)


def suggest_for_setup(s: TrainingSetup) -> Suggestion:
    """The suggestion for a setup already validated by :func:`adamwkit.rules.training_setup`
    (what :func:`suggest` returns after its checks; :func:`adamwkit.explain` shares it)."""
    values = {name: rule(s) for name, rule in RULES.items()}
    chosen, reason = choose_rule(s, values)
    best = values[chosen]
    assert best.weight_decay is not None and best.weight_decay_independent is not None
    notes: list[str] = []
    if s.params is not None and s.unit == "examples":
        notes.append("params is used only with tokens (tokens per parameter, for Power Lines)")
    if s.decay_scale == "schedule":
        notes.append(
            "decay_scale='schedule': pass the independent value; each step multiplies the "
            "weights by 1 - (lr_t / lr_peak) * weight_decay"
        )
    return Suggestion(
        setup=s,
        rule=chosen,
        reason=reason,
        weight_decay=best.weight_decay,
        weight_decay_independent=best.weight_decay_independent,
        tau_iter=best.tau_iter if best.tau_iter is not None else math.inf,
        tau_epoch=best.tau_epoch,
        tau_run=best.tau_run,
        angular_update=angular_update(s.lr, best.weight_decay, s.beta1),
        rules=tuple(values.values()),
        warnings=best.warnings,
        notes=tuple(notes),
        low=best.low,
        high=best.high,
    )
