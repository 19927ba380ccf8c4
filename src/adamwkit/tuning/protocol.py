"""tune's protocol as rounds of one study: the CV round, extensions past the grid's edge,
the refits; then the summary and the report.

Each round is a study of its own in the same storage (``<study>``, ``<study>.extend<i>``,
``<study>.refits``), created once and worked on by every worker (:class:`~.worker.Worker`):
this process, the ``workers=N`` processes it starts, and other machines on the same
database. Every worker runs the same :func:`rounds`: it works on a round until no
candidate is left to run anywhere, then reads the results (the same for everyone) to
open the next round, so nobody waits while others extend or refit.

1. :func:`cv_round`: every candidate on every fold (and repeat);
2. :func:`extension_rounds`: while the best candidate is the largest (or smallest)
   positive weight decay, two more past that edge at the grid's spacing, on the same
   folds, seeds and lr (``extend`` rounds at most);
3. :func:`refit_round`: the best, the one-SE choice, zero and PyTorch's default, each
   trained on the whole training pool and scored on the test split;
4. :func:`summarize`: a typed :class:`~.summary.TuneSummary` (summary.json).
"""

from __future__ import annotations

import dataclasses
import pickle
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import render
from .._checks import listing
from .._format import splits
from ..rules import TORCH_DEFAULT
from ..timescale import convert_weight_decay
from ..train import flush_denormals, keeps_random_state
from . import _optuna, budget, cv, first_audit, report
from .config import StudySpec, TuneConfig
from .executor import DEFAULT_MEMBERS, Decision, refusal
from .objective import ObjectiveFailed, TaskObjective
from .progress import Progress
from .source import Prepared, Source, make_splits, prepare
from .study import StudyStore, first_line
from .summary import TuneSummary, build_summary, edge_text, verdict_text
from .worker import Worker, quiet
from .workers import busy_cores, check_folder, start_processes, stop_processes

if TYPE_CHECKING:
    from .planning import TunePlan

__all__ = [
    "Rounds",
    "TuneResult",
    "cv_round",
    "extension_rounds",
    "refit_round",
    "rounds",
    "run_plan",
    "summarize",
]

#: The refits, by label, in the order the report shows them.
REFITS = ("best", "one_se", "zero", "torch_default")


@dataclass
class TuneResult:
    """What :func:`adamwkit.tune` returns: the summary (the content of summary.json, typed
    and readable as a mapping) and where the files are."""

    summary: TuneSummary
    run_dir: Path
    paths: dict[str, Path]

    @property
    def best_weight_decay(self) -> float | None:
        return self.summary.best_weight_decay

    @property
    def one_se_weight_decay(self) -> float | None:
        return self.summary.one_se_weight_decay

    @property
    def flat(self) -> bool:
        return bool(self.summary.flat)

    def blocks(self, rename: Callable[[str], str] | None = None) -> list[render.Block]:
        """What the result shows: the candidates' table, the verdict, the notes, where
        the report is, a line per finding of the optimizer audit (its table is in the
        report), then the answer (``rename`` maps argument names in the notes, as the CLI's
        flags)."""
        out = render.tune_summary(self.summary, self.paths, rename)
        cut = len(out) - len(render.answer(self.summary))
        return [*out[:cut], *first_audit.audit_lines(self.summary.audit), *out[cut:]]

    def __str__(self) -> str:
        return render.plain(self.blocks())

    def __repr__(self) -> str:
        s = self.summary
        best = "none" if s.best_weight_decay is None else f"{s.best_weight_decay:.4g}"
        return (
            f"TuneResult(task={s.task!r}, best_weight_decay={best}, "
            f"candidates={len(s.candidates)}, state={s.state!r}, run_dir={str(self.run_dir)!r})"
        )

    def _repr_html_(self) -> str:
        """The table, the verdict and the answer, for a notebook cell."""
        return render.to_html(self.blocks())


@dataclass
class Rounds:
    """The studies a run worked on: the CV round and its extensions, then the refits."""

    studies: list[StudyStore]
    refits: StudyStore | None = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def candidates(self) -> list[cv.Candidate]:
        """The candidates of the CV round and its extensions, as one list."""
        out = [c for store in self.studies for c in store.candidates()]
        return sorted(out, key=lambda c: (c.lr, c.weight_decay))


# ---------------------------------------------------------------------------- the rounds


def cv_round(worker: Worker, store: StudyStore) -> None:
    """Every candidate of the study on every fold: claimed, run and recorded."""
    worker.work(store)


