"""What the Trainer and Lightning ``MonitorCallback`` share: finding the torch optimizer
inside a framework's wrappers, attaching a :class:`~adamwkit.Monitor` to it, turning its
last record into per-layer logger keys, and keeping the log, its verdicts and the file at
the end. Needs neither framework."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from .._checks import check_whole
from ..monitor import Monitor, MonitorLog, Verdict

__all__ = ["MonitorCore", "callback_class", "torch_optimizer"]


def torch_optimizer(optimizer: Any) -> torch.optim.Optimizer | None:
    """The torch optimizer whose ``step`` runs the update: ``optimizer`` itself, or the one
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


class MonitorCore:
    """What both callbacks share: attach a :class:`~adamwkit.Monitor`, turn its last record
    into per-layer logger keys, and at the end keep the log, its verdicts and the file."""

    _owner = "MonitorCallback"

    def __init__(self, every: int = 10, path: str | os.PathLike[str] | None = None,
                 log_layers: bool = True) -> None:  # fmt: skip
        self.every = check_whole("every", every, 1)
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ValueError(f"path={path!r} is invalid: expected a file path or None")
        self.path = path
        self.log_layers = bool(log_layers)
        self.monitor: Monitor | None = None
        self.log: MonitorLog | None = None
        self.verdicts: list[Verdict] = []
        self.saved: Path | None = None
        self._logged = 0  # records already sent to the loggers
        self._latest_step = 0  # the step of the last record sent

    def _start(self) -> None:
        if self.monitor is not None:  # a run that ended without its end event
            self.monitor.close()
        self.monitor, self.log, self.verdicts, self.saved, self._logged = None, None, [], None, 0

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
        """The last record's per-layer numbers as logger keys, if not sent yet (else ``{}``):
        ``monitor/<layer>/norm``, ``monitor/<layer>/norm_ratio`` (the norm over its
        equilibrium norm, for layers that have one) and ``monitor/<layer>/angle``
        (radians). Non-finite values are left out."""
        mon = self.monitor
        if mon is None or not self.log_layers:
            return {}
        # Only the last record is read, so that a log event costs one small device read
        # however long the run.
        if mon.recorded == self._logged:
            return {}
        self._logged = mon.recorded
        out: dict[str, float] = {}
        for row in mon.latest(by="layer"):
            layer = row["name"]
            self._latest_step = row["step"]
            pred = row["pred_norm"]  # inf for a layer that is not decayed
            values = {
                "norm": row["norm"],
                "norm_ratio": row["norm"] / pred if 0 < pred < math.inf else math.nan,
                "angle": row["angle"],
            }
            for key, value in values.items():
                if math.isfinite(value):
                    out[f"monitor/{layer}/{key}"] = value
        return out

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


def callback_class(core: type, base: type, module: str) -> type:
    """``MonitorCallback``: ``core`` (the events) on the framework's callback ``base``,
    built when first asked for so that importing the integration needs no framework."""
    cls = type("MonitorCallback", (core, base), {"__module__": module, "__doc__": core.__doc__})
    cls.__qualname__ = "MonitorCallback"
    return cls
