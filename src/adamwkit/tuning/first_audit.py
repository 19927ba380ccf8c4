"""The audit of a study's first run: the "Optimizer audit" of tune's report.

Once per study, the first run that starts with a weight decay above zero (in whichever
process runs it) has its optimizer audited by :func:`adamwkit.audit` (zero decay is
skipped: its optimizer decays nothing, so an audit of it says nothing about decay):

- an objective's run (the user's loop, a Hugging Face ``Trainer``, Lightning, or a Task
  trained one run at a time by :func:`adamwkit.fit`): a global optimizer step pre-hook
  (``torch.optim.optimizer.register_optimizer_step_pre_hook``), installed for that run
  only and removed after it, audits the first optimizer stepped (in the thread that runs
  the objective), at its first step, so no help from the objective is needed. Its
  tensors are named from the model handed over with :meth:`Trial.audit_model
  <adamwkit.Trial.audit_model>` (which :meth:`Trial.optimizer <adamwkit.Trial.optimizer>`
  and ``fit`` call), else by their place (``param_groups[0]['params'][3]``). The run's
  length is ``epochs`` x the batches of its training split, when ``tune`` knows both;
- a stacked population (several runs of a Task trained as one model) has no optimizer of
  its own: every member is stepped with the groups and values that ``fit`` would give it,
  so the audit is of that standalone model and :class:`adamwkit.AdamW`, built for the
  first member with weight decay above zero (:meth:`.objective.TaskObjective.standalone`).

The audit (``Audit.to_dict()``, with ``captured``: what was audited, in words, and
``run``: its weight decay, lr and fold) is stored in the study (:data:`.study.AUDIT`), so
every worker, a resumed run and a rerun that rebuilds the report read the same one. A
study that has one is not audited again; a run that stepped no optimizer leaves the next
run to try. An error inside the audit never reaches the run: it is stored instead and the
report says so in a note.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from .. import render
from ..audit import audit
from .objective import TaskObjective, Trial

if TYPE_CHECKING:
    from .study import StudyStore

__all__ = [
    "FirstAudit",
    "audit_blocks",
    "audit_lines",
    "audit_note",
    "audit_view",
    "for_summary",
]


def _first_line(err: BaseException) -> str:
    from .study import typed_first_line

    return typed_first_line(err)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    """``d`` as plain JSON values, as the study stores them (a NumPy number becomes a
    Python one, anything else without a JSON form its text)."""

    def convert(value: Any) -> Any:
        item = getattr(value, "item", None)
        return item() if callable(item) else str(value)

    out: dict[str, Any] = json.loads(json.dumps(d, default=convert))
    return out


def _where(trial: Trial) -> str:
    return "the refit" if trial.fold is None else f"fold {trial.fold + 1}"


def _steps(trial: Trial) -> int | None:
    """The run's optimizer steps, when ``tune`` knows its epochs and batch size."""
    if not trial.epochs or not trial.batch_size or not len(trial.train_idx):
        return None
    return int(trial.epochs) * math.ceil(len(trial.train_idx) / int(trial.batch_size))


#: Findings about one value's strength over the run: the sweep tries many values, so they
#: describe the candidate audited, not the set-up; the table keeps its total decay.
_PER_VALUE = ("too-short", "too-long")


def _for_a_sweep(result: Any) -> dict[str, Any]:
    """The audit's ``to_dict()`` without :data:`_PER_VALUE` findings, with a note."""
    d: dict[str, Any] = result.to_dict()
    kept = [f for f in d["findings"] if f["code"] not in _PER_VALUE]
    if len(kept) < len(d["findings"]):
        d["notes"] = [*d.get("notes", []), (
            "too-short / too-long are left out: they judge one weight decay's strength over "
            "the run, and the sweep tries many (the table's total decay is this run's)"
        )]  # fmt: skip
    d["findings"] = kept
    return d


def _holds(model: nn.Module, optimizer: torch.optim.Optimizer) -> bool:
    """Whether ``model`` holds any of ``optimizer``'s tensors."""
    ids = {id(p) for p in model.parameters()}
    return any(id(p) in ids for g in optimizer.param_groups for p in g["params"])


