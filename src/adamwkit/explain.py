r"""Read an existing weight decay: :func:`explain`.

Its timescales, the equilibrium weight norm and angular update of Kosson et al.
(:mod:`adamwkit.equilibrium`), how much of the initial weights decay alone leaves, the total
decay :math:`D = \sum_t \eta_t\lambda` over the run (:func:`adamwkit.rules.total_decay`:
the schedule's mean lr when a schedule is given, else the peak lr), a verdict in plain words
for the regime (from scratch, or a fine-tune held to :math:`D \le`
:data:`adamwkit.rules.D_MAX_FINETUNE`), per-layer norms through
:func:`adamwkit.param_groups`, and what :func:`adamwkit.suggest` would use instead.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import render
from ._checks import ArgumentError, check_range
from ._constants import CONVENTION_ALIASES
from ._format import fmt as _fmt
from ._safe_load import printable
from .equilibrium import angular_update, equilibrium_norm
from .rules import (
    BOUND_SOURCE,
    D_MAX_FINETUNE,
    TrainingSetup,
    decays_by,
    guard,
    power_lines_tau,
    training_setup,
)
from .schedules import Schedule, make_schedule
from .suggest import Suggestion, suggest_for_setup
from .timescale import convert_weight_decay, tau_epoch, tau_iter, tau_run

if TYPE_CHECKING:
    from torch import nn

    from .monitor import MonitorLog

__all__ = ["Explanation", "LayerEquilibrium", "RunExplanation", "explain", "explain_run"]


@dataclass(frozen=True)
class LayerEquilibrium:
    """A decayed tensor's current norm next to the equilibrium norm Kosson et al. predict."""

    name: str
    numel: int
    weight_decay: float
    norm: float
    equilibrium_norm: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Explanation:
    """What :func:`explain` returns: an existing weight decay read through the rules."""

    setup: TrainingSetup
    weight_decay: float
    weight_decay_independent: float
    tau_iter: float
    tau_epoch: float | None
    tau_run: float | None
    angular_update: float
    equilibrium_rms: float
    weights_remaining: float | None
    schedule: str
    verdict: str
    verdict_code: str
    suggestion: Suggestion | None
    layers: tuple[LayerEquilibrium, ...] = field(default=())
    notes: tuple[str, ...] = ()
    total_decay: float | None = None
    lr_mean_factor: float = 1.0
    lr_basis: str = "the peak lr"

    @property
    def decay_scale(self) -> str:
        return self.setup.decay_scale

    @property
    def regime_label(self) -> str:
        """The regime the reading assumes (:attr:`adamwkit.rules.TrainingSetup.regime`)."""
        return self.setup.regime_label

    @property
    def decays_by(self) -> str | None:
        """How much decay alone takes off the weights over the run (``None``: length unknown)."""
        return None if self.total_decay is None else decays_by(self.total_decay)

    def to_dict(self) -> dict[str, Any]:
        sug = self.suggestion
        return {
            "weight_decay": self.weight_decay,
            "weight_decay_independent": self.weight_decay_independent,
            "decay_scale": self.decay_scale,
            "tau_iter": self.tau_iter,
            "tau_epoch": self.tau_epoch,
            "tau_run": self.tau_run,
            "angular_update": self.angular_update,
            "equilibrium_rms": self.equilibrium_rms,
            "weights_remaining": self.weights_remaining,
            "total_decay": self.total_decay,
            "shrink_factor": None if self.total_decay is None else math.exp(-self.total_decay),
            "lr_mean_factor": self.lr_mean_factor,
            "total_decay_lr": self.lr_basis,
            "d_max_finetune": D_MAX_FINETUNE,
            "regime": self.setup.regime,
            "regime_label": self.regime_label,
            "schedule": self.schedule,
            "verdict": self.verdict,
            "verdict_code": self.verdict_code,
            "rule": sug.rule if sug else None,
            "suggested_weight_decay": sug.weight_decay if sug else None,
            "suggested_weight_decay_independent": sug.weight_decay_independent if sug else None,
            "suggested_low": sug.low if sug else None,
            "suggested_high": sug.high if sug else None,
            "suggested_total_decay": sug.total_decay if sug else None,
            "suggested_usable": sug.usable if sug else None,
            "rules": [r.to_dict() for r in sug.rules] if sug else [],
            "layers": [layer.to_dict() for layer in self.layers],
            "notes": list(self.notes),
            "setup": self.setup.to_dict(),
        }

    def blocks(self) -> list[render.Block]:
        """What ``str()`` and the ``adamwkit explain`` command show (:mod:`adamwkit.render`)."""
        return render.explanation(self)

    def __str__(self) -> str:
        return render.plain(self.blocks())


