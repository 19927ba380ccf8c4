r"""What the audit needs to know about optimizers it did not write: the torch optimizer
inside a wrapper, the kind of decay a group gets, the lr at every step of a schedule (read
from a copy of the user's scheduler, never the scheduler itself) and the size of an update.

Kinds of decay, by optimizer (``torch.optim`` 2.x documentation and sources):

- decoupled, :math:`w \leftarrow (1 - \eta_t\lambda) w`: ``AdamW``, ``Muon``, ``Adam`` /
  ``NAdam`` / ``RAdam`` with ``decoupled_weight_decay=True``, and the AdamW, Lion and
  Adafactor variants of other libraries (bitsandbytes' ``AdamW8bit`` and ``PagedAdamW``,
  torchao's ``AdamW8bit`` / ``AdamW4bit`` / ``AdamWFp8``), recognised by name;
- L2, :math:`g \leftarrow g + \lambda w`: ``Adam``, ``SGD``, ``RMSprop``, ``Adagrad``,
  ``Adamax``, ``Adadelta``, ``ASGD``, ``NAdam`` and ``RAdam`` by default;
- ``unknown``: any other class with a non-zero ``weight_decay``.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

__all__ = ["ADAPTIVE", "decay_kind", "lr_curves", "unwrap", "update_rms"]

#: Optimizers whose step divides the gradient by a running second moment: L2 decay
#: through them is not decoupled decay.
ADAPTIVE = ("Adam", "AdamW", "Adamax", "NAdam", "RAdam", "RMSprop", "Adagrad", "Adadelta")
_L2 = ("Adam", "SGD", "RMSprop", "Adagrad", "Adamax", "Adadelta", "ASGD", "NAdam", "RAdam")
_DECOUPLED_NAMES = ("AdamW", "Muon", "Lion", "Adafactor")


def unwrap(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer whose ``step`` runs the update: ``optimizer`` itself or the one
    its wrappers hold in ``.optimizer`` (accelerate's ``AcceleratedOptimizer``, Lightning's
    ``LightningOptimizer``), innermost first; ``None`` when there is none."""
    seen: set[int] = set()
    while optimizer is not None and id(optimizer) not in seen:
        seen.add(id(optimizer))
        inner = getattr(optimizer, "optimizer", None)
        if inner is None or inner is optimizer:
            break
        optimizer = inner
    return optimizer if isinstance(optimizer, torch.optim.Optimizer) else None


def family(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> str:
    """The optimizer's class name; a hybrid's auxiliary AdamW groups (``use_muon=False``,
    Keller Jordan's ``MuonWithAuxAdam``) read as ``"AdamW"``."""
    name = type(optimizer).__name__
    if "Muon" in name and group.get("use_muon") is False:
        return "AdamW"
    return name


def decay_kind(optimizer: torch.optim.Optimizer, group: Mapping[str, Any]) -> str:
    """``"decoupled"``, ``"L2"``, ``"none"`` or ``"unknown"`` for one group."""
    if not float(group.get("weight_decay", 0.0) or 0.0):
        return "none"
    name = family(optimizer, group)
    if any(d in name for d in _DECOUPLED_NAMES) or group.get("decoupled_weight_decay"):
        return "decoupled"
    if type(optimizer).__module__.startswith("torch.optim") and name in _L2:
        return "L2"
    return "unknown"


def peak_lr(group: Mapping[str, Any]) -> float:
    """The group's peak lr when no schedule is given: the largest of its ``lr`` and what a
    scheduler recorded (``initial_lr``, ``max_lr``) or adamwkit's ``lr_peak``. A warmup
    that starts at 0 has already set ``lr`` to 0 when the scheduler was built."""
    values = [group.get(k) for k in ("lr", "initial_lr", "max_lr", "lr_peak")]
    return max(float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool))