class FirstAudit:
    """This process's part in auditing the study's first run (see the module's docstring).

    :meth:`start` names the study that keeps the audit (the CV round's, whatever round
    the run belongs to); until then, and once an audit is stored, nothing is watched.
    """

    def __init__(self) -> None:
        self.home: StudyStore | None = None
        self.done = False

    def start(self, home: StudyStore) -> None:
        self.home, self.done = home, False

    def wanted(self, weight_decay: float) -> bool:
        """Whether a run with ``weight_decay`` is to be audited: the study has no audit yet."""
        if self.done or self.home is None or not weight_decay > 0:
            return False
        try:
            if self.home.audit_record() is None:
                return True
        except Exception:  # the storage's trouble shows elsewhere; the run matters more
            return False
        self.done = True
        return False

    @contextlib.contextmanager
    def watch(self, trial: Trial) -> Iterator[None]:
        """Audit the first optimizer stepped inside the block, at its first step, when
        this run is the one to audit; the hook is removed on the way out, however the run
        ends, and the audit is stored."""
        if not self.wanted(trial.weight_decay):
            yield
            return
        record: dict[str, Any] = {}
        thread = threading.get_ident()

        def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
            # audited already (every later step passes straight through), or another
            # thread's optimizer: not this run's
            if record or threading.get_ident() != thread:
                return
            record["run"] = self._run(trial)
            record["captured"] = (
                f"the {type(optimizer).__name__} of the first run with weight decay "
                f"{trial.weight_decay:.4g} (lr {trial.lr:.3g}, {_where(trial)}), at its first "
                "step"
            )
            try:
                model = trial.audited_model
                named = model is not None and _holds(model, optimizer)
                record["captured"] += "; tensors " + (
                    "named from the model" if named
                    else "named by their place (trial.audit_model(model) names them)"
                    if model is None
                    else "named by their place: the model handed over holds none of them"
                )  # fmt: skip
                result = audit(optimizer, model if named else None, total_steps=_steps(trial))
                record["audit"] = _plain(_for_a_sweep(result))
            except Exception as err:  # the audit's failure, never the run's
                record["audit"], record["error"] = None, _first_line(err)

        try:
            handle = register_optimizer_step_pre_hook(hook)
        except Exception as err:  # this torch cannot watch: say so, and run as usual
            self._store({"audit": None, "error": _first_line(err), "run": self._run(trial)})
            yield
            return
        try:
            yield
        finally:
            handle.remove()
            if record:
                self._store(record)

    def population(self, objective: TaskObjective, trials: Sequence[Trial]) -> None:
        """Audit a stacked population's first member with weight decay above zero, as the
        standalone model and AdamW ``fit`` would build for it (see the module's docstring)."""
        trial = next((t for t in trials if t.weight_decay > 0), None)
        if trial is None or not self.wanted(trial.weight_decay):
            return
        record: dict[str, Any] = {
            "captured": (
                f"the AdamW that adamwkit.fit builds for the first run with weight decay "
                f"{trial.weight_decay:.4g} (lr {trial.lr:.3g}, {_where(trial)}), with its "
                "model: the runs were trained as one stacked population, which has no "
                "optimizer of its own and steps each member with these groups and values"
            ),
            "run": self._run(trial),
        }
        try:
            model, opt, steps = objective.standalone(trial)
            record["audit"] = _plain(_for_a_sweep(audit(opt, model, total_steps=steps)))
        except Exception as err:  # the audit's failure, never the runs'
            record["audit"], record["error"] = None, _first_line(err)
        self._store(record)

    @staticmethod
    def _run(trial: Trial) -> dict[str, Any]:
        return {"weight_decay": trial.weight_decay, "lr": trial.lr, "fold": trial.fold}

    def _store(self, record: dict[str, Any]) -> None:
        """Store ``record`` unless another worker stored one meanwhile (the study keeps
        one audit); a storage error leaves the next run to try again."""
        if self.home is None:
            return
        try:
            if self.home.audit_record() is None:
                self.home.record_audit(record)
            self.done = True
        except Exception:
            pass


# ---------------------------------------------------------------------------- reading it


def for_summary(record: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """summary.json's ``audit``: the audit's ``to_dict()`` with ``captured`` and ``run``;
    ``None`` when nothing was captured, or the audit failed (:func:`audit_note` says so)."""
    if not record or not record.get("audit"):
        return None
    return {**record["audit"], "captured": record.get("captured", ""), "run": record.get("run")}


def audit_note(record: Mapping[str, Any] | None) -> str | None:
    """The summary's note when the audit failed, else ``None``."""
    if not record or not record.get("error"):
        return None
    return (
        f"the optimizer audit of the first run failed ({record['error']}); the run itself "
        "went on unaffected"
    )


class _View:
    """A stored audit (or one of its rows or findings) read by attribute, as
    :func:`adamwkit.render.audit_report` reads an :class:`adamwkit.audit.Audit`; a key the
    stored version lacks reads as ``None``."""

    def __init__(self, values: Mapping[str, Any]) -> None:
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return self._values.get(name)


def audit_view(d: Mapping[str, Any]) -> Any:
    """summary.json's ``audit`` as :func:`adamwkit.render.audit_report` reads an Audit."""
    rows = [_View({**r, "shape": tuple(r.get("shape") or ())}) for r in d.get("tensors") or ()]
    findings = [
        _View({**f, "tensors": tuple(f.get("tensors") or ())}) for f in d.get("findings") or ()
    ]
    return _View({**d, "rows": rows, "findings": findings, "notes": list(d.get("notes") or ())})


def audit_blocks(d: Mapping[str, Any]) -> list[render.Block]:
    """The audit's blocks, the findings (and any notes) first, then the table of tensors."""
    blocks = render.audit_report(audit_view(d))
    lines = [b for b in blocks if isinstance(b, render.Line)]
    return lines + [b for b in blocks if not isinstance(b, render.Line)]


def audit_lines(d: Mapping[str, Any] | None) -> list[render.Line]:
    """The command line's share of the audit: a line per warning or error, or ``audit: no
    mistake found`` (the table and any info findings are in the report); nothing without
    an audit."""
    if not d:
        return []
    findings = [f for f in d.get("findings") or [] if f.get("severity") != "info"]
    if not findings:
        return [render.Line("no mistake found in the optimizer's set-up (report.html has the "
                            "table)", label="audit:", style="dim")]  # fmt: skip
    styles = {"error": "alert", "warning": "warn"}
    return [
        render.Line(
            str(f.get("text", "")),
            label=f"audit {f.get('severity')} [{f.get('code')}]:",
            style=styles.get(str(f.get("severity")), "dim"),
        )
        for f in findings
    ]
