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
- ``"finetune"``, for fine-tunes of pretrained weights (``pretrained=True``) or of adapters
  (``adapters=True``), from adamwkit's fine-tuning evidence (``docs/evidence-finetune.md``:
  13 full and 3 LoRA studies of small models, where the loss is flat in :math:`D` up to
  about 0.02): a fixed total decay :math:`D = \eta\lambda S` (:func:`total_decay`) of 3e-3,
  range 3e-4 to 0.03 (from where practitioners sit, wd 0.01 to 0.1 at lr 2e-5 over 938
  steps, to the evidence's bound), so :math:`\lambda = D/(\eta S)`; decay toward zero,
  which the evidence favours over decay toward the pretrained weights.

Regimes (:attr:`TrainingSetup.regime`): from scratch multi-epoch, single-pass (LLM
pre-training), fine-tune (full) and fine-tune (adapters). The rules above the last were
fitted from scratch, where a total decay :math:`D` of many units is normal (the weights reach
their equilibrium many timescales in); applied to a fine-tune they decay the pretrained
weights away (lr 2e-5, 3 epochs of 10,000 at batch 32: wd 92.4, :math:`D` = 1.73, the
weights shrink to :math:`e^{-1.73}` = 18%). So a fine-tune is never proposed a value with
:math:`D` above :data:`D_MAX_FINETUNE` (:func:`guard`).

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
    "D_MAX_FINETUNE",
    "REGIMES",
    "RULES",
    "RuleValue",
    "TrainingSetup",
    "bound_text",
    "calibrated_tau_epoch",
    "choose_rule",
    "decays_by",
    "finetune_band",
    "guard",
    "looks_like_finetune",
    "power_lines_tau",
    "rule_values",
    "shrink_factor",
    "total_decay",
    "training_setup",
]

LH_LAMBDA_NORM = 0.05
TORCH_DEFAULT = 0.01
# Where Power Lines fit and checked its law: GPT-2-like models of 111M to 3.3B parameters;
# adamwkit warns outside this span of tokens per parameter.
POWER_LINES_PARAMS = (111e6, 3.3e9)
POWER_LINES_TPP = (1.0, 1000.0)
#: The guard rail: the most total decay D = sum_t lr_t * wd a value proposed for a fine-tune
#: may have (``_calibration.FINETUNE_D_MAX``, 0.03: decay alone then takes at most 3% off the
#: pretrained weights): the largest D at which no study of docs/evidence-finetune.md lost more
#: than 1.4% against no decay; 1/58 of the D 1.73 of the from-scratch value (92.4) the issue's
#: fine-tune got before regimes existed. Taken at the peak lr, so a decaying schedule keeps
#: a margin of about 2x.
D_MAX_FINETUNE: float = _cal.FINETUNE_D_MAX
#: Where the bound comes from, as the messages that name it say it.
BOUND_SOURCE = "docs/evidence-finetune.md: no study lost more than 1.4% against no decay up to it"

#: Each regime's name, as :attr:`TrainingSetup.regime` gives it, and as the output says it.
REGIMES = {
    "multi-epoch": "from scratch, multi-epoch",
    "single-pass": "from scratch, single-pass (LLM pre-training)",
    "unknown": "from scratch, length unknown",
    "fine-tune": "fine-tune (full, of pretrained weights)",
    "fine-tune-adapters": "fine-tune (adapters such as LoRA)",
}
#: The regime each rule assumes (where it was fitted).
RULE_REGIMES = {
    "calibrated": "scratch, multi-epoch",
    "wang-aitchison": "scratch, multi-epoch",
    "power-lines": "scratch, single-pass",
    "loshchilov-hutter": "scratch, multi-epoch",
    "torch-default": "none (a default)",
    "finetune": "fine-tune",
}

