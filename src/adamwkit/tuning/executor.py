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

:func:`choose` picks one. With ``vectorize="auto"``, :func:`measure` times both paths on
the jobs at hand: a warm-up call whose times are dropped (the first stacked steps pay
one-time costs), then several samples, more while they straddle 1. It decides only when
every sample (past the extremes, from five) is beyond ``MARGIN`` on the same side; when
they are not, it stacks by default (the per-step samples leave out each run's set-up and
evaluation, which a population shares) and says so. :class:`Checked` then re-checks the
choice once, from the throughput the real work reaches: the first run one at a time
against a fresh stacked sample, or a population's steady epochs against the measured
single steps; past ``SWITCH`` either way, it switches path for the rest of the work.
Every sample, the re-check and any switch are kept in the :class:`Decision`, which the
study stores (every worker and rerun on the same kind of device agrees) and the summary
shows (``stacking`` in summary.json, the ``vectorize`` line).
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

__all__ = [
    "Checked",
    "Decision",
    "Job",
    "Runner",
    "Sequential",
    "Stacked",
    "Strategy",
    "SwitchPath",
    "by_split_size",
    "choose",
    "measure",
    "members_for",
]

# Members trained together when no memory cap is given.
DEFAULT_MEMBERS = 128
# The stacking decision (``vectorize="auto"``): samples after the warm-up, at most this many
# while they straddle 1; a ratio is clear beyond [1/MARGIN, MARGIN]; the re-check from the
# real work switches path past SWITCH; a population's re-check waits for this many seconds
# of steady epochs (or a quarter of its epochs).
SAMPLES = 3
MAX_SAMPLES = 6
MARGIN = 1.25
SWITCH = 1.5
CHECK_SECONDS = 0.5


def clock() -> float:
    """Seconds, for the run times and the re-check (tests replace it with a fake clock)."""
    return time.perf_counter()


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
    placed: bool = False  # devices= (--gpus): say which trial runs on which GPU
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
        start = clock()
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
        out.seconds = clock() - start
        return out

    def say(self, text: str) -> None:
        """A line above the bars, or on stderr in a worker without them."""
        if self.bar is not None and self.bar.enabled:
            self.bar.say(text)
        else:
            print(text, file=sys.stderr, flush=True)

    def where(self, jobs: Sequence[Job]) -> None:
        """With ``placed``: ``trial 3 runs on cuda:1`` (``trials 3, 4 (10 runs together)``)."""
        if not self.placed:
            return
        numbers = list(dict.fromkeys(_trial_number(j) for j in jobs))
        if len(jobs) == 1:
            self.say(f"trial {numbers[0]} runs on {self.device} ({jobs[0].label})")
        else:
            self.say(f"trials {', '.join(map(str, numbers))} ({len(jobs)} runs together) run "
                     f"on {self.device}")  # fmt: skip

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


def _trial_number(job: Job) -> Any:
    """The study's trial number of ``job``'s candidate (its label without a claim)."""
    number = getattr(getattr(job.key, "trial", None), "number", None)
    return job.label if number is None else number


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

    def __init__(self, runner: Runner, after: Callable[[Job, Outcome], None] | None = None):
        self.runner, self.after = runner, after  # after(job, outcome): may raise SwitchPath

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:
        skipped: set[int] = set()
        for job in jobs:
            if id(job.key) in skipped:
                continue
            if job.run == min(j.run for j in jobs if j.key is job.key):
                self.runner.where([job])  # the candidate's first run here
            out = self.runner.call(job)
            if on_done(job, out):
                skipped.add(id(job.key))
            if self.after is not None:
                self.after(job, out)


