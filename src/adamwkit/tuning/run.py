"""``tune``: k-fold cross-validated weight decay search in an Optuna study, and its verdict.

The steps, each in its own module:

1. what to train: a Task or an objective (:mod:`.objective`), prepared the same way in
   every worker process (:func:`prepare`);
2. the settings, validated once into a frozen :class:`~.config.TuneConfig` (:func:`configure`);
3. the study and its workers (:mod:`.study`, :mod:`.workers`): each worker claims
   candidates and runs their missing folds with an executor (:mod:`.executor`);
4. the statistics (:mod:`.cv`), the refits on the test split, the report (:mod:`.report`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import functools
import math
import pickle
import re
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import numpy as np
import optuna
import torch

from .._checks import (
    ArgumentError,
    check_choice,
    check_lr,
    check_range,
    check_whole,
    is_subnormal,
)
from .._constants import (
    DECAY_SCALES,
    MAX_CANDIDATES,
    MAX_EXTEND,
    MAX_REPEATS,
    SAMPLERS,
    SEED_MAX,
    VECTORIZE,
)
from .._device import check_precision, device_for, resolve_device
from ..rules import TORCH_DEFAULT
from ..suggest import Suggestion, suggest
from ..tasks import Task
from ..timescale import convert_weight_decay, tau_epoch
from ..train import flush_denormals, keeps_random_state
from . import _optuna, cv, report
from . import study as study_mod
from .config import StudySpec, TuneConfig
from .executor import (
    DEFAULT_MEMBERS,
    Decision,
    Job,
    Runner,
    Sequential,
    by_split_size,
    choose,
    measure,
    refusal,
)
from .limits import MAX_TRIAL_TIMEOUT_S
from .objective import Objective, ObjectiveFailed, TaskObjective, Trial, resolve_source
from .progress import Progress
from .workers import (
    Slot,
    ThreadShare,
    busy_cores,
    check_folder,
    start_processes,
    stop_processes,
)

__all__ = ["SAMPLERS", "TuneResult", "tune"]

MAX_MEMORY_GIB = 2.0**20  # 1 PiB
MAX_HEARTBEAT_S = 3600
MAX_WORKERS = 1024


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


# ---------------------------------------------------------------------------- what to train


@dataclass(frozen=True)
class Source:
    """The arguments that say what to train, as given (picklable, for worker processes)."""

    objective: Any
    examples: int | None = None
    data: Any = None
    labels: Any = None
    epochs: int | None = None
    batch_size: int | None = None


@dataclass
class Prepared:
    """What a worker trains: the objective, the examples' count and labels, a description."""

    name: str
    task: Task | None
    objective: Objective
    n: int
    labels: np.ndarray | None
    data: Any
    description: str
    metric_name: str


def prepare(source: Source) -> Prepared:
    """Load the task or objective and check its examples (see :func:`tune`)."""
    task, fn, name = resolve_source(source.objective)
    if task is not None:
        for arg in ("examples", "data", "labels"):
            if getattr(source, arg) is not None:
                raise ValueError(
                    f"{arg} is invalid with task={task.name!r}: a Task brings its own data "
                    "(examples, data and labels go with an objective)"
                )
        epochs = check_whole("epochs", task.epochs if source.epochs is None else source.epochs, 1)
        bs = check_whole(
            "batch_size", task.batch_size if source.batch_size is None else source.batch_size, 1
        )
        return Prepared(
            name=name,
            task=task,
            objective=TaskObjective(task, epochs=epochs, batch_size=bs),
            n=len(task),
            labels=task.label_array(),
            data=None,
            description=task.description,
            metric_name=task.metric_name,
        )
    assert fn is not None
    n = _examples(source.examples, source.data)
    labels = None
    if source.labels is not None:
        labels = np.asarray(
            source.labels.detach().cpu()
            if isinstance(source.labels, torch.Tensor)
            else source.labels
        )
        if labels.ndim != 1 or len(labels) != n:
            raise ValueError(
                f"labels has shape {labels.shape}: expected one label per example ({n})"
            )
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return Prepared(
        name=name,
        task=None,
        objective=fn,
        n=n,
        labels=labels,
        data=source.data,
        description=doc[0] if doc else "",
        metric_name="metric",
    )


def _examples(examples: int | None, data: Any) -> int:
    if data is not None:
        try:
            n = len(data)
        except TypeError:
            raise ValueError(
                f"data={type(data).__name__} is invalid: expected something with a length "
                "(a Dataset, a tensor, a list)"
            ) from None
        if examples is not None and check_whole("examples", examples, 2) != n:
            raise ValueError(f"examples={examples!r} is invalid: data has {n} examples")
        return n
    if examples is None:
        raise ArgumentError(
            "examples is needed with an objective: how many examples the folds split "
            "(or pass data=...)",
            "examples",
        )
    return check_whole("examples", examples, 2)


def _fingerprint(prep: Prepared) -> str:
    """A hash of the examples, so workers with different data cannot share a study."""
    import hashlib

    h = hashlib.sha256(str(prep.n).encode())
    parts: list[Any] = []
    if prep.task is not None and isinstance(prep.task.data, tuple):
        parts = list(prep.task.data)
    elif isinstance(prep.data, (torch.Tensor, np.ndarray)):
        parts = [prep.data]
    elif isinstance(prep.data, tuple) and all(isinstance(p, torch.Tensor) for p in prep.data):
        parts = list(prep.data)
    elif prep.data is not None:
        h.update(type(prep.data).__qualname__.encode())
    for part in parts:
        h.update(torch.as_tensor(part).detach().cpu().contiguous().numpy().tobytes())
    if prep.labels is not None:
        h.update(np.ascontiguousarray(prep.labels).tobytes())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------- settings


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