SOURCES = {
    "calibrated": "adamwkit's evidence studies (docs/evidence.md)",
    "wang-aitchison": "Wang & Aitchison, ICML 2025 (arXiv:2405.13698)",
    "power-lines": "Bergsma et al., Power Lines, NeurIPS 2025 (arXiv:2505.13738)",
    "loshchilov-hutter": "Loshchilov & Hutter, ICLR 2019 (arXiv:1711.05101), App. B.1",
    "torch-default": "torch.optim.AdamW default",
    "finetune": (
        "fitted on 13 full and 3 LoRA fine-tuning studies (3 families; "
        "docs/evidence-finetune.md): the loss is flat up to D ~ 0.02; no study lost more "
        "than 1.4% at D <= 0.03"
    ),
}
FITTED_ON = {
    "calibrated": "small MLPs, a CNN and a transformer, 5-fold CV (docs/evidence.md)",
    "wang-aitchison": "ResNets and ViTs on CIFAR and ImageNet; the recipes sit at 16 of 300 epochs",
    "power-lines": "single-pass LLM pre-training, 111M to 3.3B parameters, 1 to 1000 TPP",
    "loshchilov-hutter": "ResNets on CIFAR-10 and ImageNet32, 100 to 1800 epochs",
    "torch-default": "nothing: a library default",
    "finetune": "13 full and 3 LoRA fine-tunes of small models (docs/evidence-finetune.md)",
}
FORMULAS = {
    "calibrated": "log tau_epoch = fit on the evidence: wd = B / (lr * tau_epoch * N)",
    "wang-aitchison": "tau_epoch = sqrt(T): wd = B / (lr * sqrt(T) * N)",
    "power-lines": "tau_run = 1.084 * TPP^-0.527: wd = B / (lr * tau_run * D)",
    "loshchilov-hutter": "wd_independent = 0.05 * sqrt(B / (N * T)): wd = that / lr",
    "torch-default": "wd = 0.01",
    "finetune": "D = lr * wd * S fixed: wd = D / (lr * S), decay toward zero",
}


# ---------------------------------------------------------------------------- the setup


@dataclass(frozen=True)
class TrainingSetup:
    """A training run as the rules see it; build it with :func:`training_setup`.

    ``dataset_size`` counts examples (``unit="examples"``) or tokens (``unit="tokens"``),
    in the same unit as ``batch_size``. ``epochs`` and ``total_steps`` are derived from each
    other when the dataset size is known (``S = T * N / B``). ``pretrained``: the run
    fine-tunes pretrained weights; ``adapters``: it fine-tunes adapters such as LoRA (which
    implies ``pretrained``).
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
    pretrained: bool = False
    adapters: bool = False

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
    def passes(self) -> str:
        """``"single-pass"`` (at most one epoch), ``"multi-epoch"``, or ``"unknown"``."""
        if self.epochs is None:
            return "unknown"
        return "single-pass" if self.epochs <= 1.0 + 1e-9 else "multi-epoch"

    @property
    def finetune(self) -> bool:
        """Whether the run fine-tunes pretrained weights or adapters."""
        return self.pretrained or self.adapters

    @property
    def regime(self) -> str:
        """One of :data:`REGIMES`: ``"fine-tune-adapters"``, ``"fine-tune"``, or, from
        scratch, :attr:`passes` (``"single-pass"``, ``"multi-epoch"``, ``"unknown"``)."""
        if self.adapters:
            return "fine-tune-adapters"
        return "fine-tune" if self.pretrained else self.passes

    @property
    def regime_label(self) -> str:
        """The regime in words, as the output says which one a value assumes."""
        return REGIMES[self.regime]

    def total_decay(self, weight_decay: float, lr_mean_factor: float = 1.0) -> float | None:
        """:func:`total_decay` of a PyTorch-convention ``weight_decay`` over this run
        (``None`` when the run's length is unknown)."""
        if self.total_steps is None:
            return None
        return total_decay(weight_decay, self.lr, self.total_steps, "lr", lr_mean_factor)

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
            "regime_label": self.regime_label,
            "passes": self.passes,
            "pretrained": self.pretrained,
            "adapters": self.adapters,
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
    pretrained: bool = False,
    adapters: bool = False,
) -> TrainingSetup:
    """Validate a training description and derive epochs and steps from each other.

    Give ``dataset_size`` (examples) with ``epochs`` or ``steps``; or ``tokens``, the
    training tokens of the whole run (``batch_size`` then counts tokens per step, the run
    has ``tokens / batch_size`` steps), with ``params`` for pre-training; ``epochs`` (default
    1) then says over how many passes those tokens were seen. ``pretrained=True``: the run
    fine-tunes pretrained weights; ``adapters=True``: it fine-tunes adapters such as LoRA
    (implies ``pretrained``). Either sets the regime to a fine-tune, where no value whose
    total decay exceeds :data:`D_MAX_FINETUNE` is proposed.
    """
    lr_ = check_lr("lr", lr)
    b = check_range("batch_size", batch_size, 0.0, low_open=True)
    n, d = _positive("dataset_size", dataset_size), _positive("tokens", tokens)
    t = _positive("epochs", epochs)
    s = None if steps is None else check_range("steps", steps, 1.0)
    p = _positive("params", params)
    check_choice("decay_scale", decay_scale, DECAY_SCALES)
    b1 = check_range("beta1", beta1, 0.0, 1.0, high_open=True)
    pre, ada = _flag("pretrained", pretrained), _flag("adapters", adapters)
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
    return TrainingSetup(lr_, b, size, unit, t, s, p, decay_scale, b1, pre or ada, ada)


