"""A library call leaves the caller's process as it found it: matplotlib's backend and
pyplot's figures, Optuna's log level, torch's random state (the oracle: the values read
before the call). Run in a fresh interpreter, so that the starting state is known."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

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
