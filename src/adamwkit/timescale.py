r"""Timescales of AdamW's weight decay, and conversions between decay conventions.

Under AdamW each step multiplies the weights by :math:`1 - \eta\lambda` (PyTorch's
convention), so the weights are an exponential moving average of the updates with a
timescale of :math:`1/(\eta\lambda)` steps (Wang & Aitchison, "How to set AdamW's weight
decay as you scale model and dataset size", ICML 2025, arXiv:2405.13698):

.. math::

    \tau_{\mathrm{iter}} = \frac{1}{\eta\lambda}, \qquad
    \tau_{\mathrm{epoch}} = \frac{\tau_{\mathrm{iter}}}{N/B} = \frac{B}{\eta\lambda N}, \qquad
    \tau_{\mathrm{run}} = \frac{\tau_{\mathrm{iter}}}{S}

with :math:`\eta` the peak learning rate, :math:`\lambda` the weight decay in PyTorch's
convention, :math:`B` the batch size, :math:`N` the examples (or tokens) per epoch and
:math:`S` the total steps. For single-pass training on :math:`D` tokens with :math:`B`
tokens per batch, :math:`\tau_{\mathrm{run}} = B/(\eta\lambda D)` is the timescale of
Bergsma et al., "Power Lines", arXiv:2505.13738.

Every timescale function here takes the weight decay in PyTorch's convention; convert a
value from another convention first with :func:`convert_weight_decay`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._checks import ArgumentError, check_choice, check_lr, check_range
from ._constants import CONVENTION_ALIASES, CONVENTION_NAMES

__all__ = [
    "CONVENTIONS",
    "canonical_convention",
    "convert_weight_decay",
    "tau_epoch",
    "tau_iter",
    "tau_run",
    "weight_decay_from_tau_epoch",
    "weight_decay_from_tau_iter",
    "weight_decay_from_tau_run",
]

#: The conventions, by what one step does to a weight ``w`` (``lr_t``: the step's lr,
#: ``lr_peak``: the schedule's peak, ``wd``: the value the user writes down).
CONVENTIONS: dict[str, str] = {
    "torch": "w *= 1 - lr_t * wd  (torch.optim.AdamW, optax, Keras)",
    "independent": "w *= 1 - (lr_t / lr_peak) * wd  (AdamW paper, Composer, Wortsman et al.)",
    "timm-corrected": "w *= 1 - wd * lr_t**2 / lr_peak  (timm corrected_weight_decay)",
}


def canonical_convention(name: str) -> str:
    """The canonical name of a decay convention: ``"torch"``, ``"independent"`` or
    ``"timm-corrected"``.

    Aliases: ``"pytorch"``, ``"lr"``, ``"optax"``, ``"keras"`` mean ``"torch"``;
    ``"schedule"``, ``"paper"``, ``"composer"``, ``"wortsman"`` mean ``"independent"``
    (``decay_scale="lr"`` and ``"schedule"`` of :class:`adamwkit.AdamW`).
    """
    key = name.strip().lower() if isinstance(name, str) else name
    check_choice("convention", key, CONVENTION_NAMES)
    return CONVENTION_ALIASES[key]


def _positive(name: str, value: Any) -> float:
    return check_range(name, value, 0.0, low_open=True)


def _decay(weight_decay: Any) -> float:
    return check_range("weight_decay", weight_decay, 0.0)


def _tau(name: str, value: Any) -> float:
    if isinstance(value, (int, float)) and value == math.inf:
        return math.inf
    return _positive(name, value)


def tau_iter(lr: float, weight_decay: float) -> float:
    r"""EMA timescale in steps, :math:`\tau_{\mathrm{iter}} = 1/(\eta\lambda)`.

    ``weight_decay`` in PyTorch's convention; 0 gives ``inf`` (nothing is forgotten).
    Source: Wang & Aitchison 2025 (arXiv:2405.13698), eq. for the EMA timescale.
    """
    lr, wd = check_lr("lr", lr), _decay(weight_decay)
    return math.inf if wd == 0 else 1.0 / (lr * wd)


def tau_epoch(lr: float, weight_decay: float, batch_size: float, dataset_size: float) -> float:
    r"""EMA timescale in epochs, :math:`\tau_{\mathrm{epoch}} = B/(\eta\lambda N)`.

    ``dataset_size`` counts what ``batch_size`` counts (examples, or tokens).
    Source: Wang & Aitchison 2025 (arXiv:2405.13698). Worked number: DeiT-B (lr 1e-3,
    B 1024, wd 0.05, N 1,281,167) gives 16.0 epochs.
    """
    t = tau_iter(lr, weight_decay)
    b, n = _positive("batch_size", batch_size), _positive("dataset_size", dataset_size)
    return t * b / n


def tau_run(lr: float, weight_decay: float, total_steps: float) -> float:
    r"""Timescale as a fraction of the run, :math:`\tau_{\mathrm{run}} = \tau_{\mathrm{iter}}/S`.

    For single-pass training this is Power Lines' :math:`B/(\eta\lambda D)`
    (Bergsma et al. 2025, arXiv:2505.13738).
    """
    return tau_iter(lr, weight_decay) / _positive("total_steps", total_steps)


def weight_decay_from_tau_iter(tau_iter: float, lr: float) -> float:
    r"""Inverse of :func:`tau_iter`: :math:`\lambda = 1/(\eta\,\tau_{\mathrm{iter}})`."""
    t, lr = _tau("tau_iter", tau_iter), check_lr("lr", lr)
    return 0.0 if math.isinf(t) else 1.0 / (lr * t)


def weight_decay_from_tau_epoch(
    tau_epoch: float, lr: float, batch_size: float, dataset_size: float
) -> float:
    r"""Inverse of :func:`tau_epoch`: :math:`\lambda = B/(\eta\,\tau_{\mathrm{epoch}} N)`."""
    t = _tau("tau_epoch", tau_epoch)
    b, n = _positive("batch_size", batch_size), _positive("dataset_size", dataset_size)
    return weight_decay_from_tau_iter(t * n / b, lr)


def weight_decay_from_tau_run(tau_run: float, lr: float, total_steps: float) -> float:
    r"""Inverse of :func:`tau_run`: :math:`\lambda = 1/(\eta\,\tau_{\mathrm{run}} S)`."""
    t = _tau("tau_run", tau_run)
    return weight_decay_from_tau_iter(t * _positive("total_steps", total_steps), lr)


def _timm_ratio(schedule: Any) -> float:
    """mean(s_t^2) / mean(s_t) over the schedule's multipliers s_t = lr_t / lr_peak."""
    if schedule is None:
        return 1.0
    s = schedule.sample() if hasattr(schedule, "sample") else schedule
    s = np.asarray(s, dtype=np.float64)
    if s.ndim != 1 or s.size == 0 or not np.all(np.isfinite(s)) or s.min() < 0 or s.max() > 1:
        raise ValueError(
            "schedule is invalid: expected a Schedule or a non-empty sequence of "
            "multipliers lr_t / lr_peak in [0, 1]"
        )
    total = float(s.sum())
    if total == 0:
        raise ValueError("schedule is invalid: every multiplier is 0, so nothing decays")
    return float((s * s).mean()) / float(s.mean())


