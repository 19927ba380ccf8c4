r"""A weight decay from what you already know, with no training: :func:`suggest`, :func:`explain`.

Rules from the literature, each turned into a weight decay in PyTorch's convention
(:math:`\eta` the peak lr, :math:`B` the batch size, :math:`N` the examples or tokens per
epoch, :math:`T` the epochs, :math:`S` the steps, :math:`D` the training tokens, :math:`P`
the parameters):

- ``"wang-aitchison"``, the EMA timescale (Wang & Aitchison, ICML 2025, arXiv:2405.13698):
  the optimal :math:`\tau_{\mathrm{epoch}} = B/(\eta\lambda N)` stays roughly constant as
  model and data grow, inside the window [1 epoch, T epochs]. adamwkit aims at the window's
  geometric middle, :math:`\tau_{\mathrm{epoch}} = \sqrt{T}`, so
  :math:`\lambda = B/(\eta\sqrt{T}N)`. The DeiT-B, Swin and ConvNeXt ImageNet recipes sit
  at 16.0 of 300 epochs (:math:`\sqrt{300} = 17.3`).
- ``"power-lines"`` (Bergsma et al., NeurIPS 2025, arXiv:2505.13738), for single-pass LLM
  pre-training: :math:`\tau_{\mathrm{opt}} = 1.084\,\mathrm{TPP}^{-0.527}` with
  :math:`\mathrm{TPP} = D/P`, so :math:`\lambda = B/(\eta\,\tau_{\mathrm{opt}} D)`.
- ``"loshchilov-hutter"``, normalized weight decay (Loshchilov & Hutter, ICLR 2019,
  arXiv:1711.05101, Appendix B.1): :math:`\lambda_{\mathrm{ind}} =
  \lambda_{\mathrm{norm}}\sqrt{B/(N T)}` with :math:`\lambda_{\mathrm{norm}} = 0.05`, in the
  independent convention, so :math:`\lambda = \lambda_{\mathrm{ind}}/\eta`.
- ``"torch-default"``: ``torch.optim.AdamW``'s 0.01, shown for comparison, never chosen.

:func:`explain` reads an existing configuration: its timescales, the equilibrium weight norm
:math:`\|w\| \approx \sqrt{\eta C/(2\lambda)}` and angular update
:math:`\sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}` rad/step of a scale-invariant tensor with
:math:`C` elements (Kosson et al., "Rotational Equilibrium", arXiv:2305.17212), and a verdict.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._checks import ArgumentError, check_choice, check_lr, check_range
from ._constants import DECAY_SCALES
from .schedules import Schedule, make_schedule
from .timescale import (
    convert_weight_decay,
    tau_epoch,
    tau_iter,
    tau_run,
    weight_decay_from_tau_epoch,
    weight_decay_from_tau_run,
)

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Explanation",
    "LayerEquilibrium",
    "RuleValue",
    "Suggestion",
    "TrainingSetup",
    "angular_update",
    "equilibrium_norm",
    "explain",
    "power_lines_tau",
    "suggest",
    "training_setup",
]

LH_LAMBDA_NORM = 0.05
TORCH_DEFAULT = 0.01
# Where Power Lines fit and checked its law: GPT-2-like models of 111M to 3.3B parameters;
# adamwkit warns outside this span of tokens per parameter.
POWER_LINES_PARAMS = (111e6, 3.3e9)
POWER_LINES_TPP = (1.0, 1000.0)
# Equilibrium is reached after a few timescales (Kosson et al.); three is 95% of the way.
EQUILIBRIUM_TAUS = 3.0

SOURCES = {
    "wang-aitchison": "Wang & Aitchison, ICML 2025 (arXiv:2405.13698)",
    "power-lines": "Bergsma et al., Power Lines, NeurIPS 2025 (arXiv:2505.13738)",
    "loshchilov-hutter": "Loshchilov & Hutter, ICLR 2019 (arXiv:1711.05101), App. B.1",
    "torch-default": "torch.optim.AdamW default",
}
FORMULAS = {
    "wang-aitchison": "tau_epoch = sqrt(T): wd = B / (lr * sqrt(T) * N)",
    "power-lines": "tau_run = 1.084 * TPP^-0.527: wd = B / (lr * tau_run * D)",
    "loshchilov-hutter": "wd_independent = 0.05 * sqrt(B / (N * T)): wd = that / lr",
    "torch-default": "wd = 0.01",
}


def _fmt(x: float | None) -> str:
    if x is None:
        return "-"
    if math.isinf(x):
        return "inf"
    if 1e3 <= abs(x) < 1e9:
        return f"{x:,.0f}"
    return f"{x:.3g}"


def _count(x: float) -> str:
    return f"{x:,.0f}" if x == int(x) else f"{x:,.3g}"


# ---------------------------------------------------------------------------- the setup


@dataclass(frozen=True)
class TrainingSetup:
    """A training run as the rules see it; build it with :func:`training_setup`.

    ``dataset_size`` counts examples (``unit="examples"``) or tokens (``unit="tokens"``),
    in the same unit as ``batch_size``. ``epochs`` and ``total_steps`` are derived from each
    other when the dataset size is known (``S = T * N / B``).
    """

    lr: float
    batch_size: float
    dataset_size: float | None
    unit: str
    epochs: float | None
    total_steps: float | None
    params: float | None
    decay_scale: str = "lr"
    beta1: float = 0.9

    @property
    def tokens(self) -> float | None:
        """Training tokens seen over the run (tokens per epoch times epochs)."""
        if self.unit != "tokens" or self.dataset_size is None or self.epochs is None:
            return None
        return self.dataset_size * self.epochs

    @property
    def tokens_per_param(self) -> float | None:
        """D / P, the quantity Power Lines' law is written in."""
        d = self.tokens
        return None if d is None or self.params is None else d / self.params

    @property
    def regime(self) -> str:
        """``"single-pass"`` (at most one epoch), ``"multi-epoch"``, or ``"unknown"``."""
        if self.epochs is None:
            return "unknown"
        return "single-pass" if self.epochs <= 1.0 + 1e-9 else "multi-epoch"

    def describe(self) -> str:
        """One line in the user's words."""
        parts = [f"lr {_fmt(self.lr)}", f"batch {_count(self.batch_size)} {self.unit}"]
        if self.dataset_size is not None:
            parts.append(f"dataset {_count(self.dataset_size)} {self.unit}")
        if self.epochs is not None:
            parts.append(f"{_fmt(self.epochs)} epochs")
        if self.total_steps is not None:
            parts.append(f"{_count(round(self.total_steps))} steps")
        if self.params is not None:
            parts.append(f"{_count(self.params)} parameters")
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "lr": self.lr,
            "batch_size": self.batch_size,
            "dataset_size": self.dataset_size,
            "unit": self.unit,
            "epochs": self.epochs,
            "total_steps": self.total_steps,
            "params": self.params,
            "tokens_per_param": self.tokens_per_param,
            "regime": self.regime,
            "decay_scale": self.decay_scale,
            "beta1": self.beta1,
        }


