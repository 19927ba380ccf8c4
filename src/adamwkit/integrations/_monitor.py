"""What the Trainer and Lightning ``MonitorCallback`` share: finding the torch optimizer
inside a framework's wrappers, attaching a :class:`~adamwkit.Monitor` to it, turning its
records into logger keys (a handful of summary keys, the per-layer numbers on request), and
keeping the log, its verdicts and the file at the end. Needs neither framework."""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import check_whole
from .._optimizers import unwrap
from ..monitor import LIVE_LR, SCALE_INVARIANT_LIMIT, Monitor, MonitorLog, Verdict

__all__ = ["MonitorCore", "callback_class", "torch_optimizer"]


#: The torch optimizer whose ``step`` runs the update, inside a framework's wrappers
#: (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``), or ``None``.
torch_optimizer = unwrap


SUMMARY_KEYS = (
    "monitor/layers_equilibrium",
    "monitor/layers_off_equilibrium",
    "monitor/layers_reference",
    "monitor/norm_ratio_median",
    "monitor/decay_per_step",
)
"""The keys a callback logs by default (``monitor/norm_ratio_median`` only once a
scale-invariant layer has been seen)."""

NEAR_EQUILIBRIUM = (0.8, 1.25)
"""A scale-invariant layer counts as at equilibrium in the logged keys when its norm is
within these multiples of the equilibrium norm."""


class MonitorCore:
    """What both callbacks share: attach a :class:`~adamwkit.Monitor`, turn its records
    into logger keys, and at the end keep the log, its verdicts and the file.

    The keys, per logging event with a new record (:data:`SUMMARY_KEYS`; each decayed
    layer taken where the verdicts judge it, at its last record whose lr is at least a
    tenth of the largest so far):

    - ``monitor/layers_equilibrium``: scale-invariant layers (their gradient orthogonal to
      their weights, :meth:`adamwkit.MonitorLog.scale_invariant`) whose norm is within
      0.8x to 1.25x of the equilibrium norm;
    - ``monitor/layers_off_equilibrium``: scale-invariant layers outside that band;
    - ``monitor/layers_reference``: the other decayed layers, for which the equilibrium
      norm is a reference only;
    - ``monitor/norm_ratio_median``: the median norm over equilibrium norm of the
      scale-invariant layers (left out while there is none);
    - ``monitor/decay_per_step``: the mean fraction ``lr_t * wd`` the last recorded step
      decayed, over the decayed layers.

    ``per_layer=True`` adds the last record's numbers per layer:
    ``monitor/<layer>/norm``, ``monitor/<layer>/norm_ratio`` (over the equilibrium norm,
    for a decayed layer), ``monitor/<layer>/angle`` (radians per step) and
    ``monitor/<layer>/grad_cos`` (the cosine between the layer's weights and gradient).
    Non-finite values are left out; ``log_summary=False`` with ``per_layer=False`` logs
    nothing."""

    _owner = "MonitorCallback"

    def __init__(self, every: int = 10, path: str | os.PathLike[str] | None = None, *,
                 per_layer: bool = False, log_summary: bool = True) -> None:  # fmt: skip
        self.every = check_whole("every", every, 1)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path={path!r} is invalid: expected a file path or None")
        self.path = path
        self.per_layer = bool(per_layer)
        self.log_summary = bool(log_summary)
        self.monitor: Monitor | None = None
        self.log: MonitorLog | None = None
        self.verdicts: list[Verdict] = []
        self.saved: Path | None = None
        self._logged = 0  # records already sent to the loggers
        self._latest_step = 0  # the step of the last record sent
        self._layers: dict[str, _LayerState] = {}

    def _start(self) -> None:
        if self.monitor is not None:  # a run that ended without its end event
            self.monitor.close()
        self.monitor, self.log, self.verdicts, self.saved, self._logged = None, None, [], None, 0
        self._layers = {}

    def _attach(self, optimizer: Any, model: Any, step: int, before_hook: bool = True) -> bool:
        """Attach to ``optimizer`` (unwrapped) unless attached already; whether attached.
        Recorded steps count from ``step``, the trainer's step at attachment, so a resumed
        run's records carry the trainer's step numbers."""
        if self.monitor is not None:
            return True
        inner = torch_optimizer(optimizer)
        if inner is None:
            return False
        named = model if isinstance(model, torch.nn.Module) else None
        self.monitor = Monitor(inner, self.every, model=named, start_step=int(step),
                               before_hook=before_hook)  # fmt: skip
        return True

    def _latest(self) -> dict[str, float]:
        """The logger keys for the records not sent yet (``{}`` when there is none): the
        summary and, with ``per_layer``, the last record's per-layer numbers. Only the new
        records are read from the device, so that a log event costs the same however long
        the run."""
        mon = self.monitor
        if mon is None or not (self.per_layer or self.log_summary):
            return {}
        if mon.recorded == self._logged:
            return {}
        new = mon.log(since=self._logged).layers()
        self._logged = mon.recorded
        self._latest_step = int(new.steps[-1])
        self._update(new)
        out = self._summary() if self.log_summary else {}
        if self.per_layer:
            out.update(_per_layer(new))
        return {k: v for k, v in out.items() if math.isfinite(v)}

    def _update(self, new: MonitorLog) -> None:
        """Fold the new records into each layer's running state."""
        size = np.array([math.prod(t.shape) for t in new.tensors], dtype=np.float64)
        cos = np.abs(new.grad_cos) * np.sqrt(size)
        pred, norm = new.pred_norm, new.values[:, :, 1]
        for j, t in enumerate(new.tensors):
            state = self._layers.setdefault(t.layer, _LayerState())
            state.known += int(np.isfinite(cos[:, j]).sum())
            state.below += int((cos[:, j] < SCALE_INVARIANT_LIMIT).sum())
            for r in range(len(new.steps)):
                lr, decay = float(new.lr[r, j]), float(new.decay[r, j])
                if not math.isfinite(lr):
                    continue
                state.max_lr = max(state.max_lr, lr)
                state.decay = decay
                if decay > 0:
                    state.decayed = True
                ratio = float(norm[r, j] / pred[r, j]) if 0 < pred[r, j] < math.inf else math.nan
                if lr >= LIVE_LR * state.max_lr and math.isfinite(ratio):
                    state.ratio = ratio

    def _summary(self) -> dict[str, float]:
        """The summary keys (:data:`SUMMARY_KEYS`) from the layers' running state."""
        low, high = NEAR_EQUILIBRIUM
        decayed = [s for s in self._layers.values() if s.decayed]
        invariant = [s for s in decayed if s.invariant and math.isfinite(s.ratio)]
        near = sum(low <= s.ratio <= high for s in invariant)
        ratios = [s.ratio for s in invariant]
        decays = [s.decay for s in decayed if math.isfinite(s.decay)]
        return {
            "monitor/layers_equilibrium": float(near),
            "monitor/layers_off_equilibrium": float(len(invariant) - near),
            "monitor/layers_reference": float(len(decayed) - len(invariant)),
            "monitor/norm_ratio_median": float(np.median(ratios)) if ratios else math.nan,
            "monitor/decay_per_step": float(np.mean(decays)) if decays else math.nan,
        }

    def _finish(
        self, default_dir: str | os.PathLike[str] | None, write: bool, expected: str
    ) -> None:
        """Detach; keep the log and its verdicts; save the file when ``write``."""
        mon, self.monitor = self.monitor, None
        if mon is None:
            warnings.warn(
                f"{self._owner} never found the optimizer: expected {expected}, a "
                "torch.optim.Optimizer or a wrapper holding one in .optimizer; nothing was "
                "recorded or saved",
                UserWarning,
                stacklevel=3,
            )
            return
        mon.close()
        self.log = mon.log()
        self.verdicts = self.log.verdicts()
        if write:
            path = (
                Path(self.path)
                if self.path is not None
                else Path(default_dir or ".") / "monitor.jsonl"
            )
            self.saved = self.log.save(path)


