r"""Learning-rate schedules as multipliers of the peak learning rate, usable in PyTorch.

A :class:`Schedule` maps a step index :math:`t = 0, 1, \dots` to a multiplier
:math:`s_t \in [0, 1]`; the step's learning rate is :math:`\eta_t = s_t\,\eta_{\mathrm{peak}}`.
``schedule.scheduler(optimizer)`` wraps it in ``torch.optim.lr_scheduler.LambdaLR``, so the
lr the optimizer was built with is the peak.

Learning-rate decay and weight decay are different things. The schedule *lowers the
learning rate* over the run; weight decay *shrinks the weights* every step. How the shrink
follows the schedule depends on the decay convention:

- ``AdamW(decay_scale="lr")`` (PyTorch): each step multiplies the weights by
  :math:`1 - \eta_t\lambda = 1 - s_t\,\eta_{\mathrm{peak}}\lambda`.
- ``AdamW(decay_scale="schedule")`` (the AdamW paper): :math:`1 - s_t\lambda`.

Both follow the same shape :math:`s_t`; they differ in whether changing the peak learning
rate also changes the decay. With :class:`~torch.optim.lr_scheduler.LambdaLR` the
optimizer's ``initial_lr`` is the peak, which is where :class:`adamwkit.AdamW` reads it.

Shapes, with :math:`W` warmup steps, :math:`S` total steps and :math:`D_0` the first step
of the decay phase (:math:`D_0 = W`, or :math:`S - \text{decay\_steps}` for WSD):

- warmup (every kind): :math:`s_t = (t+1)/W` for :math:`t < W` (the first step is not wasted
  at lr 0; step :math:`W-1` reaches the peak).
- progress in the decay phase: :math:`p = (t - D_0)/(S - D_0)`, so the last step keeps a
  small non-zero lr; steps past :math:`S` hold the final value.
- ``"constant"``: :math:`s_t = 1` after warmup.
- ``"cosine"``: :math:`f + (1-f)\tfrac12(1+\cos\pi p)` (Loshchilov & Hutter, SGDR,
  arXiv:1608.03983); :math:`f` is ``final``.
- ``"linear"``: :math:`f + (1-f)(1-p)`, to zero by default (Bergsma et al., Power Lines,
  arXiv:2505.13738, fit their weight decay law with it).
- ``"wsd"`` (warmup-stable-decay; Hu et al., MiniCPM, arXiv:2404.06395): 1 until
  :math:`D_0`, then a cooldown over ``decay_steps`` (default 20% of the run) that is
  ``"linear"``, ``"cosine"`` or ``"sqrt"`` (:math:`1-\sqrt{p}`, Hägele et al.,
  arXiv:2405.18392).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from torch.optim import Optimizer

from ._checks import check_choice, check_range, check_whole

if TYPE_CHECKING:
    from torch.optim.lr_scheduler import LambdaLR

__all__ = [
    "COOLDOWNS",
    "SCHEDULES",
    "Schedule",
    "WeightDecayScheduler",
    "constant",
    "make_schedule",
    "warmup_cosine",
    "warmup_linear",
    "warmup_stable_decay",
]

SCHEDULES: tuple[str, ...] = ("constant", "cosine", "linear", "wsd")
COOLDOWNS: tuple[str, ...] = ("linear", "cosine", "sqrt")
_WSD_DEFAULT_DECAY_FRACTION = 0.2


def _steps(name: str, value: object, low: int) -> int:
    return check_whole(name, value, low)


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: ``schedule(t)`` is the multiplier of the peak lr at step t.

    Build one with :func:`make_schedule` or the helpers (:func:`warmup_cosine`, ...).
    """

    kind: str
    total_steps: int
    warmup_steps: int = 0
    final: float = 0.0
    decay_steps: int = 0
    cooldown: str = "linear"

    def __post_init__(self) -> None:
        check_choice("schedule", self.kind, SCHEDULES)
        check_choice("cooldown", self.cooldown, COOLDOWNS)
        total = _steps("total_steps", self.total_steps, 1)
        warm = _steps("warmup_steps", self.warmup_steps, 0)
        if warm >= total and self.kind != "constant":
            raise ValueError(
                f"warmup_steps={self.warmup_steps!r} is invalid: expected a whole number in "
                f"[0, {total - 1}] (fewer than the run's {total} steps, to leave room to decay)"
            )
        if warm > total:
            raise ValueError(
                f"warmup_steps={self.warmup_steps!r} is invalid: expected a whole number in "
                f"[0, {total}] (at most total_steps)"
            )
        check_range("final", self.final, 0.0, 1.0)
        if self.kind == "wsd":
            _steps("decay_steps", self.decay_steps, 1)
            if self.decay_steps > total - warm:
                raise ValueError(
                    f"decay_steps={self.decay_steps!r} is invalid: expected a whole number in "
                    f"[1, {total - warm}] (total_steps - warmup_steps)"
                )
        object.__setattr__(self, "total_steps", total)
        object.__setattr__(self, "warmup_steps", warm)
        object.__setattr__(self, "decay_steps", int(self.decay_steps))
        object.__setattr__(self, "final", float(self.final))

    @property
    def decay_start(self) -> int:
        """First step of the decay phase."""
        if self.kind == "wsd":
            return self.total_steps - self.decay_steps
        return self.warmup_steps

    def __call__(self, step: int) -> float:
        """The multiplier ``lr_t / lr_peak`` at step ``step`` (0-based)."""
        t = int(step)
        if t < 0:
            raise ValueError(f"step={step!r} is invalid: expected a whole number >= 0")
        return float(self._at(np.array([t], dtype=np.float64))[0])

    def _at(self, t: np.ndarray) -> np.ndarray:
        """Multipliers at the steps ``t`` (a float array of whole numbers >= 0)."""
        start, total = self.decay_start, self.total_steps
        p = np.clip((t - start) / max(total - start, 1), 0.0, 1.0)
        shape = self.cooldown if self.kind == "wsd" else self.kind
        if shape == "cosine":
            frac = 0.5 * (1.0 + np.cos(np.pi * p))
        elif shape == "sqrt":
            frac = 1.0 - np.sqrt(p)
        elif shape == "constant":
            frac = np.ones_like(p)
        else:
            frac = 1.0 - p
        out = self.final + (1.0 - self.final) * frac
        out = np.where(t < start, 1.0, out)
        if self.kind == "constant":
            out = np.ones_like(p)
        if self.warmup_steps:
            out = np.where(t < self.warmup_steps, (t + 1) / self.warmup_steps, out)
        return out

    def multipliers(self) -> np.ndarray:
        """The multipliers of every step of the run, ``[schedule(t) for t in range(S)]``."""
        return self._at(np.arange(self.total_steps, dtype=np.float64))

    def sample(self, max_points: int = 1 << 20) -> np.ndarray:
        """Multipliers at up to ``max_points`` evenly spaced steps (every step of a shorter run).

        Means over the sample stand for means over the run without holding a billion steps.
        """
        if self.total_steps <= max_points:
            return self.multipliers()
        return self._at(np.round(np.linspace(0, self.total_steps - 1, max_points)))

    def scheduler(self, optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
        """A ``torch.optim.lr_scheduler.LambdaLR`` driving ``optimizer`` by this schedule.

        Call ``scheduler.step()`` once after each ``optimizer.step()``.
        """
        from torch.optim.lr_scheduler import LambdaLR

        return LambdaLR(optimizer, self, last_epoch=last_epoch)

    def describe(self) -> str:
        """One line: the kind and its steps, e.g. ``cosine, 1,000 steps, 100 warmup``."""
        text = f"{self.kind}, {self.total_steps:,} steps, {self.warmup_steps:,} warmup"
        if self.kind == "wsd":
            text += f", {self.cooldown} cooldown over the last {self.decay_steps:,}"
        if self.kind in ("cosine", "linear", "wsd") and self.final:
            text += f", final {self.final:g} of peak"
        return text


def make_schedule(
    name: str,
    total_steps: int,
    warmup_steps: int = 0,
    *,
    final: float = 0.0,
    decay_steps: int | None = None,
    cooldown: str = "linear",
) -> Schedule:
    """A schedule by name: ``"constant"``, ``"cosine"``, ``"linear"`` or ``"wsd"``.

    ``decay_steps`` (WSD only) defaults to 20% of ``total_steps`` (at least one step, at
    most the steps after warmup).
    """
    check_choice("schedule", name, SCHEDULES)
    if name != "wsd":
        decay_steps = 0
    elif decay_steps is None:
        total = _steps("total_steps", total_steps, 1)
        room = total - _steps("warmup_steps", warmup_steps, 0)
        decay_steps = min(room, max(1, round(_WSD_DEFAULT_DECAY_FRACTION * total)))
    return Schedule(
        kind=name,
        total_steps=total_steps,
        warmup_steps=warmup_steps,
        final=final,
        decay_steps=decay_steps,
        cooldown=cooldown,
    )


def constant(total_steps: int, warmup_steps: int = 0) -> Schedule:
    """Linear warmup, then the peak learning rate to the end."""
    return make_schedule("constant", total_steps, warmup_steps)


def warmup_cosine(total_steps: int, warmup_steps: int = 0, final: float = 0.0) -> Schedule:
    """Linear warmup, then cosine decay to ``final`` times the peak."""
    return make_schedule("cosine", total_steps, warmup_steps, final=final)


def warmup_linear(total_steps: int, warmup_steps: int = 0, final: float = 0.0) -> Schedule:
    """Linear warmup, then linear decay to ``final`` times the peak (zero by default)."""
    return make_schedule("linear", total_steps, warmup_steps, final=final)


def warmup_stable_decay(
    total_steps: int,
    warmup_steps: int = 0,
    decay_steps: int | None = None,
    final: float = 0.0,
    cooldown: str = "linear",
) -> Schedule:
    """Linear warmup, the peak until the last ``decay_steps``, then a cooldown to ``final``."""
    return make_schedule(
        "wsd", total_steps, warmup_steps, final=final, decay_steps=decay_steps, cooldown=cooldown
    )


class WeightDecayScheduler:
    r"""Scale each param group's weight decay over training, as LR schedulers scale its lr.

    At step :math:`t` (``scheduler.step()`` once per optimizer step, after it) every group
    gets :math:`\lambda_t = \lambda_0\,f(t)`, with :math:`\lambda_0` the group's
    ``weight_decay`` when the scheduler was built (kept as ``initial_weight_decay``) and
    :math:`f` ``factor``: a function of the step, or a :class:`Schedule`. Groups with zero
    decay stay at zero. Works with any optimizer whose groups have ``weight_decay``
    (``adamwkit.AdamW`` in any ``decay_scale``, ``torch.optim.AdamW``); the value is in the
    optimizer's convention.

    :meth:`cosine` gives the rise DINO uses (Caron et al. 2021, arXiv:2104.14294: 0.04 to
    0.4 over training): :math:`f(t) = e + (1 - e)\tfrac12(1 + \cos(\pi t / T))`, from 1 to
    ``end_factor`` :math:`e`. PyTorch has no such scheduler (pytorch/pytorch#22343).

    Example::

        opt = AdamW(param_groups(model, 0.04), lr=1e-3)
        wd_sched = WeightDecayScheduler.cosine(opt, end_factor=10, total_steps=10_000)
        for batch in loader:
            ...; opt.step(); wd_sched.step()
    """

    def __init__(
        self, optimizer: Optimizer, factor: Callable[[int], float] | Schedule, last_step: int = -1
    ) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ValueError(
                f"optimizer={type(optimizer).__name__} is invalid: expected a torch optimizer"
            )
        if not callable(factor):
            raise ValueError(f"factor={factor!r} is invalid: expected a function of the step")
        for i, group in enumerate(optimizer.param_groups):
            if "weight_decay" not in group:
                raise ValueError(f"param_groups[{i}] has no weight_decay to schedule")
        self.optimizer, self.factor = optimizer, factor
        self.last_step = int(last_step)
        self.step()

    @classmethod
    def cosine(
        cls, optimizer: Optimizer, end_factor: float, total_steps: int, last_step: int = -1
    ) -> WeightDecayScheduler:
        """From each group's weight decay to ``end_factor`` times it along a half cosine
        over ``total_steps``, held there after: DINO's 0.04 to 0.4 is ``end_factor=10``."""
        e = check_range("end_factor", end_factor, 0.0)
        total = _steps("total_steps", total_steps, 1)

        def factor(t: int) -> float:
            return e + (1.0 - e) * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / total))

        return cls(optimizer, factor, last_step)

    def _value(self, group: dict[str, Any], t: int) -> float:
        start = group["initial_weight_decay"]
        f = float(self.factor(t))
        if not (math.isfinite(f) and f >= 0):
            raise ValueError(f"factor({t}) = {f!r} is invalid: expected a finite number >= 0")
        return start * f

    def step(self) -> None:
        """Advance one step and set every group's ``weight_decay``."""
        self.last_step += 1
        for group in self.optimizer.param_groups:
            # a group added after the scheduler starts from its weight decay then
            group.setdefault("initial_weight_decay", float(group.get("weight_decay", 0.0)))
            group["weight_decay"] = self._value(group, self.last_step)

    def get_last_weight_decay(self) -> list[float]:
        """Each group's weight decay as last set."""
        return [float(g["weight_decay"]) for g in self.optimizer.param_groups]

    def state_dict(self) -> dict[str, Any]:
        return {"last_step": self.last_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_step = int(state["last_step"]) - 1
        self.step()
