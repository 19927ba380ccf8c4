"""How a tune run ends, told truthfully: every case with its exit code and its one line, or
the run's reason in summary.json (issue 25, items 5 and 6).

- Runs that end wrongly: an objective calling ``sys.exit``, losses too large to plot, no
  candidate finished, Ctrl-C, a run past ``--trial-timeout``; a transfer with no trend and
  a probe with no curve end with exit code 1, never 2 (bad arguments only).
- Reports: an older study's report in the same folder never looks current.
- Study files: a foreign record in the journal, a stale or misplaced journal lock, a
  ``workers`` folder that cannot be used.

The objectives are the cheapest possible (no training); the command line runs in this
process (``adamwkit.cli.main``), where an uncaught exception is what Python would turn
into exit code 1 with its traceback.
"""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

pytest.importorskip("optuna")

from adamwkit import ObjectiveFailed, render, tune
from adamwkit.cli import _run_names, main
from adamwkit.tuning import cv, report, workers
from adamwkit.tuning.journal import clear_stale_lock
from adamwkit.tuning.limits import TrialTimeout, time_limit

MODULE = Path(__file__).stem
GRID = "0,0.1,0.3"
TIMEOUT = 0.2


# ---------------------------------------------------------------------------- objectives


def quadratic(trial: Any) -> float:
    return abs(trial.weight_decay - 0.3) + 0.1 * (trial.fold or 0)


def exit_0(trial: Any) -> float:
    sys.exit(0)


def exit_3(trial: Any) -> float:
    sys.exit(3)


def exit_text(trial: Any) -> float:
    sys.exit("bye")


def exit_3_at_01(trial: Any) -> float:
    if trial.weight_decay == 0.1:
        sys.exit(3)
    return quadratic(trial)


def huge(trial: Any) -> float:
    return 1e308


def huge_at_03(trial: Any) -> float:
    return 1e308 if trial.weight_decay == 0.3 else quadratic(trial)


def huge_curves(trial: Any) -> float:
    for step, value in enumerate((1.0, 1e308, math.inf, math.nan, 0.5), start=1):
        trial.report(value, step)
    return quadratic(trial)


def nan_everywhere(trial: Any) -> float:
    return math.nan


def raises(trial: Any) -> float:
    raise RuntimeError("a bug in the objective")


def spins(trial: Any) -> float:
    """A busy loop; bounded, so that a time limit that failed to stop it fails the test on
    the recorded reason instead of hanging it."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pass
    return 1.0


def spins_at_01(trial: Any) -> float:
    if trial.weight_decay == 0.1:
        spins(trial)
    return quadratic(trial)


def sleeps_at_01(trial: Any) -> float:
    if trial.weight_decay == 0.1:
        time.sleep(60)
    return quadratic(trial)


def interrupted_at_01(trial: Any) -> float:
    if trial.weight_decay == 0.1:
        raise KeyboardInterrupt
    return quadratic(trial)


CALLS: list[Any] = []


def counted_nan(trial: Any) -> float:
    CALLS.append(trial.weight_decay)
    for epoch in range(1, 5):
        trial.report(1.0, epoch)
    return math.nan


def reports_nothing(trial: Any) -> float:
    CALLS.append(trial.weight_decay)
    return 1.0


def reports_nan(trial: Any) -> float:
    CALLS.append(trial.weight_decay)
    for epoch in range(1, 5):
        trial.report(math.nan, epoch)
    return 1.0


# ---------------------------------------------------------------------------- helpers


@dataclass
class Ending:
    """How a command ended: its exit code, stderr's lines, stdout, and the run folder."""

    code: int
    lines: list[str]
    out: str
    run: Path
    error: BaseException | None = None

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads((self.run / "summary.json").read_text())

    def reason(self, wd: float) -> str:
        return next(c["reason"] for c in self.summary["candidates"] if c["weight_decay"] == wd)


def argv(objective: str, out: Path, *extra: str, study: str = "s") -> list[str]:
    return ["tune", f"{MODULE}:{objective}", "--examples", "40", "--lr", "1e-3", "--grid",
            GRID, "--folds", "2", "--out", str(out), "--study", study, "--quiet", "--no-test",
            "--extend", "0", "--threads", "1", *extra]  # fmt: skip


