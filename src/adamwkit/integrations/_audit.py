"""What the Trainer and Lightning ``AuditCallback`` share: run :func:`adamwkit.audit` on the
optimizer a framework built, at the start of training, print it once, keep it as JSON, and
stop the run on an error finding when asked. Needs neither framework."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from .._checks import ArgumentError
from .._io import atomic_write, json_safe
from ..audit import Audit, Finding, audit

__all__ = ["AuditCore", "AuditFailed", "audit_callback_class"]

FILE_NAME = "audit.json"
"""The file an ``AuditCallback`` writes in the run's folder unless given ``path``."""


class AuditFailed(RuntimeError):
    """``AuditCallback(strict=True)`` found a finding of severity ``"error"`` before the
    first step. ``report`` holds the :class:`~adamwkit.Audit` and ``findings`` the error
    findings."""

    def __init__(self, message: str, report: Audit, findings: Sequence[Finding]) -> None:
        super().__init__(message)
        self.report = report
        self.findings = list(findings)


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ArgumentError(f"{name}={value!r} is invalid: expected True or False", name)
    return value


class AuditCore:
    """What both callbacks share: audit the optimizers (with the model, the lr schedulers
    stepped with them, the run's length and the configured weight decay), print, save, and
    raise under ``strict``."""

    _owner = "AuditCallback"

    def __init__(
        self, path: str | os.PathLike[str] | None = None, strict: bool = False, show: bool = True
    ) -> None:
        if path is not None and not isinstance(path, (str, os.PathLike)):
            raise ArgumentError(
                f"path={path!r} is invalid: expected a file path, an existing folder or None",
                "path",
            )
        self.path = path
        self.strict = _check_bool("strict", strict)
        self.show = _check_bool("show", show)
        self.report: Audit | None = None
        self.saved: Path | None = None

    def _start(self) -> None:
        self.report, self.saved = None, None

    def _target(self, default_dir: str | os.PathLike[str] | None) -> Path:
        if self.path is None:
            return Path(default_dir or ".") / FILE_NAME
        path = Path(self.path)
        return path / FILE_NAME if path.is_dir() else path

    def _run(
        self,
        optimizers: Sequence[Any],
        model: Any,
        schedulers: Sequence[Any],
        total_steps: Any,
        default_dir: str | os.PathLike[str] | None,
        main: bool,
        *,
        weight_decay: float | None = None,
        notes: Sequence[str] = (),
    ) -> None:
        """Audit ``optimizers`` together (each scheduler steps with its optimizer), add
        ``notes``, print and save on the ``main`` process, then raise :class:`AuditFailed`
        under ``strict`` on every process (so that every process stops)."""
        steps = _steps(total_steps)
        notes = list(notes)
        if schedulers and steps is None:
            notes.append("the run's length is not known: the lr schedule is not followed")
            schedulers = []
        report = audit(
            list(optimizers),
            model if isinstance(model, nn.Module) else None,
            scheduler=list(schedulers) or None,
            total_steps=steps,
            weight_decay=weight_decay,
        )
        report.notes.extend(notes)
        self.report = report
        if main:
            if self.show:
                print(report)
            text = json.dumps(json_safe(report.to_dict()), indent=2, allow_nan=False) + "\n"
            self.saved = atomic_write(self._target(default_dir), text)
        errors = [f for f in report.findings if f.severity == "error"]
        if self.strict and errors:
            where = f" (the report is in {self.saved})" if self.saved is not None else ""
            listed = "; ".join(
                f"{f.code} on {', '.join(f.tensors[:3])}{' ...' if len(f.tensors) > 3 else ''}: "
                f"{f.text}"
                for f in errors
            )
            raise AuditFailed(
                f"{self._owner}(strict=True) stopped the run before its first step: "
                f"{len(errors)} error finding(s){where}. {listed}",
                report,
                errors,
            )

    def _never_found(self, expected: str) -> None:
        if self.report is not None:
            return
        warnings.warn(
            f"{self._owner} never found the optimizer: expected {expected}, a "
            "torch.optim.Optimizer or a wrapper holding one in .optimizer; nothing was "
            "audited or saved",
            UserWarning,
            stacklevel=3,
        )


def _steps(total_steps: Any) -> int | None:
    """The run's optimizer steps when known: a whole number >= 1, else ``None``
    (``float('inf')`` for a run bounded by neither steps nor epochs, ``-1`` unset)."""
    try:
        x = float(total_steps)
    except (TypeError, ValueError):
        return None
    if not x >= 1 or x == float("inf") or x != int(x):
        return None
    return int(x)


def audit_callback_class(core: type, base: type, module: str) -> type:
    """``AuditCallback``: ``core`` (the events) on the framework's callback ``base``, built
    when first asked for so that importing the integration needs no framework."""
    cls = type("AuditCallback", (core, base), {"__module__": module, "__doc__": core.__doc__})
    cls.__qualname__ = "AuditCallback"
    return cls