def _positive(name: str, value: Any) -> float | None:
    return None if value is None else check_range(name, value, 0.0, low_open=True)


def training_setup(
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
) -> TrainingSetup:
    """Validate a training description and derive epochs and steps from each other.

    Give ``dataset_size`` (examples) with ``epochs`` or ``steps``; or ``tokens``, the
    training tokens of the whole run (``batch_size`` then counts tokens per step, the run
    has ``tokens / batch_size`` steps), with ``params`` for pre-training; ``epochs`` (default
    1) then says over how many passes those tokens were seen.
    """
    lr_ = check_lr("lr", lr)
    b = check_range("batch_size", batch_size, 0.0, low_open=True)
    n, d = _positive("dataset_size", dataset_size), _positive("tokens", tokens)
    t = _positive("epochs", epochs)
    s = None if steps is None else check_range("steps", steps, 1.0)
    p = _positive("params", params)
    check_choice("decay_scale", decay_scale, DECAY_SCALES)
    b1 = check_range("beta1", beta1, 0.0, 1.0, high_open=True)
    if n is not None and d is not None:
        raise ArgumentError(
            f"dataset_size={dataset_size!r} and tokens={tokens!r} are exclusive: give "
            "dataset_size (examples) or tokens, not both",
            "dataset_size",
            "tokens",
        )
    if t is not None and s is not None:
        raise ArgumentError(
            f"epochs={epochs!r} and steps={steps!r} are exclusive: give epochs or steps, not both",
            "epochs",
            "steps",
        )
    if d is not None and s is not None:
        raise ArgumentError(
            f"tokens={tokens!r} and steps={steps!r} are exclusive: the tokens of a whole run "
            "set its steps (tokens / batch_size)"
        )
    unit = "tokens" if d is not None else "examples"
    if d is not None:
        t = 1.0 if t is None else t
        size: float | None = d / t
    else:
        size = n
    if size is not None and b > size:
        raise ValueError(
            f"batch_size={batch_size!r} is invalid: expected a number in (0, {size:g}] "
            f"(at most the {'tokens' if d is not None else 'dataset_size'})"
        )
    if size is not None:
        if t is not None:
            s = t * size / b
        elif s is not None:
            t = s * b / size
    for name, value in (("steps", s), ("epochs", t)):
        if value is not None and not math.isfinite(value):
            raise ValueError(
                f"{name} is infinite for batch_size={batch_size!r}, dataset_size="
                f"{dataset_size!r}, tokens={tokens!r}, epochs={epochs!r}, steps={steps!r}: "
                "expected sizes whose ratio is a finite number"
            )
    if p is not None and d is not None and not math.isfinite(d / p):
        raise ValueError(
            f"tokens={tokens!r} / params={params!r} is infinite: expected a finite ratio"
        )
    return TrainingSetup(lr_, b, size, unit, t, s, p, decay_scale, b1)