@pytest.fixture
def cli(tmp_path, capsys):
    """Run the command line here; an uncaught exception ends it as Python would (exit 1,
    its traceback), and is kept for the test to look at."""

    def run(args: list[str], study: str = "s") -> Ending:
        error = None
        try:
            code = main(args)
        except ObjectiveFailed as err:
            code, error = 1, err
        captured = capsys.readouterr()
        return Ending(code, captured.err.strip().splitlines(), captured.out, tmp_path / study,
                      error)  # fmt: skip

    return run


# ---------------------------------------------------------------------------- runs that end


@dataclass(frozen=True)
class Case:
    """A run and its expected ending: exit code, the last line of stderr (a substring),
    the summary's state, and a failed candidate's reason (a substring)."""

    objective: str
    code: int
    state: str
    line: str = ""
    reason: tuple[float, str] | None = None
    extra: tuple[str, ...] = ()
    note: str = ""
    files: tuple[str, ...] = ("report.html", "cv_curve.png")


FAILED_IN_REPORT = "each candidate's reason is in"
PAST_LIMIT = f"exceeded trial_timeout of {TIMEOUT:g} s"
TIMED = ("--trial-timeout", str(TIMEOUT))
ENDINGS = {
    "sys.exit(0) in every run": Case(
        "exit_0", 1, "failed", FAILED_IN_REPORT, (0.0, "the objective called sys.exit(0)")
    ),
    "sys.exit(3) in every run": Case(
        "exit_3", 1, "failed", FAILED_IN_REPORT, (0.1, "the objective called sys.exit(3)")
    ),
    "sys.exit('bye') in every run": Case(
        "exit_text", 1, "failed", FAILED_IN_REPORT, (0.3, "called sys.exit('bye')")
    ),
    "sys.exit(3) in one candidate": Case(
        "exit_3_at_01", 0, "complete", "", (0.1, "the objective called sys.exit(3)")
    ),
    # the same loss from every run: a constant, so the model did not learn (exit 1, no best)
    "1e308 from every run": Case(
        "huge",
        1,
        "complete",
        "the model did not learn on these folds",
        note="is left out of the plot",
    ),
    "1e308 from one candidate": Case(
        "huge_at_03", 0, "complete", note="weight decay 0.3 (lr 0.001) is left out of the plot"
    ),
    "curves with 1e308, inf and nan": Case(
        "huge_curves", 0, "complete", files=("report.html", "cv_curve.png", "learning_curves.png")
    ),
    "NaN from every run": Case(
        "nan_everywhere",
        1,
        "failed",
        "no candidate finished every fold: 3 failed",
        reason=(0.0, "the validation loss is nan"),
    ),
    "every run raises": Case(
        "raises", 1, "failed", FAILED_IN_REPORT, (0.0, "RuntimeError: a bug in the objective")
    ),
    "a busy loop past --trial-timeout": Case(
        "spins_at_01", 0, "complete", reason=(0.1, PAST_LIMIT), extra=TIMED
    ),
    "a sleep past --trial-timeout": Case(
        "sleeps_at_01", 0, "complete", reason=(0.1, PAST_LIMIT), extra=TIMED
    ),
    "every run past --trial-timeout": Case(
        "spins", 1, "failed", FAILED_IN_REPORT, (0.3, PAST_LIMIT), extra=TIMED
    ),
    "runs well within --trial-timeout": Case(
        "quadratic", 0, "complete", extra=("--trial-timeout", "30")
    ),
    "Ctrl-C in a run": Case(
        "interrupted_at_01",
        130,
        "interrupted",
        "adamwkit tune: interrupted; run the same command again to resume",
        files=(),
    ),
}


@pytest.mark.parametrize("case", ENDINGS.values(), ids=ENDINGS.keys())
def test_each_run_ends_with_its_code_its_line_and_its_reason(case: Case, cli, tmp_path):
    end = cli(argv(case.objective, tmp_path, *case.extra, "--json"))
    assert end.code == case.code, end.lines
    if case.line:
        assert case.line in (str(end.error) if end.error else end.lines[-1])
    else:
        assert not [ln for ln in end.lines if ln.startswith("adamwkit tune: error")]
    summary = end.summary
    assert summary["state"] == case.state
    if case.reason is not None:
        wd, reason = case.reason
        assert reason in end.reason(wd)
    if case.note:
        assert any(case.note in n for n in summary["notes"])
    for name in case.files:
        assert (end.run / name).exists(), name
    if end.error is not None:  # the report it names is this study's, written
        assert str(end.run / "report.html") in str(end.error)
        assert "State: failed" in (end.run / "report.html").read_text()