@dataclass(frozen=True)
class RunExplanation:
    """What :func:`explain_run` returns: a monitored run's numbers per layer and its
    verdicts. ``layers``: per layer, taken where its verdict judges it
    (:meth:`adamwkit.monitor.MonitorLog.judged`: the last record whose lr is at least a tenth
    of the largest, since at the end of a schedule the equilibrium norm falls toward zero
    with the lr while the norm freezes), ``step`` that record's step, ``norm`` and
    Kosson et al.'s ``pred_norm`` there, ``norm_ratio`` their ratio (the number the verdict
    quotes; ``None`` for a layer that is not decayed), ``angle`` the angular update (the
    mean over the tenth of the records that ends there) and ``pred_angle`` the predicted
    one, ``scale_invariant`` whether the equilibrium applies to it (``True``/``False``
    measured from the gradient's cosine with the weights, ``None`` unknown) and
    ``grad_cos`` that cosine's median size over the records; the numbers are ``None``
    when the log has no records. ``verdicts``: per layer, a code and a sentence
    (:meth:`adamwkit.monitor.MonitorLog.verdicts`)."""

    run: str
    steps: int
    every: int
    optimizer: str
    layers: tuple[dict[str, Any], ...]
    verdicts: tuple[dict[str, str], ...]

    def to_dict(self) -> dict[str, Any]:
        """The fields, as ``adamwkit explain --run --json`` prints them."""
        return {
            "run": self.run,
            "steps": self.steps,
            "every": self.every,
            "optimizer": self.optimizer,
            "layers": [dict(r) for r in self.layers],
            "verdicts": [dict(v) for v in self.verdicts],
        }

    def blocks(self) -> list[render.Block]:
        """What ``str()`` and ``adamwkit explain --run`` show; the log's strings are
        escaped for a terminal."""
        return render.monitor_log(self, printable)

    def __str__(self) -> str:
        return render.plain(self.blocks())


def explain_run(path: str | Path) -> RunExplanation:
    """Read a monitor log (``monitor.jsonl`` from :meth:`adamwkit.Monitor.save`,
    ``fit(monitor=...)``, the Trainer or Lightning callback, or tune's
    ``monitor-*.jsonl``): each layer's numbers at the record its verdict judges, and the
    verdicts (:class:`RunExplanation`). The file is read as
    :func:`adamwkit.monitor.load_log` reads it (a regular file of bounded size); a file that
    is not a monitor log, or a damaged one, raises ``ValueError`` naming it (and the line
    where it is damaged).

    Example: ``print(explain_run("runs/monitor.jsonl"))``.
    """
    import numpy as np

    from .monitor import load_log

    log = load_log(path)
    with np.errstate(all="ignore"):  # a diverged run's inf and NaN read as they are
        layers = _run_layers(log)
    return RunExplanation(
        run=str(path),
        steps=int(log.steps[-1]) if len(log.steps) else 0,
        every=log.every,
        optimizer=log.optimizer,
        layers=layers,
        verdicts=tuple({"layer": v.layer, "code": v.code, "text": v.text} for v in log.verdicts()),
    )