# ---------------------------------------------------------------------------- the rules


@dataclass(frozen=True)
class RuleValue:
    """One rule's weight decay for a setup, or why it could not run (``weight_decay=None``)."""

    name: str
    weight_decay: float | None
    weight_decay_independent: float | None
    source: str
    formula: str
    tau_iter: float | None = None
    tau_epoch: float | None = None
    tau_run: float | None = None
    note: str = ""
    warnings: tuple[str, ...] = ()

    @property
    def ran(self) -> bool:
        return self.weight_decay is not None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weight_decay": self.weight_decay,
            "weight_decay_independent": self.weight_decay_independent,
            "source": self.source,
            "formula": self.formula,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "tau_run": self.tau_run,
            "note": self.note,
            "warnings": list(self.warnings),
        }


def power_lines_tau(tokens_per_param: float) -> float:
    r"""Power Lines' optimal timescale, :math:`\tau_{\mathrm{opt}} = 1.084\,\mathrm{TPP}^{-0.527}`.

    A fraction of the run: :math:`\tau = B/(\eta\lambda D)`. Fitted with muP, linear decay to
    zero and 10% warmup on 111M to 3.3B-parameter models; the exponent is the robust part.
    Source: Bergsma et al. 2025 (arXiv:2505.13738). Worked numbers: TPP 20 -> 0.224,
    TPP 100 -> 0.096.
    """
    tpp = check_range("tokens_per_param", tokens_per_param, 0.0, low_open=True)
    return 1.084 * tpp**-0.527


def _window_warning(s: TrainingSetup, tau_e: float | None) -> tuple[str, ...]:
    """Wang & Aitchison's window for multi-epoch training: tau_epoch in [1, T]."""
    if s.regime != "multi-epoch" or tau_e is None or s.epochs is None:
        return ()
    if tau_e < 1.0:
        return (
            f"tau_epoch {_fmt(tau_e)} is under 1 epoch: the decay dominates (the weights "
            "average over less than one pass of the data)",
        )
    if tau_e > s.epochs:
        return (
            f"tau_epoch {_fmt(tau_e)} exceeds the {_fmt(s.epochs)} epochs trained: the decay "
            "barely acts",
        )
    return ()