def test_a_stacked_population_past_its_time_fails_every_run_of_it(tmp_path, monkeypatch):
    import tune_tasks
    from adamwkit.tuning.objective import TaskObjective

    # a stacked job that outlives its limit (and returns nothing if the limit fails)
    monkeypatch.setattr(TaskObjective, "population", lambda self, trials, **kw: time.sleep(120))
    with pytest.raises(ObjectiveFailed):
        tune(tune_tasks.tiny(), folds=2, grid=[0.0, 0.1], out=tmp_path, test=False,
             progress=False, vectorize="on", trial_timeout=0.1, threads=1)  # fmt: skip
    summary = json.loads((tmp_path / "tiny" / "summary.json").read_text())
    reasons = {c["reason"] for c in summary["candidates"]}
    assert reasons == {
        "exceeded trial_timeout: 4 runs trained together for more than 0.4 s (0.1 s each)"
    }


def test_the_command_line_names_the_flag_in_a_runs_reason():
    summary = {"candidates": [{"state": "failed", "reason": "exceeded trial_timeout of 2 s"}]}
    line = render.no_result(summary, "r.html", _run_names)
    assert "(first reason: exceeded --trial-timeout of 2 s)" in line


# ---------------------------------------------------------------------------- the limit itself


def test_a_limit_in_another_thread_stops_a_busy_loop_and_nothing_lands_later():
    ended: list[str] = []

    def work() -> None:
        try:
            with time_limit(0.2):
                spins(None)
        except TrialTimeout:
            ended.append("stopped")
        with time_limit(0.2):
            pass  # ends in time: no exception may arrive afterwards
        time.sleep(0.4)
        ended.append("clean")

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(10)
    assert ended == ["stopped", "clean"]


def test_the_callers_alarm_and_handler_are_left_alone():
    def mine(signum, frame):
        raise AssertionError("the caller's alarm went off")

    before = signal.signal(signal.SIGALRM, mine)
    try:
        with time_limit(0.1):
            pass
        assert signal.getsignal(signal.SIGALRM) is mine
        signal.setitimer(signal.ITIMER_REAL, 100.0)  # the caller's own timer: kept
        with pytest.raises(TrialTimeout), time_limit(0.1):
            spins(None)
        assert signal.getitimer(signal.ITIMER_REAL)[0] > 90
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0.0)
        signal.signal(signal.SIGALRM, before)


# ---------------------------------------------------------------------------- bad arguments


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "1e9", "abc"])
def test_a_bad_trial_timeout_exits_2_with_one_line_before_anything_runs(value, cli, tmp_path):
    end = cli(argv("quadratic", tmp_path, f"--trial-timeout={value}"))
    assert end.code == 2
    assert len(end.lines) == 1 and "--trial-timeout" in end.lines[0]
    assert not (tmp_path / "s" / "study.journal").exists()


def test_the_api_names_trial_timeout(tmp_path):
    with pytest.raises(ValueError, match=r"trial_timeout=0 is invalid"):
        tune(quadratic, examples=40, lr=1e-3, grid=[0.0], out=tmp_path, trial_timeout=0)


# ---------------------------------------------------------------------------- reports


def test_an_older_studys_report_is_replaced_by_the_failed_studys_own(cli, tmp_path):
    first = cli(argv("quadratic", tmp_path))
    assert first.code == 0 and first.summary["state"] == "complete"
    (first.run / "study.journal").unlink()  # the journal moved away: a new study
    second = cli(argv("raises", tmp_path))
    assert second.code == 1
    summary = second.summary
    assert summary["state"] == "failed" and summary["task"] == f"{MODULE}:raises"
    page = (second.run / "report.html").read_text()
    assert "State: failed" in page and f"{MODULE}:raises" in page


def test_an_interrupted_study_leaves_no_report_that_looks_current(cli, tmp_path):
    first = cli(argv("quadratic", tmp_path))
    assert (first.run / "report.html").exists()
    (first.run / "study.journal").unlink()
    second = cli(argv("interrupted_at_01", tmp_path))
    assert second.code == 130
    assert second.summary == {**second.summary, "state": "interrupted", "reason": "Ctrl-C"}
    assert not any((second.run / name).exists() for name in report.REPORT_FILES)


