"""tune under faults: a torn or damaged journal, a full disk, Ctrl-C, a run with no result.

Each fault is real where the machine allows it: the journal is torn the way a crash leaves
it (cut inside a record), the disk fills through the kernel's file-size limit
(``RLIMIT_FSIZE``), and Ctrl-C is a SIGINT sent to the running command. The objective logs
every call (``ADAMWKIT_TEST_CALL_LOG``), so a rerun can be held to training exactly the
folds that were lost.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

TESTS = Path(__file__).parent
GRID = (0.0, 0.1, 0.3, 1.0)
FOLDS = 3
STUDY = "faults"


def command(out: Path, *extra: str, objective: str = "quadratic") -> list[str]:
    return [sys.executable, "-m", "adamwkit.cli", "tune", f"objectives:{objective}",
            "--examples", "60", "--lr", "1e-3", "--grid", ",".join(map(str, GRID)),
            "--folds", str(FOLDS), "--study", STUDY, "--out", str(out), "--quiet",
            "--no-test", "--json", *extra]  # fmt: skip


def run(cmd: list[str], env: dict[str, str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=TESTS, env=env, capture_output=True, text=True,
                          timeout=300, **kw)  # fmt: skip


def calls(log: Path) -> list[tuple[float, int]]:
    if not log.exists():
        return []
    return [(float(w), int(f)) for _, w, f in (ln.split() for ln in log.read_text().splitlines())]


def recorded(journal: Path) -> set[tuple[float, int]]:
    """(weight decay, fold) pairs the journal holds, read by Optuna itself."""
    storage = JournalStorage(JournalFileBackend(str(journal)))
    study = optuna.load_study(study_name=STUDY, storage=storage)
    return {
        (float(t.params["weight_decay"]), int(step))
        for t in study.get_trials(deepcopy=False)
        if "weight_decay" in t.params
        for step in t.intermediate_values
    }


@pytest.fixture
def env(tmp_path):
    return {**os.environ, "ADAMWKIT_TEST_CALL_LOG": str(tmp_path / "calls.log")}


def everything() -> set[tuple[float, int]]:
    return {(w, f) for w in GRID for f in range(FOLDS)}


def test_a_torn_last_record_is_backed_up_dropped_and_its_fold_retrained(tmp_path, env):
    log = tmp_path / "calls.log"
    first = run(command(tmp_path), env)
    assert first.returncode == 0, first.stderr
    journal = tmp_path / STUDY / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    # Cut inside the record of a fold's result in the middle of the run, as a crash (or a
    # full disk) during that append leaves the file: every later record never happened.
    reports = [i for i, ln in enumerate(lines) if b'"intermediate_values"' in ln
               or b'"step"' in ln]  # fmt: skip
    cut = reports[len(reports) // 2]
    whole = b"".join(lines[:cut])
    torn = whole + lines[cut][: len(lines[cut]) // 2]
    journal.write_bytes(torn)
    (tmp_path / "whole.journal").write_bytes(whole)
    kept = recorded(tmp_path / "whole.journal")
    assert kept and kept != everything()

    log.unlink()
    second = run(command(tmp_path), env)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    warning = [ln for ln in second.stderr.splitlines() if "torn" in ln]
    assert len(warning) == 1 and "study.journal" in warning[0], second.stderr
    backups = list((tmp_path / STUDY).glob("study.journal.damaged-*"))
    assert len(backups) == 1 and backups[0].read_bytes() == torn
    # Exactly the folds the torn and later records held train again, each once.
    assert sorted(calls(log)) == sorted(everything() - kept)
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert all(c["state"] == "complete" for c in summary["candidates"])
    assert recorded(journal) == everything()


def test_damage_inside_the_journal_is_one_line_naming_file_and_line(tmp_path, env):
    first = run(command(tmp_path), env)
    assert first.returncode == 0, first.stderr
    journal = tmp_path / STUDY / "study.journal"
    lines = journal.read_bytes().splitlines(keepends=True)
    lines[4] = lines[4][:10] + b"\n"
    journal.write_bytes(b"".join(lines))
    before = journal.read_bytes()
    second = run(command(tmp_path), env)
    assert second.returncode == 1
    err = second.stderr.strip().splitlines()
    assert len(err) == 1, second.stderr
    assert str(journal) in err[0] and "line 5 of" in err[0]
    assert journal.read_bytes() == before  # nothing is changed by guessing


def _file_limit(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def test_a_full_disk_is_one_line_naming_the_file_and_a_rerun_finishes(tmp_path, env):
    log = tmp_path / "calls.log"
    # The journal outgrows this limit halfway through the study.
    full = run(command(tmp_path), env, preexec_fn=_file_limit(6000))
    assert full.returncode == 1, (full.returncode, full.stderr)
    assert "Traceback" not in full.stderr
    lines = full.stderr.strip().splitlines()
    assert len(lines) == 1, full.stderr
    assert "cannot write" in lines[0] and "study.journal" in lines[0]
    assert "run the same command again" in lines[0]
    done = calls(log)
    assert 0 < len(done) < len(everything())

    log.unlink()
    again = run(command(tmp_path), env)
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert all(c["state"] == "complete" for c in summary["candidates"])
    assert recorded(tmp_path / STUDY / "study.journal") == everything()
    # The rerun trains only what the full disk kept from being recorded.
    assert len(calls(log)) <= len(everything()) - len(done) + 1


def test_ctrl_c_is_one_line_exit_130_and_the_rerun_resumes(tmp_path, env):
    log = tmp_path / "calls.log"
    env = {**env, "ADAMWKIT_TEST_SLEEP": "0.5"}  # 12 calls: 6 s, interrupted after 4

    # A shell's background job starts with SIGINT ignored, and Python then never raises
    # KeyboardInterrupt: give the child the default handling, as a terminal would.
    def default_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    proc = subprocess.Popen(command(tmp_path), cwd=TESTS, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(calls(log)) < 4 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [
        "adamwkit tune: interrupted; run the same command again to resume"
    ]
    first = calls(log)

    log.unlink()
    again = run(command(tmp_path), {**env, "ADAMWKIT_TEST_SLEEP": "0"})
    assert again.returncode == 0, again.stderr
    summary = json.loads(again.stdout.strip().splitlines()[-1])
    assert all(c["state"] == "complete" for c in summary["candidates"])
    # Folds finished before the interrupt are not trained again (the one interrupted is).
    assert len(first) + len(calls(log)) <= len(everything()) + 1


def test_a_run_where_no_candidate_finishes_exits_1_with_the_reason(tmp_path, env):
    cmd = command(tmp_path, objective="nan_at_large_decay")
    cmd[cmd.index("--grid") + 1] = "1,2"
    result = run(cmd, env)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "no candidate finished every fold: 2 failed" in lines[0]
    assert "non-finite" in lines[0] or "nan" in lines[0].lower()


def test_a_creator_stopped_while_enqueueing_is_finished_by_the_next_run(tmp_path, env, monkeypatch):
    import objectives
    from adamwkit import tune

    kw = {"examples": 60, "lr": 1e-3, "grid": GRID, "folds": FOLDS, "study": STUDY,
          "out": tmp_path, "progress": False, "test": False}  # fmt: skip
    real = optuna.Study.enqueue_trial
    count = {"n": 0}

    def stop_on_third(self, *args, **kwargs):
        count["n"] += 1
        if count["n"] == 3:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(optuna.Study, "enqueue_trial", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        tune(objectives.quadratic, **kw)
    monkeypatch.setattr(optuna.Study, "enqueue_trial", real)
    result = tune(objectives.quadratic, **kw)  # waits a few seconds, then enqueues the rest
    assert [c["weight_decay"] for c in result.summary["candidates"]] == list(GRID)
    assert all(c["state"] == "complete" for c in result.summary["candidates"])


def test_repeated_candidates_are_tried_once_and_the_run_says_so(tmp_path, env, monkeypatch):
    import objectives
    from adamwkit import tune

    monkeypatch.setenv("ADAMWKIT_TEST_CALL_LOG", str(tmp_path / "calls.log"))
    result = tune(objectives.quadratic, examples=60, lr=1e-3, grid=[0.1, 0, 0.1, 1e-1, 0.3],
                  folds=2, out=tmp_path, progress=False, test=False, extend=0)  # fmt: skip
    assert [c["weight_decay"] for c in result.summary["candidates"]] == [0.0, 0.1, 0.3]
    assert result.summary["notes"] == ["grid has 2 repeated value(s), tried once: [0, 0.1, 0.3]"]
    assert len(calls(tmp_path / "calls.log")) == 3 * 2


def test_a_claim_failed_by_another_worker_before_it_was_recorded_is_dropped(monkeypatch):
    """A worker paused between asking for a candidate and recording itself as its owner
    (SIGSTOP past the grace) finds the trial failed by another worker, which retries it:
    it claims the next candidate instead of crashing (UpdateFinishedTrialError)."""
    import optuna

    from adamwkit.tuning import _optuna
    from adamwkit.tuning import study as study_mod
    from adamwkit.tuning.config import StudySpec

    spec = StudySpec(source="x", data="d", folds=2, epochs=None, lr=1e-3, batch_size=None,
                     decay_scale="lr", schedule=None, seed=0, test_fraction=0.2,
                     sampler="grid", grid=(0.0, 0.1))  # fmt: skip
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    for wd in spec.grid:
        study.enqueue_trial({"weight_decay": wd})
    real = _optuna.record_heartbeat
    paused = []

    def another_worker_fails_the_first_claim(study, trial):
        if not paused:  # the pause: the other worker declares this claim stale and fails it
            paused.append(trial.number)
            study._storage.set_trial_state_values(
                trial._trial_id, state=optuna.trial.TrialState.FAIL
            )
        return real(study, trial)

    monkeypatch.setattr(_optuna, "record_heartbeat", another_worker_fails_the_first_claim)
    trial = study_mod._next_trial(study, spec, "worker-a")
    assert paused == [0] and trial is not None and trial.number == 1
    assert trial.params == {"weight_decay": 0.1}
    assert study.trials[1].user_attrs["worker"] == "worker-a"
