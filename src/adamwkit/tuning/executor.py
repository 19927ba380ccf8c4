"""Running a batch of (candidate, fold) trainings: one at a time, or stacked into one model.

A :class:`Job` is one training run a study needs: a candidate (weight decay, lr) on a fold,
or a refit on the whole training pool scored on the test split. An executor runs jobs and
hands each :class:`~adamwkit.tuning.objective.Outcome` to ``on_done(job, outcome)``, which
returns True to skip that candidate's remaining jobs (a pruned or failed candidate).

- :class:`Sequential` calls the objective once per job. An exception from the objective,
  a ``sys.exit()`` in it, or a run past the time limit (``trial_timeout``,
  :mod:`.limits`) fails that job with its reason and the next job runs: the first time an
  error is seen, its traceback is printed (a bug in the objective is shown where it
  happened, a run stopped by the limit where it was), later repeats of the same error
  take one line. ``KeyboardInterrupt`` is not caught: it stops the study.
- :class:`Stacked` trains the jobs with equal training-set sizes as one population per
  chunk (:meth:`~adamwkit.tuning.objective.TaskObjective.population`); a failure, or a
  chunk of m runs past m times the time limit, fails every run of the chunk.

:func:`choose` picks one. With ``vectorize="auto"`` it measures both paths on the jobs at
hand (a few steps each) and stacks when that is faster; the measured ratio is recorded in
the study, so that every worker and every rerun on the same kind of device agrees.
"""

from __future__ import annotations

import sys
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..train import TrainingDiverged
from .first_audit import FirstAudit
from .limits import TrialTimeout, time_limit
from .objective import Objective, Outcome, TaskObjective, Trial, outcome_of

__all__ = ["Job", "Runner", "Sequential", "Stacked", "Strategy", "by_split_size", "choose"]

# Members trained together when no memory cap is given.
DEFAULT_MEMBERS = 128


@dataclass
class Job:
    """One training run: a candidate on a fold (``fold=None``: a refit on the test split)."""

    weight_decay: float
    lr: float
    fold: int | None
    train_idx: Tensor
    val_idx: Tensor
    seed: int
    key: Any = None
    label: str = ""
    run: int = 0  # the candidate's run (the step it is recorded at): the fold, or 0 for a refit


@dataclass
class Runner:
    """Makes each job's :class:`Trial` and calls the objective, with the progress bars."""

    objective: Objective
    decay_scale: str
    device: torch.device
    precision: str = "fp32"
    epochs: int | None = None
    batch_size: int | None = None
    data: Any = None
    validation: Any = None
    single_split: bool = False  # one validation split: Tasks report per-example losses
    bar: Any = None
    prune_chance: bool = False
    timeout: float | None = None
    errors: list[BaseException] = field(default_factory=list)
    frozen_tensors: int = 0  # the most frozen tensors a run's trial.optimizer() saw
    audit: FirstAudit = field(default_factory=FirstAudit)  # the study's first run's audit
    _seen: set[str] = field(default_factory=set)

    def trial(self, job: Job) -> Trial:
        t = Trial(
            weight_decay=job.weight_decay,
            lr=job.lr,
            decay_scale=self.decay_scale,
            fold=job.fold,
            train_idx=job.train_idx,
            val_idx=job.val_idx,
            seed=job.seed,
            device=self.device,
            precision=self.precision,
            epochs=self.epochs,
            batch_size=self.batch_size,
            data=self.data,
            validation=self.validation,
            single_split=self.single_split,
        )
        if self.bar is not None:
            t._progress = self.bar.epoch
            t._on_report = self.bar.reported
        return t

    def call(self, job: Job) -> Outcome:
        """Run the objective on ``job``; its error, ``sys.exit()``, a run past the time
        limit or a non-finite loss fails only the job."""
        trial = self.trial(job)
        if self.bar is not None:
            self.bar.run(job.label, self.epochs)
        start = time.perf_counter()
        try:
            with self.audit.watch(trial), time_limit(self.timeout):
                value = self.objective(trial)
            out = outcome_of(value)
        except TrialTimeout as err:
            out = self.failed(err, job.label, self.timeout_reason())
        except TrainingDiverged as err:
            out = Outcome(reason=str(err))
        except SystemExit as err:
            out = self.failed(err, job.label, exit_reason(err))
        except Exception as err:
            out = self.failed(err, job.label)
        out.curve = list(trial.curve)
        out.baseline = trial.baseline
        self.frozen_tensors = max(self.frozen_tensors, trial.frozen_tensors)
        out.example_losses = trial.example_losses
        trial.close_monitor()
        out.monitor_log = trial.monitor_log
        out.seconds = time.perf_counter() - start
        return out

    def timeout_reason(self, runs: int = 1) -> str:
        """Why a run (or ``runs`` trained together) went past the time limit."""
        assert self.timeout is not None
        if runs == 1:
            return f"exceeded trial_timeout of {self.timeout:g} s"
        return (
            f"exceeded trial_timeout: {runs} runs trained together for more than "
            f"{runs * self.timeout:g} s ({self.timeout:g} s each)"
        )

    def failed(self, err: BaseException, where: str, reason: str | None = None) -> Outcome:
        """An outcome for ``err`` (``reason``: what to record, default the error's type and
        message); its traceback is printed the first time it is seen."""
        reason = reason or f"{type(err).__name__}: {err}"
        self.errors.append(err)
        if reason not in self._seen:
            self._seen.add(reason)
            what = "the objective raised" if isinstance(err, Exception) else reason
            text = "".join(traceback.format_exception(type(err), err, err.__traceback__))
            print(
                f"{where}: {what}; this candidate fails and the study goes on. "
                f"Traceback:\n{text.rstrip()}",
                file=sys.stderr,
            )
        else:
            print(f"{where}: {reason} (traceback above)", file=sys.stderr)
        return Outcome(reason=reason.splitlines()[0] if reason else reason, error=err)