def _rule_value(
    s: TrainingSetup, name: str, wd: float, note: str = "", warnings: tuple[str, ...] = ()
) -> RuleValue:
    if not math.isfinite(wd):
        return _skipped(name, "the weight decay overflows: check lr and the sizes")
    tau_e = None if s.dataset_size is None else tau_epoch(s.lr, wd, s.batch_size, s.dataset_size)
    return RuleValue(
        name=name,
        weight_decay=wd,
        weight_decay_independent=convert_weight_decay(wd, "torch", "independent", lr_peak=s.lr),
        source=SOURCES[name],
        formula=FORMULAS[name],
        tau_iter=tau_iter(s.lr, wd),
        tau_epoch=tau_e,
        tau_run=None if s.total_steps is None else tau_run(s.lr, wd, s.total_steps),
        note=note,
        warnings=warnings + _window_warning(s, tau_e),
    )


def _skipped(name: str, needs: str) -> RuleValue:
    return RuleValue(name, None, None, SOURCES[name], FORMULAS[name], note=f"skipped: {needs}")


_NEEDS_EPOCHS = "needs dataset_size with epochs or steps"


def _wang_aitchison(s: TrainingSetup) -> RuleValue:
    if s.dataset_size is None or s.epochs is None:
        return _skipped("wang-aitchison", _NEEDS_EPOCHS)
    warnings: tuple[str, ...] = ()
    if s.epochs >= 1.0:
        target = math.sqrt(s.epochs)
        note = f"aims at tau_epoch = sqrt({_fmt(s.epochs)}) = {_fmt(target)}"
    else:
        target = s.epochs
        note = "aims at tau_epoch = the epochs trained (the run is shorter than one epoch)"
        warnings = ("trains less than one epoch: the window [1 epoch, T] is empty",)
    if s.regime == "single-pass":
        warnings += (
            "single-pass training is the edge of the rule's window; Power Lines (needs "
            "tokens and params) is fitted to this regime",
        )
    wd = weight_decay_from_tau_epoch(target, s.lr, s.batch_size, s.dataset_size)
    return _rule_value(s, "wang-aitchison", wd, note, warnings)


def _power_lines(s: TrainingSetup) -> RuleValue:
    tpp = s.tokens_per_param
    if tpp is None or s.tokens is None:
        missing = "tokens and params"
        if s.unit == "tokens":
            missing = "params"
        return _skipped("power-lines", f"needs {missing}")
    tau = power_lines_tau(tpp)
    warnings: list[str] = []
    lo, hi = POWER_LINES_TPP
    if not lo <= tpp <= hi:
        warnings.append(
            f"{_fmt(tpp)} tokens per parameter lies outside {lo:g} to {hi:,.0f}, the span "
            "where the law was checked: an extrapolation"
        )
    lo, hi = POWER_LINES_PARAMS
    if s.params is not None and not lo <= s.params <= hi:
        warnings.append(
            f"{_count(s.params)} parameters lies outside the fitted model sizes (111M to 3.3B)"
        )
    if s.regime == "multi-epoch":
        warnings.append(f"fitted for one pass over the data, not {_fmt(s.epochs)} epochs")
    total_steps = s.tokens / s.batch_size
    wd = weight_decay_from_tau_run(tau, s.lr, total_steps)
    note = f"TPP {_fmt(tpp)}: tau_run = 1.084 * {_fmt(tpp)}^-0.527 = {_fmt(tau)}"
    return _rule_value(s, "power-lines", wd, note, tuple(warnings))


def _loshchilov_hutter(s: TrainingSetup) -> RuleValue:
    if s.dataset_size is None or s.epochs is None:
        return _skipped("loshchilov-hutter", _NEEDS_EPOCHS)
    wd_ind = LH_LAMBDA_NORM * math.sqrt(s.batch_size / (s.dataset_size * s.epochs))
    wd = convert_weight_decay(wd_ind, "independent", "torch", lr_peak=s.lr)
    warnings: tuple[str, ...] = ()
    if s.unit == "tokens":
        warnings = ("fitted on multi-epoch image classification, not on token streams",)
    note = "lambda_norm 0.05 (their good range: 0.025 to 0.05)"
    return _rule_value(s, "loshchilov-hutter", wd, note, warnings)


def _torch_default(s: TrainingSetup) -> RuleValue:
    return _rule_value(s, "torch-default", TORCH_DEFAULT, "for comparison; never chosen")


RULES: dict[str, Callable[[TrainingSetup], RuleValue]] = {
    "wang-aitchison": _wang_aitchison,
    "power-lines": _power_lines,
    "loshchilov-hutter": _loshchilov_hutter,
    "torch-default": _torch_default,
}