def convert_weight_decay(
    weight_decay: float,
    from_convention: str,
    to_convention: str,
    *,
    lr_peak: float | None = None,
    schedule: Sequence[float] | Any | None = None,
) -> float:
    r"""The weight decay that decays the weights as ``weight_decay`` does in another convention.

    - torch -> independent: :math:`\lambda_{\mathrm{ind}} = \eta_{\mathrm{peak}}\,
      \lambda_{\mathrm{torch}}`; the two decay identically at every step
      (Wortsman et al. 2023, arXiv:2309.14322; Loshchilov & Hutter 2019, Algorithm 2).
    - torch -> timm-corrected: timm's corrected decay multiplies by
      :math:`1 - \lambda\,\eta_t^2/\eta_{\mathrm{peak}}` (arXiv:2506.02285), which shrinks
      faster than :math:`\eta_t` as the schedule falls, so no value matches torch at every
      step. With no ``schedule`` the values match at the peak step (they are equal); with a
      ``schedule`` (a :class:`adamwkit.schedules.Schedule` or the multipliers
      :math:`s_t = \eta_t/\eta_{\mathrm{peak}}`) they match in total decay over the run:
      :math:`\lambda_{\mathrm{timm}} = \lambda_{\mathrm{torch}}\sum_t s_t / \sum_t s_t^2`.

    ``lr_peak`` is required whenever one side is ``"independent"``. Conversions are exact
    inverses of each other.
    """
    wd = _decay(weight_decay)
    src, dst = canonical_convention(from_convention), canonical_convention(to_convention)
    if "independent" in (src, dst) and src != dst:
        if lr_peak is None:
            raise ArgumentError(
                "lr_peak is needed: converting to or from the 'independent' convention "
                "needs the peak learning rate",
                "lr_peak",
            )
        peak = check_lr("lr_peak", lr_peak)
    else:
        peak = 1.0
    ratio = _timm_ratio(schedule) if "timm-corrected" in (src, dst) and src != dst else 1.0
    to_torch = {"torch": 1.0, "independent": 1.0 / peak, "timm-corrected": ratio}
    value = wd * to_torch[src] / to_torch[dst]
    if not math.isfinite(value):
        at = f" at lr_peak={peak:g}" if "independent" in (src, dst) and src != dst else ""
        raise ArgumentError(
            f"weight_decay={wd:g} in the {src!r} convention is {value} in {dst!r}{at}: "
            "beyond the largest float, and far beyond any decay a run can use "
            "(lr x weight_decay per step must stay below 1)",
            "weight_decay",
            *(("lr_peak",) if at else ()),
        )
    return value
