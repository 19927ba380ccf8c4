r"""Weight decay for the full data set from cross-validation on subsets: :func:`transfer`.

The optimal timescale moves with the amount of data: in the evidence studies the digits
MLP's :math:`\tau^*_{\mathrm{epoch}}` fell from 542 to 71 epochs as the examples trained on
grew from 200 to 1,437 (``docs/evidence.md``). :func:`transfer` measures that relation on
the task itself, cheaply:

1. the test split is held out as ``tune`` holds it; subsets of the rest (by default 1/8,
   1/4 and 1/2, nested, stratified when the task has labels) are each cross-validated by
   :func:`adamwkit.tune` (stacked where that is faster, the grid extended past its edge);
2. each subset's optimum :math:`\tau^*` is refined between grid points
   (:func:`adamwkit.tuning.cv.refine_optimum`), with its one-SE band;
3. :math:`\log\tau^* = a + b\log N` is fitted by least squares over the subsets (N: the
   examples a fold trains on) and extrapolated to the examples the final model trains on;
   the 80% interval is the fit's prediction interval (Student's t with n-2 degrees of
   freedom), widened to at least the subsets' median one-SE band;
4. with ``confirm=True`` a narrow grid (2^0.5 spacing over the interval, plus zero) is
   cross-validated on the whole training pool.

The result is written as ``transfer.json`` and ``transfer.png`` (tau* against N, the fit
and the extrapolation) in ``out/<study>.transfer/``. When fewer than two subsets have a
positive optimum there is no trend to fit: :class:`~.objective.NoResult` says so (the
command line: one line, exit code 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import render
from .._checks import ArgumentError, check_range, check_whole
from .._io import atomic_write
from ..tasks import Task, get_task
from ..timescale import convert_weight_decay, weight_decay_from_tau_epoch
from . import cv
from .objective import NoResult
from .options import check_mode

__all__ = ["TransferPoint", "TransferResult", "transfer"]

MIN_SUBSET = 20  # examples in the smallest subset


@dataclass(frozen=True)
class TransferPoint:
    """One subset's cross-validation: its size, optimum and one-SE band (tau_epoch)."""

    fraction: float
    n_train: int
    tau_star: float
    band: tuple[float, float]
    best_weight_decay: float
    flat: bool


@dataclass
class TransferResult:
    """What :func:`transfer` returns. Weight decays are in PyTorch's convention, ``value``
    and ``low_value``/``high_value`` in the task's ``decay_scale``."""

    points: list[TransferPoint]
    slope: float
    intercept: float
    n_target: int
    tau_epoch: float
    tau_low: float
    tau_high: float
    weight_decay: float
    low: float
    high: float
    decay_scale: str
    lr: float
    confirm: Any = None
    run_dir: Path | None = None
    paths: dict[str, Path] = field(default_factory=dict)

    def _scale(self, wd: float) -> float:
        return convert_weight_decay(wd, "torch", self.decay_scale, lr_peak=self.lr)

    @property
    def value(self) -> float:
        return self._scale(self.weight_decay)

    @property
    def low_value(self) -> float:
        return self._scale(self.low)

    @property
    def high_value(self) -> float:
        return self._scale(self.high)

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [dataclasses.asdict(p) for p in self.points],
            "slope": self.slope,
            "intercept": self.intercept,
            "n_target": self.n_target,
            "tau_epoch": self.tau_epoch,
            "tau_low": self.tau_low,
            "tau_high": self.tau_high,
            "weight_decay": self.weight_decay,
            "low": self.low,
            "high": self.high,
            "decay_scale": self.decay_scale,
            "value": self.value,
            "low_value": self.low_value,
            "high_value": self.high_value,
            "confirm": None if self.confirm is None else {
                "best_weight_decay": self.confirm.best_weight_decay,
                "one_se_weight_decay": self.confirm.one_se_weight_decay,
                "flat": self.confirm.flat,
                "run_dir": str(self.confirm.run_dir),
            },
        }  # fmt: skip

    def blocks(self) -> list[render.Block]:
        """What ``str()`` and ``adamwkit tune --transfer`` show (:mod:`adamwkit.render`)."""
        return render.transfer_result(self)

    def __str__(self) -> str:
        return render.plain(self.blocks())

    def verdict(self) -> str:
        """The extrapolated weight decay, its interval and the fitted trend, in words."""
        v = (
            f"Extrapolated to {self.n_target:,} examples: tau_epoch {self.tau_epoch:.3g} epochs, "
            f"weight decay {self.value:.4g} (decay_scale={self.decay_scale!r}; PyTorch "
            f"{self.weight_decay:.4g}), 80% interval {self.low_value:.4g} to "
            f"{self.high_value:.4g}. tau_epoch* ~ N^{self.slope:.2f} over the subsets."
        )
        if self.confirm is not None and self.confirm.best_weight_decay is not None:
            v += f" Confirmed at the full size: best {self.confirm.best_weight_decay:.4g}."
        return v