def _listing(values: Sequence[float], most: int = 6) -> str:
    """``[0, 0.001, 0.01, ...]``: a list of numbers, shortened for a message."""
    shown = ", ".join(f"{v:g}" for v in values[:most])
    return f"[{shown}{', ...' if len(values) > most else ''}]"


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


def _default_study_name(name: str) -> str:
    """A folder-safe study name from a task or objective name (``pkg.train:objective``)."""
    tail = name.rsplit(":", 1)[-1].rsplit(".", 1)[-1] if ":" in name else name
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", tail).strip("-.") or "study"
    return cleaned[:100]


@dataclass(frozen=True)
class Plan:
    """The validated settings: the config, the splits and the suggestion."""

    config: TuneConfig
    splits: cv.Splits
    suggestion: Suggestion | None
    notes: tuple[str, ...] = ()


def configure(prep: Prepared, **kw: Any) -> Plan:
    """Validate every setting of :func:`tune` into a :class:`Plan` (one line per error)."""
    task = prep.task
    k = check_whole("folds", kw["folds"], 2)
    repeats = check_whole("repeats", kw["repeats"], 1, MAX_REPEATS)
    extend = check_whole("extend", kw["extend"], 0, MAX_EXTEND)
    if task is not None:
        assert isinstance(prep.objective, TaskObjective)
        n_epochs: int | None = prep.objective.epochs
        bs: int | None = prep.objective.batch_size
        lr_ = check_lr("lr", task.lr if kw["lr"] is None else kw["lr"])
        scale = check_choice("decay_scale", kw["decay_scale"] or task.decay_scale, DECAY_SCALES)
        fraction = task.test_fraction if kw["test_fraction"] is None else kw["test_fraction"]
        schedule: str | None = task.schedule
    else:
        n_epochs = None if kw["epochs"] is None else check_whole("epochs", kw["epochs"], 1)
        bs = None if kw["batch_size"] is None else check_whole("batch_size", kw["batch_size"], 1)
        if kw["lr"] is None:
            raise ValueError(
                "lr is needed with an objective: the peak learning rate your loop trains "
                "with (trial.lr); the weight decay's meaning depends on it"
            )
        lr_ = check_lr("lr", kw["lr"])
        scale = check_choice("decay_scale", kw["decay_scale"] or "lr", DECAY_SCALES)
        fraction = 0.2 if kw["test_fraction"] is None else kw["test_fraction"]
        schedule = None
    fraction = check_range("test_fraction", fraction, 0.0, 1.0, high_open=True)
    sampler = check_choice("sampler", kw["sampler"], SAMPLERS)
    vectorize = check_choice("vectorize", kw["vectorize"], VECTORIZE)
    max_memory = kw["max_memory"]
    if max_memory is not None:
        max_memory = check_range("max_memory", max_memory, 0.0, MAX_MEMORY_GIB, low_open=True)
    trials = check_whole("trials", kw["trials"], 1, MAX_CANDIDATES)
    heartbeat = check_whole("heartbeat_interval", kw["heartbeat_interval"], 1, MAX_HEARTBEAT_S)
    n_workers = check_whole("workers", kw["workers"], 1, MAX_WORKERS)
    threads = None if kw["threads"] is None else check_whole("threads", kw["threads"], 1, 4096)
    timeout = kw["trial_timeout"]
    if timeout is not None:
        timeout = check_range("trial_timeout", timeout, 0.0, MAX_TRIAL_TIMEOUT_S, low_open=True)
    seed = check_whole("seed", kw["seed"], 0, SEED_MAX)
    storage = study_mod.check_storage(kw["storage"])
    storage_retry = check_range("storage_retry", kw["storage_retry"], 0.0, 7 * 24 * 3600.0)
    device = resolve_device(kw["device"])
    precision = check_precision(kw["precision"], device)
    name = _study_name(_default_study_name(prep.name) if kw["study"] is None else kw["study"])

    splits = cv.Splits.make(prep.n, prep.labels, fraction, k, seed, repeats)
    n_train = splits.n_train
    if bs is not None and bs > n_train:
        raise ValueError(
            f"batch_size={bs!r} is invalid: expected at most {n_train}, the examples a fold "
            "trains on (the task's default batch size is too large for this many folds)"
        )
    sug = None
    default: list[float] | None = None
    if bs is not None and n_epochs is not None:
        sug = suggest(lr=lr_, batch_size=bs, dataset_size=n_train, epochs=n_epochs,
                      decay_scale=scale)  # fmt: skip
        default = cv.default_grid(lr=lr_, batch_size=bs, n_train=n_train, epochs=n_epochs,
                                  decay_scale=scale, anchor=sug.value, low=sug.low_value,
                                  high=sug.high_value)  # fmt: skip
    grid, grid_min, grid_max, points = kw["grid"], kw["grid_min"], kw["grid_max"], kw["points"]
    notes: list[str] = []
    ranged = [n for n, v in (("grid_min", grid_min), ("grid_max", grid_max), ("points", points))
              if v is not None]  # fmt: skip
    if grid is not None and ranged:
        raise ArgumentError(
            f"grid and {' and '.join(ranged)} are exclusive: give the candidates (grid) or "
            "a log range (grid_min, grid_max, points), not both",
            "grid",
            "grid_min",
            "grid_max",
            "points",
        )
    if grid is not None:
        candidates = _values("grid", grid, 0.0)
        if len(candidates) < len(list(grid)):
            notes.append(
                f"grid has {len(list(grid)) - len(candidates)} repeated value(s), "
                f"tried once: {_listing(candidates)}"
            )
    elif ranged:
        if grid_min is None or grid_max is None:
            raise ArgumentError("grid_min and grid_max go together", "grid_min", "grid_max")
        lo = check_range("grid_min", grid_min, 0.0, low_open=True)
        hi = check_range("grid_max", grid_max, lo)
        n_points = check_whole("points", 8 if points is None else points, 1, MAX_CANDIDATES - 1)
        spaced = [float(f"{v:.6g}") for v in np.geomspace(lo, hi, n_points)]
        candidates = [0.0, *sorted(set(spaced))]
        if len(candidates) - 1 < n_points:
            notes.append(
                f"points={n_points} between grid_min={lo:g} and grid_max={hi:g} repeat at 6 "
                f"significant digits: {len(candidates) - 1} distinct values are tried"
            )
    elif default is not None:
        candidates = default
    else:
        raise ArgumentError(
            "grid is needed with an objective given no batch_size and epochs: the default "
            "grid spans tau_epoch = batch_size / (lr * weight_decay * N) from 1/4 epoch to "
            "4x epochs; pass batch_size and epochs, or grid (or grid_min and grid_max)",
            "grid",
            "grid_min",
            "grid_max",
            "batch_size",
            "epochs",
        )
    lr_grid, search_lr = kw["lr_grid"], kw["search_lr"]
    if lr_grid is not None and sampler != "grid":
        raise ArgumentError(
            f"lr_grid={list(lr_grid)!r} goes with sampler='grid'; with {sampler!r} pass search_lr",
            "search_lr",
        )
    if search_lr and sampler == "grid":
        raise ArgumentError(
            "search_lr needs sampler 'tpe' or 'gp'; with a grid pass lr_grid",
            "search_lr",
            "sampler",
            "lr_grid",
        )
    lrs = None
    if lr_grid is not None:
        lrs = _values("lr_grid", lr_grid, 0.0, low_open=True)
        for value in lrs:
            check_lr("lr_grid", value)
        if len(lrs) < len(list(lr_grid)):
            notes.append(f"lr_grid has repeated values, tried once: {_listing(lrs)}")
    n_candidates = len(candidates) * len(lrs or [lr_])
    if sampler == "grid" and n_candidates > MAX_CANDIDATES:
        raise ArgumentError(
            f"grid={_listing(candidates)} is invalid: {n_candidates} candidates"
            + (f" ({len(candidates)} weight decays x {len(lrs)} learning rates)" if lrs else "")
            + f", more than the {MAX_CANDIDATES} a study takes; use fewer, or sampler 'tpe'",
            "grid",
            *(("lr_grid",) if lrs else ()),
        )

    common = {
        "source": prep.name if task is None else task.name,
        "data": _fingerprint(prep),
        "folds": k,
        "epochs": n_epochs,
        "lr": lr_,
        "batch_size": bs,
        "decay_scale": scale,
        "schedule": schedule,
        "seed": seed,
        "test_fraction": fraction,
        "sampler": sampler,
        "grid": tuple(candidates),
        "lr_grid": None if lrs is None else tuple(lrs),
        "precision": precision,
        "repeats": repeats,
        "prune_chance": bool(kw["prune_chance"]),
    }
    if sampler == "grid":
        spec = StudySpec(**common)
        enqueue = tuple(
            {"weight_decay": w, **({"lr": a} if lrs else {})}
            for a in (lrs or [lr_])
            for w in candidates
        )
    else:
        positive = [c for c in candidates if c > 0]
        if not positive:
            raise ValueError(
                f"grid={candidates!r} is invalid for sampler {sampler!r}: expected at least "
                "one weight decay > 0 to set the search range"
            )
        spec = StudySpec(
            **common,
            range=(min(positive), max(positive)),
            trials=trials,
            lr_range=(lr_ / 10, lr_ * 10) if search_lr else None,
        )
        lo_, hi_ = min(positive), max(positive)
        if sug is not None and lo_ <= sug.value <= hi_:
            start = sug.value
        else:
            start = float(np.exp(np.mean(np.log(positive))))
        enqueue = ({"weight_decay": float(f"{start:.6g}"), **({"lr": lr_} if search_lr else {})},)

    config = TuneConfig(
        spec=spec,
        enqueue=enqueue,
        study=name,
        run_dir=Path(kw["out"]) / name,
        storage=storage,
        storage_retry=storage_retry,
        prune=bool(kw["prune"]),
        heartbeat_interval=heartbeat,
        test=bool(kw["test"]),
        progress=bool(kw["progress"]),
        vectorize=vectorize,
        max_memory=max_memory,
        workers=n_workers,
        threads=threads,
        device=str(kw["device"] or "auto"),
        extend=extend if sampler == "grid" else 0,
        trial_timeout=timeout,
    )
    _check_out(kw["out"], config.run_dir)
    return Plan(config, splits, sug, tuple(notes))


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