def _flag(name: str, value: Any) -> bool:
    """A yes/no argument: ``True`` or ``False`` (not a string such as ``"no"``)."""
    if not isinstance(value, bool) and type(value).__name__ != "bool_":  # numpy's bool too
        raise ArgumentError(f"{name}={value!r} is invalid: expected True or False", name)
    return bool(value)


# ---------------------------------------------------------------------------- total decay


def total_decay(
    wd: float, lr: float, steps: float, decay_scale: str = "lr", lr_mean_factor: float = 1.0
) -> float:
    r"""The total decay of a run, :math:`D = \sum_t \eta_t\lambda = \lambda\,\eta\,S\,\bar m`.

    ``wd`` in the convention of ``decay_scale``: ``"lr"`` (PyTorch: a step multiplies the
    weights by :math:`1 - \eta_t\lambda`) or ``"schedule"`` (Loshchilov & Hutter's
    Algorithm 2, arXiv:1711.05101: by :math:`1 - (\eta_t/\eta)\lambda`, so
    :math:`D = \lambda S \bar m`); ``lr`` the peak lr :math:`\eta`, ``steps`` :math:`S`,
    ``lr_mean_factor`` :math:`\bar m` the schedule's mean multiplier of the peak lr (1: the
    peak lr throughout; about 0.5 for cosine or linear decay to zero). Decay alone shrinks the
    weights by :func:`shrink_factor` :math:`e^{-D}` over the run (:math:`\prod_t(1 -
    \eta_t\lambda) \le e^{-D}`, equal to first order in :math:`\eta\lambda`). It is the
    inverse of Wang & Aitchison's timescale as a fraction of the run (arXiv:2405.13698),
    :math:`D = 1/\tau_{\mathrm{run}}` at a constant lr.

    Example: wd 92.4 at lr 2e-5 over 937.5 steps gives D = 1.73 (``e^-1.73`` = 0.18).
    """
    w = check_range("wd", wd, 0.0)
    lr_ = check_lr("lr", lr)
    s = check_range("steps", steps, 0.0)
    check_choice("decay_scale", decay_scale, DECAY_SCALES)
    m = check_range("lr_mean_factor", lr_mean_factor, 0.0, 1.0)
    d = w * s * m * (lr_ if decay_scale == "lr" else 1.0)
    if not math.isfinite(d):
        raise ValueError(f"wd={wd!r} is invalid: the total decay overflows (steps={steps!r})")
    return d


def shrink_factor(d: float) -> float:
    r""":math:`e^{-D}`: the factor decay alone applies to the weights over a run of total
    decay :math:`D` (:func:`total_decay`)."""
    return math.exp(-check_range("total_decay", d, 0.0))


def decays_by(d: float) -> str:
    """``"82.3% (factor exp(-D) 0.177, D 1.73)"``: how much decay alone takes off the weights
    over a run of total decay ``d`` (the factor to 6 decimals below D 0.05)."""
    gone, factor = -math.expm1(-d), math.exp(-d)
    shown = _fmt(factor) if d >= 0.05 else f"{factor:.6f}"
    return f"{100 * gone:.3g}% (factor exp(-D) {shown}, D {_fmt(d)})"