class Stacked(Strategy):
    """Jobs with equal training-set sizes trained together, ``max_members`` at a time."""

    mode = "on"

    def __init__(
        self,
        runner: Runner,
        max_members: int,
        during: Callable[[list[Trial], int, int, float], None] | None = None,
        after: Callable[[list[Trial], float], None] | None = None,
    ) -> None:
        assert isinstance(runner.objective, TaskObjective)
        self.runner, self.objective, self.max_members = runner, runner.objective, max_members
        # during(trials, epoch, epochs, seconds) after each epoch, after(trials, seconds)
        # once a population's runs are recorded: either may raise SwitchPath
        self.during, self.after = during, after

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:
        bar = self.runner.bar
        for group in by_split_size(jobs):
            for start in range(0, len(group), self.max_members):
                chunk = group[start : start + self.max_members]
                trials = [self.runner.trial(j) for j in chunk]
                self.runner.where(chunk)
                if bar is not None:
                    bar.run(f"{len(chunk)} runs together", self.objective.epochs)
                began = clock()
                outcomes = self._train(trials)
                for job, out in zip(chunk, outcomes, strict=True):
                    on_done(job, out)
                if self.after is not None:
                    self.after(trials, clock() - began)

    def _train(self, trials: list[Trial]) -> list[Outcome]:
        """One population's outcomes; its failure, or m runs past m times the time
        limit, fails every run of it."""
        runner, m = self.runner, len(trials)
        runner.audit.population(self.objective, trials)
        where = f"{m} runs trained together"
        limit = None if runner.timeout is None else runner.timeout * m
        bar, start, during = runner.bar, clock(), self.during

        def progress(epoch: int, epochs: int) -> None:
            if bar is not None:
                bar.epoch(epoch, epochs)
            if during is not None:
                during(trials, epoch, epochs, clock() - start)

        watched = bar is not None or during is not None
        try:
            with time_limit(limit), warnings.catch_warnings():
                # measured already: the choice to stack counted the slow operators
                warnings.filterwarnings("ignore", message=".*performance drop.*")
                return self.objective.population(
                    trials,
                    progress=progress if watched else None,
                    prune_chance=runner.prune_chance,
                )
        except SwitchPath:
            raise
        except TrialTimeout as err:
            failed = runner.failed(err, where, runner.timeout_reason(m))
        except SystemExit as err:
            failed = runner.failed(err, where, exit_reason(err))
        except Exception as err:
            failed = runner.failed(err, where)
        return [failed] * m


# ---------------------------------------------------------------------------- the policy


class SwitchPath(Exception):
    """The re-check found the other path clearly faster: the jobs not yet recorded go there."""


@dataclass
class Decision:
    """How jobs are run, and why: ``mode`` ``"on"`` (stacked) or ``"off"``.

    A measured decision (``auto``) also holds its evidence: ``samples`` (seconds per step
    alone and stacked, and their ratio, one per sample), the dropped ``warmup`` sample,
    whether the samples were ``clear``, the ``checks`` made from the real work and the
    ``switch`` (``None``: none) they led to. ``record``, when set, is called with the
    decision after a switch (the worker stores it in the study).
    """

    mode: str
    reason: str = ""
    ratio: float | None = None
    members: int | None = None
    keep: bool = True  # a property of the model and the device, stored in the study
    auto: bool = False  # measured for vectorize="auto": re-checked from the real work
    clear: bool | None = None
    samples: list[dict[str, Any]] = field(default_factory=list)
    warmup: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    switch: dict[str, Any] | None = None
    checked: bool = False
    seconds: float = 0.0  # spent measuring (the warm-up, the samples, the re-check's)
    record: Callable[[Decision], None] | None = field(default=None, repr=False, compare=False)

    def spread(self) -> tuple[float, float] | None:
        """The measured ratios' range, the extremes left out from five samples on."""
        return _spread([s["ratio"] for s in self.samples if s.get("when") != "re-check"])

    def evidence(self) -> str:
        """The samples in words: ``1.39-1.73x in 3 samples after a warm-up``."""
        spread = self.spread()
        if spread is None:
            return ""
        n = sum(s.get("when") != "re-check" for s in self.samples)
        lo, hi = _x(spread[0]), _x(spread[1])
        text = f"{lo if lo == hi else f'{lo}-{hi}'}x in {n} sample{'s' if n > 1 else ''}"
        return text + (" after a warm-up" if self.warmup is not None else "")

    def describe(self) -> str:
        if self.switch is not None:
            return f"{self.mode} (switched from {self.switch['from']}: {self.switch['why']})"
        if self.mode == "on":
            how = f": {self.ratio:.2f}x one at a time, measured" if self.ratio else ""
            if self.samples:
                how += f" {self.evidence()}"
                if not self.clear:
                    how += ": unclear, stacked by default"
            return f"on ({self.members} members together{how})" if self.members else "on"
        return f"off ({self.reason})"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mode": self.mode, "reason": self.reason, "ratio": self.ratio,
                               "members": self.members, "keep": self.keep}  # fmt: skip
        if self.auto:  # the measurement's evidence: only a measured decision has it
            out.update(auto=True, clear=self.clear, samples=list(self.samples),
                       warmup=self.warmup, checks=list(self.checks), switch=self.switch,
                       checked=self.checked, seconds=self.seconds)  # fmt: skip
        return out