def extension_rounds(
    worker: Worker, studies: list[StudyStore], extend: int, say: Callable[[str], None]
) -> list[str]:
    """While the best is at the grid's edge, two candidates past it, on the same folds
    (``extend`` rounds at most; each a study named ``<study>.extend<i>``, so a rerun finds
    the same edge and resumes it). Appends each round to ``studies``; returns the notes."""
    spec, notes = studies[0].spec, list[str]()
    for i in range(1, extend + 1):
        summ = _cv_summary(spec, studies)
        new = cv.extension(summ)
        if not new or summ.best is None:  # (extension is empty without a best)
            return notes
        notes.append(
            f"{edge_text(summ.best.weight_decay, summ.edge)}, so the optimum may lie past "
            f"it: trying {listing([float(f'{w:.4g}') for w in new])} on the same folds "
            f"({len(new) * spec.runs} more runs)"
        )
        say(notes[-1])
        lr = summ.best.lr
        ext = dataclasses.replace(spec, grid=tuple(new), lr_grid=(lr,) if spec.lr_grid else None)
        enqueue = tuple({"weight_decay": w, **({"lr": lr} if spec.lr_grid else {})} for w in new)
        studies.append(studies[0].sibling(f"extend{i}", ext, enqueue))
        worker.bar.phase(f"{worker.prep.name}: past the grid's edge ({i})", len(new) * spec.runs)
        worker.work(studies[-1])
    summ = _cv_summary(spec, studies)
    if extend and summ.edge is not None and summ.best is not None and summ.best.weight_decay:
        arg = "grid_max" if summ.edge == "high" else "grid_min"
        notes.append(
            f"after {extend} extension(s), {edge_text(summ.best.weight_decay, summ.edge)}: "
            f"widen the grid with {arg}"
        )
        say(notes[-1])
    return notes


def _cv_summary(spec: StudySpec, studies: Sequence[StudyStore]) -> cv.CVSummary:
    cands = sorted(
        (c for s in studies for c in s.candidates()), key=lambda c: (c.lr, c.weight_decay)
    )
    return cv.summarize(cands, spec.folds, spec.repeats, spec.val_fraction or 0.2)


def wanted_refits(spec: StudySpec, summ: cv.CVSummary) -> dict[str, float]:
    """The refits by label (see :data:`REFITS`), at the best candidate's lr."""
    assert summ.best is not None and summ.one_se is not None
    lr = summ.best.lr
    default = convert_weight_decay(TORCH_DEFAULT, "torch", spec.decay_scale, lr_peak=lr)
    values = (summ.best.weight_decay, summ.one_se.weight_decay, 0.0, default)
    return dict(zip(REFITS, values, strict=True))


def refit_round(worker: Worker, rounds_: Rounds) -> StudyStore | None:
    """The refits on the whole training pool, scored on the test split: a study of their
    own (``<study>.refits``, one run per weight decay), so a rerun or another worker does
    not refit again. ``None`` when the run has no test split or no best."""
    first = rounds_.studies[0]
    if first.spec.budget is not None:
        return None
    summ = _cv_summary(first.spec, rounds_.studies)
    if summ.best is None or not worker.config.test or not len(worker.splits.test):
        return None
    lr = summ.best.lr
    values = sorted(set(wanted_refits(first.spec, summ).values()))
    spec = dataclasses.replace(first.spec, grid=tuple(values), lr=lr, lr_grid=None, folds=1,
                               repeats=1)  # fmt: skip
    store = first.sibling("refits", spec, tuple({"weight_decay": w} for w in values))
    worker.bar.phase("refits on the training pool, scored on the test split", len(values))
    worker.work(store, refits=True)
    return store


def budget_start(worker: Worker, cands: dict[float, cv.Candidate]) -> float:
    """A budget's first value: the probe's reading of zero decay's curve (not for a
    pretrained model: the law is fitted from scratch), else the suggestion's value."""
    from ..suggest import suggest

    spec, n_train = worker.config.spec, worker.splits.n_train
    assert spec.batch_size is not None and spec.epochs is not None  # checked by plan()
    sug = suggest(lr=spec.lr, batch_size=spec.batch_size, dataset_size=n_train,
                  epochs=spec.epochs, decay_scale=spec.decay_scale, pretrained=spec.pretrained,
                  adapters=spec.adapters)  # fmt: skip
    to_torch = convert_weight_decay(1.0, spec.decay_scale, "torch", lr_peak=spec.lr)
    factor = spec.batch_size / (spec.lr * n_train) / to_torch  # tau_epoch = factor / wd
    return budget.start(cands, None if spec.pretrained else factor, spec.epochs, sug.value)