def bound_text() -> str:
    """The fine-tune bound and where it comes from, in words, from the constants:
    ``"D <= 0.03 (decay alone takes at most 2.96% off the weights; docs/evidence-finetune.md:
    no study lost more than 1.4% against no decay up to it)"``."""
    return (
        f"D <= {_fmt(D_MAX_FINETUNE)} (decay alone takes at most "
        f"{100 * -math.expm1(-D_MAX_FINETUNE):.3g}% off the weights; {BOUND_SOURCE})"
    )


def looks_like_finetune(s: TrainingSetup) -> bool:
    """Whether a from-scratch setup looks like a fine-tune: lr <= ``FINETUNE_LOOKS_LR``
    (1e-4) with at most ``FINETUNE_LOOKS_EPOCHS`` (5) epochs, or, given as steps alone, at
    most ``FINETUNE_LOOKS_STEPS`` (10,000) steps; a run given in tokens (pre-training) never
    does. Always ``False`` once ``pretrained`` or ``adapters`` says what the run is."""
    if s.finetune or s.unit == "tokens" or s.lr > _cal.FINETUNE_LOOKS_LR:
        return False
    if s.epochs is not None:
        return s.epochs <= _cal.FINETUNE_LOOKS_EPOCHS
    return s.total_steps is not None and s.total_steps <= _cal.FINETUNE_LOOKS_STEPS


def guard(value: float, setup: TrainingSetup, lr_mean_factor: float = 1.0) -> str | None:
    r"""A warning when ``value`` would decay a fine-tune's weights too much, else ``None``.

    ``value`` is a weight decay in ``setup.decay_scale``'s convention; its total decay
    :math:`D` (:func:`total_decay`, at the peak lr unless ``lr_mean_factor`` gives the
    schedule's mean multiplier) is checked against :data:`D_MAX_FINETUNE` (0.03: decay alone
    takes at most 3% off the weights; no study of docs/evidence-finetune.md lost more than
    1.4% against no decay up to it) when
    the setup is a fine-tune (``pretrained`` or ``adapters``) or looks like one
    (:func:`looks_like_finetune`). From scratch a large :math:`D` is normal, so other setups,
    and runs of unknown length, give ``None``.
    """
    if setup.total_steps is None or not (setup.finetune or looks_like_finetune(setup)):
        return None
    d = total_decay(value, setup.lr, setup.total_steps, setup.decay_scale, lr_mean_factor)
    if d <= D_MAX_FINETUNE:
        return None
    at = (
        "the peak lr"
        if lr_mean_factor == 1.0
        else f"the schedule's mean lr ({lr_mean_factor:.3g} of the peak)"
    )
    what = f"weight_decay {_fmt(value)} decays the weights by {decays_by(d)} over the run (at {at})"
    if not setup.finetune:
        return (
            f"this looks like a fine-tune ({_length(setup)} at lr {_fmt(setup.lr)}); if the model "
            f"is pretrained, pass --pretrained (pretrained=True): {what}, above the bound "
            f"D <= {_fmt(D_MAX_FINETUNE)} adamwkit keeps to for fine-tunes ({BOUND_SOURCE})"
        )
    toward = (
        "it pulls the adapters to zero, the fine-tuned model back to the frozen base"
        if setup.adapters
        else "it pulls the pretrained weights toward zero, away from what pretraining learned"
    )
    return (
        f"{what}: above the bound D <= {_fmt(D_MAX_FINETUNE)} adamwkit keeps to for "
        f"fine-tunes ({BOUND_SOURCE}); {toward}"
    )


