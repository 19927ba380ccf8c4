"""``tune``: k-fold cross-validated weight decay search in an Optuna study, and its verdict."""

from __future__ import annotations

import functools
import logging
import math
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import optuna
import torch

from .._checks import check_choice, check_range, check_whole
from ..suggest import TORCH_DEFAULT, suggest
from ..tasks import Task, cross_entropy, get_task
from ..timescale import convert_weight_decay, tau_epoch
from ..train import TrainingDiverged, evaluate, fit, flush_denormals, population
from . import cv, report
from . import study as study_mod

__all__ = ["SAMPLERS", "TuneResult", "tune"]

SAMPLERS = ("grid", "tpe", "gp")
# Members trained together when no memory cap is given.
DEFAULT_MEMBERS = 128
# Above this batch_size x parameters, one member's step already keeps the CPU busy, so
# stacking gains nothing. Measured on 2 cores (benchmarks/sweep_speed.py): the digits
# sweep with a 64-wide MLP (batch x parameters 2.9e5) trains 13.6x faster stacked, with a
# 512-wide one (9.6e6) 1.35x, with a 1024-wide one (3.6e7) 0.73x. Models that go through
# torch.func.vmap pay its per-call work on top, so their limit is lower.
LARGE_STEP_MLP = 16_000_000
LARGE_STEP = 2_000_000


@dataclass
class TuneResult:
    """What :func:`tune` returns: the summary (as in summary.json) and where the files are."""

    summary: dict[str, Any]
    run_dir: Path
    paths: dict[str, Path]

    @property
    def best_weight_decay(self) -> float | None:
        return self.summary["best_weight_decay"]

    @property
    def one_se_weight_decay(self) -> float | None:
        return self.summary["one_se_weight_decay"]

    @property
    def flat(self) -> bool:
        return bool(self.summary["flat"])


def _values(name: str, values: Sequence[float], low: float, low_open: bool = False) -> list[float]:
    """Distinct sorted floats, each a finite number above ``low``; else one clear error."""
    listed = list(values)
    what = f"numbers {'>' if low_open else '>='} {low:g}"
    if not listed:
        raise ValueError(f"{name}=[] is invalid: expected at least one of the {what}")
    out = []
    for v in listed:
        try:
            out.append(check_range(name, v, low, low_open=low_open))
        except ValueError:
            raise ValueError(f"{name}={listed!r} is invalid: expected {what}, got {v!r}") from None
    return sorted(set(out))


def _study_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(
            f"study={name!r} is invalid: expected letters, digits, '.', '_' or '-' "
            "(it names a folder)"
        )
    return name


P = ParamSpec("P")
R = TypeVar("R")


