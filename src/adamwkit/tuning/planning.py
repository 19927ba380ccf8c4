"""A tune run's plan: every setting validated, the splits drawn, nothing trained yet.

``plan(objective, **options)`` takes :func:`adamwkit.tune`'s arguments and returns a
:class:`TunePlan` (frozen): the study's identity (:class:`~.config.StudySpec`), how this
process runs it (:class:`~.config.TuneConfig`), the folds and the test split, the
suggestion the default grid is centred on, and notes on what was adjusted. Every bad value
is refused here, in one line naming the argument, before any file is written beyond the
run folder's write check. ``TunePlan.run()`` then runs it; ``tune(...)`` is
``plan(...).run()``::

    from adamwkit.tuning import plan
    p = plan("digits", folds=3, grid=[0, 1e-3, 1e-2], progress=False)
    print(p.config.spec.grid, p.config.total_runs)   # (0.0, 0.001, 0.01) 9
    result = p.run()
"""

from __future__ import annotations

import dataclasses
import math
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import (
    ArgumentError,
    check_lr,
    check_range,
    is_subnormal,
    listing,
)
from .._constants import (
    MAX_CANDIDATES,
)
from .._device import check_devices, check_precision, resolve_device
from ..suggest import Suggestion, suggest
from . import cv
from . import study as study_mod
from .config import StudySpec, TuneConfig
from .options import TUNE_OPTIONS, check
from .protocol import TuneResult, run_plan
from .source import Prepared, Source, fingerprint, make_splits, prepare

__all__ = ["TunePlan", "configure", "default_study_name", "plan"]

_DEFAULTS = {o.name: o.default for o in TUNE_OPTIONS}


@dataclass(frozen=True)
class TunePlan:
    """A validated tune run, ready to start: what trains, the settings, the splits.

    ``config.spec`` is the study's identity (every worker must agree on it),
    ``config`` how this process takes part; ``splits`` the test split and the folds;
    ``suggestion`` the rule's value the default grid is centred on (``None`` for an
    objective given no ``batch_size`` and ``epochs``); ``notes`` what was adjusted (a
    repeated grid value, for instance).
    """

    source: Source
    prepared: Prepared
    config: TuneConfig
    splits: cv.Splits
    suggestion: Suggestion | None
    notes: tuple[str, ...] = ()

    def run(self) -> TuneResult:
        """Run the study (resuming what is recorded), summarize, and write the report.
        Under torchrun (``WORLD_SIZE`` > 1) each run spans the group's processes, as in
        :func:`adamwkit.tune` (:mod:`adamwkit.tuning.distributed`)."""
        from . import distributed

        return distributed.run(self, run_plan) if distributed.launched() else run_plan(self)


def plan(objective: Any = "digits", **options: Any) -> TunePlan:
    """Validate :func:`adamwkit.tune`'s arguments into a :class:`TunePlan` (see ``tune``
    for each option); a name that is not an option is a ``TypeError``, as in a call."""
    unknown = sorted(set(options) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"plan() got an unexpected keyword argument {unknown[0]!r}")
    kw = {**_DEFAULTS, **options, "objective": objective}
    source = Source(kw["objective"], kw["examples"], kw["data"], kw["labels"], kw["epochs"],
                    kw["batch_size"], kw["validation"])  # fmt: skip
    return configure(prepare(source), source=source, **kw)


# ---------------------------------------------------------------------------- helpers


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
            if isinstance(v, float) and is_subnormal(v):
                raise  # its own message: printed here it would read 0.0 (subnormals flushed)
            raise ValueError(f"{name}={listed!r} is invalid: expected {what}, got {v!r}") from None
    return sorted(set(out))


def _check_out(out: Any, run_dir: Path) -> None:
    """Refuse an ``out`` where the run folder cannot be made or written, before any work."""
    text = str(out)
    if not text.strip():
        raise ArgumentError("out='' is invalid: expected a folder path", "out")
    for parent in [run_dir, *run_dir.parents]:
        if parent.exists() or parent.is_symlink():
            if not parent.is_dir():
                where = "is" if parent == Path(out) else f"lies under {str(parent)!r}, which is"
                raise ArgumentError(
                    f"out={text!r} is invalid: it {where} a file, not a folder", "out"
                )
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ArgumentError(
            f"out={text!r} is not writable: {err.strerror or err} (at {str(run_dir)!r})", "out"
        ) from None