def _length(s: TrainingSetup) -> str:
    if s.epochs is not None:
        return f"{_fmt(s.epochs)} epochs"
    return f"{_count(round(s.total_steps or 0))} steps"


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
    total_decay: float | None = None
    blocked: str = ""

    @property
    def fitted_on(self) -> str:
        """Where the rule was fitted: the regime it speaks for."""
        return FITTED_ON[self.name]

    @property
    def assumes(self) -> str:
        """The regime the rule's value assumes (:data:`RULE_REGIMES`)."""
        return RULE_REGIMES[self.name]

    @property
    def ran(self) -> bool:
        return self.weight_decay is not None

    @property
    def usable(self) -> bool:
        """Whether the value may be used: it ran and no guard rail blocked it."""
        return self.ran and not self.blocked

    @property
    def decays_by(self) -> str:
        """How much decay alone takes off the weights over the run at the peak lr
        (:func:`decays_by`), ``"-"`` when the run's length is unknown."""
        return "-" if self.total_decay is None else decays_by(self.total_decay)

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
            "assumes": self.assumes,
            "total_decay": self.total_decay,
            "shrink_factor": None if self.total_decay is None else math.exp(-self.total_decay),
            "blocked": self.blocked or None,
            "usable": self.usable,
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
    """Wang & Aitchison's window for multi-epoch training from scratch: tau_epoch in [1, T]."""
    if s.finetune or s.passes != "multi-epoch" or tau_e is None or s.epochs is None:
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
        warnings=warnings + (() if name == "finetune" else _window_warning(s, tau_e)),
        total_decay=s.total_decay(wd),
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
    if s.passes == "single-pass":
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
    if s.passes == "multi-epoch":
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
    if s.passes != "multi-epoch":
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


def finetune_band(adapters: bool = False) -> tuple[float, float, float]:
    """The fine-tuning rule's total decay D and its range (low, high): the
    ``FINETUNE_*`` constants of :mod:`adamwkit._calibration` (adapters: ``FINETUNE_ADAPTERS_*``),
    checked to keep ``low <= D <= high <= D_MAX_FINETUNE``."""
    if adapters:
        d, (lo, hi) = _cal.FINETUNE_ADAPTERS_D, _cal.FINETUNE_ADAPTERS_D_RANGE
    else:
        d, (lo, hi) = _cal.FINETUNE_D, _cal.FINETUNE_D_RANGE
    if not 0.0 < lo <= d <= hi <= D_MAX_FINETUNE:
        raise ValueError(
            f"the fine-tuning constants are invalid: expected 0 < {lo:g} <= {d:g} <= {hi:g} "
            f"<= D_MAX_FINETUNE {D_MAX_FINETUNE:g} (adamwkit._calibration)"
        )
    return d, lo, hi


def _finetune(s: TrainingSetup) -> RuleValue:
    r"""The fine-tuning rule: a fixed total decay, :math:`\lambda = D/(\eta S)`."""
    if s.total_steps is None:
        return _skipped("finetune", "needs the run's length: epochs or steps (or tokens)")
    d, lo, hi = finetune_band(s.adapters)
    scale = s.lr * s.total_steps
    what = "adapters" if s.adapters else "full"
    note = (
        f"{what}: D = lr * wd * steps = {_fmt(d)} (range {_fmt(lo)} to {_fmt(hi)}) over "
        f"{_count(round(s.total_steps))} steps at the peak lr, decay toward zero"
    )
    if not s.finetune:
        note += "; what --pretrained (pretrained=True) would use"
    value = _rule_value(s, "finetune", d / scale, note)
    if not value.ran:
        return value
    return dataclasses.replace(value, low=lo / scale, high=hi / scale, total_decay=d)


#: The rules computed for every setup; the fine-tuning rule (:data:`FINETUNE_RULE`) joins
#: them, first, for fine-tunes and setups that look like one (:func:`rule_values`).
RULES: dict[str, Callable[[TrainingSetup], RuleValue]] = {
    "calibrated": _calibrated,
    "wang-aitchison": _wang_aitchison,
    "power-lines": _power_lines,
    "loshchilov-hutter": _loshchilov_hutter,
    "torch-default": _torch_default,
}
FINETUNE_RULE: Callable[[TrainingSetup], RuleValue] = _finetune


def rule_values(s: TrainingSetup) -> dict[str, RuleValue]:
    """Every rule's value for a setup: the fine-tuning rule first for a fine-tune or a setup
    that looks like one, then :data:`RULES`. In a fine-tune, a value whose total decay
    exceeds :data:`D_MAX_FINETUNE` is kept for display but blocked (``usable`` is false)."""
    values: dict[str, RuleValue] = {}
    if s.finetune or looks_like_finetune(s):
        values["finetune"] = FINETUNE_RULE(s)
    values.update({name: rule(s) for name, rule in RULES.items()})
    if s.finetune:
        values = {name: _blocked(s, v) for name, v in values.items()}
    return values