# ---------------------------------------------------------------------------- tune


@_flushing
@keeps_random_state
def tune(
    objective: str | Task | Objective = "digits",
    *,
    examples: int | None = None,
    data: Any = None,
    labels: Any = None,
    folds: int = 5,
    repeats: int = 1,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    decay_scale: str | None = None,
    test_fraction: float | None = None,
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
    prune_chance: bool = True,
    extend: int = 2,
    heartbeat_interval: int = 10,
    storage_retry: float = 120.0,
    test: bool = True,
    progress: bool = True,
    vectorize: str = "auto",
    max_memory: float | None = None,
    workers: int = 1,
    threads: int | None = None,
    device: str = "auto",
    precision: str = "fp32",
    trial_timeout: float | None = None,
) -> TuneResult:
    """Cross-validate weight decay; write the report; return the verdict.

    ``objective`` is what trains: a built-in task's name (``"digits"``, ``"charlm"``), a
    :class:`~adamwkit.Task`, ``"module:attribute"`` naming either, or an objective: a
    function ``objective(trial) -> validation loss`` that trains on ``trial.train_idx``
    with ``trial.weight_decay`` and ``trial.lr`` (see :class:`~adamwkit.Trial`). An
    objective says how many examples the folds split with ``examples=N`` or ``data=``
    (anything with a length; ``trial.train_data`` is then its subset), optionally with
    ``labels`` for stratified folds, and needs ``lr``; ``epochs`` and ``batch_size`` give
    the default grid and the timescales.

    The candidates are ``grid``, or a log grid of ``points`` from ``grid_min`` to
    ``grid_max`` plus zero, or by default a log grid at 2x spacing through
    :func:`adamwkit.suggest`'s value that spans its 80% range with a 2x step to spare on
    each side (tau_epoch from 1/4 epoch to 4x ``epochs`` for a rule with no range), plus
    zero. ``sampler="tpe"`` or ``"gp"`` instead searches ``trials`` candidates in the
    default grid's range; ``lr_grid`` (or ``search_lr`` with a sampler) makes the search
    joint in (lr, weight decay). Every candidate trains on k-1 folds and is scored on the
    held-out fold; a test split (``test_fraction``, default the task's or 0.2), held out
    before the folds are made, scores refits at the end. Values are in the convention of
    ``decay_scale``.

    ``repeats`` redraws the folds that many times (repeated CV, for small data; standard
    errors corrected for the overlap). Candidates are compared *paired*, on the same folds,
    initial weights and batch orders: the one-SE choice is the largest weight decay within
    one paired standard error of the best, and "weight decay barely matters" when zero
    decay is within two. When the best is the largest (or smallest) positive candidate, up
    to ``extend`` rounds add two candidates past that edge at the grid's spacing, trained
    on the same folds. ``prune_chance`` stops, inside a stacked population, the runs still
    at their untrained loss at a quarter or half of the epochs while their fold's best has
    learned (they are reported as pruned).

    An exception, a ``sys.exit()`` or a non-finite loss from a run fails that candidate
    with the reason and the study goes on; the first traceback of each error is printed.
    ``trial_timeout`` (seconds, default ``None``: no limit) fails a run that takes longer
    (stacked, m runs trained together get m times as long; see
    :mod:`adamwkit.tuning.limits` for what can be interrupted). If no candidate finishes
    and runs raised, the report is written (state ``"failed"``) and
    :class:`ObjectiveFailed` is raised from the first error. ``summary.json`` always says
    how the last run on the study ended: ``state`` is ``"complete"``, ``"failed"`` (no
    candidate finished every fold) or ``"interrupted"`` (Ctrl-C or an error; then no
    report is left from an earlier run).

    The study lives in ``storage`` (default: ``$ADAMWKIT_STORAGE``, else a journal file in
    ``out/<study>/``); rerunning the same call resumes it without rerunning finished folds,
    and processes or machines sharing a database URL share the work. A database is retried
    through an outage for up to ``storage_retry`` seconds before
    :class:`~adamwkit.tuning.storage.StorageUnavailable`; a journal record torn by a crash
    or a full disk is backed up and dropped (those folds train again). ``workers`` starts
    that many worker processes on this machine, each with its share of the CPU cores that
    other programs leave free, as torch threads (``threads`` fixes the number instead),
    and on a machine with several GPUs, worker i on GPU i mod count. ``device`` (``auto``,
    ``cpu``, ``cuda``, ``cuda:i``) and ``precision`` (``fp32``, ``bf16``) say where and how
    runs train.

    ``vectorize`` (``"auto"``, ``"on"``, ``"off"``) trains a Task's claimed candidates and
    folds together as one stacked model (:func:`adamwkit.train.fit_population`); ``"auto"``
    measures both ways for a few steps and stacks when that is faster. ``max_memory``
    (GiB) caps the members trained together.

    Returns a :class:`TuneResult`; the files are ``summary.json``, ``cv_curve.png``,
    ``learning_curves.png`` and ``report.html`` in ``out/<study>/``.
    """
    source = Source(objective, examples, data, labels, epochs, batch_size)
    prep = prepare(source)
    plan = configure(
        prep, folds=folds, repeats=repeats, extend=extend, prune_chance=prune_chance,
        epochs=epochs, lr=lr, batch_size=batch_size,
        decay_scale=decay_scale, test_fraction=test_fraction, grid=grid, grid_min=grid_min,
        grid_max=grid_max, points=points, sampler=sampler, trials=trials, lr_grid=lr_grid,
        search_lr=search_lr, storage=storage, study=study, out=out, seed=seed, prune=prune,
        heartbeat_interval=heartbeat_interval, storage_retry=storage_retry, test=test,
        progress=progress,
        vectorize=vectorize, max_memory=max_memory, workers=workers, threads=threads,
        device=device, precision=precision, trial_timeout=trial_timeout,
    )  # fmt: skip
    config = plan.config
    why, max_members = _stacking_limits(prep, config)
    config = dataclasses.replace(
        config,
        stack_refusal=why,
        max_members=max_members,
        busy_cores=busy_cores() if config.threads is None else 0.0,
    )
    if why and config.vectorize == "on":
        what = "task" if prep.task is not None else "objective"
        raise ValueError(f"vectorize='on' is invalid for {what}={prep.name!r}: {why}")
    if config.workers > 1:
        _check_picklable(source)
    check_folder(config.run_dir)
    with _optuna.quiet_logs():
        return _run_study(source, prep, dataclasses.replace(plan, config=config))


