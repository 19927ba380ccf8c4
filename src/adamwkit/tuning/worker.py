"""A worker: claims candidates of a study, executes their missing runs, records each one.

The same :class:`Worker` serves every round of the protocol (:mod:`.protocol`): the CV
round, each extension past the grid's edge and the refits are studies of their own in
the same storage, and every worker (this process, ``workers=N`` processes, other
machines on a database) claims from whichever round is open, so all of them help with
every round. A round's runs differ only in what they train on:

- CV rounds: run ``i`` of a candidate trains on the training folds of split ``i`` and is
  scored on its held-out fold (seed ``seed + i``);
- refits: the one run trains on the whole training pool and is scored on the test split
  (seed ``seed``), one at a time, with a Monitor (a stacked population has none); its
  Monitor log is saved in the run folder and named in the study.

Progress is an observer handed in (:class:`~.progress.Progress`, or a quiet one).
How runs execute (one at a time or stacked) is :class:`Stacking`'s decision.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
from collections.abc import Iterator
from pathlib import Path

import torch

from .._device import device_for
from . import cv
from .config import TuneConfig
from .executor import (
    Decision,
    Job,
    Runner,
    Sequential,
    Strategy,
    by_split_size,
    choose,
    measure,
    members_for,
)
from .objective import Outcome, TaskObjective
from .progress import Progress
from .source import Prepared
from .study import MONITOR, VERDICTS, Claim, StudyStore
from .workers import Slot, ThreadShare

__all__ = ["Stacking", "Worker", "quiet"]


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


class Stacking:
    """Whether this worker's runs train stacked, and how many candidates it claims at once.

    A refusal known before any run (``config.stack_refusal``, ``vectorize="off"``) is
    final; ``"on"`` stacks; ``"auto"`` times a few steps both ways on the first batch of
    two runs or more, one worker of the machine at a time, and stores the answer in the
    study so that every worker and rerun on that kind of device agrees.
    """

    def __init__(self, runner: Runner, config: TuneConfig, device: torch.device, bar: Progress):
        self.runner, self.config, self.device, self.bar = runner, config, device, bar
        self.max_members, self.packing = config.max_members, ""
        if config.devices and not config.stack_refusal:  # packed by this GPU's memory
            n = len(config.devices)
            sharing = sum(1 for i in range(config.workers) if config.devices[i % n] == device.index)
            self.max_members, how = members_for(runner.objective, device, config.max_memory,
                                                config.max_members, max(1, sharing))  # fmt: skip
            self.packing = f", at most {self.max_members} stacked members ({how})"
        self.decision: Decision | None = None
        if config.stack_refusal:
            self.decision = Decision("off", config.stack_refusal)

    def decide(self, jobs: list[Job], store: StudyStore) -> Decision:
        if self.decision is not None:
            return self.decision
        if self.config.vectorize == "on":
            self.decision = Decision("on", members=min(len(jobs), self.max_members))
            return self.decision
        assert isinstance(self.runner.objective, TaskObjective)
        # The members of one population share their split sizes: measure the largest group.
        sample = max(by_split_size(jobs), key=len)[: self.max_members]
        if len(sample) < 2:
            return Decision("off", "one run to train")  # not stored: decide on a larger batch
        # One worker of this machine measures at a time; the others then read its answer.
        with _measure_lock(self.config.run_dir):
            stored = store.stacking(self.device.type)
            if stored:
                self.decision = Decision(**stored)
                self.decision.record = lambda d: store.record_stacking(self.device.type,
                                                                       d.to_dict())  # fmt: skip
                return self.decision
            self.bar.run(f"measuring {len(sample)} runs stacked against one at a time", None)
            decision = measure(self.runner.objective, [self.runner.trial(j) for j in sample])
            if decision.keep:
                store.record_stacking(self.device.type, decision.to_dict())
        # a switch after the re-check on the real work is stored too
        decision.record = lambda d: store.record_stacking(self.device.type, d.to_dict())
        self.decision = decision
        self.bar.say(f"vectorize: {decision.describe()}")
        return decision

    def batch(self, store: StudyStore) -> int:
        """How many candidates to claim at once: one unless runs stack, then this worker's
        share of what is left, within the members that fit."""
        if self.config.stack_refusal or (self.decision is not None and self.decision.mode == "off"):
            return 1
        spec = store.spec
        if spec.sampler != "grid" and (self.decision is None or self.decision.mode != "on"):
            return 1  # a sampler proposes better one candidate at a time, knowing the results
        share = math.ceil(max(spec.n_candidates - store.ended(), 1) / self.config.workers)
        return max(1, min(self.max_members // spec.runs, share))


class Worker:
    """Claims candidates of a round's study, executes their missing runs, records them."""

    def __init__(
        self, prep: Prepared, config: TuneConfig, splits: cv.Splits, bar: Progress
    ) -> None:
        self.prep, self.config, self.splits, self.bar = prep, config, splits, bar
        self.slot = Slot(config.run_dir)
        from . import distributed

        # under torchrun the device follows the local rank (as the other ranks' do), not
        # the worker slot: a second torchrun group on the machine gets slot 1 on its rank 0
        index = int(os.environ.get("LOCAL_RANK", 0)) if distributed.launched() else None
        self.device = device_for(
            config.device, self.slot.index if index is None else index, config.devices
        )
        self.threads = ThreadShare(config.run_dir, config.busy_cores, bar.say, config.threads)
        spec = config.spec
        self.runner = Runner(
            prep.objective, decay_scale=spec.decay_scale, device=self.device,
            precision=spec.precision, epochs=spec.epochs, batch_size=spec.batch_size,
            data=prep.data, validation=prep.validation, bar=bar, prune_chance=spec.prune_chance,
            timeout=config.trial_timeout, single_split=spec.folds * spec.repeats == 1,
        )  # fmt: skip
        self.stacking = Stacking(self.runner, config, self.device, bar)
        if config.devices:
            self.runner.placed = True
            self.runner.say(f"worker {self.slot.index} runs on {self.device}"
                            + self.stacking.packing)  # fmt: skip

    def close(self) -> None:
        self.threads.restore()
        self.slot.close()

    def work(self, store: StudyStore, refits: bool = False) -> None:
        """Claim and run ``store``'s candidates until none is left to run anywhere."""
        self.show_done(store)
        store.work(
            lambda claims: self._run_claims(store, claims, refits),
            lambda: self.show_done(store),
            self.config.run_dir,
            batch=1 if refits else (lambda: self.stacking.batch(store)),
        )

    def show_done(self, store: StudyStore) -> None:
        """Move the main bar to the runs every worker has finished (read only when shown)."""
        if self.bar.enabled:
            self.bar.update(store.runs_done())

    def _job(self, store: StudyStore, claim: Claim, run: int, refit: bool) -> Job:
        spec = store.spec
        wd, lr = claim.weight_decay, claim.lr(spec.lr)
        if refit:
            train, val, seed, fold, label = (
                self.splits.pool, self.splits.test, spec.seed, None, f"refit wd {wd:.3g}"
            )  # fmt: skip
        else:
            split = run if spec.runs_on is None else spec.runs_on[run]
            train, val = self.splits.folds[split]
            seed, fold, label = spec.seed + split, split, f"wd {wd:.3g} {self._where(split)}"
        train_idx, val_idx = torch.as_tensor(train), torch.as_tensor(val)
        return Job(wd, lr, fold, train_idx, val_idx, seed, claim, label, run=run)

    def _where(self, run: int) -> str:
        k, r = self.config.spec.folds, self.config.spec.repeats
        return f"fold {run % k + 1}/{k}" + (f", repeat {run // k + 1}/{r}" if r > 1 else "")

    def _strategy(self, jobs: list[Job], store: StudyStore, refits: bool) -> Strategy:
        if refits:
            return Sequential(self.runner)  # each refit records a Monitor: one at a time
        return choose(self.runner, self.stacking.decide(jobs, store), self.stacking.max_members)

    def _run_claims(self, store: StudyStore, claims: list[Claim], refits: bool) -> None:
        self.threads.update()
        jobs = [self._job(store, c, run, refits) for c in claims for run in c.todo]
        strategy = self._strategy(jobs, store, refits)

        def on_done(job: Job, out: Outcome) -> bool:
            stop = self._record(job, out)
            self.show_done(store)
            return stop

        strategy.run(jobs, on_done)
        for c in claims:
            if not c.ended:
                with c.unless_stale():
                    c.finish()
        self.show_done(store)

    def _record(self, job: Job, out: Outcome) -> bool:
        """Record one run's outcome; True to skip the candidate's other runs."""
        claim: Claim = job.key
        if claim.ended:
            return True
        with claim.unless_stale():
            if not out.ok:
                claim.fail(out.reason, error=out.error is not None)
                return True
            if out.monitor_log is not None:
                name = f"monitor-wd-{job.weight_decay:.6g}.jsonl"
                out.monitor_log.save(self.config.run_dir / name)
                claim.note(MONITOR, name)
                claim.note(VERDICTS, [{"layer": v.layer, "code": v.code, "text": v.text}
                                      for v in out.monitor_log.verdicts()])  # fmt: skip
            assert out.loss is not None  # an ok outcome has its loss
            pruned = claim.report(job.run, out.loss, out.metric, out.curve, out.baseline,
                                  out.example_losses, out.metric_name)  # fmt: skip
            pruned = pruned or bool(out.pruned)
            if pruned:
                claim.prune(out.pruned)
            return pruned
        return True  # declared stale meanwhile: another worker retries it


def quiet() -> Progress:
    """An observer that shows nothing (worker processes)."""
    return Progress(False, 0, "")