def _blocked(s: TrainingSetup, v: RuleValue) -> RuleValue:
    """``v``, blocked when its total decay exceeds the fine-tune bound."""
    if v.total_decay is None or v.total_decay <= D_MAX_FINETUNE:
        return v
    return dataclasses.replace(
        v,
        blocked=(
            f"assumes {v.assumes}: its {_fmt(v.weight_decay)} decays the weights by "
            f"{decays_by(v.total_decay)} over the run, above the fine-tune bound D <= "
            f"{_fmt(D_MAX_FINETUNE)}; not for this {s.regime_label}"
        ),
    )


def _finetune_reason(s: TrainingSetup, ft: RuleValue) -> str:
    """Why a fine-tune gets the fine-tuning rule."""
    d, lo, hi = finetune_band(s.adapters)
    if s.adapters:
        what = (
            "a fine-tune of adapters (such as LoRA): the decayed tensors are the adapters, "
            "which start at or near zero, so decay pulls the fine-tuned model back toward "
            "the frozen base. adamwkit aims at a small total decay"
        )
        seen = (
            "In 3 LoRA studies (docs/evidence-finetune.md) every D up to 0.03 was within 1% "
            "of the best: the same band as full fine-tunes"
        )
    else:
        what = (
            "a fine-tune of pretrained weights: decay pulls them toward zero, away from "
            "what pretraining learned, so adamwkit aims at a small total decay"
        )
        seen = (
            "In 13 full fine-tuning studies (docs/evidence-finetune.md) the loss was flat "
            "from D = 0 to about 0.02, and at each kind's best decay toward zero never lost "
            "to decay toward the pretrained weights (decay_toward='init'). The range runs "
            "from where practitioners sit (wd 0.01 to 0.1 at lr 2e-5 over 938 steps: D 2e-4 "
            "to 2e-3) to the bound"
        )
    return (
        f"{what} D = sum over steps of lr_t * wd = {_fmt(d)} (range {_fmt(lo)} to "
        f"{_fmt(hi)}), taken at the peak lr over {_count(round(s.total_steps or 0))} steps "
        "(a decaying schedule lowers D further), with decay toward zero; no value above "
        f"D = {_fmt(D_MAX_FINETUNE)} is proposed for a fine-tune. {seen}. The studies are "
        "small models on synthetic shifts, one seed; verify with adamwkit tune."
    )


def choose_rule(s: TrainingSetup, values: dict[str, RuleValue]) -> tuple[str, str]:
    """The rule that fits the regime, and why: a fine-tune (``pretrained`` or ``adapters``)
    gets the fine-tuning rule, single-pass pre-training Power Lines, multi-epoch
    training from scratch the calibrated rule, else Wang & Aitchison's."""
    if s.finetune:
        ft = values.get("finetune")
        if ft is None or not ft.ran:
            raise ArgumentError(
                "a fine-tune (pretrained or adapters) needs the run's length for its total "
                "decay: give dataset_size with epochs or steps, steps, or tokens",
                "dataset_size",
                "epochs",
                "steps",
                "tokens",
            )
        return "finetune", _finetune_reason(s, ft)
    pl, wa, cal = values["power-lines"], values["wang-aitchison"], values["calibrated"]
    if pl.ran and s.passes == "single-pass":
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
            f"{s.passes} training ({_fmt(s.epochs)} epochs over {_count(s.dataset_size or 0)} "
            f"{unit}): Wang & Aitchison found the optimal timescale in epochs roughly "
            f"constant across model and data size, inside [1 epoch, {_fmt(s.epochs)} epochs]; "
            f"adamwkit {wa.note}, the geometric middle of that window (the DeiT-B, Swin and "
            "ConvNeXt recipes sit at 16 of 300 epochs; sqrt(300) = 17.3)."
        )
        if s.passes == "single-pass":
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
