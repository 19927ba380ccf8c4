"""The result of a ``tune`` run, typed: :class:`TuneSummary` is the schema of summary.json.

- :class:`TuneSummary` has one field per key of summary.json, in the file's order, each
  documented below. It is also a ``MutableMapping[str, Any]`` over exactly those keys, so
  code that reads ``summary["best_weight_decay"]``, ``summary.get("test")`` or
  ``dict(summary)`` keeps working; :meth:`TuneSummary.to_dict` gives the JSON values and
  :meth:`TuneSummary.from_dict` reads them back.
- :func:`build_summary` computes it from the candidates' fold losses (:func:`.cv.summarize`),
  the study's settings and the suggestion: everything but the test refits (``test``, left
  empty) and the run's notes (``notes``, left empty), which the caller adds.
- :func:`verdict_text` says the recommendation in plain words; :func:`edge_text` says why
  the best candidate sits at the grid's edge.

summary.json of a run that is still working, or was interrupted, is not a summary: it
holds only ``state``, ``study``, ``created`` and perhaps ``reason`` (see :mod:`.report`).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import time
from collections.abc import Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from ..suggest import Suggestion
from ..timescale import convert_weight_decay, tau_epoch
from . import cv
from .config import StudySpec
from .executor import Decision

__all__ = [
    "ADDED_LATER",
    "KEYS",
    "TuneSummary",
    "build_summary",
    "edge_text",
    "verdict_lines",
    "verdict_text",
]

Conventions = dict[str, float | None]


@dataclass(eq=False)
class TuneSummary(MutableMapping[str, Any]):
    """What a ``tune`` run found, as written to summary.json (one field per key, in order).

    Weight decays are in the convention of ``decay_scale`` unless a key says otherwise;
    ``*_conventions`` give one in PyTorch's (``"torch"``) and the paper's
    (``"independent"``) conventions. A value is ``None`` where it does not apply (no best
    candidate, no suggestion, no batch size...). Infinities (a candidate's ``tau_epoch``
    at zero decay) are kept here and written as ``null`` to summary.json.

    As a mapping, its keys are the field names, always all of them: a key can be set but
    not added or removed, and ``summary[key]`` is the field's value itself (so
    ``summary["notes"] += [...]`` extends the notes).
    """

    task: str
    """The task's name, or the objective's (``module:function``)."""
    description: str
    """The task's description, or the first line of the objective's docstring."""
    metric_name: str
    """What the runs' metric measures (a Task's ``metric_name``; ``"metric"`` otherwise)."""
    folds: int
    """k, the folds of the cross-validation."""
    epochs: int | None
    """Epochs each run trains (``None``: an objective given none)."""
    lr: float
    """The peak learning rate asked for."""
    best_lr: float
    """The best candidate's learning rate (``lr`` when there is no best)."""
    batch_size: int | None
    """The batch size (``None``: an objective given none)."""
    n_train: int
    """The fewest examples any fold trains on (tau_epoch counts these)."""
    decay_scale: str
    """The convention of the weight decays: ``"lr"`` (PyTorch's) or ``"schedule"``."""
    best_weight_decay: float | None
    """The complete candidate with the lowest mean held-out loss (``None``: none finished)."""
    one_se_weight_decay: float | None
    """The largest weight decay at ``best_lr`` whose paired difference to the best is within
    one paired standard error (the one-SE rule)."""
    suggested_weight_decay: float | None
    """What :func:`adamwkit.suggest` predicted (``None`` without batch size and epochs)."""
    suggested_rule: str | None
    """The rule behind ``suggested_weight_decay``."""
    suggested_range: list[float | None] | None
    """``[low, high]``: the range that held 80% of the evidence studies' optima around the
    suggestion (``None`` when its rule has no calibrated range)."""
    best_weight_decay_conventions: Conventions
    """``best_weight_decay`` as ``{"torch": ..., "independent": ...}`` (at ``best_lr``)."""
    one_se_weight_decay_conventions: Conventions
    """``one_se_weight_decay`` in both conventions (at ``best_lr``)."""
    suggested_weight_decay_conventions: Conventions
    """``suggested_weight_decay`` in both conventions (at ``lr``)."""
    best_total_decay: dict[str, float] | None
    r"""What the best weight decay does to the weights over a run: ``{"D", "shrink",
    "steps", "lr_mean_factor"}`` with :math:`D = \lambda\,\eta\,S\,\bar m` in PyTorch's
    convention (:func:`adamwkit.rules.total_decay`; ``steps`` :math:`S` of a run on
    ``n_train`` examples, ``lr_mean_factor`` :math:`\bar m` the schedule's mean lr over
    its peak, 1 when the schedule is unknown) and ``shrink`` :math:`e^{-D}`, the factor
    decay alone multiplies the weights by. ``None`` without epochs and a batch size, or
    without a best."""
    best_mean: float | None
    """The best candidate's mean held-out loss."""
    best_sem: float | None
    """Its standard error (Nadeau & Bengio's correction under repeated CV)."""
    flat: bool
    """Weight decay barely matters: zero decay is within two paired standard errors (plus
    a selection allowance) of the best (see :class:`.cv.CVSummary`)."""
    zero_paired_diff: float | None
    """Zero decay's mean paired loss difference to the best (``None``: zero is the best,
    or was not tried)."""
    zero_paired_sem: float | None
    """The standard error of ``zero_paired_diff``."""
    hurts_from: float | None
    """The smallest weight decay above the best that is worse by more than two paired
    standard errors (``None``: none is)."""
    edge: str | None
    """``"high"`` or ``"low"`` when the best sits at that edge of the grid (the optimum
    may lie beyond), else ``None``."""
    learned: bool | None
    """Whether the lowest loss clearly beats the untrained baseline (``False``: the model
    did not learn on these folds, and no weight decay is named; ``None``: no baseline was
    reported and the losses differ, so it cannot be told)."""
    baseline: float | None
    """The untrained baseline's loss, mean over the runs (``None``: none reported)."""
    uncertainty: str
    """What the standard errors are over: ``"runs"`` (folds and repeats), ``"examples"``
    (one validation split, per-example losses reported: paired over its examples) or
    ``"none"`` (one split without them: differences are taken as measured)."""
    repeats: int
    """How many times the k folds were drawn (repeated CV)."""
    extended: list[float]
    """The weight decays added past the grid's edge (sorted)."""
    budget: int | None
    """The budget in training runs (``budget=``), or ``None`` (the full grid)."""
    spent_runs: int
    """The training runs the study recorded (a failed candidate's missing runs count)."""
    pruned: int
    """How many candidates were pruned."""
    failed: int
    """How many candidates failed (their reasons are in ``candidates``)."""
    candidates: list[dict[str, Any]]
    """Every candidate, by (lr, weight decay): ``weight_decay``, ``lr``, ``tau_epoch``,
    ``mean``, ``sem``, ``fold_losses``, ``fold_metrics``, ``metric`` (their mean),
    ``fold_curves``, ``paired_diff``, ``paired_sem``, ``state``, ``reason``
    (:meth:`.cv.Candidate.to_dict`)."""
    tau_epoch_factor: float | None
    """``tau_epoch = tau_epoch_factor / weight_decay`` at ``lr`` (``None`` without a batch
    size)."""
    settings: dict[str, Any]
    """The study's identity (:meth:`.config.StudySpec.attrs`)."""
    device: str
    """The device asked for (``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:i"``)."""
    precision: str
    """``"fp32"`` or ``"bf16"``."""
    vectorize: str
    """How this process ran its jobs, in words (:meth:`.executor.Decision.describe`)."""
    stacking: dict[str, Any]
    """The same, as :meth:`.executor.Decision.to_dict`."""
    test: dict[str, dict[str, Any]]
    """The refits on the training pool scored on the test split, by label (``best``,
    ``one_se``, ``zero``, ``torch_default``): ``weight_decay``, ``loss``, ``metric``,
    ``curve``, and perhaps ``reason``, ``monitor`` and ``verdicts``; ``{}`` when none."""
    created: str
    """When the summary was made (local time, ``YYYY-mm-ddTHH:MM:SS``)."""
    seconds: float
    """How long the call that wrote the summary took, in seconds (a resumed call counts its
    own time only; ``0.0`` until the caller sets it)."""
    verdict: str
    """The recommendation in plain words (:func:`verdict_text`)."""
    state: str
    """``"complete"`` (there is a best) or ``"failed"`` (no candidate finished every fold)."""
    notes: list[str] = field(default_factory=list)
    """What the run noticed on the way (repeated grid values, extensions, plots left out)."""
    audit: dict[str, Any] | None = None
    """The audit of the optimizer of the study's first run with weight decay above zero
    (:mod:`.first_audit`): :meth:`adamwkit.audit.Audit.to_dict` (``optimizer``,
    ``total_steps``, ``tensors``, ``findings``...) with ``captured``, what was audited in
    words, and ``run``, its ``weight_decay``, ``lr`` and ``fold``. ``None`` when nothing was
    captured (no run stepped a torch optimizer, the study predates the audit) or the audit
    failed (a note says why). Added later: a summary without it reads as ``None``."""

    # ------------------------------------------------------------------ the mapping

    def __getitem__(self, key: str) -> Any:
        if key not in _KEY_SET:
            raise KeyError(key)
        return getattr(self, key)

    def __setitem__(self, key: str, value: Any) -> None:
        if key not in _KEY_SET:
            raise KeyError(f"{key!r} is not a key of summary.json: a summary's keys are fixed")
        setattr(self, key, value)

    def __delitem__(self, key: str) -> None:
        raise TypeError(f"a summary's keys are fixed: {key!r} cannot be removed")

    def __iter__(self) -> Iterator[str]:
        return iter(KEYS)

    def __len__(self) -> int:
        return len(KEYS)

    def __contains__(self, key: object) -> bool:
        return key in _KEY_SET

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mapping):
            return NotImplemented
        return dict(self.items()) == dict(other.items())

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON values, in order: what ``json.loads(json.dumps(...))``
        of the summary's dict gives (tuples become lists, keys strings; infinities and NaN
        are kept, as ``json`` keeps them). Nothing is shared with the summary."""
        out: dict[str, Any] = {}
        for key in KEYS:
            try:
                out[key] = json.loads(json.dumps(getattr(self, key)))
            except (TypeError, ValueError) as err:
                raise TypeError(f"summary[{key!r}] is not JSON: {err}") from None
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TuneSummary:
        """The summary of ``d`` (summary.json's contents, or :meth:`to_dict`'s), which must
        have every key and no other (the values are copied); a key added after summaries
        were first written (:data:`ADDED_LATER`) may be missing, and reads as its default."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a summary is a JSON object, not {type(d).__name__}")
        if "verdict" not in d and d.get("state") in ("running", "interrupted"):
            raise ValueError(
                f"the summary is of a run whose state is {d['state']!r}: it has no result"
            )
        unknown = [k for k in d if k not in _KEY_SET]
        if unknown:
            raise ValueError(f"not a key of summary.json: {', '.join(map(repr, unknown))}")
        missing = [k for k in KEYS if k not in d and k not in ADDED_LATER]
        if missing:
            raise ValueError(
                f"the summary has no {', '.join(map(repr, missing))}: every key of "
                "summary.json is needed"
            )
        return cls(**{k: copy.deepcopy(d[k]) for k in KEYS if k in d})