def _flushing(fn: Callable[P, R]) -> Callable[P, R]:
    """Run ``fn`` with subnormals flushed, set before any thread pool starts so that its
    threads inherit the setting."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with flush_denormals():
            return fn(*args, **kwargs)

    return wrapper


@_flushing
def tune(
    task: str | Task = "digits",
    *,
    folds: int = 5,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    decay_scale: str | None = None,
    grid: Sequence[float] | None = None,
    grid_min: float | None = None,
    grid_max: float | None = None,
    points: int | None = None,
    sampler: str = "grid",
    trials: int = 12,
    lr_grid: Sequence[float] | None = None,
    search_lr: bool = False,
    storage: str | None = None,
    study: str | None = None,
    out: str | Path = "adamwkit-runs",
    seed: int = 0,
    prune: bool = False,
    heartbeat_interval: int = 10,
    test: bool = True,
    progress: bool = True,
    vectorize: str = "auto",
    max_memory: float | None = None,
    workers: int = 1,
) -> TuneResult:
    """Cross-validate weight decay on ``task``; write the report; return the verdict.

    The candidates are ``grid``, or a log grid of ``points`` from ``grid_min`` to
    ``grid_max`` plus zero, or by default a log grid at 2x spacing through
    :func:`adamwkit.suggest`'s value that spans tau_epoch from 1/4 epoch to 4x ``epochs``,
    plus zero. ``sampler="tpe"`` or ``"gp"`` instead searches ``trials`` candidates in the
    default grid's range; ``lr_grid`` (or ``search_lr`` with a sampler) makes the search
    joint in (lr, weight decay). Every candidate trains on k-1 folds and is scored on the
    held-out fold; a test split, held out before the folds are made, scores refits at the
    end. Values are in the convention of ``decay_scale``.

    The study lives in ``storage`` (default: a journal file in ``out/<study>/``); rerunning
    the same call resumes it, and any number of processes or machines sharing a database
    URL share the work. Returns a :class:`TuneResult`; the files are ``summary.json``,
    ``cv_curve.png`` and ``report.html`` in ``out/<study>/``.

    ``vectorize`` (``"auto"``, ``"on"``, ``"off"``) trains the claimed candidates' folds
    together as one stacked model (see :mod:`adamwkit.tuning.population`); ``"auto"`` falls
    back to one run at a time, with the reason, for a model that cannot be stacked.
    ``max_memory`` (GiB) caps the members trained together. ``workers`` is how many
    processes will share the study: stacked, each claims at most 1/``workers`` of the
    candidates at a time, so that all of them get work.
    """
    t = get_task(task)
    k = check_whole("folds", folds, 2)
    n_epochs = int(check_range("epochs", t.epochs if epochs is None else epochs, 1))
    lr_ = check_range("lr", t.lr if lr is None else lr, 0.0, low_open=True)
    bs = int(check_range("batch_size", t.batch_size if batch_size is None else batch_size, 1))
    scale = check_choice("decay_scale", decay_scale or t.decay_scale, ("lr", "schedule"))
    check_choice("sampler", sampler, SAMPLERS)
    check_choice("vectorize", vectorize, ("auto", "on", "off"))
    if max_memory is not None:
        check_range("max_memory", max_memory, 0.0, low_open=True)
    check_range("trials", trials, 1)
    check_range("heartbeat_interval", heartbeat_interval, 1)
    n_workers = check_whole("workers", workers, 1)
    name = _study_name(study or t.name)
    run_dir = Path(out) / name

    pool, test_idx = cv.holdout_split(len(t), t.label_array(), t.test_fraction, seed)
    fold_idx = cv.make_folds(pool, t.label_array(), k, seed)
    n_train = min(len(tr) for tr, _ in fold_idx)
    if bs > n_train:
        raise ValueError(
            f"batch_size={bs!r} is invalid: expected at most {n_train}, the examples a fold "
            "trains on (the task's default batch size is too large for this many folds)"
        )
    sug = suggest(lr=lr_, batch_size=bs, dataset_size=n_train, epochs=n_epochs, decay_scale=scale)
    default = cv.default_grid(
        lr=lr_, batch_size=bs, n_train=n_train, epochs=n_epochs, decay_scale=scale, anchor=sug.value
    )
    if grid is not None:
        candidates = _values("grid", grid, 0.0)
    elif grid_min is not None or grid_max is not None or points is not None:
        if grid_min is None or grid_max is None:
            raise ValueError("grid_min and grid_max go together (--min, --max)")
        lo = check_range("grid_min", grid_min, 0.0, low_open=True)
        hi = check_range("grid_max", grid_max, lo)
        n_points = int(check_range("points", 8 if points is None else points, 1))
        candidates = [0.0, *(float(f"{v:.6g}") for v in np.geomspace(lo, hi, n_points))]
    else:
        candidates = default
    if lr_grid is not None and sampler != "grid":
        raise ValueError(
            f"lr_grid={list(lr_grid)!r} goes with sampler='grid'; with {sampler!r} pass "
            "search_lr (--search-lr)"
        )
    if search_lr and sampler == "grid":
        raise ValueError("search_lr needs sampler 'tpe' or 'gp'; with a grid pass lr_grid")
    lrs = None
    if lr_grid is not None:
        lrs = _values("lr_grid", lr_grid, 0.0, low_open=True)

    settings: dict[str, Any] = {
        "task": t.name,
        "data": _fingerprint(t),
        "folds": k,
        "epochs": n_epochs,
        "lr": lr_,
        "batch_size": bs,
        "decay_scale": scale,
        "schedule": t.schedule,
        "seed": seed,
        "test_fraction": t.test_fraction,
        "sampler": sampler,
        "grid": candidates,
        "lr_grid": lrs,
    }
    if sampler == "grid":
        enqueue = [
            {"weight_decay": w, **({"lr": a} if lrs else {})}
            for a in (lrs or [lr_])
            for w in candidates
        ]
    else:
        positive = [c for c in candidates if c > 0]
        if not positive:
            raise ValueError(
                f"grid={candidates!r} is invalid for sampler {sampler!r}: expected at least "
                "one weight decay > 0 to set the search range"
            )
        settings["range"] = [min(positive), max(positive)]
        settings["trials"] = int(trials)
        settings["lr_range"] = [lr_ / 10, lr_ * 10] if search_lr else None
        enqueue = [
            {"weight_decay": float(f"{sug.value:.6g}"), **({"lr": lr_} if search_lr else {})}
        ]
    settings["enqueue"] = enqueue

    logging.getLogger("optuna").setLevel(logging.WARNING)
    store = study_mod.open_storage(storage, run_dir, int(heartbeat_interval))
    st = study_mod.open_study(store, name, settings, prune)
    total = len(enqueue) * k if sampler == "grid" else int(trials) * k

    refusal = None
    per_member = 0
    if vectorize != "off":
        try:
            torch.manual_seed(seed)
            probe = t.model()  # the one model built to inspect it
            refusal = population.vectorize_refusal(probe)
            if refusal is None:
                per_member = population.member_bytes(t, bs, probe)
            work_per_step = bs * sum(p.numel() for p in probe.parameters())
            mlp = population.stacked_forward(probe) is not None
            limit = LARGE_STEP_MLP if mlp else LARGE_STEP
            if refusal is None and vectorize == "auto" and work_per_step > limit:
                refusal = (
                    f"each run's step is large ({work_per_step:,} multiply-adds per layer "
                    "pass), so stacking gains nothing; --vectorize on forces it"
                )
            if refusal is None and (not mlp or t.loss is not cross_entropy):
                refusal = _vmap_refusal(t, probe, vectorize)  # the model, or its loss
        except Exception as err:  # the user's model code failed
            raise ValueError(
                f"task={t.name!r} failed while building its model: {type(err).__name__}: {err}"
            ) from err
        if prune and refusal is None:
            refusal = "pruning stops candidates fold by fold, so they train one at a time"
        if refusal and vectorize == "on":
            raise ValueError(f"vectorize='on' is invalid for task={t.name!r}: {refusal}")
    together = vectorize != "off" and refusal is None
    budget = int(max_memory * 2**30) if max_memory is not None else None
    max_members = DEFAULT_MEMBERS if budget is None else max(1, budget // max(per_member, 1))
    if refusal and progress:
        print(f"vectorize: off ({refusal})", file=sys.stderr)

    bar = _Progress(progress, total, f"{t.name}: {k}-fold CV")

    def count_done() -> int:
        done = 0
        for c in study_mod.trial_candidates(st, settings):
            done += k if c.state in ("failed", "pruned") else len(c.fold_losses)
        return done

    def run_candidate(claim: study_mod.Claim) -> None:
        wd = float(claim.params["weight_decay"])
        this_lr = float(claim.params.get("lr", lr_))
        try:
            for f in claim.todo:
                train_idx, val_idx = fold_idx[f]
                bar.fold(f"wd {wd:.3g} fold {f + 1}/{k}", n_epochs)
                result = fit(
                    t,
                    wd,
                    train_idx=train_idx,
                    val_idx=val_idx,
                    lr=this_lr,
                    epochs=n_epochs,
                    batch_size=bs,
                    decay_scale=scale,
                    seed=seed + f,
                    progress=bar.epoch,
                )
                loss = result.val_loss
                assert loss is not None
                if not math.isfinite(loss):
                    raise TrainingDiverged(f"the validation loss is {loss} on fold {f + 1}")
                pruned = claim.report(f, loss, result.val_metric)
                bar.update(count_done())
                if pruned:
                    claim.prune()
                    return
            claim.finish()
        except TrainingDiverged as err:
            claim.fail(str(err))
        except optuna.exceptions.UpdateFinishedTrialError:
            raise  # declared stale while paused: the worker loop drops this claim
        except Exception as err:  # the user's task code failed: record it, stop cleanly
            reason = f"{type(err).__name__}: {err}"
            claim.fail(reason)
            raise ValueError(
                f"task={t.name!r} failed while training weight decay {wd:g}: {reason}"
            ) from err
        bar.update(count_done())

    def run_claims(claims: list[study_mod.Claim]) -> None:
        if not together:
            for claim in claims:
                run_candidate(claim)
            return
        jobs = [(c, f) for c in claims for f in c.todo]
        by_size: dict[int, list[tuple[study_mod.Claim, int]]] = {}
        for c, f in jobs:
            by_size.setdefault(len(fold_idx[f][0]), []).append((c, f))
        failed: dict[int, str] = {}
        for group in by_size.values():
            for start in range(0, len(group), max_members):
                chunk = group[start : start + max_members]
                members = [
                    population.Member(
                        weight_decay=float(c.params["weight_decay"]),
                        lr=float(c.params.get("lr", lr_)),
                        train_idx=torch.as_tensor(fold_idx[f][0]),
                        val_idx=torch.as_tensor(fold_idx[f][1]),
                        seed=seed + f,
                    )
                    for c, f in chunk
                ]
                bar.fold(f"{len(members)} (candidate, fold) runs together", n_epochs)
                try:
                    results = population.fit_population(
                        t, members, epochs=n_epochs, batch_size=bs, decay_scale=scale,
                        progress=bar.epoch,
                    )  # fmt: skip
                except Exception as err:
                    reason = f"{type(err).__name__}: {err}"
                    for c in claims:  # every claim of this batch, each once
                        c.fail(reason)
                    raise ValueError(
                        f"task={t.name!r} failed while training a population: {reason}"
                    ) from err
                for (c, f), r in zip(chunk, results, strict=True):
                    loss = r.val_loss
                    if r.diverged or loss is None or not math.isfinite(loss):
                        failed.setdefault(id(c), r.diverged or f"the validation loss is {loss}")
                    elif id(c) not in failed:
                        c.report(f, loss, r.val_metric)
                bar.update(count_done())
        for c in claims:
            if id(c) in failed:
                c.fail(failed[id(c)])
            else:
                c.finish()
        bar.update(count_done())

    n_candidates = len(enqueue) if sampler == "grid" else int(trials)
    ended = sum(c.state in ("complete", "pruned") for c in study_mod.trial_candidates(st, settings))
    share = math.ceil(max(n_candidates - ended, 1) / n_workers)  # every worker gets some
    batch = max(1, min(max_members // k, share)) if together else 1
    try:
        bar.update(count_done())
        study_mod.work(
            st, settings, run_claims, lambda: bar.update(count_done()), run_dir, batch=batch
        )
    finally:
        bar.close()

    cands = study_mod.trial_candidates(st, settings)
    factor = bs / (lr_ * n_train)  # tau_epoch = factor / wd_torch
    to_torch = convert_weight_decay(1.0, scale, "torch", lr_peak=lr_)
    for c in cands:
        wd_t = convert_weight_decay(c.weight_decay, scale, "torch", lr_peak=c.lr)
        c.tau_epoch = tau_epoch(c.lr, wd_t, bs, n_train) if wd_t > 0 else math.inf
    summ = cv.summarize(cands, k)
    summary = _summary(t, settings, summ, sug, factor / to_torch, lr_, scale, n_train)
    if test and len(test_idx) and summ.best is not None:
        summary["test"] = _test_scores(st, t, summary, pool, test_idx, n_epochs, bs, scale, seed)
    summary["vectorize"] = "on" if together else f"off ({refusal or 'asked'})"
    summary["verdict"] = verdict_text(summary)
    paths = report.write_reports(run_dir, summary)
    return TuneResult(summary, run_dir, paths)


def _vmap_refusal(t: Task, probe: torch.nn.Module, vectorize: str) -> str | None:
    """Why a model that needs ``torch.func.vmap`` should not be stacked, or None."""
    failure, slow = population.vmap_problems(t, probe)
    if failure:
        return f"the model fails under torch.func.vmap ({failure})"
    if slow and vectorize == "auto":
        return (
            f"torch.func has no batching rule for {', '.join(slow)}, so stacked members would "
            "run one after another; --vectorize on forces it"
        )
    return None


def _fingerprint(t: Task) -> str:
    """A hash of the task's data, so workers with different data cannot share a study."""
    import hashlib

    import torch

    h = hashlib.sha256(str(len(t)).encode())
    if isinstance(t.data, tuple):
        for part in t.data:
            h.update(torch.as_tensor(part).detach().cpu().contiguous().numpy().tobytes())
    if t.labels is not None:
        h.update(np.ascontiguousarray(t.label_array()).tobytes())
    return h.hexdigest()[:16]