def _run_study(source: Source, prep: Prepared, plan: Plan) -> TuneResult:
    """Open the study, work on it (with any worker processes), summarize and report.

    The run folder's report is marked not current as soon as the study is open; Ctrl-C or
    an error then leaves ``summary.json`` saying the run was interrupted."""
    config = plan.config
    store = study_mod.open_storage(
        config.storage, config.run_dir, config.heartbeat_interval, config.storage_retry
    )
    st = study_mod.open_study(store, config.study, config.spec, config.enqueue, config.prune)
    report.begin(config.run_dir, config.study)
    try:
        work, summary = _work_and_summarize(source, prep, plan, store, st)
        summary["verdict"] = verdict_text(summary)
        summary["state"] = "complete" if summary["best_weight_decay"] is not None else "failed"
        paths = report.write_reports(config.run_dir, summary)
    except BaseException as err:
        kind, text = type(err).__name__, study_mod.first_line(err)
        reason = kind if text == kind else f"{kind}: {text}"
        if isinstance(err, KeyboardInterrupt):
            reason = "Ctrl-C"
        report.write_stopped(config.run_dir, config.study, reason)
        raise
    if summary["best_weight_decay"] is None and work.runner.errors:
        raise ObjectiveFailed(
            f"no candidate finished: runs of {prep.name!r} failed with errors (each "
            f"candidate's reason is in {paths['report']}); the first error was"
        ) from work.runner.errors[0]
    return TuneResult(summary, config.run_dir, paths)