def rounds(worker: Worker, store: StudyStore, say: Callable[[str], None]) -> Rounds:
    """Every round, in order, as every worker runs them (the study's first run with weight
    decay is audited into ``store``, :mod:`.first_audit`)."""
    worker.runner.audit.start(store)
    if store.spec.budget is not None:
        studies = budget.run(store, worker.work, lambda c: budget_start(worker, c), say)
        return Rounds(studies, notes=["there are no refits under a budget"])
    cv_round(worker, store)
    done = Rounds([store])
    done.notes = extension_rounds(worker, done.studies, worker.config.extend, say)
    done.refits = refit_round(worker, done)
    return done


# ---------------------------------------------------------------------------- the summary


def _test(rounds_: Rounds, spec: StudySpec) -> dict[str, Any]:
    """The refits' results by label: weight decay, test loss and metric, learning curve,
    the reason of a failure, the Monitor's log and verdicts."""
    if rounds_.refits is None:
        return {}
    summ = _cv_summary(spec, rounds_.studies)
    by_wd = {c.weight_decay: c for c in rounds_.refits.candidates()}
    notes = {wd: attrs for (wd, _), attrs in rounds_.refits.notes().items()}
    out: dict[str, Any] = {}
    for label, wd in wanted_refits(spec, summ).items():
        c = by_wd.get(wd)
        entry: dict[str, Any] = {
            "weight_decay": wd,
            "loss": None if c is None else c.fold_losses.get(0),
            "metric": None if c is None else c.fold_metrics.get(0),
            "curve": [] if c is None else [list(p) for p in c.fold_curves.get(0, [])],
        }
        if c is not None and c.state == "failed":
            entry["reason"] = c.reason
        entry.update(notes.get(wd, {}))
        out[label] = entry
    return out


def summarize(plan: TunePlan, rounds_: Rounds, decision: Decision | None) -> TuneSummary:
    """The typed summary of every round (what summary.json holds)."""
    prep, config, spec = plan.prepared, plan.config, plan.config.spec
    cands, compared = rounds_.candidates(), spec
    if spec.budget is not None:  # the finalists, over the folds they share
        cands, m = budget.for_summary(rounds_.studies)
        compared = dataclasses.replace(spec, folds=m, repeats=1, runs_on=None)
    named = (name for store in rounds_.studies if (name := store.metric_name()))
    summary = build_summary(
        task=prep.name, description=prep.description,
        metric_name=next(named, prep.metric_name),
        spec=compared, device=config.device, n_train=plan.splits.n_train,
        suggestion=plan.suggestion, candidates=cands, decision=decision,
        stack_refusal=config.stack_refusal,
    )  # fmt: skip
    summary.settings = spec.attrs()
    summary.spent_runs = sum(s.runs_done() for s in rounds_.studies)
    if rounds_.refits is not None:
        summary.spent_runs += rounds_.refits.runs_done()
    summary.test = _test(rounds_, config.spec)
    record = rounds_.studies[0].audit_record()
    summary.audit = first_audit.for_summary(record)
    failed = first_audit.audit_note(record)
    summary.notes = [*plan.notes, *rounds_.notes, *summary.notes, *([failed] if failed else [])]
    summary.verdict = verdict_text(summary)
    return summary


# ---------------------------------------------------------------------------- running a plan


@keeps_random_state
def run_plan(plan: TunePlan) -> TuneResult:
    """Run a validated plan: the rounds (with any worker processes), the summary, the report.

    Subnormals are flushed while it runs (set before any thread pool starts, so that its
    threads inherit the setting), and torch's random state is given back afterwards."""
    with flush_denormals():
        plan = dataclasses.replace(plan, config=_this_machine(plan))
        if plan.config.workers > 1:
            _check_picklable(plan.source)
        check_folder(plan.config.run_dir)
        with _optuna.quiet_logs():
            return _run_study(plan)


def _this_machine(plan: TunePlan) -> TuneConfig:
    """The settings known only here: whether the model can stack, how many members fit,
    and how busy the cores are."""
    config, prep = plan.config, plan.prepared
    why, max_members = _stacking_limits(prep, config)
    if why and config.vectorize == "on":
        what = "task" if prep.task is not None else "objective"
        raise ValueError(f"vectorize='on' is invalid for {what}={prep.name!r}: {why}")
    return dataclasses.replace(
        config, stack_refusal=why, max_members=max_members,
        busy_cores=busy_cores() if config.threads is None else 0.0,
    )  # fmt: skip


def _open(config: TuneConfig) -> StudyStore:
    return StudyStore.open(
        config.storage, config.run_dir, config.study, config.spec, config.enqueue,
        prune=config.prune, heartbeat_interval=config.heartbeat_interval,
        storage_retry=config.storage_retry,
    )  # fmt: skip