@dataclass
class _LayerState:
    """A layer's running numbers in a callback: how many records knew its gradient's
    cosine and how many of them were below the scale-invariance limit, the largest lr so
    far, its norm ratio at its last judged record, and its last decay."""

    known: int = 0
    below: int = 0
    max_lr: float = 0.0
    ratio: float = math.nan
    decay: float = math.nan
    decayed: bool = False

    @property
    def invariant(self) -> bool:
        return 2 * self.below > self.known  # as MonitorLog.scale_invariant decides


def _per_layer(new: MonitorLog) -> dict[str, float]:
    """The last record's numbers per layer (``per_layer=True``)."""
    norm, pred = new.values[-1, :, 1], new.pred_norm[-1]  # pred: inf for a layer not decayed
    angle, cos = new.angle[-1], new.grad_cos[-1]
    out: dict[str, float] = {}
    for j, t in enumerate(new.tensors):
        p = float(pred[j])
        out[f"monitor/{t.layer}/norm"] = float(norm[j])
        out[f"monitor/{t.layer}/norm_ratio"] = float(norm[j]) / p if 0 < p < math.inf else math.nan
        out[f"monitor/{t.layer}/angle"] = float(angle[j])
        out[f"monitor/{t.layer}/grad_cos"] = float(cos[j])
    return out


def callback_class(core: type, base: type, module: str) -> type:
    """``MonitorCallback``: ``core`` (the events) on the framework's callback ``base``,
    built when first asked for so that importing the integration needs no framework."""
    cls = type("MonitorCallback", (core, base), {"__module__": module, "__doc__": core.__doc__})
    cls.__qualname__ = "MonitorCallback"
    return cls
