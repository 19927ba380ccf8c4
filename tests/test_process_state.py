"""A library call leaves the caller's process as it found it: matplotlib's backend and
pyplot's figures, Optuna's log level, torch's random state (the oracle: the values read
before the call), the CPU's flush-subnormals-to-zero mode (the oracle: float arithmetic).
Run in a fresh interpreter, so that the starting state is known."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from adamwkit.train import flush_denormals

TESTS = Path(__file__).parent

SCRIPT = r"""
import json, logging, sys
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
import optuna, torch
import adamwkit, tune_tasks

plt.figure()  # one figure of the caller's own
optuna.logging.get_logger("optuna").setLevel(logging.INFO)
torch.manual_seed(1234)
before = torch.get_rng_state()
expected = torch.rand(3).tolist()  # what the caller's stream gives next
torch.set_rng_state(before)

# fit and tune, stacked (the stacking check seeds), with a report (plots drawn)
adamwkit.fit(tune_tasks.tiny(), 0.01, epochs=1)
result = adamwkit.tune(tune_tasks.tiny(), folds=2, grid=[0.0, 0.1], vectorize="on",
                       out=sys.argv[1], progress=False, test=False, extend=0)
print(json.dumps({
    "backend": matplotlib.get_backend(),
    "figures": plt.get_fignums(),
    "optuna_level": optuna.logging.get_logger("optuna").level,
    "next_random": torch.rand(3).tolist(),
    "expected": expected,
    "report": sorted(p.name for p in result.paths.values()),
}))
"""


def test_tune_and_fit_leave_the_process_as_they_found_it(tmp_path):
    env_path = f"{TESTS}"
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "runs")],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=300,
        env={**__import__("os").environ, "PYTHONPATH": env_path, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    state = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "cv_curve.png" in state["report"] and "report.html" in state["report"]
    assert state["backend"] == "svg"
    assert state["figures"] == [1]
    assert state["optuna_level"] == 20  # logging.INFO
    assert state["next_random"] == state["expected"]


# The oracle for the flush mode: a float32 subnormal (2**-140) times 0.5 is zero when the
# CPU flushes subnormals and 2**-141 (still representable) when it does not. Checked to
# read what the caller set before it is trusted after the call.
FLUSH_SCRIPT = r"""
import json, sys
import torch
import adamwkit, tune_tasks

def flushing():
    return (torch.tensor(2.0**-140, dtype=torch.float32) * 0.5).item() == 0.0

caller = sys.argv[2] == "on"
supported = torch.set_flush_denormal(caller)
seen = {"supported": supported, "set": flushing()}
adamwkit.fit(tune_tasks.tiny(), 0.01, epochs=1)
seen["after_fit"] = flushing()
adamwkit.tune(tune_tasks.tiny(), folds=2, grid=[0.0, 0.1], vectorize="on",
              out=sys.argv[1], progress=False, test=False, extend=0)
seen["after_tune"] = flushing()
print(json.dumps(seen))
"""


def _run_script(script: str, *args: str) -> dict:
    """Run ``script`` in a fresh interpreter from the tests folder; its last line, as JSON."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(TESTS), "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["on", "off"])
def test_tune_and_fit_keep_the_callers_flush_denormal_mode(tmp_path, mode):
    seen = _run_script(FLUSH_SCRIPT, str(tmp_path / "runs"), mode)
    if not seen["supported"]:
        pytest.skip("torch.set_flush_denormal is not supported on this CPU")
    expected = mode == "on"
    assert seen["set"] is expected  # the oracle reads what the caller set
    assert seen["after_fit"] is expected
    assert seen["after_tune"] is expected


def _flushing() -> bool:
    """The oracle above, in this process."""
    return (torch.tensor(2.0**-140, dtype=torch.float32) * 0.5).item() == 0.0


@pytest.mark.parametrize("caller", [True, False])
def test_nested_flush_denormals_restore_the_setting_each_found(caller):
    if not torch.set_flush_denormal(caller):
        pytest.skip("torch.set_flush_denormal is not supported on this CPU")
    try:
        assert _flushing() is caller
        with flush_denormals():
            assert _flushing()
            with flush_denormals():
                assert _flushing()
            assert _flushing()  # the inner block found it on
            torch.set_flush_denormal(False)  # the block's own code turns it off ...
            with flush_denormals():
                assert _flushing()
            assert not _flushing()  # ... and the block after it gives that back
        assert _flushing() is caller
    finally:
        torch.set_flush_denormal(False)
