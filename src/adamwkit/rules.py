r"""The rules that turn a training setup into a weight decay, with no training.

Each rule gives a weight decay in PyTorch's convention (:math:`\eta` the peak lr, :math:`B`
the batch size, :math:`N` the examples or tokens per epoch, :math:`T` the epochs, :math:`S`
the steps, :math:`D` the training tokens, :math:`P` the parameters):

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

:func:`training_setup` validates a setup and derives epochs and steps from each other.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import _calibration as _cal
from ._checks import ArgumentError, check_choice, check_lr, check_range
from ._constants import DECAY_SCALES
from ._format import count as _count
from ._format import fmt as _fmt
from .timescale import (
    convert_weight_decay,
    tau_epoch,
    tau_iter,
    tau_run,
    weight_decay_from_tau_epoch,
    weight_decay_from_tau_run,
)

__all__ = [
    "RULES",
    "RuleValue",
    "TrainingSetup",
    "calibrated_tau_epoch",
    "choose_rule",
    "power_lines_tau",
    "training_setup",
]

LH_LAMBDA_NORM = 0.05
TORCH_DEFAULT = 0.01
# Where Power Lines fit and checked its law: GPT-2-like models of 111M to 3.3B parameters;
# adamwkit warns outside this span of tokens per parameter.
POWER_LINES_PARAMS = (111e6, 3.3e9)
POWER_LINES_TPP = (1.0, 1000.0)

SOURCES = {
    "calibrated": "adamwkit's evidence studies (docs/evidence.md)",
    "wang-aitchison": "Wang & Aitchison, ICML 2025 (arXiv:2405.13698)",
    "power-lines": "Bergsma et al., Power Lines, NeurIPS 2025 (arXiv:2505.13738)",
    "loshchilov-hutter": "Loshchilov & Hutter, ICLR 2019 (arXiv:1711.05101), App. B.1",
    "torch-default": "torch.optim.AdamW default",
}
FITTED_ON = {
    "calibrated": "small MLPs, a CNN and a transformer, 5-fold CV (docs/evidence.md)",
    "wang-aitchison": "ResNets and ViTs on CIFAR and ImageNet; the recipes sit at 16 of 300 epochs",
    "power-lines": "single-pass LLM pre-training, 111M to 3.3B parameters, 1 to 1000 TPP",
    "loshchilov-hutter": "ResNets on CIFAR-10 and ImageNet32, 100 to 1800 epochs",
    "torch-default": "nothing: a library default",
}
FORMULAS = {
    "calibrated": "log tau_epoch = fit on the evidence: wd = B / (lr * tau_epoch * N)",
    "wang-aitchison": "tau_epoch = sqrt(T): wd = B / (lr * sqrt(T) * N)",
    "power-lines": "tau_run = 1.084 * TPP^-0.527: wd = B / (lr * tau_run * D)",
    "loshchilov-hutter": "wd_independent = 0.05 * sqrt(B / (N * T)): wd = that / lr",
    "torch-default": "wd = 0.01",
}


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
    low: float | None = None
    high: float | None = None

    @property
    def fitted_on(self) -> str:
        """Where the rule was fitted: the regime it speaks for."""
        return FITTED_ON[self.name]

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
            "low": self.low,
            "high": self.high,
            "fitted_on": self.fitted_on,
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


def calibrated_tau_epoch(s: TrainingSetup) -> tuple[float, float, float] | None:
    r"""The calibrated optimum :math:`\tau_{\mathrm{epoch}}` and its 80% band, or ``None``.

    Of the models of :math:`\log\tau^*_{\mathrm{epoch}}` in the logs of the epochs and
    the setup's sizes tried on the CV optima of the evidence studies (5-fold CV, cosine
    schedule, torch AdamW; ``docs/evidence.md``), the one that predicted task families
    left out of its fit best; the band is the 10% to 90% quantiles of its errors on those
    left-out families. Needs ``dataset_size`` with ``epochs`` or ``steps``.
    """
    if s.dataset_size is None or s.epochs is None:
        return None
    features = {
        "log_T": math.log(s.epochs),
        "log_N": math.log(s.dataset_size),
        "log_B": math.log(s.batch_size),
        "log_lr": math.log(s.lr),
        "log_steps_per_epoch": math.log(s.dataset_size / s.batch_size),
    }
    x = _cal.COEF.get("const", 0.0)
    for term, coef in _cal.COEF.items():
        if term != "const":
            x += coef * features[term]
    for term, coef in _cal.FIXED.items():
        x += coef * features[term]
    lo, hi = _cal.BAND
    return math.exp(x), math.exp(x + lo), math.exp(x + hi)


def _calibrated(s: TrainingSetup) -> RuleValue:
    if s.dataset_size is None or s.epochs is None:
        return _skipped("calibrated", _NEEDS_EPOCHS)
    if s.unit == "tokens":
        return _skipped("calibrated", "fitted on examples, not on token streams")
    if s.regime != "multi-epoch":
        return _skipped(
            "calibrated", f"fitted on multi-epoch runs ({_fmt(_cal.EPOCHS[0])} to "
            f"{_fmt(_cal.EPOCHS[1])} epochs), not single-pass training"
        )  # fmt: skip
    found = calibrated_tau_epoch(s)
    assert found is not None
    tau, tau_lo, tau_hi = found
    warnings: list[str] = []
    for what, count, (lo, hi) in (
        ("epochs", s.epochs, _cal.EPOCHS),
        ("examples", s.dataset_size, _cal.EXAMPLES),
    ):
        if not lo / 2 <= count <= hi * 2:
            warnings.append(
                f"{_fmt(count)} {what} lies outside {_fmt(lo)} to {_fmt(hi)}, the evidence "
                "it was fitted on: an extrapolation, verify with adamwkit tune"
            )
    wd = weight_decay_from_tau_epoch(tau, s.lr, s.batch_size, s.dataset_size)
    value = _rule_value(
        s, "calibrated", wd,
        f"tau_epoch {_fmt(tau)}, 80% of the evidence optima within {_fmt(tau_lo)} to "
        f"{_fmt(tau_hi)} epochs",
        tuple(warnings),
    )  # fmt: skip
    if not value.ran:
        return value
    return dataclasses.replace(
        value,
        low=weight_decay_from_tau_epoch(tau_hi, s.lr, s.batch_size, s.dataset_size),
        high=weight_decay_from_tau_epoch(tau_lo, s.lr, s.batch_size, s.dataset_size),
    )


RULES: dict[str, Callable[[TrainingSetup], RuleValue]] = {
    "calibrated": _calibrated,
    "wang-aitchison": _wang_aitchison,
    "power-lines": _power_lines,
    "loshchilov-hutter": _loshchilov_hutter,
    "torch-default": _torch_default,
}


def choose_rule(s: TrainingSetup, values: dict[str, RuleValue]) -> tuple[str, str]:
    """The rule that fits the regime, and why."""
    pl, wa, cal = values["power-lines"], values["wang-aitchison"], values["calibrated"]
    if pl.ran and s.regime == "single-pass":
        return "power-lines", (
            f"single-pass pre-training on {_count(s.tokens or 0)} tokens with "
            f"{_count(s.params or 0)} parameters ({_fmt(s.tokens_per_param)} tokens per "
            "parameter): Power Lines fit the optimal timescale of exactly this regime on "
            f"LLMs of 111M to 3.3B parameters ({pl.note})."
        )
    if cal.ran:
        c = _cal
        return "calibrated", (
            f"multi-epoch training ({_fmt(s.epochs)} epochs over {_count(s.dataset_size or 0)} "
            f"{s.unit}): of the models tried on {c.STUDIES} cross-validated studies of "
            f"{len(c.FAMILIES)} task families ({_fmt(c.EPOCHS[0])} to {_fmt(c.EPOCHS[1])} "
            f"epochs; docs/evidence.md), {c.MODEL} predicted families it had not seen best: "
            f"{cal.note}. Left out family by family, it was within 2x of the CV optimum on "
            f"{c.LOFO_WITHIN_2X:.0%} of the studies and its range held the optimum on "
            f"{c.LOFO_RANGE_HOLDS:.0%}: the optimum depends on the task as much as on these "
            "sizes, so verify it with adamwkit tune. One run without decay does better: "
            f"adamwkit tune --probe was within 2x on {c.PROBE_LOFO_WITHIN_2X:.0%} and its "
            f"range held {c.PROBE_LOFO_RANGE_HOLDS:.0%}."
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