def _run_study(plan: TunePlan) -> TuneResult:
    """Open the study, work on it, summarize and report. The run folder's report is marked
    not current as soon as the study is open; Ctrl-C or an error then leaves
    ``summary.json`` saying the run was interrupted."""
    config = plan.config
    store = _open(config)
    report.begin(config.run_dir, config.study)
    start = time.perf_counter()
    try:
        summary, errors = _work(plan, store)
        summary.seconds = round(time.perf_counter() - start, 3)
        summary.state = "failed" if _no_result(summary) else "complete"
        summary.notes += [n for n in report.off_scale(summary) if n not in summary.notes]
        paths = report.write_reports(config.run_dir, summary)
    except BaseException as err:
        kind, text = type(err).__name__, first_line(err)
        reason = "Ctrl-C" if isinstance(err, KeyboardInterrupt) else (
            kind if text == kind else f"{kind}: {text}")  # fmt: skip
        report.write_stopped(config.run_dir, config.study, reason)
        raise
    if _no_result(summary) and errors:
        raise ObjectiveFailed(
            f"no candidate finished: runs of {plan.prepared.name!r} failed with errors (each "
            f"candidate's reason is in {paths['report']}); the first error was"
        ) from errors[0]
    return TuneResult(summary, config.run_dir, paths)


def _no_result(summary: TuneSummary) -> bool:
    """No candidate finished every fold (a model that did not learn is a result)."""
    return summary.best_weight_decay is None and summary.learned is not False


def _work(plan: TunePlan, store: StudyStore) -> tuple[TuneSummary, list[BaseException]]:
    """This process's rounds, alongside the worker processes it starts; the summary."""
    config, spec = plan.config, plan.config.spec
    retried = store.retry_errors()
    bar = Progress(config.progress, config.total_runs,
                   f"{plan.prepared.name}: {splits(spec.folds, spec.repeats)}")  # fmt: skip
    worker: Worker | None = None
    procs: list[Any] = []
    try:
        worker = Worker(plan.prepared, config, plan.splits, bar)  # slot 0: this process
        for note in plan.notes:
            bar.say(f"note: {note}")
        if retried:
            bar.say(f"retrying {retried} candidate(s) whose runs raised an error last time")
        procs = start_processes(config.workers - 1, _worker_process, (plan.source, config))
        done = rounds(worker, store, lambda text: bar.say(f"note: {text}"))
        _join(procs, bar)
        frozen = worker.runner.frozen_tensors
        if frozen and not spec.pretrained:
            done.notes.append(
                f"the objective's model has {frozen} frozen tensor(s) (seen by "
                "trial.optimizer): if it fine-tunes adapters on a pretrained base, pass "
                "adapters=True (--adapters), whose grid keeps within the fine-tuning bound"
            )
        summary = summarize(plan, done, worker.stacking.decision)
    finally:
        stop_processes(procs)
        bar.close()
        if worker is not None:
            worker.close()
    return summary, worker.runner.errors


def _join(procs: list[Any], bar: Progress) -> None:
    """Wait for the worker processes (they finish the last round's runs), then say which
    ended badly."""
    for p in procs:
        while p.is_alive():
            p.join(0.5)
    bad = [p.exitcode for p in procs if p.exitcode]
    if bad:
        bar.say(f"{len(bad)} worker process(es) ended with exit codes {bad}")


def _stacking_limits(prep: Prepared, config: TuneConfig) -> tuple[str | None, int]:
    """Why the objective cannot be stacked (checked once, before any work), and how many
    members train together within ``max_memory``."""
    why = refusal(prep.objective, config.vectorize, config.prune)
    if why:
        return why, DEFAULT_MEMBERS
    assert isinstance(prep.objective, TaskObjective)
    why, per_member, shared = prep.objective.stacking_check()
    if why or config.max_memory is None:
        return why, DEFAULT_MEMBERS
    # the frozen base once, then what each member adds
    return None, max(1, (int(config.max_memory * 2**30) - shared) // max(per_member, 1))


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
    """A worker started by ``workers=N``: every round of the same study, quietly (Ctrl-C,
    which reaches every process of the terminal, ends it without a traceback; the parent
    says so)."""
    try:
        with flush_denormals(), _optuna.quiet_logs():
            prep = prepare(source)
            spec = config.spec
            splits = make_splits(prep, test_fraction=spec.test_fraction, folds=spec.folds,
                                 seed=spec.seed, repeats=spec.repeats,
                                 val_fraction=spec.val_fraction)  # fmt: skip
            worker = Worker(prep, config, splits, quiet())
            try:
                rounds(worker, _open(config), lambda text: None)
            finally:
                worker.close()
    except KeyboardInterrupt:
        raise SystemExit(130) from None
