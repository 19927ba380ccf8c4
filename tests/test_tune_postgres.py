"""Several workers on one study in a real PostgreSQL server (skipped without PostgreSQL,
except in CI, where it must run)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from pg import postgres_server

TESTS = Path(__file__).parent
GRID = ["0", "0.003", "0.01", "0.03", "0.1", "0.3"]
FOLDS = 3


@pytest.fixture(scope="module")
def pg_url():
    with postgres_server() as url:
        yield url


def worker(url, study, out, log, slow="0", *extra):
    env = {**os.environ, "ADAMWKIT_TEST_FIT_LOG": str(log), "ADAMWKIT_TEST_SLOW": slow}
    cmd = [
        sys.executable,
        "-m",
        "adamwkit.cli",
        "tune",
        "tune_tasks:tiny",
        "--grid",
        ",".join(GRID),
        "--folds",
        str(FOLDS),
        "--storage",
        url,
        "--study",
        study,
        "--out",
        str(out),
        "--no-test",
        "--quiet",
        "--heartbeat-interval",
        "1",
        "--vectorize",
        "off",
        *extra,
    ]
    return subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def completed(url, study):
    st = optuna.load_study(study_name=study, storage=url)
    return st, [t for t in st.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE]


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_two_workers_share_a_study_and_do_each_fold_once(pg_url, tmp_path, vectorize):
    """Stacked, --workers 2 makes each claim half the candidates, so both get work."""
    log = tmp_path / "fits.log"
    if vectorize == "on":  # a population of 3 candidates x 3 folds takes about 4 s
        extra = ("0.3", "--vectorize", "on", "--workers", "2")
    else:
        extra = ("0.002",)
    procs = [worker(pg_url, f"shared-{vectorize}", tmp_path / f"w{i}", log, *extra)
             for i in range(2)]  # fmt: skip
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    pids = log.read_text().split()
    probes = 2 if vectorize == "on" else 0  # each stacked worker builds one model to inspect
    # stacked, the optimizer audit builds the model fit would (once per study, or once per
    # worker when both start before either has stored it); one at a time it reads fit's own
    audits = (1, 2) if vectorize == "on" else (0,)
    extra = len(pids) - len(GRID) * FOLDS - probes
    assert extra in audits  # every (candidate, fold) trained once
    counts = {pid: pids.count(pid) for pid in set(pids)}
    assert len(counts) == 2 and min(counts.values()) > probes // 2  # both workers trained
    _, done = completed(pg_url, f"shared-{vectorize}")
    assert sorted(t.params["weight_decay"] for t in done) == sorted(float(g) for g in GRID)
    assert all(len(t.intermediate_values) == FOLDS for t in done)


def test_a_killed_workers_trial_is_retried_by_another(pg_url, tmp_path):
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    a = worker(pg_url, "killed", tmp_path / "a", log_a, "0.1")
    deadline = time.monotonic() + 120
    victim = None
    while time.monotonic() < deadline and victim is None:
        time.sleep(0.2)
        try:
            st = optuna.load_study(study_name="killed", storage=pg_url)
        except KeyError:
            continue
        running = st.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        victim = next((t for t in running if t.intermediate_values), None)
    assert victim is not None, "worker A never finished a fold"
    a.send_signal(signal.SIGKILL)
    a.wait()
    _, done_before = completed(pg_url, "killed")
    finished_before = sum(len(t.intermediate_values) for t in done_before)
    finished_before += len(optuna.load_study(study_name="killed", storage=pg_url)
                           ._storage.get_trial(victim._trial_id).intermediate_values)  # fmt: skip
    b = worker(pg_url, "killed", tmp_path / "b", log_b)
    _, err = b.communicate(timeout=300)
    assert b.returncode == 0, err.decode()
    st, done = completed(pg_url, "killed")
    assert sorted(t.params["weight_decay"] for t in done) == sorted(float(g) for g in GRID)
    stale = st._storage.get_trial(victim._trial_id)
    assert stale.state == TrialState.FAIL  # its heartbeat stopped
    retried = [t for t in done if t.params == victim.params]
    assert len(retried) == 1 and len(retried[0].intermediate_values) == FOLDS
    # B trained only what was missing: the killed trial's finished folds were kept.
    assert len(log_b.read_text().split()) == len(GRID) * FOLDS - finished_before


def test_a_paused_worker_whose_trial_was_retried_carries_on(pg_url, tmp_path):
    """SIGSTOP past the heartbeat grace: the other worker retries the trial; the paused one,
    resumed, drops its stale claim instead of crashing, and every candidate completes."""
    a = worker(pg_url, "paused", tmp_path / "a", tmp_path / "a.log", "0.05")
    b = None
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                st = optuna.load_study(study_name="paused", storage=pg_url)
            except KeyError:
                continue
            if st.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
        a.send_signal(signal.SIGSTOP)
        b = worker(pg_url, "paused", tmp_path / "b", tmp_path / "b.log")
        time.sleep(6)
        a.send_signal(signal.SIGCONT)
        for p in (a, b):
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err.decode()
    finally:
        for p in (a, b):
            if p is not None and p.poll() is None:
                p.kill()
    _, done = completed(pg_url, "paused")
    assert sorted({t.params["weight_decay"] for t in done}) == sorted(float(g) for g in GRID)