def _choose(s: TrainingSetup, values: dict[str, RuleValue]) -> tuple[str, str]:
    """The rule that fits the regime, and why."""
    pl, wa = values["power-lines"], values["wang-aitchison"]
    if pl.ran and s.regime == "single-pass":
        return "power-lines", (
            f"single-pass pre-training on {_count(s.tokens or 0)} tokens with "
            f"{_count(s.params or 0)} parameters ({_fmt(s.tokens_per_param)} tokens per "
            "parameter): Power Lines fit the optimal timescale of exactly this regime on "
            f"LLMs of 111M to 3.3B parameters ({pl.note})."
        )
    if wa.ran:
        unit = "tokens" if s.unit == "tokens" else "examples"
        why = (
            f"{s.regime} training ({_fmt(s.epochs)} epochs over {_count(s.dataset_size or 0)} "
            f"{unit}): Wang & Aitchison found the optimal timescale in epochs roughly "
            f"constant across model and data size, inside [1 epoch, {_fmt(s.epochs)} epochs]; "
            f"adamwkit {wa.note}, the geometric middle of that window (the DeiT-B, Swin and "
            "ConvNeXt recipes sit at 16 of 300 epochs; sqrt(300) = 17.3)."
        )
        if s.regime == "single-pass":
            why = (
                f"single-pass training ({_fmt(s.epochs)} epochs over "
                f"{_count(s.dataset_size or 0)} {unit}) with no params for Power "
                f"Lines: Wang & Aitchison's window ends at the run's length; adamwkit {wa.note}."
            )
        return "wang-aitchison", why
    overflowed = [v.name for v in (pl, wa) if "overflows" in v.note]
    if overflowed:
        raise ArgumentError(
            f"no rule gives a finite weight decay for lr={s.lr!r}, batch_size={s.batch_size!r} "
            f"and {_count(s.dataset_size or s.tokens or 0)} {s.unit}: the values overflow "
            "(check lr and the sizes)",
            "lr",
        )
    raise ArgumentError(
        "no rule can run on this setup: give dataset_size with epochs or steps "
        "for the timescale and normalized rules, or tokens with params for Power Lines",
        "dataset_size",
        "epochs",
        "steps",
        "tokens",
        "params",
    )


# ---------------------------------------------------------------------------- equilibrium


def angular_update(lr: float, weight_decay: float, beta1: float = 0.9) -> float:
    r"""Expected angular update per step at equilibrium, in radians.

    :math:`\sqrt{2\eta\lambda(1-\beta_1)/(1+\beta_1)}` for a scale-invariant tensor
    (``weight_decay`` in PyTorch's convention). Source: Kosson et al., "Rotational
    Equilibrium" (arXiv:2305.17212). Worked number: lr 6e-4, wd 0.1, beta1 0.9 -> 2.5e-3.
    """
    lr_ = check_lr("lr", lr)
    wd = check_range("weight_decay", weight_decay, 0.0)
    b1 = check_range("beta1", beta1, 0.0, 1.0, high_open=True)
    return math.sqrt(2.0 * lr_ * wd * (1.0 - b1) / (1.0 + b1))