def _subset(task: Task, idx: np.ndarray, name: str) -> Task:
    import torch

    index = torch.as_tensor(idx, dtype=torch.long)
    if isinstance(task.data, tuple):
        x, y = task.data
        data: Any = (x[index], y[index])
    else:
        from torch.utils.data import Subset

        data = Subset(task.data, idx.tolist())
    labels = task.label_array()
    return dataclasses.replace(
        task,
        name=name,
        data=data,
        labels=None if labels is None else torch.as_tensor(labels[idx]),
        test_fraction=0.0,
    )


def _nested(pool: np.ndarray, labels: np.ndarray | None, sizes: list[int], seed: int):
    """Nested subsets of ``pool``: each larger one holds the smaller (stratified order)."""
    rng = np.random.default_rng(seed)
    if labels is None:
        order = rng.permutation(pool)
    else:  # interleave the classes so that every prefix keeps their proportions
        by_class = {c: list(rng.permutation(pool[labels[pool] == c])) for c in np.unique(labels)}
        total = len(pool)
        keys = []
        for c, members in by_class.items():
            share = len(members) / total
            keys += [((i + 0.5) / share, c, m) for i, m in enumerate(members)]
        order = np.array([m for _, _, m in sorted(keys, key=lambda k: (k[0], str(k[1])))])
    return [np.sort(order[:n]) for n in sizes]


def _optimum(summary: Mapping[str, Any], fraction: float) -> TransferPoint | None:
    cands = [c for c in summary["candidates"] if c["state"] == "complete" and c["mean"] is not None]
    positive = sorted((c for c in cands if c["weight_decay"] > 0), key=lambda c: -c["weight_decay"])
    best = summary["best_weight_decay"]
    if best is None or best == 0 or not positive:
        return None  # zero decay is the best: no finite optimum to extrapolate
    taus = [c["tau_epoch"] for c in positive]
    means = [c["mean"] for c in positive]
    tau_best = next(c["tau_epoch"] for c in positive if c["weight_decay"] == best)
    tau = cv.refine_optimum(taus, means, tau_best)
    inside = [c["tau_epoch"] for c in positive
              if (c["paired_diff"] or 0.0) <= (c["paired_sem"] or 0.0)]  # fmt: skip
    return TransferPoint(fraction, int(summary["n_train"]), tau, (min(inside), max(inside)),
                         best, bool(summary["flat"]))  # fmt: skip


def transfer(
    task: str | Task = "digits",
    *,
    fractions: Sequence[float] = (0.125, 0.25, 0.5),
    folds: int = 5,
    confirm: bool = False,
    out: str | Path = "adamwkit-runs",
    study: str | None = None,
    seed: int = 0,
    progress: bool = True,
    **tune_kwargs: Any,
) -> TransferResult:
    """Cross-validate on nested subsets, fit tau_epoch* against N, extrapolate (see the
    module's docstring). ``tune_kwargs`` go to every :func:`adamwkit.tune` call (for
    example ``vectorize``, ``threads``, ``device``, ``repeats``); the options it does not
    take (``grid``, ``storage``, ``workers``, ``test``, ...:
    :data:`adamwkit.tuning.options.MODE_FLAGS`) are refused in one line.

    Example: ``transfer("digits", fractions=(0.25, 0.5, 0.75))``.
    """
    from .run import tune

    check_mode("transfer", tune_kwargs)  # the options it does not take (tuning.options)
    t = _task(task)
    fr = _fractions(fractions)
    k = check_whole("folds", folds, 2)
    labels = t.label_array()
    pool, _ = cv.holdout_split(len(t), labels, t.test_fraction, seed)
    sizes = [round(f * len(pool)) for f in fr]
    if sizes[0] < max(MIN_SUBSET, 2 * k):
        raise ArgumentError(
            f"fractions={list(fractions)!r} is invalid: the smallest subset has {sizes[0]} "
            f"examples of the {len(pool)} in the training pool; expected at least "
            f"{max(MIN_SUBSET, 2 * k)}",
            "fractions",
        )
    base = study or t.name
    points: list[TransferPoint] = []
    settings: Mapping[str, Any] = {}
    for f, idx in zip(fr, _nested(pool, labels, sizes, seed), strict=True):
        sub = _subset(t, idx, f"{t.name}-{len(idx)}")
        res = tune(sub, folds=k, test=False, out=out, study=f"{base}.transfer-{len(idx)}",
                   seed=seed, progress=progress, **tune_kwargs)  # fmt: skip
        settings = res.summary  # lr, batch size and convention as tune resolved them
        point = _optimum(res.summary, f)
        if point is not None:
            points.append(point)
    if len(points) < 2:
        raise NoResult(
            f"transfer of {t.name!r}: no trend to extrapolate: only {len(points)} subset(s) "
            "had a positive optimum (zero decay was best elsewhere), so weight decay barely "
            f"matters at these sizes; each subset's report is in {Path(out)}/"
            f"{base}.transfer-<N>/"
        )
    result = _extrapolate(points, len(pool), settings)  # the refit trains on the whole pool
    if confirm:
        grid = cv.range_grid(result.low_value, result.high_value)
        result.confirm = tune(t, folds=k, grid=grid, out=out, study=f"{base}.transfer-confirm",
                              seed=seed, progress=progress, **tune_kwargs)  # fmt: skip
    _write(result, Path(out) / f"{base}.transfer", t.name)
    return result