#: The keys of summary.json, in order (the fields of :class:`TuneSummary`).
KEYS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(TuneSummary))
_KEY_SET = frozenset(KEYS)
#: Keys a summary written before they existed lacks (:meth:`TuneSummary.from_dict` reads
#: them as their defaults).
ADDED_LATER = frozenset({"audit"})


# ---------------------------------------------------------------------------- building it


def _both(value: float | None, lr: float, scale: str) -> Conventions:
    """``value`` (in ``scale``'s convention) in PyTorch's and the independent convention."""
    if value is None:
        return {"torch": None, "independent": None}
    return {
        "torch": convert_weight_decay(value, scale, "torch", lr_peak=lr),
        "independent": convert_weight_decay(value, scale, "independent", lr_peak=lr),
    }


def _set_taus(cands: list[cv.Candidate], spec: StudySpec, n_train: int) -> None:
    """Each candidate's ``tau_epoch`` = B / (lr * wd_torch * N) (``inf`` at zero decay;
    ``None`` without a batch size)."""
    bs = spec.batch_size
    for c in cands:
        wd_t = convert_weight_decay(c.weight_decay, spec.decay_scale, "torch", lr_peak=c.lr)
        if bs is None:
            c.tau_epoch = None
        else:
            c.tau_epoch = tau_epoch(c.lr, wd_t, bs, n_train) if wd_t > 0 else math.inf