def equilibrium_norm(lr: float, weight_decay: float, numel: int = 1) -> float:
    r"""Equilibrium norm of a scale-invariant tensor with ``numel`` elements under AdamW.

    :math:`\|w\| \approx \sqrt{\eta C/(2\lambda)}` (``weight_decay`` in PyTorch's convention;
    ``inf`` without decay). With ``numel=1`` this is the root-mean-square weight.
    Source: Kosson et al. (arXiv:2305.17212).
    """
    lr_ = check_lr("lr", lr)
    wd = check_range("weight_decay", weight_decay, 0.0)
    c = check_range("numel", numel, 0.0, low_open=True)
    return math.inf if wd == 0 else math.sqrt(lr_ * c / (2.0 * wd))


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Suggestion:
    """What :func:`suggest` returns: the weight decay, the rule behind it, and every rule's value.

    ``weight_decay`` is in PyTorch's convention (``decay_scale="lr"``) and
    ``weight_decay_independent`` in the paper's (``decay_scale="schedule"``); ``value`` is
    the one for the ``decay_scale`` asked for.
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

    @property
    def decay_scale(self) -> str:
        return self.setup.decay_scale

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

    def __str__(self) -> str:
        lines = [
            f"Suggested weight decay: {_fmt(self.value)} with decay_scale={self.decay_scale!r}"
            f" (PyTorch convention {_fmt(self.weight_decay)}, independent "
            f"{_fmt(self.weight_decay_independent)})",
            f"  rule: {self.rule}. {self.reason}",
            f"  timescales: tau_iter {_fmt(self.tau_iter)} steps, tau_epoch "
            f"{_fmt(self.tau_epoch)} epochs, tau_run {_fmt(self.tau_run)} of the run",
        ]
        for r in self.rules:
            value = _fmt(r.weight_decay) if r.ran else r.note
            lines.append(f"  {r.name}: {value}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


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
    return _suggest(s)


def _suggest(s: TrainingSetup) -> Suggestion:
    values = {name: rule(s) for name, rule in RULES.items()}
    chosen, reason = _choose(s, values)
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
    )


# ---------------------------------------------------------------------------- explain


@dataclass(frozen=True)
class LayerEquilibrium:
    """A decayed tensor's current norm next to the equilibrium norm Kosson et al. predict."""

    name: str
    numel: int
    weight_decay: float
    norm: float
    equilibrium_norm: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` returns: an existing weight decay read through the rules."""

    setup: TrainingSetup
    weight_decay: float
    weight_decay_independent: float
    tau_iter: float
    tau_epoch: float | None
    tau_run: float | None
    angular_update: float
    equilibrium_rms: float
    weights_remaining: float | None
    schedule: str
    verdict: str
    verdict_code: str
    suggestion: Suggestion | None
    layers: tuple[LayerEquilibrium, ...] = field(default=())
    notes: tuple[str, ...] = ()

    @property
    def decay_scale(self) -> str:
        return self.setup.decay_scale

    def to_dict(self) -> dict[str, Any]:
        sug = self.suggestion
        return {
            "weight_decay": self.weight_decay,
            "weight_decay_independent": self.weight_decay_independent,
            "decay_scale": self.decay_scale,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "tau_run": self.tau_run,
            "angular_update": self.angular_update,
            "equilibrium_rms": self.equilibrium_rms,
            "weights_remaining": self.weights_remaining,
            "schedule": self.schedule,
            "verdict": self.verdict,
            "verdict_code": self.verdict_code,
            "rule": sug.rule if sug else None,
            "suggested_weight_decay": sug.weight_decay if sug else None,
            "suggested_weight_decay_independent": sug.weight_decay_independent if sug else None,
            "rules": [r.to_dict() for r in sug.rules] if sug else [],
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
            "setup": self.setup.to_dict(),
        }

    def __str__(self) -> str:
        lines = [
            f"weight_decay {_fmt(self.weight_decay)} (PyTorch convention; independent "
            f"{_fmt(self.weight_decay_independent)})",
            f"  tau_iter {_fmt(self.tau_iter)} steps, tau_epoch {_fmt(self.tau_epoch)} epochs, "
            f"tau_run {_fmt(self.tau_run)} of the run",
            f"  equilibrium RMS weight {_fmt(self.equilibrium_rms)}, angular update "
            f"{_fmt(self.angular_update)} rad/step",
            f"  verdict: {self.verdict}",
        ]
        if self.suggestion is not None:
            lines.append(
                f"  suggest: {_fmt(self.suggestion.value)} ({self.suggestion.rule}) for "
                f"decay_scale={self.decay_scale!r}"
            )
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def _weights_remaining(s: TrainingSetup, wd: float, sched: Schedule | None) -> float | None:
    """Fraction of the initial weights left by decay alone: prod_t (1 - lr * s_t * wd)."""
    if s.total_steps is None:
        return None
    if s.lr * wd >= 1.0:
        return 0.0  # a step at the peak zeroes or flips the weights
    if sched is None:
        log = s.total_steps * math.log1p(-s.lr * wd)
    else:
        import numpy as np

        per_step = np.log1p(-s.lr * wd * sched.sample())
        log = float(per_step.mean()) * sched.total_steps
    return math.exp(log)


def _verdict(
    s: TrainingSetup, wd: float, tau_e: float | None, tau_r: float | None, remaining: float | None
) -> tuple[str, str]:
    if wd == 0:
        return "no-decay", (
            "no weight decay: the weights keep every update and the initialisation forever "
            "(infinite timescale)"
        )
    if s.lr * wd >= 1.0:
        return "dominates", (
            f"lr * weight_decay is {_fmt(s.lr * wd)}: each step at the peak lr multiplies the "
            f"weights by {_fmt(1 - s.lr * wd)}, zeroing or flipping them; the decay is far "
            "too strong (is the value in the other convention?)"
        )
    left = ""
    if remaining is not None:
        left = f"; decay alone leaves {100 * remaining:.3g}% of the initial weights at the end"
    if s.regime == "multi-epoch" and tau_e is not None and s.epochs is not None:
        if tau_e > s.epochs:
            return "barely-acts", (
                f"tau_epoch is {_fmt(tau_e)} epochs but you train {_fmt(s.epochs)}: the decay "
                f"barely acts (the run ends before the weights forget their start{left})"
            )
        if tau_e < 1.0:
            return "dominates", (
                f"tau_epoch is {_fmt(tau_e)} epochs, under one epoch: the decay dominates (the "
                "weights forget what they learnt earlier in the same epoch, so they average "
                "over only part of the data)"
            )
        return "in-window", (
            f"tau_epoch is {_fmt(tau_e)} epochs of the {_fmt(s.epochs)} trained: inside the "
            "window [1 epoch, total epochs] where Wang & Aitchison found the optimum"
        )
    if tau_r is None:
        return "unknown", "give epochs or steps to judge the timescale"
    tpp = s.tokens_per_param
    if tpp is not None:
        opt = power_lines_tau(tpp)
        ratio = tau_r / opt
        if ratio > 3.0:
            return "weaker-than-optimal", (
                f"tau_run is {_fmt(tau_r)} of the run, {_fmt(ratio)}x Power Lines' optimum "
                f"{_fmt(opt)} at {_fmt(tpp)} tokens per parameter: the decay is weaker than "
                "the fitted optimum"
            )
        if ratio < 1.0 / 3.0:
            return "stronger-than-optimal", (
                f"tau_run is {_fmt(tau_r)} of the run, {_fmt(1 / ratio)}x shorter than Power "
                f"Lines' optimum {_fmt(opt)} at {_fmt(tpp)} tokens per parameter: the decay is "
                "stronger than the fitted optimum"
            )
        return "near-optimal", (
            f"tau_run is {_fmt(tau_r)} of the run, within 3x of Power Lines' optimum "
            f"{_fmt(opt)} at {_fmt(tpp)} tokens per parameter"
        )
    floor = power_lines_tau(1e4)
    if tau_r < floor:
        return "dominates", (
            f"tau_run is {_fmt(tau_r)} of the run ({_fmt(tau_r * (s.total_steps or 0))} "
            f"steps): shorter than Power Lines' optimum even at 10,000 tokens per parameter "
            f"({_fmt(floor)}); the decay dominates"
        )
    if tau_r > 1.0:
        return "barely-acts", (
            f"tau_run is {_fmt(tau_r)} runs: longer than the whole run, so the decay barely "
            f"acts{left}"
        )
    return "in-window", f"tau_run is {_fmt(tau_r)} of the run: the decay acts within the run"


def _convention_hint(s: TrainingSetup, wd_torch: float, code: str, given: float) -> str | None:
    """Say so when reading the value in the other convention lands it in the window."""
    if s.dataset_size is None or s.epochs is None or s.regime != "multi-epoch":
        return None
    if code == "barely-acts" and s.decay_scale == "lr":
        alt = convert_weight_decay(given, "independent", "torch", lr_peak=s.lr)
        other = "does not multiply decay by the learning rate (the AdamW paper, Composer)"
        flag = "decay_scale='schedule'"
    elif code == "dominates" and s.decay_scale == "schedule":
        alt = given  # read in PyTorch's convention, the value is used as it is
        other = "multiplies decay by the learning rate (PyTorch, optax, Keras)"
        flag = "decay_scale='lr'"
    else:
        return None
    alt_tau = tau_epoch(s.lr, alt, s.batch_size, s.dataset_size)
    if not 1.0 <= alt_tau <= s.epochs:
        return None
    return (
        f"if {_fmt(given)} comes from a codebase that {other}, it means weight_decay "
        f"{_fmt(alt)} in PyTorch's convention (tau_epoch {_fmt(alt_tau)}): pass {flag}"
    )


def explain(
    weight_decay: float,
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
    schedule: Schedule | str | None = None,
    warmup_steps: int = 0,
    model: nn.Module | None = None,
) -> Explanation:
    """Read an existing weight decay: its timescales, equilibrium and a verdict in plain words.

    ``weight_decay`` is in the convention of ``decay_scale``. ``schedule`` (a
    :class:`~adamwkit.schedules.Schedule` or a name with ``warmup_steps``) refines how much
    of the initial weights decay leaves; without it the lr is taken as constant. With a
    ``model``, every decayed tensor's norm is set beside its predicted equilibrium norm
    ``sqrt(lr * numel / (2 * wd))`` (Kosson et al., arXiv:2305.17212), using
    :func:`adamwkit.param_groups`' rule.
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
    given = check_range("weight_decay", weight_decay, 0.0)
    wd = convert_weight_decay(given, s.decay_scale, "torch", lr_peak=s.lr)
    sched = _resolve_schedule(schedule, s, warmup_steps)
    tau_e = None if s.dataset_size is None else tau_epoch(s.lr, wd, s.batch_size, s.dataset_size)
    tau_r = None if s.total_steps is None else tau_run(s.lr, wd, s.total_steps)
    remaining = _weights_remaining(s, wd, sched)
    code, verdict = _verdict(s, wd, tau_e, tau_r, remaining)
    notes: list[str] = []
    hint = _convention_hint(s, wd, code, given)
    if hint:
        notes.append(hint)
    try:
        sug: Suggestion | None = _suggest(s)
    except ValueError as err:
        sug = None
        notes.append(str(err))
    if sched is None and s.total_steps is not None:
        notes.append("lr taken as constant; pass a schedule to refine the decay")
    return Explanation(
        setup=s,
        weight_decay=wd,
        weight_decay_independent=convert_weight_decay(wd, "torch", "independent", lr_peak=s.lr),
        tau_iter=tau_iter(s.lr, wd),
        tau_epoch=tau_e,
        tau_run=tau_r,
        angular_update=angular_update(s.lr, wd, s.beta1),
        equilibrium_rms=equilibrium_norm(s.lr, wd),
        weights_remaining=remaining,
        schedule=sched.describe() if sched is not None else "constant lr (assumed)",
        verdict=verdict,
        verdict_code=code,
        suggestion=sug,
        layers=_layers(model, s, given, wd) if model is not None else (),
        notes=tuple(notes),
    )


def _resolve_schedule(
    schedule: Schedule | str | None, s: TrainingSetup, warmup_steps: int
) -> Schedule | None:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if s.total_steps is None:
        raise ArgumentError(
            f"schedule={schedule!r} needs the run's length: give epochs or steps with the "
            "dataset size",
            "epochs",
            "steps",
        )
    return make_schedule(schedule, max(1, round(s.total_steps)), warmup_steps)


def _layers(
    model: nn.Module, s: TrainingSetup, given: float, wd_torch: float
) -> tuple[LayerEquilibrium, ...]:
    from .groups import param_groups

    groups = param_groups(model, weight_decay=given if given > 0 else 1.0)
    params = dict(model.named_parameters())
    rows = []
    for entry in groups.plan.decayed:
        if given == 0:
            continue
        entry_wd = wd_torch * (entry.weight_decay or 0.0) / given
        norm = float(params[entry.name].detach().float().norm()) if entry.name in params else 0.0
        rows.append(
            LayerEquilibrium(
                name=entry.name,
                numel=entry.numel,
                weight_decay=entry_wd,
                norm=norm,
                equilibrium_norm=equilibrium_norm(s.lr, entry_wd, entry.numel),
            )
        )
    return tuple(rows)