def _both(value: float | None, lr: float, scale: str) -> dict[str, float | None]:
    if value is None:
        return {"torch": None, "independent": None}
    return {
        "torch": convert_weight_decay(value, scale, "torch", lr_peak=lr),
        "independent": convert_weight_decay(value, scale, "independent", lr_peak=lr),
    }


def _summary(
    t: Task,
    settings: dict[str, Any],
    summ: cv.CVSummary,
    sug: Any,
    factor: float,
    lr: float,
    scale: str,
    n_train: int,
) -> dict[str, Any]:
    best, one_se = summ.best, summ.one_se
    best_lr = best.lr if best else lr
    return {
        "task": t.name,
        "description": t.description,
        "metric_name": t.metric_name,
        "folds": summ.folds,
        "epochs": settings["epochs"],
        "lr": lr,
        "best_lr": best_lr,
        "batch_size": settings["batch_size"],
        "n_train": n_train,
        "decay_scale": scale,
        "best_weight_decay": best.weight_decay if best else None,
        "one_se_weight_decay": one_se.weight_decay if one_se else None,
        "suggested_weight_decay": sug.value,
        "suggested_rule": sug.rule,
        "best_weight_decay_conventions": _both(best.weight_decay if best else None, best_lr, scale),
        "one_se_weight_decay_conventions": _both(
            one_se.weight_decay if one_se else None, best_lr, scale
        ),
        "suggested_weight_decay_conventions": _both(sug.value, lr, scale),
        "best_mean": best.mean if best else None,
        "best_sem": best.sem if best else None,
        "flat": summ.flat,
        "candidates": [c.to_dict() for c in summ.candidates],
        "tau_epoch_factor": factor,
        "settings": {k: v for k, v in settings.items() if k != "enqueue"},
        "test": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


def _test_scores(
    st: Any,
    t: Task,
    summary: dict[str, Any],
    pool: np.ndarray,
    test_idx: np.ndarray,
    epochs: int,
    bs: int,
    scale: str,
    seed: int,
) -> dict[str, Any]:
    """Refit on the whole training pool with each choice; score on the test split (cached)."""
    lr = summary["best_lr"]
    default = convert_weight_decay(TORCH_DEFAULT, "torch", scale, lr_peak=lr)
    wanted = {
        "best": summary["best_weight_decay"],
        "one_se": summary["one_se_weight_decay"],
        "zero": 0.0,
        "torch_default": default,
    }
    cache = dict(st.user_attrs.get("adamwkit_test", {}))
    out: dict[str, Any] = {}
    for label, wd in wanted.items():
        key = f"{wd!r}@{lr!r}"
        if key not in cache:
            try:
                model = fit(t, wd, train_idx=pool, lr=lr, epochs=epochs, batch_size=bs,
                            decay_scale=scale, seed=seed).model  # fmt: skip
                loss, metric = evaluate(model, t, test_idx)
                cache[key] = {"loss": loss, "metric": metric}
            except TrainingDiverged as err:
                cache[key] = {"loss": None, "metric": None, "reason": str(err)}
            st.set_user_attr("adamwkit_test", cache)
        out[label] = {"weight_decay": wd, **cache[key]}
    return out


def verdict_text(s: dict[str, Any]) -> str:
    """The recommendation in plain words."""
    if s["best_weight_decay"] is None:
        return "No candidate finished every fold: nothing to recommend yet."
    b, o, g = (
        s["best_weight_decay_conventions"],
        s["one_se_weight_decay_conventions"],
        s["suggested_weight_decay_conventions"],
    )
    lines = []
    if s["flat"]:
        lines.append(
            "The curve is flat here: weight decay hardly matters for this task and budget "
            "(no candidate is worse than the best by more than two paired standard errors)."
        )
    lines.append(
        f"Best weight decay {s['best_weight_decay']:.4g} (PyTorch convention {b['torch']:.4g}, "
        f"independent {b['independent']:.3g}); largest within one standard error "
        f"{s['one_se_weight_decay']:.4g} (PyTorch {o['torch']:.4g}, independent "
        f"{o['independent']:.3g}); adamwkit suggest predicted {s['suggested_weight_decay']:.4g} "
        f"(PyTorch {g['torch']:.4g})."
    )
    test = s.get("test") or {}
    if test.get("best", {}).get("loss") is not None:
        parts = [
            f"{label} {v['loss']:.4g}" for label, v in test.items() if v.get("loss") is not None
        ]
        lines.append("Test loss after refitting: " + ", ".join(parts) + ".")
    return " ".join(lines)


class _Progress:
    """A bar over candidates x folds, and one over the epochs of the current fold (stderr)."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self._p = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self._p = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._all = self._p.add_task(f"{title} (candidates x folds)", total=total)
        self._fold = self._p.add_task("", total=1, visible=False)

    def update(self, done: int) -> None:
        if self._p is not None:
            self._p.update(self._all, completed=done)

    def fold(self, description: str, epochs: int) -> None:
        if self._p is not None:
            self._p.update(self._fold, description=f"  {description}", total=epochs, completed=0,
                           visible=True)  # fmt: skip

    def epoch(self, epoch: int, epochs: int) -> None:
        if self._p is not None:
            self._p.update(self._fold, completed=epoch)

    def close(self) -> None:
        if self._p is not None:
            self._p.update(self._fold, visible=False)
            self._p.stop()