def _suggested(sug: Suggestion | None, lr: float, scale: str) -> dict[str, Any]:
    """The suggestion's keys of the summary (its conventions at ``lr``)."""
    return {
        "suggested_weight_decay": sug.value if sug else None,
        "suggested_rule": sug.rule if sug else None,
        "suggested_range": [sug.low_value, sug.high_value]
        if sug is not None and sug.low is not None
        else None,
        "suggested_weight_decay_conventions": _both(sug.value if sug else None, lr, scale),
    }


def _total_decay(
    summ: cv.CVSummary, spec: StudySpec, n_train: int, best_lr: float
) -> dict[str, float] | None:
    """``best_total_decay``: the best's total decay over a run, and its shrink factor."""
    if summ.best is None or spec.epochs is None or spec.batch_size is None:
        return None
    from ..rules import total_decay
    from ..schedules import make_schedule

    steps = spec.epochs * math.ceil(n_train / spec.batch_size)
    mean = 1.0
    if spec.schedule is not None:
        mean = float(make_schedule(spec.schedule, steps).sample().mean())
    wd = convert_weight_decay(summ.best.weight_decay, spec.decay_scale, "torch", lr_peak=best_lr)
    d = total_decay(wd, best_lr, steps, "lr", mean)
    return {"D": d, "shrink": math.exp(-d), "steps": float(steps), "lr_mean_factor": mean}