def _run_layers(log: MonitorLog) -> tuple[dict[str, Any], ...]:
    """Each layer's row of :class:`RunExplanation`, at the record its verdict judges."""
    import numpy as np

    layers = log.layers()
    if not len(layers.steps):
        return tuple(
            {"layer": t.name, "step": None, "norm": None, "pred_norm": None, "norm_ratio": None,
             "angle": None, "pred_angle": None, "scale_invariant": None, "grad_cos": None}
            for t in layers.tensors
        )  # fmt: skip
    at, invariant = layers.judged(), layers.scale_invariant()
    norm, pred, angle = layers.values[:, :, 1], layers.pred_norm, layers.angle
    cos = np.abs(layers.grad_cos)
    rows = []
    for j, t in enumerate(layers.tensors):
        k = int(at[j])
        tail = max(1, (k + 1) // 10)
        known = cos[:, j][np.isfinite(cos[:, j])]
        p = float(pred[k, j])
        rows.append(
            {
                "layer": t.name,
                "step": int(layers.steps[k]),
                "norm": float(norm[k, j]),
                "pred_norm": p,
                "norm_ratio": float(norm[k, j]) / p if 0 < p < math.inf else None,
                "angle": float(np.mean(angle[k + 1 - tail : k + 1, j])),
                "pred_angle": float(layers.pred_angle[k, j]),
                "scale_invariant": invariant[j],
                "grad_cos": float(np.median(known)) if len(known) else None,
            }
        )
    return tuple(rows)


def _weights_remaining(s: TrainingSetup, wd: float, sched: Schedule | None) -> float | None:
    """Fraction of the initial weights left by decay alone: prod_t (1 - lr * s_t * wd)."""
    if s.total_steps is None:
        return None
    if s.lr * wd >= 1.0:
        return 0.0  # a step at the peak zeroes or flips the weights
    if sched is None:
        log = s.total_steps * math.log1p(-s.lr * wd)
    else:
        import numpy as np

        per_step = np.log1p(-s.lr * wd * sched.sample())
        log = float(per_step.mean()) * sched.total_steps
    return math.exp(log)


def _finetune_verdict(s: TrainingSetup, d: float | None, basis: str) -> tuple[str, str]:
    """A fine-tune's verdict: its total decay D against :data:`D_MAX_FINETUNE`."""
    if d is None:
        return "unknown", "give epochs or steps to judge a fine-tune's total decay"
    what = f"decay alone takes {decays_by(d)} off the weights over the run (at {basis})"
    if d > D_MAX_FINETUNE:
        toward = (
            "it pulls the adapters to zero, the fine-tuned model back to the frozen base"
            if s.adapters
            else "it pulls the pretrained weights toward zero, away from what pretraining learned"
        )
        return "finetune-above-bound", (
            f"{what}: above the bound D <= {_fmt(D_MAX_FINETUNE)} adamwkit keeps to for "
            f"fine-tunes ({BOUND_SOURCE}); {toward}"
        )
    return "finetune-within-bound", (
        f"{what}: within the bound D <= {_fmt(D_MAX_FINETUNE)} adamwkit keeps to for "
        "fine-tunes, so the pretrained weights keep their scale"
    )


def _verdict(
    s: TrainingSetup,
    wd: float,
    tau_e: float | None,
    tau_r: float | None,
    remaining: float | None,
    decay: tuple[float | None, str] = (None, "the peak lr"),
) -> tuple[str, str]:
    if wd == 0:
        return "no-decay", (
            "no weight decay: the weights keep every update and the initialisation forever "
            "(infinite timescale)"
        )
    if s.lr * wd >= 1.0:
        return "dominates", (
            f"lr * weight_decay is {_fmt(s.lr * wd)}: each step at the peak lr multiplies the "
            f"weights by {_fmt(1 - s.lr * wd)}, zeroing or flipping them; the decay is far "
            "too strong (is the value in the other convention?)"
        )
    if s.finetune:
        return _finetune_verdict(s, *decay)
    left = ""
    if remaining is not None:
        left = f"; decay alone leaves {100 * remaining:.3g}% of the initial weights at the end"
    if s.passes == "multi-epoch" and tau_e is not None and s.epochs is not None:
        if tau_e > s.epochs:
            return "barely-acts", (
                f"tau_epoch is {_fmt(tau_e)} epochs but you train {_fmt(s.epochs)}: the decay "
                f"barely acts (the run ends before the weights forget their start{left})"
            )
        if tau_e < 1.0:
            return "dominates", (
                f"tau_epoch is {_fmt(tau_e)} epochs, under one epoch: the decay dominates (the "
                "weights forget what they learnt earlier in the same epoch, so they average "
                "over only part of the data)"
            )
        return "in-window", (
            f"tau_epoch is {_fmt(tau_e)} epochs of the {_fmt(s.epochs)} trained: inside the "
            "window [1 epoch, total epochs] where Wang & Aitchison found the optimum"
        )
    if tau_r is None:
        return "unknown", "give epochs or steps to judge the timescale"
    tpp = s.tokens_per_param
    if tpp is not None:
        opt = power_lines_tau(tpp)
        ratio = tau_r / opt
        if ratio > 3.0:
            return "weaker-than-optimal", (
                f"tau_run is {_fmt(tau_r)} of the run, {_fmt(ratio)}x Power Lines' optimum "
                f"{_fmt(opt)} at {_fmt(tpp)} tokens per parameter: the decay is weaker than "
                "the fitted optimum"
            )
        if ratio < 1.0 / 3.0:
            return "stronger-than-optimal", (
                f"tau_run is {_fmt(tau_r)} of the run, {_fmt(1 / ratio)}x shorter than Power "
                f"Lines' optimum {_fmt(opt)} at {_fmt(tpp)} tokens per parameter: the decay is "
                "stronger than the fitted optimum"
            )
        return "near-optimal", (
            f"tau_run is {_fmt(tau_r)} of the run, within 3x of Power Lines' optimum "
            f"{_fmt(opt)} at {_fmt(tpp)} tokens per parameter"
        )
    floor = power_lines_tau(1e4)
    if tau_r < floor:
        return "dominates", (
            f"tau_run is {_fmt(tau_r)} of the run ({_fmt(tau_r * (s.total_steps or 0))} "
            f"steps): shorter than Power Lines' optimum even at 10,000 tokens per parameter "
            f"({_fmt(floor)}); the decay dominates"
        )
    if tau_r > 1.0:
        return "barely-acts", (
            f"tau_run is {_fmt(tau_r)} runs: longer than the whole run, so the decay barely "
            f"acts{left}"
        )
    return "in-window", f"tau_run is {_fmt(tau_r)} of the run: the decay acts within the run"


def _convention_hint(s: TrainingSetup, wd_torch: float, code: str, given: float) -> str | None:
    """Say so when reading the value in the other convention lands it in the window."""
    if s.dataset_size is None or s.epochs is None or s.regime != "multi-epoch":
        return None
    if code == "barely-acts" and s.decay_scale == "lr":
        alt = convert_weight_decay(given, "independent", "torch", lr_peak=s.lr)
        other = "does not multiply decay by the learning rate (the AdamW paper, Composer)"
        flag = "decay_scale='schedule'"
    elif code == "dominates" and s.decay_scale == "schedule":
        alt = given  # read in PyTorch's convention, the value is used as it is
        other = "multiplies decay by the learning rate (PyTorch, optax, Keras)"
        flag = "decay_scale='lr'"
    else:
        return None
    alt_tau = tau_epoch(s.lr, alt, s.batch_size, s.dataset_size)
    if not 1.0 <= alt_tau <= s.epochs:
        return None
    return (
        f"if {_fmt(given)} comes from a codebase that {other}, it means weight_decay "
        f"{_fmt(alt)} in PyTorch's convention (tau_epoch {_fmt(alt_tau)}): pass {flag}"
    )


def explain(
    weight_decay: float,
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
    schedule: Schedule | str | None = None,
    warmup_steps: int = 0,
    model: nn.Module | None = None,
    pretrained: bool = False,
    adapters: bool = False,
) -> Explanation:
    r"""Read an existing weight decay: its timescales, equilibrium and a verdict in plain words.

    ``weight_decay`` is in the convention of ``decay_scale``: ``"lr"`` (PyTorch),
    ``"schedule"`` (the paper) or ``"corrected"`` (AdamC, per step
    ``wd * lr_t**2 / lr_peak``), which is read as the PyTorch value with the same total
    decay over ``schedule`` (equal at the peak without one; see
    :func:`adamwkit.convert_weight_decay`). ``schedule`` (a
    :class:`~adamwkit.schedules.Schedule` or a name with ``warmup_steps``) refines how much
    of the initial weights decay leaves; without it the lr is taken as constant. With a
    ``model``, every decayed tensor's norm is set beside its predicted equilibrium norm
    ``sqrt(lr * numel / (2 * wd))`` (Kosson et al., arXiv:2305.17212), using
    :func:`adamwkit.param_groups`' rule.

    The total decay :math:`D = \sum_t \eta_t\lambda` (:func:`adamwkit.rules.total_decay`)
    uses the schedule's mean multiplier when ``schedule`` is given, else the peak lr, and
    says which. ``pretrained=True`` (a fine-tune of pretrained weights) or ``adapters=True``
    (of adapters such as LoRA) judge the value against the fine-tune bound
    :math:`D \le` :data:`adamwkit.rules.D_MAX_FINETUNE` (0.03, from
    docs/evidence-finetune.md) instead of the from-scratch timescale window; a setup
    that only looks like a fine-tune gets the same check as a note
    (:func:`adamwkit.rules.guard`).
    """
    corrected = (
        isinstance(decay_scale, str)
        and CONVENTION_ALIASES.get(decay_scale.strip().lower()) == "timm-corrected"
    )
    s = training_setup(
        lr=lr,
        batch_size=batch_size,
        dataset_size=dataset_size,
        epochs=epochs,
        steps=steps,
        tokens=tokens,
        params=params,
        decay_scale="lr" if corrected else decay_scale,
        beta1=beta1,
        pretrained=pretrained,
        adapters=adapters,
    )
    given = check_range("weight_decay", weight_decay, 0.0)
    sched = _resolve_schedule(schedule, s, warmup_steps)
    notes: list[str] = []
    if corrected:
        wd = convert_weight_decay(given, "timm-corrected", "torch", schedule=sched)
        how = "the same total decay over the schedule" if sched else "equal at the peak lr"
        notes.append(
            f"weight_decay {given:g} with decay_scale='corrected' (AdamC) reads as {wd:.4g} "
            f"in PyTorch's convention ({how}); the numbers below are for that value"
        )
    else:
        wd = convert_weight_decay(given, s.decay_scale, "torch", lr_peak=s.lr)
    tau_e = None if s.dataset_size is None else tau_epoch(s.lr, wd, s.batch_size, s.dataset_size)
    tau_r = None if s.total_steps is None else tau_run(s.lr, wd, s.total_steps)
    remaining = _weights_remaining(s, wd, sched)
    mean = 1.0 if sched is None else float(sched.sample().mean())
    basis = "the peak lr" if sched is None else f"the schedule's mean lr, {mean:.3g} of the peak"
    d = s.total_decay(wd, mean)
    code, verdict = _verdict(s, wd, tau_e, tau_r, remaining, (d, basis))
    hint = _convention_hint(s, wd, code, given)
    if hint:
        notes.append(hint)
    warned = None if s.finetune else guard(wd, dataclasses.replace(s, decay_scale="lr"), mean)
    if warned:
        notes.append(warned)
    try:
        sug: Suggestion | None = suggest_for_setup(s)
    except ValueError as err:
        sug = None
        notes.append(str(err))
    if sug is not None and sug.regime_warning and not warned:
        notes.append(f"adamwkit suggest's value: {sug.regime_warning}")
    if sched is None and s.total_steps is not None:
        notes.append("lr taken as constant; pass a schedule to refine the decay")
    return Explanation(
        setup=s,
        weight_decay=wd,
        weight_decay_independent=convert_weight_decay(wd, "torch", "independent", lr_peak=s.lr),
        tau_iter=tau_iter(s.lr, wd),
        tau_epoch=tau_e,
        tau_run=tau_r,
        angular_update=angular_update(s.lr, wd, s.beta1),
        equilibrium_rms=equilibrium_norm(s.lr, wd),
        weights_remaining=remaining,
        schedule=sched.describe() if sched is not None else "constant lr (assumed)",
        verdict=verdict,
        verdict_code=code,
        suggestion=sug,
        layers=_layers(model, s, given, wd) if model is not None else (),
        notes=tuple(notes),
        total_decay=d,
        lr_mean_factor=mean,
        lr_basis=basis,
    )


def _resolve_schedule(
    schedule: Schedule | str | None, s: TrainingSetup, warmup_steps: int
) -> Schedule | None:
    if schedule is None or isinstance(schedule, Schedule):
        return schedule
    if s.total_steps is None:
        raise ArgumentError(
            f"schedule={schedule!r} needs the run's length: give epochs or steps with the "
            "dataset size",
            "epochs",
            "steps",
        )
    return make_schedule(schedule, max(1, round(s.total_steps)), warmup_steps)


def _layers(
    model: nn.Module, s: TrainingSetup, given: float, wd_torch: float
) -> tuple[LayerEquilibrium, ...]:
    from .groups import param_groups

    groups = param_groups(model, weight_decay=given if given > 0 else 1.0)
    params = dict(model.named_parameters())
    rows = []
    for entry in groups.plan.decayed:
        if given == 0:
            continue
        entry_wd = wd_torch * (entry.weight_decay or 0.0) / given
        norm = float(params[entry.name].detach().float().norm()) if entry.name in params else 0.0
        rows.append(
            LayerEquilibrium(
                name=entry.name,
                numel=entry.numel,
                weight_decay=entry_wd,
                norm=norm,
                equilibrium_norm=equilibrium_norm(s.lr, entry_wd, entry.numel),
            )
        )
    return tuple(rows)
