"""``tune``: k-fold cross-validated weight decay search in an Optuna study, and its verdict.

The one-call entry point; its parts, each in its own module:

1. what trains (:mod:`.source`): a Task or an objective, prepared the same way in every
   worker process;
2. the plan (:mod:`.planning`): every option validated into a frozen :class:`~.planning.TunePlan`
   (the options themselves are one table, :mod:`.options`);
3. the protocol (:mod:`.protocol`): the rounds (CV, extensions past the grid's edge,
   refits), each a study in the store (:mod:`.study`) that every worker (:mod:`.worker`)
   claims from and records to, runs executed one at a time or stacked (:mod:`.executor`);
4. the summary (:mod:`.summary`) and the report (:mod:`.report`).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..tasks import Task
from .objective import Objective, ObjectiveFailed, Trial
from .planning import TunePlan, plan
from .protocol import TuneResult
from .summary import TuneSummary

__all__ = ["ObjectiveFailed", "Trial", "TunePlan", "TuneResult", "TuneSummary", "plan", "tune"]


def tune(
    objective: str | Task | Objective = "digits",
    *,
    examples: int | None = None,
    data: Any = None,
    labels: Any = None,
    validation: Any = None,
    folds: int = 5,
    repeats: int = 1,
    val_fraction: float | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int | None = None,
    decay_scale: str | None = None,
    test_fraction: float | None = None,
    grid: Sequence[float] | None = None,
    grid_min: float | None = None,
    grid_max: float | None = None,
    points: int | None = None,
    budget: int | None = None,
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
    pretrained: bool = False,
    adapters: bool = False,
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
    devices: str | Sequence[int] | None = None,
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
    runs train. ``devices`` (``"0,1,2,3"`` or ``[0, 1, 2, 3]``; ``--gpus``) places them on
    those GPUs: worker i on ``devices[i mod n]``, one worker per GPU unless ``workers``
    says more, stacked members packed by each GPU's free memory (``max_memory``: GiB per
    GPU); under ``torchrun``, local rank r on ``devices[r]`` (one GPU per process).

    ``vectorize`` (``"auto"``, ``"on"``, ``"off"``) trains a Task's claimed candidates and
    folds together as one stacked model (:func:`adamwkit.train.fit_population`); ``"auto"``
    measures both ways for a few steps and stacks when that is faster. ``max_memory``
    (GiB) caps the members trained together.

    The validation data you already have: ``validation=`` is one fixed split, indices into
    the examples (``data`` or ``examples``) or a dataset of its own (``trial.val_data`` is
    then its subset), with no test split unless ``test_fraction`` asks for one; as text
    (the command line's ``--validation``) it is ``"START:STOP"``, a file of indices
    (``.npy`` or text) or ``"module:attribute"``. ``folds=1`` draws one random validation
    split of ``val_fraction`` (default 0.2) of the training pool; ``repeats`` redraws it
    (repeated holdout). With one split there is no standard error across folds unless the
    runs report per-example losses (``trial.report_example_losses``; a Task does): the
    candidates are then compared paired over the examples. Without them differences under
    0.1% of the loss tie, the rest are taken as measured, and a note says so.

    ``budget=B`` spends about B training runs instead of the full grid (chosen offline on
    the evidence studies, docs/evidence-budget.md): zero decay on the first fold, whose
    curve's turning epoch gives a first value (else the suggestion's), a search around it
    on that fold, then the two best on further folds; the choice is the lower mean over
    the folds they share. ``summary.json`` has ``budget`` and ``spent_runs``; there are no
    refits.

    ``pretrained`` says the model starts from pretrained weights (a fine-tune), and
    ``adapters`` that only adapters (LoRA) on a frozen base train: the default grid then
    follows :func:`adamwkit.suggest`'s fine-tuning rule, whose values keep the total decay
    of the run (``lr x wd x steps``) within its bound, instead of the from-scratch rule,
    which would decay the pretrained weights away. A setup that looks like a fine-tune (a
    few epochs at a small lr) without either gets a note that says so.

    Under ``torchrun --nproc_per_node N`` each run spans the N processes: rank 0 claims
    and records, every rank calls the objective with the same trial, which does its own
    DDP (:mod:`adamwkit.tuning.distributed`, docs/tuning.md).

    Returns a :class:`TuneResult`; the files are ``summary.json``, ``cv_curve.png``,
    ``learning_curves.png`` and ``report.html`` in ``out/<study>/``.
    """
    p = plan(
        objective, examples=examples, data=data, labels=labels, validation=validation,
        folds=folds, repeats=repeats, val_fraction=val_fraction,
        epochs=epochs, lr=lr, batch_size=batch_size, decay_scale=decay_scale,
        test_fraction=test_fraction, grid=grid, grid_min=grid_min, grid_max=grid_max,
        points=points, budget=budget, sampler=sampler, trials=trials, lr_grid=lr_grid,
        search_lr=search_lr,
        storage=storage, study=study, out=out, seed=seed, prune=prune,
        prune_chance=prune_chance, pretrained=pretrained, adapters=adapters, extend=extend,
        heartbeat_interval=heartbeat_interval,
        storage_retry=storage_retry, test=test, progress=progress, vectorize=vectorize,
        max_memory=max_memory, workers=workers, threads=threads, device=device,
        devices=devices,
        precision=precision, trial_timeout=trial_timeout,
    )  # fmt: skip
    return p.run()  # under torchrun, through adamwkit.tuning.distributed
