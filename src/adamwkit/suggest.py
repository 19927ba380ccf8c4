r"""A weight decay from what you already know, with no training: :func:`suggest`.

The rules live in :mod:`adamwkit.rules`; :func:`suggest` computes every one that can run,
picks the one that fits the regime, and returns a :class:`Suggestion`. Reading an
existing weight decay is :func:`adamwkit.explain`; both are rendered by
:mod:`adamwkit.render`.

Every value comes with the regime it assumes and its total decay over the run,
:math:`D = \sum_t \eta_t\lambda` (:func:`adamwkit.rules.total_decay`, at the peak lr: the
schedule is not known here), with the factor :math:`e^{-D}` decay alone applies to the
weights. Guard rails (:func:`adamwkit.rules.guard`): a fine-tune (``pretrained`` or
``adapters``) is never proposed a value with :math:`D` above
:data:`adamwkit.rules.D_MAX_FINETUNE` (0.03: no study of docs/evidence-finetune.md lost
more than 1.4% against no decay up to it); a setup that looks like a fine-tune but was not
said to be one gets a warning, and no "Use it" line for a value above that bound.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from . import render
from .equilibrium import angular_update
from .rules import (
    BOUND_SOURCE,
    D_MAX_FINETUNE,
    RuleValue,
    TrainingSetup,
    bound_text,
    choose_rule,
    decays_by,
    looks_like_finetune,
    rule_values,
    training_setup,
)

__all__ = ["Suggestion", "suggest", "suggest_for_setup"]


@dataclass(frozen=True)
class Suggestion:
    r"""What :func:`suggest` returns: the weight decay, the rule behind it, and every rule's value.

    ``weight_decay`` is in PyTorch's convention (``decay_scale="lr"``) and
    ``weight_decay_independent`` in the paper's (``decay_scale="schedule"``); ``value`` is
    the one for the ``decay_scale`` asked for. ``low`` and ``high`` (PyTorch's convention;
    ``low_value`` and ``high_value`` in ``decay_scale``'s) bound the range that held 80% of
    the CV optima of the evidence studies around the rule's value, or, for a fine-tune, the
    fine-tuning rule's range (``None`` when the rule used has no range).
    ``total_decay``, ``low_total_decay``, ``high_total_decay``: :math:`D = \eta\lambda S` of
    each at the peak lr (``None`` when the run's length is unknown); ``usable`` is false
    when the value must not be copied as it is (a setup that looks like a fine-tune, with
    :math:`D` above :data:`~adamwkit.rules.D_MAX_FINETUNE`): no "Use it" line is shown.
    ``regime_warning``: the warning a setup that looks like a fine-tune gets (also the first
    of ``warnings``), ``""`` otherwise.
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
    usable: bool = True
    regime_warning: str = ""

    @property
    def decay_scale(self) -> str:
        return self.setup.decay_scale

    @property
    def regime(self) -> str:
        """The regime the value assumes (:attr:`adamwkit.rules.TrainingSetup.regime`)."""
        return self.setup.regime

    @property
    def regime_label(self) -> str:
        return self.setup.regime_label

    @property
    def d_max_finetune(self) -> float:
        """The bound on a fine-tune's total decay (:data:`adamwkit.rules.D_MAX_FINETUNE`)."""
        return D_MAX_FINETUNE

    @property
    def bound_text(self) -> str:
        """The bound and where it comes from, in words (:func:`adamwkit.rules.bound_text`)."""
        return bound_text()

    @property
    def total_decay(self) -> float | None:
        r""":math:`D = \eta\lambda S` of ``weight_decay``, at the peak lr."""
        return self.setup.total_decay(self.weight_decay)

    @property
    def low_total_decay(self) -> float | None:
        return None if self.low is None else self.setup.total_decay(self.low)

    @property
    def high_total_decay(self) -> float | None:
        return None if self.high is None else self.setup.total_decay(self.high)

    @property
    def decays_by(self) -> str | None:
        """How much decay alone takes off the weights over the run at ``weight_decay``
        (:func:`adamwkit.rules.decays_by`); ``None`` when the run's length is unknown."""
        d = self.total_decay
        return None if d is None else decays_by(d)

    @property
    def low_decays_by(self) -> str | None:
        """:attr:`decays_by` at ``low``."""
        d = self.low_total_decay
        return None if d is None else decays_by(d)

    @property
    def high_decays_by(self) -> str | None:
        """:attr:`decays_by` at ``high``."""
        d = self.high_total_decay
        return None if d is None else decays_by(d)

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
            "regime": self.regime,
            "regime_label": self.regime_label,
            "total_decay": self.total_decay,
            "low_total_decay": self.low_total_decay,
            "high_total_decay": self.high_total_decay,
            "shrink_factor": None if self.total_decay is None else math.exp(-self.total_decay),
            "total_decay_lr": "peak",
            "d_max_finetune": D_MAX_FINETUNE,
            "usable": self.usable,
            "regime_warning": self.regime_warning or None,
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
    pretrained: bool = False,
    adapters: bool = False,
) -> Suggestion:
    r"""A weight decay for a training setup, from the rule that fits its regime.

    Multi-epoch training from scratch (``dataset_size`` with ``epochs`` or ``steps``) uses
    the calibrated rule (Wang & Aitchison's timescale); single-pass pre-training (``tokens``
    with ``params``) uses Power Lines. A fine-tune (``pretrained=True``, or
    ``adapters=True`` for LoRA-style adapters) uses the fine-tuning rule, a
    fixed total decay :math:`D = \eta\lambda S`, and no value whose :math:`D` exceeds
    :data:`adamwkit.rules.D_MAX_FINETUNE` (0.03) is proposed or shown as usable. Every rule
    that can run is computed side by side; a rule missing a quantity is skipped with a note
    naming it. Raises ``ValueError`` on bad input or when no rule can run.

    Example: ``suggest(lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)``
    gives tau_epoch = sqrt(100) = 10, so wd = 256 / (1e-3 * 10 * 100,000) = 0.256.
    ``suggest(lr=2e-5, batch_size=32, dataset_size=10_000, epochs=3, pretrained=True)``:
    D = 3e-3 over 937.5 steps, so wd = 3e-3 / (2e-5 * 937.5) = 0.16.
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
        pretrained=pretrained,
        adapters=adapters,
    )
    return suggest_for_setup(s)


def suggest_for_setup(s: TrainingSetup) -> Suggestion:
    """The suggestion for a setup already validated by :func:`adamwkit.rules.training_setup`
    (what :func:`suggest` returns after its checks; :func:`adamwkit.explain` shares it)."""
    values = rule_values(s)
    chosen, reason = choose_rule(s, values)
    best = values[chosen]
    assert best.weight_decay is not None and best.weight_decay_independent is not None
    warnings, usable = _looks_like_finetune(s, best)
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
        warnings=warnings + best.warnings,
        regime_warning=warnings[0] if warnings else "",
        notes=tuple(notes),
        low=best.low,
        high=best.high,
        usable=usable,
    )


def _looks_like_finetune(s: TrainingSetup, best: RuleValue) -> tuple[tuple[str, ...], bool]:
    """The warning for a from-scratch setup that looks like a fine-tune, and whether the
    chosen value may still be shown as "Use it" (its total decay within the fine-tune bound)."""
    if not looks_like_finetune(s) or best.total_decay is None:
        return (), True
    length = f"{s.epochs:g} epochs" if s.epochs is not None else f"{s.total_steps:,.0f} steps"
    text = (
        f"this looks like a fine-tune ({length} at lr {s.lr:g}); if the model is pretrained, "
        "pass --pretrained (pretrained=True): from-scratch rules would decay its weights by "
        f"{decays_by(best.total_decay)}"
    )
    usable = best.total_decay <= D_MAX_FINETUNE
    if not usable:
        text += (
            f", above the bound D <= {D_MAX_FINETUNE:g} adamwkit keeps to for fine-tunes "
            f"({BOUND_SOURCE})"
        )
    return (text,), usable