def test_a_plot_that_cannot_be_drawn_leaves_a_note_not_a_crash(cli, tmp_path, monkeypatch):
    def broken(summary):
        raise ValueError("Data cannot be log-scaled")

    monkeypatch.setattr(report, "plot_cv_curve", broken)
    end = cli(argv("quadratic", tmp_path))
    assert end.code == 0
    assert any("cv_curve.png could not be drawn" in n for n in end.summary["notes"])
    assert (end.run / "report.html").exists() and not (end.run / "cv_curve.png").exists()


def test_statistics_of_losses_near_the_largest_float_do_not_overflow():
    with warnings_as_errors():
        assert cv.mean_and_error(_array([1e308, 1e308]), 2) == (1e308, 0.0)
        mean, sem = cv.mean_and_error(_array([1e308, -1e308, 1e308]), 3)
        assert math.isfinite(mean) and math.isfinite(sem)
        a = cv.Candidate(0.0, 1e-3, {0: 1e308, 1: 1e308})
        b = cv.Candidate(0.1, 1e-3, {0: -1e308, 1: -1e308})
        s = cv.summarize([a, b], folds=2)
    assert s.best is b and a.paired_diff == math.inf


def warnings_as_errors() -> Any:
    import numpy as np

    return np.errstate(all="raise")


def _array(values: list[float]) -> Any:
    import numpy as np

    return np.array(values)


# ---------------------------------------------------------------------------- transfer, probe


def test_a_transfer_with_no_trend_exits_1_with_one_line(cli, tmp_path, monkeypatch):
    def zero_is_best(task, **kw):
        return SimpleNamespace(
            summary={"best_weight_decay": 0.0, "candidates": [], "n_train": len(task)}
        )

    monkeypatch.setattr("adamwkit.tuning.run.tune", zero_is_best)
    end = cli(["tune", "digits", "--transfer", "--out", str(tmp_path), "--quiet"])
    assert end.code == 1
    assert len(end.lines) == 1 and "no trend to extrapolate" in end.lines[0]


PROBES = {
    "zero decay failed": ("counted_nan", "8", 1, "did not finish: zero decay is failed"),
    "no curve reported": ("reports_nothing", "8", 1, "trial.report(loss, epoch)"),
    "a curve of NaN": ("reports_nan", "8", 1, "reported 0 finite point(s)"),
    "no --batch-size": ("counted_nan", None, 2, "probe needs --epochs and --batch-size"),
}


@pytest.mark.parametrize(
    ("objective", "batch_size", "code", "line"), PROBES.values(), ids=PROBES.keys()
)
def test_a_probe_without_a_result_exits_1_and_a_bad_argument_2(
    objective, batch_size, code, line, cli, tmp_path
):
    CALLS.clear()
    args = ["tune", f"{MODULE}:{objective}", "--probe", "--examples", "40", "--lr", "1e-3",
            "--epochs", "4", "--folds", "2", "--out", str(tmp_path), "--quiet", "--threads",
            "1"]  # fmt: skip
    if batch_size is not None:
        args += ["--batch-size", batch_size]
    end = cli(args)
    assert end.code == code, end.lines
    assert len(end.lines) == 1 and line in end.lines[0]
    assert bool(CALLS) == (code == 1)  # a bad argument is refused before any run


# ---------------------------------------------------------------------------- study files


FOREIGN = {
    "an empty object": b"{}\n",
    "op_code as text": b'{"op_code":"4","worker_id":"w"}\n',
    "an unknown op_code": b'{"op_code":99,"worker_id":"w"}\n',
    "a field of the wrong type": (
        b'{"op_code":7,"worker_id":"w","trial_id":0,"step":"x","intermediate_value":1}\n'
    ),
    "a list": b"[1, 2]\n",
}


