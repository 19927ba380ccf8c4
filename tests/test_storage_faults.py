"""A database study through an outage, and credentials that never show, against a real
PostgreSQL server on loopback (skipped without PostgreSQL, except in CI).

The outage is real: the server is stopped at once (``pg_ctl stop -m immediate``) while a
worker trains, and started again seconds later.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from pg import SECRET_PASSWORD, SECRET_ROLE, postgres

TESTS = Path(__file__).parent
GRID = (0.0, 0.1, 0.3, 1.0)
FOLDS = 3


@pytest.fixture(scope="module")
def server():
    with postgres() as s:
        yield s


def command(out: Path, study: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "adamwkit.cli", "tune", "objectives:quadratic",
            "--examples", "60", "--lr", "1e-3", "--grid", ",".join(map(str, GRID)),
            "--folds", str(FOLDS), "--study", study, "--out", str(out), "--quiet",
            "--no-test", "--json", *extra]  # fmt: skip


def calls(log: Path) -> list[tuple[float, int]]:
    if not log.exists():
        return []
    return [(float(w), int(f)) for _, w, f in (ln.split() for ln in log.read_text().splitlines())]


def everything() -> list[tuple[float, int]]:
    return sorted((w, f) for w in GRID for f in range(FOLDS))


def wait_for_calls(log: Path, n: int, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while len(calls(log)) < n and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(calls(log)) >= n, "the worker did not start training"


def no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET_PASSWORD not in text
        assert quote(SECRET_PASSWORD, safe="") not in text  # nor percent-encoded
        assert "0#rd" not in text and "0%23rd" not in text


def test_an_outage_mid_run_is_ridden_out_and_each_fold_runs_once(server, tmp_path):
    log = tmp_path / "calls.log"
    env = {**os.environ, "ADAMWKIT_TEST_CALL_LOG": str(log), "ADAMWKIT_TEST_SLEEP": "0.3"}
    url = server.secret_url()
    proc = subprocess.Popen(command(tmp_path, "outage", "--storage", url), cwd=TESTS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_calls(log, 3, proc)
        server.stop()
        time.sleep(6)  # folds finish meanwhile and wait, in memory, to be recorded
        server.start()
        out, err = proc.communicate(timeout=240)
    finally:
        server.start() if not (server.data / "postmaster.pid").exists() else None
        proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert "unreachable" in err and "retrying" in err  # one warning, then it went on
    no_secret(out, err)
    assert sorted(calls(log)) == everything()  # nothing lost, nothing trained twice
    summary = json.loads(out.strip().splitlines()[-1])
    assert [c["state"] for c in summary["candidates"]] == ["complete"] * len(GRID)
    assert all(len(c["fold_losses"]) == FOLDS for c in summary["candidates"])


def test_an_outage_past_the_bound_is_one_line_without_the_password(server, tmp_path):
    log = tmp_path / "calls.log"
    env = {**os.environ, "ADAMWKIT_TEST_CALL_LOG": str(log), "ADAMWKIT_TEST_SLEEP": "0.3"}
    url = server.secret_url()
    cmd = command(tmp_path, "down", "--storage", url, "--storage-retry", "3")
    proc = subprocess.Popen(cmd, cwd=TESTS, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_for_calls(log, 2, proc)
        server.stop()
        out, err = proc.communicate(timeout=120)
    finally:
        server.start()
        proc.kill()
    assert proc.returncode == 1, err
    assert "Traceback" not in err
    no_secret(out, err)
    last = err.strip().splitlines()[-1]
    assert last.startswith("adamwkit tune: error: storage postgresql://secret_user:***@127.0.0.1")
    assert "unreachable for 3 s" in last and "run the same command again" in last
    assert len(err.strip().splitlines()) <= 2  # the warning when it began, and this line


@pytest.mark.parametrize(
    "how",
    ["url", "query", "env_url", "pgpassword", "pgpass"],
)
def test_credentials_work_and_never_show(server, tmp_path, how):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.pop("ADAMWKIT_STORAGE", None)
    base = f"postgresql://{SECRET_ROLE}@127.0.0.1:{server.port}/postgres"
    storage: list[str] = []
    if how == "url":  # as typed, '@', ':', '/', '#' and '?' included
        storage = ["--storage", server.secret_url()]
    elif how == "query":
        # a query value is percent-encoded, as in any URL ('#' would end the URL there)
        storage = ["--storage", f"{base}?password={quote(SECRET_PASSWORD, safe='')}"]
    elif how == "env_url":  # nothing on the command line, where ps would show it
        env["ADAMWKIT_STORAGE"] = server.secret_url()
    elif how == "pgpassword":
        env["PGPASSWORD"] = SECRET_PASSWORD
        storage = ["--storage", base]
    else:
        pgpass = tmp_path / "pgpass"
        escaped = SECRET_PASSWORD.replace("\\", "\\\\").replace(":", "\\:")  # .pgpass syntax
        pgpass.write_text(f"127.0.0.1:{server.port}:postgres:{SECRET_ROLE}:{escaped}\n")
        pgpass.chmod(0o600)
        env["PGPASSFILE"] = str(pgpass)
        storage = ["--storage", base]
    result = subprocess.run(command(tmp_path, f"cred-{how}", *storage), cwd=TESTS, env=env,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr
    run = tmp_path / f"cred-{how}"
    assert not (run / "study.journal").exists()  # the study lives in the database
    no_secret(result.stdout, result.stderr, (run / "summary.json").read_text(),
              (run / "report.html").read_text())  # fmt: skip


def test_a_wrong_password_is_one_line_without_it(server, tmp_path):
    url = server.secret_url("wr@ng:w0rd")
    result = subprocess.run(command(tmp_path, "wrong", "--storage", url), cwd=TESTS,
                            capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "password authentication failed" in lines[0] and "--storage" in lines[0]
    assert "wr@ng" not in result.stderr and "w0rd" not in result.stderr