def _work_and_summarize(
    source: Source, prep: Prepared, plan: Plan, store: Any, st: optuna.Study
) -> tuple[_Worker, dict[str, Any]]:
    """This process's work on the study, the worker processes', the extensions past the
    grid's edge, the summary and the refits."""
    config = plan.config
    retried = study_mod.retry_errors(st, config.spec)
    spec = config.spec
    repeated = f" x {spec.repeats}" if spec.repeats > 1 else ""
    title = f"{prep.name}: {spec.folds}-fold CV{repeated}"
    bar = Progress(config.progress, config.total_runs, title)
    work: _Worker | None = None
    procs: list[Any] = []
    try:
        work = _Worker(prep, config, plan.splits, st, bar)  # slot 0: this process
        for note in plan.notes:
            bar.say(f"note: {note}")
        if retried:
            bar.say(f"retrying {retried} candidate(s) whose runs raised an error last time")
        procs = start_processes(config.workers - 1, _worker_process, (source, config))
        work.run()
        for p in procs:
            while p.is_alive():
                work.show_done()
                p.join(0.5)
        bad = [p.exitcode for p in procs if p.exitcode]
        if bad:
            bar.say(f"{len(bad)} worker process(es) ended with exit codes {bad}")
        studies, notes = _extend(work, store, plan, [st])
        summary = _summarize(prep, plan, studies, work.decision)
        if config.test and len(plan.splits.test) and summary["best_weight_decay"] is not None:
            summary["test"] = work.refits(summary)
    finally:
        stop_processes(procs)
        bar.close()
        if work is not None:
            work.close()
    assert work is not None
    summary["notes"] = [*plan.notes, *notes]
    return work, summary


def _candidates(spec: StudySpec, studies: Sequence[optuna.Study]) -> list[cv.Candidate]:
    """The candidates of the study and of its extensions, as one list."""
    out: list[cv.Candidate] = []
    for st in studies:
        out += study_mod.trial_candidates(st, spec)
    return sorted(out, key=lambda c: (c.lr, c.weight_decay))


def _extend(
    work: _Worker, store: Any, plan: Plan, studies: list[optuna.Study]
) -> tuple[list[optuna.Study], list[str]]:
    """While the best candidate is the largest (or smallest) positive weight decay, add two
    past that edge, at the grid's spacing, and train them on the same folds, seeds and lr
    (``config.extend`` rounds at most). Each round is a study of its own, named
    ``<study>.extend<i>``: a rerun finds the same edge and resumes it."""
    config, spec = plan.config, plan.config.spec
    notes: list[str] = []
    for i in range(1, config.extend + 1):
        summ = cv.summarize(_candidates(spec, studies), spec.folds, spec.repeats)
        new = cv.extension(summ)
        if not new or summ.best is None:  # (extension is empty without a best)
            return studies, notes
        note = (
            f"{_edge(summ.best.weight_decay, summ.edge)}, so the optimum may lie past it: "
            f"trying {_listing(new)} on the same folds"
        )
        work.bar.say(f"note: {note}")
        notes.append(note)
        lr = summ.best.lr
        ext = dataclasses.replace(spec, grid=tuple(new), lr_grid=(lr,) if spec.lr_grid else None)
        enqueue = tuple({"weight_decay": w, **({"lr": lr} if spec.lr_grid else {})} for w in new)
        name = f"{config.study}.extend{i}"
        st = study_mod.open_study(store, name, ext, enqueue, config.prune)
        work.bar.phase(f"{work.prep.name}: past the grid's edge ({i})", len(new) * spec.runs)
        work.switch(st, ext)
        try:
            work.run()
        finally:
            work.switch(studies[0], spec)
        studies.append(st)
    summ = cv.summarize(_candidates(spec, studies), spec.folds, spec.repeats)
    if config.extend and summ.edge is not None and summ.best is not None:
        note = (
            f"after {config.extend} extension(s), {_edge(summ.best.weight_decay, summ.edge)}: "
            "widen the grid (grid_min, grid_max)"
        )
        work.bar.say(f"note: {note}")
        notes.append(note)
    return studies, notes