def _x(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio < 10 else f"{ratio:.0f}"


def _spread(ratios: Sequence[float]) -> tuple[float, float] | None:
    if not ratios:
        return None
    ordered = sorted(ratios)
    trim = 1 if len(ordered) >= 5 else 0
    return ordered[trim], ordered[-1 - trim]


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] * ordered[mid]) ** 0.5


def _clear(ratios: Sequence[float]) -> str | None:
    """``"on"`` or ``"off"`` when the samples' spread lies beyond ``MARGIN`` on one side."""
    spread = _spread(ratios)
    if spread is None:
        return None
    if spread[0] >= MARGIN:
        return "on"
    if spread[1] <= 1 / MARGIN:
        return "off"
    return None


def refusal(objective: Objective, vectorize: str, prune: bool) -> str | None:
    """Why jobs cannot be stacked, known without building a model, or ``None``."""
    if vectorize == "off":
        return "asked"
    if not isinstance(objective, TaskObjective):
        return "the objective trains one model per call"
    if prune:
        return "pruning stops candidates fold by fold, so they train one at a time"
    return None


def _sample(objective: TaskObjective, trials: Sequence[Trial], when: str) -> dict[str, Any]:
    """One timing of a step alone and of ``trials`` stacked: seconds and the ratio."""
    single, stacked, slow = objective.measure(trials)
    m = len(trials)
    return {"when": when, "members": m, "single_s": single, "stacked_s": stacked,
            "ratio": m * single / stacked if stacked > 0 else float("inf"),
            "slow": list(slow)}  # fmt: skip


def measure(
    objective: TaskObjective,
    trials: Sequence[Trial],
    samples: int = SAMPLES,
    max_samples: int = MAX_SAMPLES,
) -> Decision:
    """Time a step of one run and of ``trials`` stacked (equal split sizes): a warm-up
    sample, dropped, then ``samples`` more (up to ``max_samples`` while unclear); stack
    when they say so clearly, or by default when they do not (see the module)."""
    from ..train.population import StackingFailed

    m, start = len(trials), clock()
    taken: list[dict[str, Any]] = []
    try:
        warmup = _sample(objective, trials, "warm-up")
        while len(taken) < samples or (len(taken) < max_samples and
                                       _clear([s["ratio"] for s in taken]) is None):  # fmt: skip
            taken.append(_sample(objective, trials, "measured"))
    except StackingFailed as err:
        if isinstance(err.__cause__, torch.cuda.OutOfMemoryError):
            why = f"{m} stacked members do not fit in the GPU's memory; lower max_memory"
            return Decision("off", why, keep=False)
        return Decision("off", f"the model fails under torch.func.vmap ({err})")
    except Exception as err:  # the run alone failed: the runs themselves will show it
        return Decision("off", f"measuring failed ({type(err).__name__})", keep=False)
    ratios = [s["ratio"] for s in taken]
    ratio, side = _median(ratios), _clear(ratios)
    decision = Decision("on" if side != "off" else "off", ratio=ratio, members=m, auto=True,
                        clear=side is not None, samples=taken, warmup=warmup,
                        seconds=clock() - start)  # fmt: skip
    if side == "off":
        slow = sorted({op for s in taken for op in s["slow"]})
        why = (f"stacked, {m} runs train {ratio:.2f}x as fast as one at a time (measured "
               f"{decision.evidence()})")  # fmt: skip
        if slow:
            why += f"; torch.func has no batching rule for {', '.join(slow)}"
        decision.reason = why
    elif side is None:
        decision.reason = (
            "the samples do not say clearly which path is faster: stacked by default (they "
            "leave out each run's set-up and evaluation, which a population shares), "
            "re-checked on the real work"
        )
    return decision