def _tau_epoch_factor(spec: StudySpec, n_train: int) -> float | None:
    """``tau_epoch = factor / weight_decay`` at the lr asked for (``None``: no batch size)."""
    if spec.batch_size is None:
        return None
    to_torch = convert_weight_decay(1.0, spec.decay_scale, "torch", lr_peak=spec.lr)
    return spec.batch_size / (spec.lr * n_train) / to_torch


def _chosen(summ: cv.CVSummary, best_lr: float, scale: str) -> dict[str, Any]:
    """The best and one-SE choices' keys of the summary, with their conventions."""
    best, one_se = summ.best, summ.one_se
    return {
        "best_weight_decay": best.weight_decay if best else None,
        "one_se_weight_decay": one_se.weight_decay if one_se else None,
        "best_weight_decay_conventions": _both(best.weight_decay if best else None, best_lr, scale),
        "one_se_weight_decay_conventions": _both(
            one_se.weight_decay if one_se else None, best_lr, scale
        ),
    }


def _statistics(summ: cv.CVSummary) -> dict[str, Any]:
    """The best's score, flatness, zero decay's paired difference, where decay hurts."""
    best = summ.best
    zero = summ.zero if summ.zero is not best else None  # its difference to itself: None
    return {
        "best_mean": best.mean if best else None,
        "best_sem": best.sem if best else None,
        "flat": summ.flat,
        "zero_paired_diff": zero.paired_diff if zero is not None else None,
        "zero_paired_sem": zero.paired_sem if zero is not None else None,
        "hurts_from": summ.hurts_from,
        "edge": summ.edge,
        "learned": summ.learned,
        "baseline": summ.baseline,
        "uncertainty": _uncertainty(summ),
        "repeats": summ.repeats,
    }