def exit_reason(err: SystemExit) -> str:
    """``the objective called sys.exit(3)``: why a run that exited failed."""
    code = "" if err.code is None else repr(err.code)
    return f"the objective called sys.exit({code})"


OnDone = Callable[[Job, Outcome], bool]


def by_split_size(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs grouped by (training, validation) size: the members of one population must
    share both."""
    groups: dict[tuple[int, int], list[Job]] = {}
    for job in jobs:
        groups.setdefault((int(job.train_idx.numel()), int(job.val_idx.numel())), []).append(job)
    return list(groups.values())


class Strategy:
    """Runs jobs; see :class:`Sequential` and :class:`Stacked`."""

    mode = "off"

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:  # pragma: no cover
        raise NotImplementedError


class Sequential(Strategy):
    """One job at a time, each recorded as soon as it ends."""

    mode = "off"

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:
        skipped: set[int] = set()
        for job in jobs:
            if id(job.key) in skipped:
                continue
            if on_done(job, self.runner.call(job)):
                skipped.add(id(job.key))


class Stacked(Strategy):
    """Jobs with equal training-set sizes trained together, ``max_members`` at a time."""

    mode = "on"

    def __init__(self, runner: Runner, max_members: int) -> None:
        assert isinstance(runner.objective, TaskObjective)
        self.runner, self.objective, self.max_members = runner, runner.objective, max_members

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:
        bar = self.runner.bar
        for group in by_split_size(jobs):
            for start in range(0, len(group), self.max_members):
                chunk = group[start : start + self.max_members]
                trials = [self.runner.trial(j) for j in chunk]
                if bar is not None:
                    bar.run(f"{len(chunk)} runs together", self.objective.epochs)
                outcomes = self._train(trials)
                for job, out in zip(chunk, outcomes, strict=True):
                    on_done(job, out)

    def _train(self, trials: list[Trial]) -> list[Outcome]:
        """One population's outcomes; its failure, or m runs past m times the time
        limit, fails every run of it."""
        runner, m = self.runner, len(trials)
        runner.audit.population(self.objective, trials)
        where = f"{m} runs trained together"
        limit = None if runner.timeout is None else runner.timeout * m
        bar = runner.bar
        try:
            with time_limit(limit), warnings.catch_warnings():
                # measured already: the choice to stack counted the slow operators
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                return self.objective.population(
                    trials,
                    progress=bar.epoch if bar is not None else None,
                    prune_chance=runner.prune_chance,
                )
        except TrialTimeout as err:
            failed = runner.failed(err, where, runner.timeout_reason(m))
        except SystemExit as err:
            failed = runner.failed(err, where, exit_reason(err))
        except Exception as err:
            failed = runner.failed(err, where)
        return [failed] * m


# ---------------------------------------------------------------------------- the policy


@dataclass
class Decision:
    """How jobs are run, and why: ``mode`` ``"on"`` (stacked) or ``"off"``."""

    mode: str
    reason: str = ""
    ratio: float | None = None
    members: int | None = None
    keep: bool = True  # a property of the model and the device, stored in the study

    def describe(self) -> str:
        if self.mode == "on":
            how = f": {self.ratio:.2f}x one at a time, measured" if self.ratio else ""
            return f"on ({self.members} members together{how})" if self.members else "on"
        return f"off ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "reason": self.reason, "ratio": self.ratio,
                "members": self.members, "keep": self.keep}  # fmt: skip


def refusal(objective: Objective, vectorize: str, prune: bool) -> str | None:
    """Why jobs cannot be stacked, known without building a model, or ``None``."""
    if vectorize == "off":
        return "asked"
    if not isinstance(objective, TaskObjective):
        return "the objective trains one model per call"
    if prune:
        return "pruning stops candidates fold by fold, so they train one at a time"
    return None


def measure(objective: TaskObjective, trials: Sequence[Trial]) -> Decision:
    """Time a few steps of one run and of ``trials`` stacked (equal split sizes); stack
    when that is faster."""
    from ..train.population import StackingFailed

    m = len(trials)
    try:
        single, stacked, slow = objective.measure(trials)
    except StackingFailed as err:
        if isinstance(err.__cause__, torch.cuda.OutOfMemoryError):
            why = f"{m} stacked members do not fit in the GPU's memory; lower max_memory"
            return Decision("off", why, keep=False)
        return Decision("off", f"the model fails under torch.func.vmap ({err})")
    except Exception as err:  # the run alone failed: the runs themselves will show it
        return Decision("off", f"measuring failed ({type(err).__name__})", keep=False)
    ratio = m * single / stacked
    if ratio >= 1.0:
        return Decision("on", ratio=ratio, members=m)
    why = f"stacked, {m} runs train {ratio:.2f}x as fast as one at a time (measured)"
    if slow:
        why += f"; torch.func has no batching rule for {', '.join(slow)}"
    return Decision("off", why, ratio=ratio, members=m)


def choose(runner: Runner, decision: Decision, max_members: int) -> Strategy:
    """The strategy for ``decision``."""
    if decision.mode == "on":
        return Stacked(runner, max_members)
    return Sequential(runner)