def _study_name(name: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", name):
        raise ValueError(
            f"study={name!r} is invalid: expected letters, digits, '.', '_' or '-' "
            "(it names a folder)"
        )
    return name


def default_study_name(name: str) -> str:
    """A folder-safe study name from a task or objective name: the module's last part and
    the function (``pkg.train:objective`` gives ``train.objective``, so two projects'
    objectives do not share a study); a script's (``__main__``) is the function alone."""
    if ":" in name:
        module, _, qual = name.rpartition(":")
        func = qual.rsplit(".", 1)[-1]
        last = module.rsplit(".", 1)[-1]
        name = func if last in ("__main__", "?", "") else f"{last}.{func}"
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", name).strip("-.") or "study"
    return cleaned[:100]


# ---------------------------------------------------------------------------- the parts


@dataclass(frozen=True)
class _Protocol:
    """The training settings a Task brings (or an objective is given)."""

    epochs: int | None
    batch_size: int | None
    lr: float
    decay_scale: str
    test_fraction: float
    schedule: str | None


def _protocol(prep: Prepared, kw: dict[str, Any]) -> _Protocol:
    """epochs, batch size, lr, decay scale and test fraction: the task's defaults unless
    given; an objective must give its lr."""
    task = prep.task
    if task is not None:
        from .objective import TaskObjective

        assert isinstance(prep.objective, TaskObjective)
        return _Protocol(
            epochs=prep.objective.epochs,
            batch_size=prep.objective.batch_size,
            lr=check_lr("lr", task.lr if kw["lr"] is None else kw["lr"]),
            decay_scale=check("decay_scale", kw["decay_scale"] or task.decay_scale),
            test_fraction=_fraction(
                task.test_fraction if kw["test_fraction"] is None else kw["test_fraction"]
            ),
            schedule=task.schedule,
        )
    if kw["lr"] is None:
        raise ValueError(
            "lr is needed with an objective: the peak learning rate your loop trains "
            "with (trial.lr); the weight decay's meaning depends on it"
        )
    epochs, bs = kw["epochs"], kw["batch_size"]
    return _Protocol(
        epochs=check("epochs", epochs),
        batch_size=check("batch_size", bs),
        lr=check_lr("lr", kw["lr"]),
        decay_scale=check("decay_scale", kw["decay_scale"] or "lr"),
        test_fraction=_fraction(0.2 if kw["test_fraction"] is None else kw["test_fraction"]),
        schedule=None,
    )


def _fraction(value: Any) -> float:
    return float(check("test_fraction", value))


def _process(kw: dict[str, Any]) -> dict[str, Any]:
    """This process's settings (they may differ between workers), validated."""
    checked = {
        name: check(name, kw[name])
        for name in ("storage_retry", "prune", "heartbeat_interval", "test", "progress",
                     "vectorize", "max_memory", "workers", "threads", "trial_timeout")
    }  # fmt: skip
    device = str(kw["device"] or "auto")
    devices = check_devices(kw["devices"], device)
    from . import distributed

    if devices is not None and 1 < checked["workers"] < len(devices):
        given = ",".join(map(str, devices))
        raise ArgumentError(
            f"workers={checked['workers']} is invalid with devices='{given}': expected at "
            f"least {len(devices)} workers, one per GPU (or list only the GPUs to use), "
            "else some GPUs would stay idle",
            "workers",
        )
    if devices is not None and checked["workers"] == 1 and not distributed.launched():
        checked["workers"] = len(devices)  # a worker per GPU (under torchrun: a rank per GPU)
    return {
        **checked,
        "storage": study_mod.check_storage(kw["storage"]),
        "device": device,
        "devices": devices,
    }


@dataclass(frozen=True)
class _Split:
    """How the examples are split: the folds (1: one validation split), its fraction."""

    folds: int
    val_fraction: float | None
    test_fraction: float
    notes: tuple[str, ...] = ()


def _split(prep: Prepared, kw: dict[str, Any], test_fraction: float, folds: int,
           repeats: int) -> _Split:  # fmt: skip
    """``validation=`` (one fixed split, no test split unless asked), ``folds=1`` (one
    random split of ``val_fraction``, default 0.2), or k folds (no ``val_fraction``)."""
    given = kw["val_fraction"]
    if prep.val_idx is not None or prep.validation is not None:
        if folds not in (1, _DEFAULTS["folds"]) or repeats != 1 or given is not None:
            raise ArgumentError(
                "validation is one fixed split: it goes with folds=1 (or no folds), "
                "repeats=1 and no val_fraction",
                "validation", "folds", "repeats", "val_fraction",
            )  # fmt: skip
        asked = 0.0 if kw["test_fraction"] is None else test_fraction
        return _Split(1, None, asked)
    if folds == 1:
        fraction = 0.2 if given is None else float(check("val_fraction", given))
        return _Split(1, fraction, test_fraction)
    if given is not None:
        raise ArgumentError(
            f"val_fraction={given!r} goes with folds=1 (one validation split); with "
            f"folds={folds} every fold is validated in turn",
            "val_fraction", "folds",
        )  # fmt: skip
    return _Split(folds, None, test_fraction)


@dataclass(frozen=True)
class _Regime:
    """Whether the run fine-tunes pretrained weights, or adapters on a frozen base."""

    pretrained: bool
    adapters: bool


def _regime(prep: Prepared, kw: dict[str, Any]) -> _Regime:
    """The regime as given (``adapters`` implies ``pretrained``). It is not inferred from
    the model: building one here would run the user's model factory outside a run."""
    adapters = bool(check("adapters", kw["adapters"]))
    return _Regime(bool(check("pretrained", kw["pretrained"])) or adapters, adapters)


def _default_grid(
    p: _Protocol, n_train: int, regime: _Regime
) -> tuple[Suggestion | None, list[float] | None]:
    """The suggestion and the default grid through it (none without epochs and batch size)."""
    if p.batch_size is None or p.epochs is None:
        return None, None
    sug = suggest(lr=p.lr, batch_size=p.batch_size, dataset_size=n_train, epochs=p.epochs,
                  decay_scale=p.decay_scale, pretrained=regime.pretrained,
                  adapters=regime.adapters)  # fmt: skip
    grid = cv.default_grid(lr=p.lr, batch_size=p.batch_size, n_train=n_train, epochs=p.epochs,
                           decay_scale=p.decay_scale, anchor=sug.value, low=sug.low_value,
                           high=sug.high_value)  # fmt: skip
    if regime.pretrained:  # never past the fine-tuning bound on the total decay
        from ..rules import D_MAX_FINETUNE
        from ..timescale import convert_weight_decay

        steps = p.epochs * math.ceil(n_train / p.batch_size)
        to_torch = convert_weight_decay(1.0, p.decay_scale, "torch", lr_peak=p.lr)
        grid = [w for w in grid if w * to_torch * p.lr * steps <= D_MAX_FINETUNE * (1 + 1e-9)]
    return sug, grid


def _fine_tune_warning(sug: Suggestion | None) -> list[str]:
    """A note when the setup looks like a fine-tune but was not said to be one, and the
    from-scratch value the grid is centred on would decay pretrained weights too much."""
    if sug is None or not sug.regime_warning:
        return []
    return [f"{sug.regime_warning} (the default grid is centred on that value)"]


def _candidates(kw: dict[str, Any], default: list[float] | None) -> tuple[list[float], list[str]]:
    """The weight decays to try: ``grid``, a log range plus zero, or the default grid."""
    grid, grid_min, grid_max, points = kw["grid"], kw["grid_min"], kw["grid_max"], kw["points"]
    ranged = [n for n, v in (("grid_min", grid_min), ("grid_max", grid_max), ("points", points))
              if v is not None]  # fmt: skip
    if grid is not None and ranged:
        raise ArgumentError(
            f"grid and {' and '.join(ranged)} are exclusive: give the candidates (grid) or "
            "a log range (grid_min, grid_max, points), not both",
            "grid", "grid_min", "grid_max", "points",
        )  # fmt: skip
    if grid is not None:
        candidates = _values("grid", grid, 0.0)
        repeated = len(list(grid)) - len(candidates)
        note = f"grid has {repeated} repeated value(s), tried once: {listing(candidates)}"
        return candidates, [note] if repeated else []
    if ranged:
        return _log_range(grid_min, grid_max, points)
    if default is not None:
        return default, []
    raise ArgumentError(
        "grid is needed with an objective given no batch_size and epochs: the default "
        "grid spans tau_epoch = batch_size / (lr * weight_decay * N) from 1/4 epoch to "
        "4x epochs; pass batch_size and epochs, or grid (or grid_min and grid_max)",
        "grid", "grid_min", "grid_max", "batch_size", "epochs",
    )  # fmt: skip


def _log_range(grid_min: Any, grid_max: Any, points: Any) -> tuple[list[float], list[str]]:
    """Zero and ``points`` log-spaced values from ``grid_min`` to ``grid_max``."""
    if grid_min is None or grid_max is None:
        raise ArgumentError("grid_min and grid_max go together", "grid_min", "grid_max")
    lo = check("grid_min", grid_min)
    hi = check_range("grid_max", grid_max, lo)
    n_points = check("points", 8 if points is None else points)
    spaced = [float(f"{v:.6g}") for v in np.geomspace(lo, hi, n_points)]
    candidates = [0.0, *sorted(set(spaced))]
    notes = []
    if len(candidates) - 1 < n_points:
        notes.append(
            f"points={n_points} between grid_min={lo:g} and grid_max={hi:g} repeat at 6 "
            f"significant digits: {len(candidates) - 1} distinct values are tried"
        )
    return candidates, notes


def _lr_grid(kw: dict[str, Any], sampler: str) -> tuple[list[float] | None, list[str]]:
    """The learning rates of a joint grid (``lr_grid``), checked against the sampler."""
    lr_grid, search_lr = kw["lr_grid"], kw["search_lr"]
    if lr_grid is not None and sampler != "grid":
        raise ArgumentError(
            f"lr_grid={list(lr_grid)!r} goes with sampler='grid'; with {sampler!r} pass search_lr",
            "search_lr",
        )
    if search_lr and sampler == "grid":
        raise ArgumentError(
            "search_lr needs sampler 'tpe' or 'gp'; with a grid pass lr_grid",
            "search_lr", "sampler", "lr_grid",
        )  # fmt: skip
    if lr_grid is None:
        return None, []
    lrs = _values("lr_grid", lr_grid, 0.0, low_open=True)
    for value in lrs:
        check_lr("lr_grid", value)
    notes = []
    if len(lrs) < len(list(lr_grid)):
        notes.append(f"lr_grid has repeated values, tried once: {listing(lrs)}")
    return lrs, notes


def _budget(
    spec: StudySpec, kw: dict[str, Any], sug: Suggestion | None
) -> tuple[StudySpec, tuple[dict[str, float], ...]]:
    """A budget's study: its first round is zero decay on the first fold (the probe); the
    next rounds are chosen from the results (:mod:`.budget`)."""
    budget = int(check("budget", kw["budget"]))
    probe = dataclasses.replace(spec, grid=(0.0,), budget=budget, runs_on=(0,))
    return probe, ({"weight_decay": 0.0},)


def _check_budget(kw: dict[str, Any], sug: Suggestion | None) -> None:
    """What a budget needs: the weight decay alone on a grid, a suggestion to fall back on,
    and no candidates of the user's."""
    check("budget", kw["budget"])
    if kw["sampler"] != "grid" or kw["lr_grid"] is not None:
        raise ArgumentError(
            "budget searches the weight decay alone: it goes with sampler='grid' and no "
            "lr_grid",
            "budget", "sampler", "lr_grid",
        )  # fmt: skip
    if sug is None:
        raise ArgumentError(
            "budget needs epochs and batch_size with an objective: the probe turns the "
            "curve's epochs into a weight decay, and the suggestion is its fallback",
            "budget", "epochs", "batch_size",
        )  # fmt: skip
    ranged = [n for n in ("grid", "grid_min", "grid_max", "points") if kw[n] is not None]
    if ranged:
        raise ArgumentError(
            f"budget and {' and '.join(ranged)} are exclusive: a budget chooses its own "
            "candidates", "budget", *ranged,
        )  # fmt: skip


def _check_size(candidates: list[float], lrs: list[float] | None, lr: float, sampler: str) -> None:
    n_candidates = len(candidates) * len(lrs or [lr])
    if sampler == "grid" and n_candidates > MAX_CANDIDATES:
        raise ArgumentError(
            f"grid={listing(candidates)} is invalid: {n_candidates} candidates"
            + (f" ({len(candidates)} weight decays x {len(lrs)} learning rates)" if lrs else "")
            + f", more than the {MAX_CANDIDATES} a study takes; use fewer, or sampler 'tpe'",
            "grid",
            *(("lr_grid",) if lrs else ()),
        )


def _spec(
    common: dict[str, Any],
    candidates: list[float],
    lrs: list[float] | None,
    sug: Suggestion | None,
    kw: dict[str, Any],
) -> tuple[StudySpec, tuple[dict[str, float], ...]]:
    """The study's identity and the candidates enqueued when it is created: every grid
    point, or for a sampler one start (the suggestion when inside the range)."""
    sampler, lr = common["sampler"], common["lr"]
    if sampler == "grid":
        enqueue = tuple(
            {"weight_decay": w, **({"lr": a} if lrs else {})} for a in (lrs or [lr])
            for w in candidates
        )  # fmt: skip
        return StudySpec(**common), enqueue
    positive = [c for c in candidates if c > 0]
    if not positive:
        raise ValueError(
            f"grid={candidates!r} is invalid for sampler {sampler!r}: expected at least "
            "one weight decay > 0 to set the search range"
        )
    lo, hi = min(positive), max(positive)
    trials = check("trials", kw["trials"])
    search_lr = bool(kw["search_lr"])
    spec = StudySpec(**common, range=(lo, hi), trials=trials,
                     lr_range=(lr / 10, lr * 10) if search_lr else None)  # fmt: skip
    if sug is not None and lo <= sug.value <= hi:
        start = sug.value
    else:
        start = float(np.exp(np.mean(np.log(positive))))
    first = {"weight_decay": float(f"{start:.6g}"), **({"lr": lr} if search_lr else {})}
    return spec, (first,)


def configure(prep: Prepared, source: Source | None = None, **kw: Any) -> TunePlan:
    """Validate every setting of :func:`adamwkit.tune` into a :class:`TunePlan`."""
    kw = {**_DEFAULTS, **kw}
    k, repeats, extend = (
        check("folds", kw["folds"]),
        check("repeats", kw["repeats"]),
        check("extend", kw["extend"]),
    )
    p = _protocol(prep, kw)
    sampler = check("sampler", kw["sampler"])
    process = _process(kw)
    check("trials", kw["trials"])
    seed = check("seed", kw["seed"])
    precision = check_precision(kw["precision"], resolve_device(kw["device"]))
    name = _study_name(default_study_name(prep.name) if kw["study"] is None else kw["study"])
    split = _split(prep, kw, p.test_fraction, k, repeats)
    splits = make_splits(prep, test_fraction=split.test_fraction, folds=split.folds, seed=seed,
                         repeats=repeats, val_fraction=split.val_fraction)  # fmt: skip
    k = split.folds
    if p.batch_size is not None and p.batch_size > splits.n_train:
        raise ValueError(
            f"batch_size={p.batch_size!r} is invalid: expected at most {splits.n_train}, the "
            "examples a fold trains on (the task's default batch size is too large for this "
            "many folds)"
        )
    regime = _regime(prep, kw)
    sug, default = _default_grid(p, splits.n_train, regime)
    if kw["budget"] is not None:
        _check_budget(kw, sug)
    candidates, notes = _candidates(kw, default)
    notes = [*_fine_tune_warning(sug), *split.notes,
             *notes]  # fmt: skip
    lrs, lr_notes = _lr_grid(kw, sampler)
    _check_size(candidates, lrs, p.lr, sampler)
    common = {
        "source": prep.name if prep.task is None else prep.task.name,
        "data": fingerprint(prep), "folds": k, "epochs": p.epochs, "lr": p.lr,
        "batch_size": p.batch_size, "decay_scale": p.decay_scale, "schedule": p.schedule,
        "seed": seed, "test_fraction": split.test_fraction, "sampler": sampler,
        "val_fraction": split.val_fraction,
        "grid": tuple(candidates), "lr_grid": None if lrs is None else tuple(lrs),
        "precision": precision, "repeats": repeats, "prune_chance": bool(kw["prune_chance"]),
        "pretrained": regime.pretrained, "adapters": regime.adapters,
    }  # fmt: skip
    spec, enqueue = _spec(common, candidates, lrs, sug, kw)
    if kw["budget"] is not None:
        spec, enqueue = _budget(spec, kw, sug)
        extend = 0
    config = TuneConfig(spec=spec, enqueue=enqueue, study=name, run_dir=Path(kw["out"]) / name,
                        extend=extend if sampler == "grid" else 0, **process)  # fmt: skip
    _check_out(kw["out"], config.run_dir)
    if source is None:
        source = Source(kw["objective"], kw["examples"], kw["data"], kw["labels"], kw["epochs"],
                        kw["batch_size"], kw["validation"])  # fmt: skip
    return TunePlan(source, prep, config, splits, sug, (*notes, *lr_notes))