def _candidate_keys(summ: cv.CVSummary, spec: StudySpec) -> dict[str, Any]:
    """The candidates, those added past the grid, and how many were pruned or failed."""
    cands = summ.candidates
    return {
        "extended": [] if spec.budget else sorted({c.weight_decay for c in cands} - set(spec.grid)),
        "budget": spec.budget,
        "spent_runs": sum(len(c.fold_losses) for c in cands),
        "pruned": sum(c.state == "pruned" for c in cands),
        "failed": sum(c.state == "failed" for c in cands),
        "candidates": [c.to_dict() for c in cands],
    }


def build_summary(
    *,
    task: str,
    description: str,
    metric_name: str,
    spec: StudySpec,
    device: str,
    n_train: int,
    suggestion: Suggestion | None,
    candidates: list[cv.Candidate],
    decision: Decision | None,
    stack_refusal: str | None,
    created: str | None = None,
) -> TuneSummary:
    """The summary of ``candidates`` (those of the study and of its extensions).

    Sorts them by (lr, weight decay), sets each one's ``tau_epoch`` and statistics (in
    place, through :func:`.cv.summarize`), and fills every key: ``test`` ``{}``, ``notes``
    what one validation split means for the errors (the caller adds the refits and its
    notes), ``verdict`` by :func:`verdict_text`, ``state`` ``"complete"`` when there is a best, else
    ``"failed"``. ``decision`` is how this process ran its jobs (``None``: it trained none;
    ``stack_refusal`` then says why nothing was stacked). ``created`` defaults to now.
    """
    cands = sorted(candidates, key=lambda c: (c.lr, c.weight_decay))
    _set_taus(cands, spec, n_train)
    summ = cv.summarize(cands, spec.folds, spec.repeats, spec.val_fraction or 0.2)
    lr, bs, scale = spec.lr, spec.batch_size, spec.decay_scale
    best_lr = summ.best.lr if summ.best else lr
    if decision is None:
        decision = Decision("off", stack_refusal or "no run trained here")
    values: dict[str, Any] = {
        "task": task,
        "description": description,
        "metric_name": metric_name,
        "folds": summ.folds,
        "epochs": spec.epochs,
        "lr": lr,
        "best_lr": best_lr,
        "batch_size": bs,
        "n_train": n_train,
        "decay_scale": scale,
        **_chosen(summ, best_lr, scale),
        **_suggested(suggestion, lr, scale),
        "best_total_decay": _total_decay(summ, spec, n_train, best_lr),
        **_statistics(summ),
        **_candidate_keys(summ, spec),
        "tau_epoch_factor": _tau_epoch_factor(spec, n_train),
        "settings": spec.attrs(),
        "device": device,
        "precision": spec.precision,
        "vectorize": decision.describe(),
        "stacking": decision.to_dict(),
        "test": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S") if created is None else created,
        "seconds": 0.0,
    }
    values["verdict"] = verdict_text(values)
    values["state"] = _state(values)
    one_split = ONE_SPLIT.get(values["uncertainty"])
    values["notes"] = [one_split.format(n=summ.examples)] if one_split else []
    values["audit"] = None  # the caller reads it from the study
    return TuneSummary(**{k: values[k] for k in KEYS})


# ---------------------------------------------------------------------------- the verdict


def edge_text(best: float, edge: str | None) -> str:
    """Why the best candidate sits at the grid's edge, in words (``cv.CVSummary.edge``)."""
    if best == 0:
        return "zero decay is the best and the smallest decay tried already hurts"
    side = "largest" if edge == "high" else "smallest"
    return f"the best weight decay {best:.4g} is the {side} positive candidate"


def _flat_text(s: Mapping[str, Any]) -> str:
    """The sentence that says weight decay barely matters, and why."""
    if s.get("zero_paired_diff") is not None:
        z = f"{s['zero_paired_diff']:.3g} ± {s['zero_paired_sem'] or 0:.2g}"
        why = f"zero decay is within noise of the best ({z} worse, paired)"
    elif s.get("best_weight_decay") == 0:
        why = "zero decay is the best candidate"
    else:
        why = "no candidate is worse than the best by more than two paired standard errors"
    hurts = f"; from {s['hurts_from']:.4g} up it hurts" if s.get("hurts_from") is not None else ""
    return f"Weight decay barely matters here: {why}{hurts}."