@pytest.mark.parametrize("record", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_foreign_record_at_the_end_is_backed_up_dropped_and_the_rerun_finishes(
    record, cli, tmp_path
):
    first = cli(argv("quadratic", tmp_path))
    journal = first.run / "study.journal"
    with open(journal, "ab") as f:
        f.write(record)
    again = cli(argv("quadratic", tmp_path))
    assert again.code == 0
    assert len(again.lines) == 1
    assert again.lines[0].startswith("adamwkit: warning: study.journal: its last line is not")
    assert len(list(first.run.glob("study.journal.damaged-*"))) == 1
    assert again.summary["state"] == "complete"


def test_foreign_records_before_whole_ones_stop_with_one_line(cli, tmp_path):
    first = cli(argv("quadratic", tmp_path))
    journal = first.run / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    journal.write_bytes(b"".join([*lines[:3], b"{}\n", *lines[3:]]))
    again = cli(argv("quadratic", tmp_path))
    assert again.code == 1
    assert len(again.lines) == 1 and "is damaged at line 4" in again.lines[0]


def test_a_tail_of_foreign_lines_is_dropped_at_once(cli, tmp_path):
    first = cli(argv("quadratic", tmp_path))
    with open(first.run / "study.journal", "ab") as f:
        f.write(b'{}\n{"op_code":2}\n{"torn')
    again = cli(argv("quadratic", tmp_path))
    assert again.code == 0
    assert len(again.lines) == 1
    assert "its last 3 lines are not whole Optuna records" in again.lines[0]


LOCKS = {
    "an old lock file": ("file", 0, "a lock left behind by a stopped process", "removed it"),
    "a folder named like the lock": (
        "folder",
        1,
        "is in the way of the journal's lock",
        "a folder",
    ),
}


@pytest.mark.parametrize(("kind", "code", "line", "tail"), LOCKS.values(), ids=LOCKS.keys())
def test_a_stale_or_misplaced_lock_is_one_line_and_no_wait(kind, code, line, tail, cli, tmp_path):
    first = cli(argv("quadratic", tmp_path))
    lock = first.run / "study.journal.lock"
    if kind == "file":
        lock.touch()
        old = time.time() - 300
        os.utime(lock, (old, old))
    else:
        lock.mkdir()
    again = cli(argv("quadratic", tmp_path))  # Optuna alone waits 30 s, then logs
    assert again.code == code
    assert len(again.lines) == 1 and line in again.lines[0] and tail in again.lines[0]
    assert not any(ln.startswith("[W ") for ln in again.lines)  # no Optuna log lines


def test_a_fresh_stale_lock_is_waited_for_only_until_it_is_stale(tmp_path, monkeypatch):
    """On a clock of its own: the lock's age is read 0, 0.1, 0.2 and 0.35 s after it was
    written; with stale_s=0.3 the function sleeps three times, then removes it."""
    journal = tmp_path / "study.journal"
    lock = Path(f"{journal}.lock")
    lock.touch()
    written = os.stat(lock).st_mtime
    ages = iter([0.0, 0.1, 0.2, 0.35])
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    message = clear_stale_lock(journal, stale_s=0.3, clock=lambda: written + next(ages))
    assert len(slept) == 3 and all(0 < s <= 0.05 for s in slept)
    assert message is not None and not lock.exists()
    assert list(tmp_path.iterdir()) == []


def _unwritable(monkeypatch):
    def refuse(folder):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(workers, "_try_write", refuse)


def _slot_refused(monkeypatch):
    def refuse(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(workers.Slot, "_claim", refuse)


FOLDERS = {
    "a file named workers": (None, "is a file, not a folder: move it away"),
    "an unwritable workers folder": (_unwritable, "cannot be written (Permission denied)"),
    "a slot lock that cannot be opened": (_slot_refused, "cannot be written (Permission denied)"),
}


@pytest.mark.parametrize(("setup", "line"), FOLDERS.values(), ids=FOLDERS.keys())
def test_a_workers_folder_that_cannot_be_used_is_one_line_exit_1(
    setup, line, cli, tmp_path, monkeypatch
):
    run = tmp_path / "s"
    run.mkdir()
    if setup is None:
        (run / "workers").write_text("not a folder")
    else:
        setup(monkeypatch)
    end = cli(argv("quadratic", tmp_path))
    assert end.code == 1
    assert len(end.lines) == 1
    assert end.lines[0].startswith(f"adamwkit tune: error: {run / 'workers'} holds the workers'")
    assert line in end.lines[0]


# ---------------------------------------------------------------------------- Optuna's logs


@pytest.mark.parametrize("level", [logging.INFO, logging.CRITICAL])
def test_the_callers_optuna_log_level_is_put_back(level, tmp_path):
    logger = logging.getLogger("optuna")
    before = logger.level
    logger.setLevel(level)
    seen: list[int] = []

    def objective(trial: Any) -> float:
        seen.append(logger.level)
        return quadratic(trial)

    try:
        tune(objective, examples=40, lr=1e-3, grid=[0.0], folds=2, out=tmp_path,
             progress=False, test=False, threads=1)  # fmt: skip
        assert logger.level == level
        assert set(seen) == {max(level, logging.ERROR)}
    finally:
        logger.setLevel(before)