def lr_curves(
    optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any], steps: int
) -> tuple[list[np.ndarray], list[str]]:
    """The lr of every group (all optimizers' groups in order) at steps ``0 .. steps-1``,
    and notes on what could not be followed.

    Each scheduler is deep-copied with its optimizer replaced by a stand-in holding one
    scalar per group (so no parameter is copied and the user's scheduler does not move),
    then stepped ``steps - 1`` times; a ``LambdaLR`` (as Hugging Face's schedules are) is
    read as its step computes it, ``base_lr * lr_lambda(epoch)``, without the copy. A group
    no scheduler drives keeps its peak lr. ``ReduceLROnPlateau`` depends on the metrics it
    will see and is read as constant."""
    curves: list[np.ndarray] = []
    notes: list[str] = []
    by_opt: dict[int, Any] = {}
    for s in schedulers:
        inner = s
        while not hasattr(inner, "optimizer") and hasattr(inner, "scheduler"):
            inner = inner.scheduler  # accelerate's AcceleratedScheduler
        opt = unwrap(getattr(inner, "optimizer", None))
        if opt is None:
            raise ValueError(
                f"scheduler={type(s).__name__} is invalid: expected a torch lr scheduler "
                "(it has no .optimizer)"
            )
        if isinstance(inner, torch.optim.lr_scheduler.ReduceLROnPlateau):
            notes.append("ReduceLROnPlateau depends on the metrics it will see: read as constant")
            continue
        by_opt[id(opt)] = inner
    for opt in optimizers:
        sched = by_opt.pop(id(opt), None)
        if sched is None:
            curves += [np.full(steps, peak_lr(g)) for g in opt.param_groups]
            continue
        curves += _simulate(opt, sched, steps)
    if by_opt:
        raise ValueError("scheduler is invalid: it drives an optimizer that is not the one audited")
    return curves, notes


def _simulate(opt: torch.optim.Optimizer, sched: Any, steps: int) -> list[np.ndarray]:
    if type(sched) is torch.optim.lr_scheduler.LambdaLR:  # most schedules (Hugging Face's)
        # what its step computes, base_lr * lambda(epoch), without stepping a copy
        start = int(sched.last_epoch)
        return [
            np.fromiter((base * fn(start + t) for t in range(steps)), float, count=steps)
            for base, fn in zip(sched.base_lrs, sched.lr_lambdas, strict=True)
        ]
    dummies = [torch.zeros((), requires_grad=True) for _ in opt.param_groups]
    stand_in = torch.optim.SGD([{"params": [d]} for d in dummies], lr=0.0)
    for mine, theirs in zip(stand_in.param_groups, opt.param_groups, strict=True):
        mine.update({k: v for k, v in theirs.items() if k != "params"})
    stand_in._opt_called = True  # type: ignore[attr-defined]  # no "step before" warning
    clone = copy.deepcopy(sched, {id(opt): stand_in})
    out = np.empty((len(opt.param_groups), steps))
    out[:, 0] = [g["lr"] for g in stand_in.param_groups]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for t in range(1, steps):
            clone.step()
            out[:, t] = [g["lr"] for g in stand_in.param_groups]
    return list(out)


def update_rms(
    optimizer: torch.optim.Optimizer, group: Mapping[str, Any], p: torch.Tensor
) -> float:
    r"""The root-mean-square size of one element's update per unit lr, at steady state.

    - AdamW-like: :math:`\sqrt{(1-\beta_1)/(1+\beta_1)}` (0.23 at :math:`\beta_1` 0.9),
      the momentum of unit-variance, uncorrelated gradients divided by their RMS; Liu et
      al. measured about 0.2 to 0.4 in LLM training ("Muon is Scalable for LLM Training",
      arXiv:2502.16982, section 2.2).
    - Muon on an :math:`A\times B` matrix: the orthogonalised momentum has unit singular
      values, so RMS :math:`1/\sqrt{\max(A,B)}`, times torch's ``adjust_lr_fn`` factor:
      :math:`\sqrt{\max(1, A/B)}` (``"original"``, the default) or
      :math:`0.2\sqrt{\max(A,B)}` (``"match_rms_adamw"``, Liu et al.'s match to AdamW).
    """
    if "Muon" in family(optimizer, group) and p.ndim >= 2:
        a, b = p.shape[0], math.prod(p.shape[1:])
        if group.get("adjust_lr_fn") == "match_rms_adamw":
            return 0.2
        return math.sqrt(max(1.0, a / b)) / math.sqrt(max(a, b))
    betas = group.get("betas", (0.9, 0.999))
    b1 = float(betas[0]) if isinstance(betas, (tuple, list)) else 0.9
    return math.sqrt((1.0 - b1) / (1.0 + b1))