def _g(x: float) -> str:
    return f"{x:.4g}"


def _choice_text(s: Mapping[str, Any]) -> str:
    """The line with the best and one-SE choices (in the run's convention), each once."""
    best, one_se = s["best_weight_decay"], s["one_se_weight_decay"]
    mean, sem = s.get("best_mean"), s.get("best_sem")
    loss = ""
    if mean is not None:
        err = f" ± {sem:.2g}" if sem is not None and math.isfinite(sem) else ""
        zero = next((c for c in s.get("candidates", ()) if c["weight_decay"] == 0), None)
        vs = ""
        if best != 0 and zero is not None and zero.get("mean") is not None:
            vs = f"; zero decay {_g(zero['mean'])}"
        loss = f" (held-out loss {_g(mean)}{err}{vs})"
    same = "the same" if one_se == best else _g(one_se)
    return f"Best weight decay {_g(best)}{loss}; the largest within one standard error: {same}."


def _decay_text(s: Mapping[str, Any]) -> str:
    """What the best does to the weights over the run, in words (or nothing)."""
    td = s.get("best_total_decay")
    if not td or not s.get("best_weight_decay"):
        return ""
    from ..rules import decays_by

    m = td["lr_mean_factor"]
    at = "the peak lr" if m == 1.0 else f"the schedule's mean lr, {m:.3g} of the peak"
    return (
        f"Over a run of {td['steps']:,.0f} steps the best takes {decays_by(td['D'])} off "
        f"the weights by decay alone (D = lr x wd x steps at {at})."
    )


def _suggested_text(s: Mapping[str, Any]) -> str:
    if s.get("suggested_weight_decay") is None:
        return ""
    from ..rules import RULE_REGIMES

    rng = s.get("suggested_range")
    parts = [f"80% range {rng[0]:.3g} to {rng[1]:.3g}"] if rng else []
    regime = RULE_REGIMES.get(str(s.get("suggested_rule")))
    if regime is not None:  # the regime the rule assumes: a LoRA run read as from scratch shows
        words = regime.replace("scratch", "training from scratch").replace(
            "fine-tune", "fine-tuning"
        )
        parts.append("PyTorch's default, no rule applied" if regime.startswith("none")
                     else f"a rule for {words}")  # fmt: skip
    within = f" ({'; '.join(parts)})" if parts else ""
    return f"adamwkit suggest predicted {_g(s['suggested_weight_decay'])}{within}."


def _conventions_text(s: Mapping[str, Any]) -> str:
    """The best in both conventions, once."""
    b = s["best_weight_decay_conventions"]
    if not s["best_weight_decay"] or b.get("torch") is None:
        return ""
    lr = s.get("best_lr") or s.get("lr")
    at = f" at lr {lr:.3g}" if lr else ""
    return (
        f'Conventions: {_g(b["torch"])} in PyTorch\'s (decay_scale "lr": each step '
        f"multiplies the weights by 1 - lr x wd) is {b['independent']:.4g} in the AdamW "
        f'paper\'s, independent of the lr (decay_scale "schedule": wd x lr{at}).'
    )


#: How the summary names each refit in words.
REFIT_WORDS = {
    "best": "the best",
    "one_se": "the one-SE choice",
    "zero": "zero decay",
    "torch_default": "PyTorch's default 0.01",
}


def _test_text(s: Mapping[str, Any]) -> str:
    """The refits' test losses (and metric), each refit once."""
    test = s.get("test") or {}
    if test.get("best", {}).get("loss") is None:
        return ""
    metric = s.get("metric_name") or "metric"
    parts, seen = [], set()
    for label, v in test.items():
        if v.get("loss") is None or (label == "one_se" and v.get("weight_decay") in seen):
            continue
        seen.add(v.get("weight_decay"))
        m = f" ({metric} {v['metric']:.4g})" if v.get("metric") is not None else ""
        parts.append(f"{REFIT_WORDS.get(label, label)}: {_g(v['loss'])}{m}")
    return "Test loss after refitting on the training pool: " + "; ".join(parts) + "."