def _task(task: Any) -> Task:
    """The task whose subsets are tuned (an objective's data cannot be subset here)."""
    t = get_task(task) if isinstance(task, (str, Task)) else None
    if not isinstance(t, Task):
        raise ArgumentError(
            f"task={task!r} is invalid for transfer: expected a Task or a built-in task's "
            "name (subsets of an objective's data cannot be made here)",
            "objective",
        )
    return t


def _fractions(fractions: Sequence[float]) -> list[float]:
    """At least two distinct fractions in (0, 1), sorted."""
    fr = sorted({check_range("fractions", f, 0.0, 1.0, low_open=True, high_open=True)
                 for f in fractions})  # fmt: skip
    if len(fr) < 2:
        raise ArgumentError(
            f"fractions={list(fractions)!r} is invalid: expected at least two distinct values "
            "in (0, 1), to fit tau_epoch* against N",
            "fractions",
        )
    return fr


def _extrapolate(
    points: list[TransferPoint], n_target: int, settings: Mapping[str, Any]
) -> TransferResult:
    """Least squares of log tau_epoch* on log N, extrapolated to ``n_target`` with an 80%
    prediction interval (never narrower than the subsets' median one-SE band, nor than the
    grid's 2^0.5 step)."""
    x = np.log([p.n_train for p in points])
    y = np.log([p.tau_star for p in points])
    slope, intercept = np.polyfit(x, y, 1)
    x0 = math.log(n_target)
    pred = intercept + slope * x0
    n = len(points)
    width = float(np.median([math.log(p.band[1] / p.band[0]) for p in points])) / 2
    if n > 2:
        from scipy import stats

        resid = y - (intercept + slope * x)
        s2 = float(resid @ resid) / (n - 2)
        se = math.sqrt(s2 * (1 / n + (x0 - x.mean()) ** 2 / float(((x - x.mean()) ** 2).sum())))
        half = float(stats.t.ppf(0.9, n - 2)) * math.sqrt(s2 + se**2)
        width = max(width, half)
    width = max(width, math.log(2.0) / 2)  # never narrower than the grid's 2^0.5 step
    tau, lo, hi = math.exp(pred), math.exp(pred - width), math.exp(pred + width)
    lr, bs, scale = settings["lr"], settings["batch_size"], settings["decay_scale"]
    return TransferResult(
        points, float(slope), float(intercept), n_target, tau, lo, hi,
        weight_decay_from_tau_epoch(tau, lr, bs, n_target),
        weight_decay_from_tau_epoch(hi, lr, bs, n_target),
        weight_decay_from_tau_epoch(lo, lr, bs, n_target), scale, lr,
    )  # fmt: skip


def _write(result: TransferResult, run_dir: Path, name: str) -> None:
    """transfer.json and transfer.png in ``run_dir``, written atomically."""
    run_dir.mkdir(parents=True, exist_ok=True)
    result.run_dir = run_dir
    summary = {**result.to_dict(), "verdict": result.verdict(), "task": name}
    result.paths = {
        "summary": atomic_write(run_dir / "transfer.json", json.dumps(summary, indent=2)),
        "plot": atomic_write(run_dir / "transfer.png", _plot(result, name)),
    }


def _plot(r: TransferResult, name: str) -> bytes:
    import io

    from .report import figure

    fig = figure(figsize=(6, 4.2))
    ax = fig.subplots()
    ns = np.array([p.n_train for p in r.points], dtype=float)
    taus = np.array([p.tau_star for p in r.points])
    lo = taus - np.array([p.band[0] for p in r.points])
    hi = np.array([p.band[1] for p in r.points]) - taus
    ax.errorbar(ns, taus, yerr=[np.maximum(lo, 0), np.maximum(hi, 0)], fmt="o",
                label="CV optimum on a subset (bar: one-SE band)")  # fmt: skip
    grid = np.geomspace(ns.min() / 1.2, r.n_target * 1.2)
    ax.plot(grid, np.exp(r.intercept) * grid**r.slope, "k-", lw=1,
            label=f"fit: tau* ~ N^{r.slope:.2f}")  # fmt: skip
    ax.errorbar([r.n_target], [r.tau_epoch],
                yerr=[[r.tau_epoch - r.tau_low], [r.tau_high - r.tau_epoch]], fmt="s",
                color="C3", capsize=4, label="extrapolated, 80% interval")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("examples a fold trains on (N)")
    ax.set_ylabel("tau_epoch* (epochs)")
    ax.set_title(f"{name}: the optimum against the data size")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()