class Checked(Strategy):
    """A measured decision, re-checked once from the throughput the real work reaches.

    One at a time: after the first run that ends well, its seconds per step (set-up and
    evaluation included) against a fresh stacked sample of the jobs still to run. Stacked:
    once a population has run ``CHECK_SECONDS`` of steady epochs (past its first, or a
    quarter of its epochs; else when it ends), its seconds per member's step against the
    median measured step alone (one fresh sample when none was measured). Either way, when
    the other path is ``SWITCH`` times faster, the jobs not yet recorded go there, and the
    decision says so (``switch``); an aborted population trains again one at a time.
    """

    def __init__(self, runner: Runner, decision: Decision, max_members: int) -> None:
        assert isinstance(runner.objective, TaskObjective)
        self.runner, self.objective = runner, runner.objective
        self.decision, self.max_members = decision, max_members
        self.mode = decision.mode
        self._jobs: list[Job] = []
        self._done: set[int] = set()
        self._skipped: set[int] = set()
        self._first_epoch = 0.0

    def run(self, jobs: Sequence[Job], on_done: OnDone) -> None:
        self._jobs, self._done, self._skipped = list(jobs), set(), set()
        done, skipped = self._done, self._skipped

        def track(job: Job, out: Outcome) -> bool:
            done.add(id(job))
            stop = on_done(job, out)
            if stop:
                skipped.add(id(job.key))
            return stop

        first: Strategy
        if self.decision.mode == "on":
            first = Stacked(self.runner, self.max_members, during=self._during,
                            after=self._after_population)  # fmt: skip
        else:
            first = Sequential(self.runner, after=self._after_run)
        try:
            first.run(jobs, track)
        except SwitchPath:
            choose(self.runner, self.decision, self.max_members).run(self._rest(), track)

    def _rest(self) -> list[Job]:
        """The jobs not yet recorded, of candidates still running."""
        return [j for j in self._jobs if id(j) not in self._done and id(j.key) not in self._skipped]

    # one at a time
    def _steps(self, n_train: int) -> int:
        return self.objective.epochs * -(-n_train // self.objective.batch_size)

    def _after_run(self, job: Job, out: Outcome) -> None:
        if self.decision.checked or not out.ok or not out.seconds:
            return
        self._check_alone(out.seconds / self._steps(int(job.train_idx.numel())))

    def _check_alone(self, seconds: float) -> None:
        """The first run's seconds per step against a fresh stacked sample."""
        groups = by_split_size(self._rest())
        rest = max(groups, key=len)[: self.max_members] if groups else []
        if len(rest) < 2:
            return  # nothing left to stack here: check on a later batch
        trials = [self.runner.trial(j) for j in rest]
        start = clock()
        try:
            fresh = _sample(self.objective, trials, "re-check")
        except Exception:  # stacking fails now: stay one at a time
            self.decision.checked = True
            return
        finally:
            self.decision.seconds += clock() - start
        self.decision.samples.append(fresh)
        per_member = fresh["stacked_s"] / fresh["members"]
        self._conclude("the first run", seconds / per_member, seconds, per_member)

    # stacked
    def _during(self, trials: list[Trial], epoch: int, epochs: int, seconds: float) -> None:
        if self.decision.checked:
            return
        if epoch == 1:
            self._first_epoch = seconds
            return
        steady = seconds - self._first_epoch
        if epoch < 2 or (steady < CHECK_SECONDS and epoch < max(2, epochs // 4)):
            return
        per_epoch = (epoch - 1) * -(-int(trials[0].train_idx.numel()) // self.objective.batch_size)
        self._check_stacked(trials, steady / (per_epoch * len(trials)),
                            f"epoch {epoch} of {epochs} of the first population")  # fmt: skip

    def _after_population(self, trials: list[Trial], seconds: float) -> None:
        if self.decision.checked:
            return
        steps = self._steps(int(trials[0].train_idx.numel()))
        self._check_stacked(trials, seconds / (steps * len(trials)), "the first population")

    def _check_stacked(self, trials: list[Trial], per_member: float, where: str) -> None:
        """A population's seconds per member's step against one run's measured step."""
        singles = [s["single_s"] for s in self.decision.samples]
        if not singles:
            try:
                fresh = _sample(self.objective, trials, "re-check")
            except Exception:
                self.decision.checked = True
                return
            self.decision.samples.append(fresh)
            singles = [fresh["single_s"]]
        single = _median(singles)
        self._conclude(where, single / per_member, single, per_member)

    def _conclude(self, where: str, ratio: float, single: float, per_member: float) -> None:
        """Record the check; switch when the other path is ``SWITCH`` times faster."""
        d = self.decision
        d.checked = True
        other = "off" if d.mode == "on" else "on"
        switch = ratio >= SWITCH if d.mode == "off" else ratio <= 1 / SWITCH
        d.checks.append({"at": where, "path": d.mode, "single_s": single,
                         "stacked_member_s": per_member, "ratio": ratio,
                         "switched": switch})  # fmt: skip
        if not switch:
            return
        alone = "measured" if d.mode == "on" else "reached"
        together = "reached" if d.mode == "on" else "measured"
        why = (f"re-checked on {where}, a step alone {alone} {single * 1e3:.3g} ms and a "
               f"stacked member's step {together} {per_member * 1e3:.3g} ms: stacking "
               f"{_x(ratio)}x as fast as one at a time")  # fmt: skip
        if d.samples and d.spread() is not None:
            why += f" (measured first: {d.evidence()})"
        d.switch = {"from": d.mode, "to": other, "at": where, "why": why, "ratio": ratio}
        d.mode = other
        d.reason = why if other == "off" else ""
        if other == "on":
            d.members = min(d.members or self.max_members, self.max_members)
        if self.runner.bar is not None:
            self.runner.bar.say(f"vectorize: {d.describe()}")
        if d.record is not None and d.keep:
            d.record(d)
        raise SwitchPath(why)


def members_for(objective: Objective, device: torch.device, max_memory: float | None,
                cap: int, workers: int = 1) -> tuple[int, str]:  # fmt: skip
    """How many stacked members to train together on ``device`` (a GPU of ``devices=``):
    :func:`adamwkit._device.members_on` with one member's measured size; ``cap`` where
    the objective does not stack; ``workers``: how many of this machine's workers share
    the GPU (each gets its share of the budget)."""
    from .._device import members_on

    if not isinstance(objective, TaskObjective):
        return cap, "the objective trains one model per call"
    why, per_member, shared = objective.stacking_check()
    if why:
        return cap, why
    return members_on(device, per_member, max_memory, cap, shared, workers)


def choose(runner: Runner, decision: Decision, max_members: int) -> Strategy:
    """The strategy for ``decision``: a measured one not yet re-checked is :class:`Checked`."""
    if decision.auto and not decision.checked and isinstance(runner.objective, TaskObjective):
        return Checked(runner, decision, max_members)
    if decision.mode == "on":
        return Stacked(runner, max_members)
    return Sequential(runner)