def _uncertainty(summ: cv.CVSummary) -> str:
    if summ.folds * summ.repeats > 1:
        return "runs"
    return "examples" if summ.examples else "none"


#: What a summary says about one validation split, by its ``uncertainty``.
ONE_SPLIT = {
    "examples": "one validation split: the standard errors are over its {n} examples, "
    "paired loss by loss",
    "none": "one validation split and no per-example losses: there is no standard error, "
    "so differences under 0.1% of the loss tie and the rest are taken as measured "
    "(repeats=N draws the split N times; trial.report_example_losses gives errors over the "
    "examples)",
}


def _state(s: Mapping[str, Any]) -> str:
    """``"complete"`` when every candidate could be judged (a best, or the verdict that the
    model did not learn), else ``"failed"`` (no candidate finished every fold)."""
    judged = s["best_weight_decay"] is not None or s.get("learned") is False
    return "complete" if judged else "failed"


def _not_learned_text(s: Mapping[str, Any]) -> str:
    """The verdict when no candidate clearly beats the untrained baseline."""
    lowest = min((c["mean"] for c in s.get("candidates", ()) if c.get("mean") is not None),
                 default=None)  # fmt: skip
    if s.get("baseline") is not None and lowest is not None:
        why = (
            f"the lowest CV loss ({lowest:.4g}) is not clearly below the untrained "
            f"baseline ({s['baseline']:.4g})"
        )
    else:
        why = "every candidate has the same loss on every fold"
    return (
        f"The model did not learn on these folds: {why}, so weight decay cannot be judged "
        "and none is recommended. Check the learning rate, the epochs and the model first."
    )


def _edge_line(s: Mapping[str, Any]) -> str:
    """Why the best sits at the grid's edge, and what to do, as the run's own actions
    allow: nothing more after the grid was extended down to a zero best; otherwise the
    argument that widens the grid (``grid_min``/``grid_max``: the command line shows
    its flags), or a larger budget."""
    best, edge = s["best_weight_decay"], s["edge"]
    extended = bool(s.get("extended"))
    positive = sorted(c["weight_decay"] for c in s.get("candidates", ()) if c["weight_decay"] > 0)
    if best == 0:
        smallest = f", {_g(positive[0])}," if positive else ""
        after = " (after extending the grid down)" if extended else ""
        text = f"Zero decay is the best: even the smallest decay tried{smallest} is worse{after}"
        if extended or s.get("budget"):
            return text + "."
        return text + "; a smaller one may still help (lower grid_min)."
    why = edge_text(best, edge)
    arg = "grid_max" if edge == "high" else "grid_min"
    if s.get("budget"):
        fix = "a larger budget searches further"
    elif extended:
        fix = f"the grid was extended and the best is still at its edge: widen it with {arg}"
    else:
        fix = f"widen the grid with {arg}"
    return f"{why[0].upper()}{why[1:]}: the optimum may lie beyond it ({fix})."


def verdict_lines(s: Mapping[str, Any]) -> list[str]:
    """The recommendation in plain words, a short line per fact, each number once (in the
    run's convention; the other in the conventions line)."""
    if s.get("learned") is False:
        return [_not_learned_text(s)]
    if s["best_weight_decay"] is None:
        return ["No candidate finished every fold: nothing to recommend yet."]
    lines = [_choice_text(s)]
    if s["flat"]:
        lines.append(_flat_text(s))
    if s.get("edge") is not None:
        lines.append(_edge_line(s))
    lines += [_decay_text(s), _suggested_text(s), _conventions_text(s), _test_text(s)]
    if s.get("failed"):
        lines.append(f"{s['failed']} candidate(s) failed: their reasons are in the report.")
    return [line for line in lines if line]


def verdict_text(s: Mapping[str, Any]) -> str:
    """:func:`verdict_lines`, one per line."""
    return "\n".join(verdict_lines(s))
