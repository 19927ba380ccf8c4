r"""Weight decay from one cheap run without it: :func:`probe`.

A run without weight decay shows when the model starts to overfit: its validation loss
falls, bottoms out at the *turning epoch* :math:`t_{\mathrm{turn}}`, then rises. In the
evidence studies (``docs/evidence.md``) the cross-validated optimum timescale followed that
epoch across eleven task families, sizes, widths, batch sizes and learning rates, within 2x
on 70% of the studies of a family left out of the fit (transformers sit several times
below it, regression rarely turns; the 80% range is wide for that reason):

.. math::

    \tau^*_{\mathrm{epoch}} \approx c\,t_{\mathrm{turn}},
    \qquad \lambda = \frac{B}{\eta\,\tau^*_{\mathrm{epoch}}\,N}

with :math:`c` and its 80% range fitted on the evidence and checked on families left out
of the fit (``adamwkit._calibration``: ``PROBE_*``). This is the timescale reading of
weight decay (Wang & Aitchison 2024, arXiv:2405.13698): the weights average the updates
of the last :math:`\tau` epochs, and the best window is about as long as the model takes
to fit the signal before it starts fitting the noise.

:func:`probe` cross-validates zero decay alone (``tune(grid=[0.0])``: the same folds,
seeds and training as a later ``tune``, about one candidate's cost) and reads the turning
epoch from the mean of its folds' learning curves. A curve still falling in the last 10%
of the epochs has not turned: the model has not started to overfit, and the suggestion
falls back to :func:`adamwkit.suggest`'s calibrated rule, which needs no run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import _calibration as _cal
from .. import render
from .._checks import ArgumentError
from ..tasks import Task
from . import cv
from .objective import NoResult, _name_of, _takes_one_argument
from .options import check_mode
from .turning import probe_tau_epoch, turning_epoch

__all__ = ["ProbeResult", "probe", "probe_tau_epoch", "turning_epoch"]


@dataclass
class ProbeResult:
    """What :func:`probe` returns. ``curve`` is the mean validation loss over the folds
    at each reported epoch (``steps``); weight decays (``value``, ``low_value``,
    ``high_value``) are in the convention of ``decay_scale``, for the examples a fold
    trains on (``n_train``), like ``tune``'s candidates. ``rule`` is ``"probe"``, or
    ``"calibrated"`` when the curve did not turn (then the range is that rule's)."""

    task: str
    epochs: int
    steps: list[float]
    curve: list[float]
    turn: float
    turned: bool
    rise: float
    tau_epoch: float
    tau_low: float
    tau_high: float
    value: float
    low_value: float
    high_value: float
    rule: str
    decay_scale: str
    lr: float
    batch_size: int
    n_train: int
    run_dir: Path | None = None
    summary: Mapping[str, Any] = field(default_factory=dict, repr=False)
    confirm: Any = None  # the TuneResult of probe(confirm=True)

    def to_dict(self) -> dict[str, Any]:
        keys = ("task", "epochs", "steps", "curve", "turn", "turned", "rise", "tau_epoch",
                "tau_low", "tau_high", "value", "low_value", "high_value", "rule",
                "decay_scale", "lr", "batch_size", "n_train")  # fmt: skip
        out = {k: getattr(self, k) for k in keys}
        out["run_dir"] = None if self.run_dir is None else str(self.run_dir)
        out["verdict"] = self.verdict()
        c = self.confirm
        out["confirm"] = None if c is None else {
            "grid": list(c.summary["settings"]["grid"]),
            "best_weight_decay": c.best_weight_decay,
            "one_se_weight_decay": c.one_se_weight_decay,
            "flat": c.flat,
            "run_dir": str(c.run_dir),
        }  # fmt: skip
        return out

    def blocks(self, rename: render.Rename | None = None) -> list[render.Block]:
        """What ``str()`` and ``adamwkit tune --probe`` show (:mod:`adamwkit.render`);
        ``rename`` maps argument names in the confirming run's notes."""
        return render.probe_result(self, rename)

    def __str__(self) -> str:
        return render.plain(self.blocks())

    def verdict(self) -> str:
        """The suggestion and where it comes from, in plain words."""
        g = "{:.3g}".format
        if self.rule == "finetune":
            why = (
                "A fine-tune of pretrained weights: the probe's turning-epoch law is fitted on "
                "training from scratch, so this is the fine-tuning rule's value, whose range "
                "keeps the total decay lr x wd x steps within its bound"
            )
        elif self.turned:
            why = (
                f"Without weight decay the validation loss is lowest at epoch {g(self.turn)} "
                f"of {self.epochs} and {g(100 * self.rise)}% higher at the end; the evidence "
                f"puts the optimal timescale at {g(_ratio())}x that epoch"
            )
        else:
            why = (
                f"Without weight decay the validation loss is still falling at epoch "
                f"{g(self.turn)} of {self.epochs} (no overfitting yet), so the probe says "
                "little; this is the calibrated rule's value"
            )
        return (
            f"{why}: tau_epoch {g(self.tau_epoch)}, weight decay {self.value:.4g} "
            f"(decay_scale={self.decay_scale!r}), 80% range {self.low_value:.4g} to "
            f"{self.high_value:.4g}. {self._confirmed()}"
        )

    def _confirmed(self) -> str:
        """What the confirmation grid found, in a sentence."""
        if self.confirm is None:
            return "Confirm it over that range (confirm=True, --confirm)."
        best = self.confirm.best_weight_decay
        if best is None:
            return f"The confirmation over that range named none: {self.confirm.summary['verdict']}"
        return f"Confirmed over that range: best {best:.4g}."


def _readable_curve(zero: dict[str, Any], task: str) -> tuple[list[float], list[float]]:
    """The folds' mean curve of the zero-decay candidate, at least three finite points at
    positive steps; else :class:`~.objective.NoResult` saying what the objective must
    report."""
    from .report import mean_curve

    steps, curve = mean_curve(zero.get("fold_curves") or {})
    kept = [(t, v) for t, v in zip(steps, curve, strict=True) if t > 0 and math.isfinite(v)]
    if len(kept) < 3:
        raise NoResult(
            f"the probe of {task!r} needs the validation loss during training: the folds "
            f"reported {len(kept)} finite point(s) at positive steps in common; call "
            "trial.report(loss, epoch) once per epoch in the objective (epochs counted from 1)"
        )
    return [t for t, _ in kept], [v for _, v in kept]


def _ratio() -> float:
    """tau* / turn at a turn of one epoch: the constant c of c * turn."""
    return math.exp(_cal.PROBE_COEF["const"])


def probe(
    objective: Any = "digits",
    *,
    study: str | None = None,
    out: str | Path = "adamwkit-runs",
    confirm: bool = False,
    extend: int = 2,
    **tune_kwargs: Any,
) -> ProbeResult:
    """Train without weight decay on the CV folds; suggest weight decay from where the
    validation loss turns (see the module's docstring).

    ``objective`` and ``tune_kwargs`` are as in :func:`adamwkit.tune` (``folds``,
    ``epochs``, ``lr``, ``batch_size``, ``decay_scale``, ``device``, ...); the grid is
    zero alone and there are no refits. An objective must report its validation loss
    during training (``trial.report(loss, epoch)``) and give ``epochs`` and
    ``batch_size``; the options it does not take (``grid``, ``sampler``, ``test``, ...:
    :data:`adamwkit.tuning.options.MODE_FLAGS`) are refused in one line. The study is
    ``<study>.probe`` in ``out``; rerunning resumes it.
    ``confirm=True`` then cross-validates zero and a grid at 2^0.5 spacing over the 80%
    range, with refits (``<study>.probe-confirm``, extended ``extend`` rounds past an edge).

    Runs that end without a curve to read (zero decay failed, or the objective reported
    fewer than three points) raise :class:`~.objective.NoResult` (the command line: one
    line, exit code 1).

    Example: ``probe("digits").verdict()``.
    """
    from .planning import default_study_name
    from .run import tune

    check_mode("probe", tune_kwargs)  # the options it does not take (tuning.options)
    if _is_objective(objective) and any(
        tune_kwargs.get(k) is None for k in ("epochs", "batch_size")
    ):
        raise ArgumentError(
            "probe needs epochs and batch_size with an objective, to turn the curve's "
            "epochs into a weight decay",
            "epochs",
            "batch_size",
        )
    name = study if study is not None else default_study_name(_source_name(objective))
    run = tune(objective, grid=[0.0], test=False, extend=0, study=f"{name}.probe", out=out,
               **tune_kwargs)  # fmt: skip
    s = run.summary
    zero = next(c for c in s["candidates"] if c["weight_decay"] == 0.0)
    if zero["state"] != "complete":
        raise NoResult(
            f"the probe of {s['task']!r} did not finish: zero decay is {zero['state']}"
            + (f" ({zero['reason']})" if zero.get("reason") else "")
        )
    steps, curve = _readable_curve(zero, s["task"])
    epochs, factor = s["epochs"], s["tau_epoch_factor"]
    assert epochs is not None and factor is not None  # checked before training
    at = turning_epoch(curve) - 1
    turn = steps[at] * epochs / steps[-1]  # the reported steps, in epochs
    rise = curve[-1] / curve[at] - 1 if curve[at] > 0 else 0.0
    found = None if s["settings"].get("pretrained") else probe_tau_epoch(turn, epochs)
    rule = "probe"
    if s["settings"].get("pretrained"):  # the turning-epoch law is fitted from scratch
        found, rule = _finetune_taus(s, epochs, factor), "finetune"
    elif found is None:
        from ..rules import calibrated_tau_epoch, training_setup

        setup = training_setup(dataset_size=s["n_train"], batch_size=s["batch_size"],
                               epochs=epochs, lr=s["lr"])  # fmt: skip
        found = calibrated_tau_epoch(setup)
        assert found is not None
        rule = "calibrated"
    tau, tau_lo, tau_hi = found
    result = ProbeResult(
        task=s["task"], epochs=epochs, steps=steps, curve=curve, turn=turn,
        turned=rule == "probe", rise=rise, tau_epoch=tau, tau_low=tau_lo, tau_high=tau_hi,
        value=factor / tau, low_value=factor / tau_hi, high_value=factor / tau_lo, rule=rule,
        decay_scale=s["decay_scale"], lr=s["lr"], batch_size=s["batch_size"],
        n_train=s["n_train"], run_dir=run.run_dir, summary=s,
    )  # fmt: skip
    if run.run_dir is not None:
        from .report import write_probe_report

        run.paths["report"] = write_probe_report(run.run_dir, result)
    if confirm:
        result.confirm = tune(objective, grid=cv.range_grid(result.low_value, result.high_value),
                              extend=extend, study=f"{name}.probe-confirm", out=out,
                              **tune_kwargs)  # fmt: skip
    return result


def _finetune_taus(s: Mapping[str, Any], epochs: int, factor: float) -> tuple[float, float, float]:
    """The fine-tuning rule's value and range (:func:`adamwkit.suggest` with
    ``pretrained``), as tau_epoch (``factor / weight decay``)."""
    from ..suggest import suggest

    sug = suggest(lr=s["lr"], batch_size=s["batch_size"], dataset_size=s["n_train"],
                  epochs=epochs, decay_scale=s["decay_scale"], pretrained=True,
                  adapters=bool(s["settings"].get("adapters")))  # fmt: skip
    assert sug.low_value is not None and sug.high_value is not None  # the rule has a range
    return factor / sug.value, factor / sug.high_value, factor / sug.low_value


def _is_objective(objective: Any) -> bool:
    """Whether ``objective`` is a function of the trial (not a Task, a task's name, or a
    function returning a Task), found without calling anything."""
    if isinstance(objective, str):
        if ":" not in objective:
            return False
        from .._loading import load_object

        objective = load_object(objective, "objective")
    return (
        not isinstance(objective, Task) and callable(objective) and _takes_one_argument(objective)
    )


def _source_name(objective: Any) -> str:
    """The name tune gives a study by default, without loading anything."""
    if isinstance(objective, str):
        return objective
    return objective.name if isinstance(objective, Task) else _name_of(objective)