def _edge(best: float, edge: str | None) -> str:
    """Why the best candidate sits at the grid's edge, in words (``cv.CVSummary.edge``)."""
    if best == 0:
        return "zero decay is the best and the smallest decay tried already hurts"
    side = "largest" if edge == "high" else "smallest"
    return f"the best weight decay {best:.4g} is the {side} positive candidate"


def _stacking_limits(prep: Prepared, config: TuneConfig) -> tuple[str | None, int]:
    """Why the objective cannot be stacked (checked once, before any work), and how many
    members train together within ``max_memory``."""
    why = refusal(prep.objective, config.vectorize, config.prune)
    if why:
        return why, DEFAULT_MEMBERS
    assert isinstance(prep.objective, TaskObjective)
    why, per_member = prep.objective.probe()
    if why or config.max_memory is None:
        return why, DEFAULT_MEMBERS
    return None, max(1, int(config.max_memory * 2**30) // max(per_member, 1))


def _check_picklable(source: Source) -> None:
    try:
        pickle.dumps(source)
    except Exception as err:
        raise ValueError(
            f"workers > 1 starts worker processes, which must load objective="
            f"{source.objective!r} and its data by pickling ({type(err).__name__}: {err}): "
            "pass a module-level function, a Task made of module-level functions, or "
            "'module:attribute'; or start each worker as its own command"
        ) from None


def _worker_process(source: Source, config: TuneConfig) -> None:
    """A worker started by ``workers=N``: the same study, quietly (Ctrl-C, which reaches
    every process of the terminal, ends it without a traceback; the parent says so)."""
    try:
        _work_in_process(source, config)
    except KeyboardInterrupt:
        raise SystemExit(130) from None


def _work_in_process(source: Source, config: TuneConfig) -> None:
    with flush_denormals(), _optuna.quiet_logs():
        prep = prepare(source)
        spec = config.spec
        splits = cv.Splits.make(
            prep.n, prep.labels, spec.test_fraction, spec.folds, spec.seed, spec.repeats
        )
        store = study_mod.open_storage(
            config.storage, config.run_dir, config.heartbeat_interval, config.storage_retry
        )
        st = study_mod.open_study(store, config.study, spec, config.enqueue, config.prune)
        work = _Worker(prep, config, splits, st, Progress(False, 0, ""))
        try:
            work.run()
        finally:
            work.close()


@contextlib.contextmanager
def _measure_lock(run_dir: Path) -> Iterator[None]:
    """An exclusive lock of this machine's workers on the stacking measurement."""
    path = run_dir / "workers" / "measure.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


class _Worker:
    """One worker: claims candidates, runs their missing folds, records them."""

    def __init__(
        self, prep: Prepared, config: TuneConfig, splits: cv.Splits, st: optuna.Study, bar: Progress
    ) -> None:
        self.prep, self.config, self.splits, self.st, self.bar = prep, config, splits, st, bar
        self.spec = config.spec
        self.slot = Slot(config.run_dir)
        self.device = device_for(config.device, self.slot.index)
        self.threads = ThreadShare(config.run_dir, config.busy_cores, bar.say, config.threads)
        self.max_members = config.max_members
        self.decision: Decision | None = None
        if config.stack_refusal:
            self.decision = Decision("off", config.stack_refusal)
        self.runner = Runner(
            prep.objective,
            decay_scale=self.spec.decay_scale,
            device=self.device,
            precision=self.spec.precision,
            epochs=self.spec.epochs,
            batch_size=self.spec.batch_size,
            data=prep.data,
            bar=bar,
            prune_chance=self.spec.prune_chance,
            timeout=config.trial_timeout,
        )

    def close(self) -> None:
        self.threads.restore()
        self.slot.close()

    def switch(self, st: optuna.Study, spec: StudySpec) -> None:
        """Work on another study from now on (an extension of the grid)."""
        self.st, self.spec = st, spec

    def show_done(self) -> None:
        """Move the CV bar to the runs every worker has finished (read only when shown)."""
        if self.bar.enabled:
            self.bar.update(self.count_done())

    def count_done(self) -> int:
        k = self.spec.runs
        done = 0
        for c in study_mod.trial_candidates(self.st, self.spec):
            done += k if c.state in ("failed", "pruned") else len(c.fold_losses)
        return done

    def _decide(self, jobs: list[Job]) -> Decision:
        if self.decision is not None:
            return self.decision
        if self.config.vectorize == "on":
            self.decision = Decision("on", members=min(len(jobs), self.max_members))
            return self.decision
        key = f"adamwkit_vectorize_{self.device.type}"
        assert isinstance(self.prep.objective, TaskObjective)
        # The members of one population share their split sizes: measure the largest group.
        sample = max(by_split_size(jobs), key=len)[: self.max_members]
        if len(sample) < 2:
            return Decision("off", "one run to train")  # not stored: decide on a larger batch
        # One worker of this machine measures at a time; the others then read its answer.
        with _measure_lock(self.config.run_dir):
            stored = self.st.user_attrs.get(key)
            if stored:
                self.decision = Decision(**stored)
                return self.decision
            self.bar.run(f"measuring {len(sample)} runs stacked against one at a time", None)
            decision = measure(self.prep.objective, [self.runner.trial(j) for j in sample])
            if decision.keep:
                self.st.set_user_attr(key, decision.to_dict())
        self.decision = decision
        self.bar.say(f"vectorize: {decision.describe()}")
        return decision

    def _batch(self) -> int:
        if self.decision is not None and self.decision.mode == "off":
            return 1
        if self.config.stack_refusal:
            return 1
        if self.spec.sampler != "grid" and (self.decision is None or self.decision.mode != "on"):
            return 1  # a sampler proposes better one candidate at a time, knowing the results
        k = self.spec.runs
        ended = sum(
            c.state in ("complete", "pruned")
            for c in study_mod.trial_candidates(self.st, self.spec)
        )
        share = math.ceil(max(self.spec.n_candidates - ended, 1) / self.config.workers)
        return max(1, min(self.max_members // k, share))

    def _label(self, wd: float, run: int) -> str:
        k, r = self.spec.folds, self.spec.repeats
        where = f"fold {run % k + 1}/{k}" + (f", repeat {run // k + 1}/{r}" if r > 1 else "")
        return f"wd {wd:.3g} {where}"

    def _job(self, wd: float, lr: float, fold: int | None, key: Any, label: str) -> Job:
        if fold is None:
            train, val, seed = self.splits.pool, self.splits.test, self.spec.seed
        else:
            train, val = self.splits.folds[fold]
            seed = self.spec.seed + fold
        return Job(wd, lr, fold, torch.as_tensor(train), torch.as_tensor(val), seed, key, label)

    def run_claims(self, claims: list[study_mod.Claim]) -> None:
        self.threads.update()
        jobs = [
            self._job(c.weight_decay, c.lr(self.spec.lr), f, c, self._label(c.weight_decay, f))
            for c in claims
            for f in c.todo
        ]
        strategy = choose(self.runner, self._decide(jobs), self.max_members)

        def on_done(job: Job, out: Any) -> bool:
            claim: study_mod.Claim = job.key
            if claim.ended:
                return True
            try:
                if not out.ok:
                    claim.fail(out.reason, error=out.error is not None)
                    self.show_done()
                    return True
                assert job.fold is not None
                pruned = claim.report(job.fold, out.loss, out.metric, out.curve)
                if out.pruned:
                    pruned = True
                if pruned:
                    claim.prune(out.pruned)
            except optuna.exceptions.UpdateFinishedTrialError:
                # Declared stale while this worker was busy (a late heartbeat): another
                # worker retries the candidate with its recorded folds; the rest of this
                # batch is still recorded.
                claim.ended = True
                return True
            self.show_done()
            return pruned

        strategy.run(jobs, on_done)
        for c in claims:
            if not c.ended:
                with contextlib.suppress(optuna.exceptions.UpdateFinishedTrialError):
                    c.finish()
        self.show_done()

    def run(self) -> None:
        self.show_done()
        study_mod.work(
            self.st,
            self.spec,
            self.run_claims,
            self.show_done,
            self.config.run_dir,
            batch=self._batch,
        )

    def refits(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Refit on the whole training pool with each choice; score on the test split. The
        results are cached in the study, so a rerun or another worker does not refit."""
        lr = summary["best_lr"]
        scale = self.spec.decay_scale
        default = convert_weight_decay(TORCH_DEFAULT, "torch", scale, lr_peak=lr)
        wanted = {
            "best": summary["best_weight_decay"],
            "one_se": summary["one_se_weight_decay"],
            "zero": 0.0,
            "torch_default": default,
        }
        cache = dict(self.st.user_attrs.get("adamwkit_test", {}))
        todo: dict[str, float] = {}
        for label, wd in wanted.items():
            key = f"{wd!r}@{lr!r}"
            if key not in cache and key not in {f"{w!r}@{lr!r}" for w in todo.values()}:
                todo[label] = wd
        if todo:
            self.threads.update()
            self.bar.phase("refits on the training pool, scored on the test split", len(todo))
            jobs = [self._job(wd, lr, None, label, f"refit {label}") for label, wd in todo.items()]
            # One at a time: each refit records its weight norms and rotation (Monitor),
            # which a stacked population does not.
            strategy: Any = Sequential(self.runner)
            finished = 0

            def on_done(job: Job, out: Any) -> bool:
                nonlocal finished
                entry: dict[str, Any] = {"loss": out.loss, "metric": out.metric,
                                         "curve": [list(p) for p in out.curve]}  # fmt: skip
                if not out.ok:
                    entry["reason"] = out.reason
                if out.monitor is not None:
                    name = f"monitor-{job.key}.jsonl"
                    out.monitor.save(self.config.run_dir / name)
                    entry["monitor"] = name
                    entry["verdicts"] = [
                        {"layer": v.layer, "code": v.code, "text": v.text}
                        for v in out.monitor.verdicts()
                    ]
                cache[f"{job.weight_decay!r}@{lr!r}"] = entry
                self.st.set_user_attr("adamwkit_test", cache)
                finished += 1
                self.bar.update(finished)
                return False

            strategy.run(jobs, on_done)
        out: dict[str, Any] = {}
        for label, wd in wanted.items():
            out[label] = {"weight_decay": wd, **cache[f"{wd!r}@{lr!r}"]}
        return out


# ---------------------------------------------------------------------------- the verdict


def _both(value: float | None, lr: float, scale: str) -> dict[str, float | None]:
    if value is None:
        return {"torch": None, "independent": None}
    return {
        "torch": convert_weight_decay(value, scale, "torch", lr_peak=lr),
        "independent": convert_weight_decay(value, scale, "independent", lr_peak=lr),
    }


def _summarize(
    prep: Prepared, plan: Plan, studies: Sequence[optuna.Study], decision: Decision | None
) -> dict[str, Any]:
    config, spec, sug = plan.config, plan.config.spec, plan.suggestion
    n_train = plan.splits.n_train
    cands = _candidates(spec, studies)
    bs = spec.batch_size
    for c in cands:
        wd_t = convert_weight_decay(c.weight_decay, spec.decay_scale, "torch", lr_peak=c.lr)
        if bs is None:
            c.tau_epoch = None
        else:
            c.tau_epoch = tau_epoch(c.lr, wd_t, bs, n_train) if wd_t > 0 else math.inf
    summ = cv.summarize(cands, spec.folds, spec.repeats)
    best, one_se = summ.best, summ.one_se
    zero = summ.zero
    lr = spec.lr
    best_lr = best.lr if best else lr
    to_torch = convert_weight_decay(1.0, spec.decay_scale, "torch", lr_peak=lr)
    factor = None if bs is None else bs / (lr * n_train) / to_torch  # tau_epoch = factor / wd
    if decision is None:
        decision = Decision("off", config.stack_refusal or "no run trained here")
    failed = [c for c in summ.candidates if c.state == "failed"]
    return {
        "task": prep.name,
        "description": prep.description,
        "metric_name": prep.metric_name,
        "folds": summ.folds,
        "epochs": spec.epochs,
        "lr": lr,
        "best_lr": best_lr,
        "batch_size": bs,
        "n_train": n_train,
        "decay_scale": spec.decay_scale,
        "best_weight_decay": best.weight_decay if best else None,
        "one_se_weight_decay": one_se.weight_decay if one_se else None,
        "suggested_weight_decay": sug.value if sug else None,
        "suggested_rule": sug.rule if sug else None,
        "suggested_range": [sug.low_value, sug.high_value]
        if sug is not None and sug.low is not None
        else None,
        "best_weight_decay_conventions": _both(
            best.weight_decay if best else None, best_lr, spec.decay_scale
        ),
        "one_se_weight_decay_conventions": _both(
            one_se.weight_decay if one_se else None, best_lr, spec.decay_scale
        ),
        "suggested_weight_decay_conventions": _both(
            sug.value if sug else None, lr, spec.decay_scale
        ),
        "best_mean": best.mean if best else None,
        "best_sem": best.sem if best else None,
        "flat": summ.flat,
        "zero_paired_diff": zero.paired_diff if zero is not None and zero is not best else None,
        "zero_paired_sem": zero.paired_sem if zero is not None and zero is not best else None,
        "hurts_from": summ.hurts_from,
        "edge": summ.edge,
        "repeats": summ.repeats,
        "extended": sorted({c.weight_decay for c in cands} - set(spec.grid)),
        "pruned": sum(c.state == "pruned" for c in cands),
        "failed": len(failed),
        "candidates": [c.to_dict() for c in summ.candidates],
        "tau_epoch_factor": factor,
        "settings": spec.attrs(),
        "device": config.device,
        "precision": spec.precision,
        "vectorize": decision.describe(),
        "stacking": decision.to_dict(),
        "test": {},
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }


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
        if s.get("zero_paired_diff") is not None:
            z = f"{s['zero_paired_diff']:.3g} +- {s['zero_paired_sem'] or 0:.2g}"
            why = f"zero decay is within noise of the best ({z} worse, paired)"
        elif s.get("best_weight_decay") == 0:
            why = "zero decay is the best candidate"
        else:
            why = "no candidate is worse than the best by more than two paired standard errors"
        hurts = (
            f"; from {s['hurts_from']:.4g} up it hurts" if s.get("hurts_from") is not None else ""
        )
        lines.append(f"Weight decay barely matters here: {why}{hurts}.")
    if s.get("edge") is not None:
        why = _edge(s["best_weight_decay"], s["edge"])
        lines.append(f"{why[0].upper()}{why[1:]}: the optimum may lie beyond it (widen the grid).")
    suggested = ""
    if s.get("suggested_weight_decay") is not None:
        rng = s.get("suggested_range")
        within = f", 80% range {rng[0]:.3g} to {rng[1]:.3g}" if rng else ""
        suggested = (
            f"; adamwkit suggest predicted {s['suggested_weight_decay']:.4g} (PyTorch "
            f"{g['torch']:.4g}{within})"
        )
    lines.append(
        f"Best weight decay {s['best_weight_decay']:.4g} (PyTorch convention {b['torch']:.4g}, "
        f"independent {b['independent']:.3g}); largest within one standard error "
        f"{s['one_se_weight_decay']:.4g} (PyTorch {o['torch']:.4g}, independent "
        f"{o['independent']:.3g}){suggested}."
    )
    test = s.get("test") or {}
    if test.get("best", {}).get("loss") is not None:
        parts = [
            f"{label} {v['loss']:.4g}" for label, v in test.items() if v.get("loss") is not None
        ]
        lines.append("Test loss after refitting: " + ", ".join(parts) + ".")
    if s.get("failed"):
        lines.append(f"{s['failed']} candidate(s) failed: their reasons are in the report.")
    return " ".join(lines)


__all__ += ["ObjectiveFailed", "Trial"]
