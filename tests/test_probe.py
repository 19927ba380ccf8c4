"""The probe (adamwkit.tuning.probe): weight decay from where a run without it turns.

Oracles: crafted learning curves with a known lowest epoch, and the closed forms
tau_epoch = c * turn (c, range from the shipped calibration) and
weight decay = B / (lr * tau_epoch * N) (Wang & Aitchison 2024, arXiv:2405.13698).
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

import objectives
from adamwkit import _calibration as cal
from adamwkit.rules import calibrated_tau_epoch, training_setup
from adamwkit.tuning.probe import probe, probe_tau_epoch, turning_epoch

ROOT = Path(__file__).resolve().parents[1]
# 100 examples: 20 held out for the test, 5 folds of the other 80 train on 64 each
SETUP = {"examples": 100, "lr": 1e-3, "batch_size": 16, "epochs": 40, "progress": False}
N_TRAIN = 64


def test_turning_epoch_is_the_lowest_finite_point():
    assert turning_epoch([1.0, 0.6, 0.5, 0.55, 0.7]) == 3
    assert turning_epoch([1.0, 0.9, 0.8]) == 3  # still falling: the last epoch
    assert turning_epoch([math.nan, 0.9, math.inf, 0.95]) == 2
    with pytest.raises(ValueError, match="expected a finite loss"):
        turning_epoch([math.nan])


def test_probe_tau_epoch_is_the_calibrated_multiple_of_the_turn():
    c = math.exp(cal.PROBE_COEF["const"])
    tau, lo, hi = probe_tau_epoch(50, 300)
    assert cal.PROBE_COEF.get("log_turn") == 1.0
    assert tau == pytest.approx(c * 50)
    assert (lo, hi) == pytest.approx((tau * math.exp(cal.PROBE_BAND[0]),
                                      tau * math.exp(cal.PROBE_BAND[1])))  # fmt: skip
    assert probe_tau_epoch(280, 300) is None  # lowest in the last 10%: did not turn
    with pytest.raises(ValueError, match="expected positive"):
        probe_tau_epoch(0, 300)


def test_a_turning_curve_gives_the_closed_form_weight_decay(tmp_path):
    r = probe(objectives.turns_at_12, out=tmp_path, **SETUP)
    assert r.turned and r.rule == "probe"
    assert r.turn == 12 and r.n_train == N_TRAIN
    tau = math.exp(cal.PROBE_COEF["const"]) * 12
    assert r.tau_epoch == pytest.approx(tau)
    assert r.value == pytest.approx(16 / (1e-3 * tau * N_TRAIN))
    assert r.low_value < r.value < r.high_value
    assert r.high_value / r.low_value == pytest.approx(
        math.exp(cal.PROBE_BAND[1] - cal.PROBE_BAND[0])
    )
    # the curve is the folds' mean, the rise its end over its lowest point
    assert r.curve[11] == pytest.approx(1.2)
    assert r.rise == pytest.approx(r.curve[-1] / 1.2 - 1)
    assert "lowest at epoch 12 of 40" in r.verdict()
    run_dir = tmp_path / "objectives.turns_at_12.probe"
    assert (run_dir / "summary.json").exists()
    # its page shows the value, its range and the turning epoch, not an empty CV plot
    page = (run_dir / "report.html").read_text()
    assert f"weight_decay={r.value:.4g} (80% range {r.low_value:.4g} to" in page
    assert "lowest at epoch 12 of 40" in page and "<title>adamwkit probe:" in page
    assert [c["weight_decay"] for c in r.summary["candidates"]] == [0.0]


def test_a_curve_still_falling_takes_the_rule_without_training(tmp_path):
    r = probe(objectives.still_falling, out=tmp_path, **SETUP)
    assert not r.turned and r.rule == "calibrated"
    setup = training_setup(dataset_size=N_TRAIN, batch_size=16, epochs=40, lr=1e-3)
    tau, lo, hi = calibrated_tau_epoch(setup)
    assert (r.tau_epoch, r.tau_low, r.tau_high) == pytest.approx((tau, lo, hi))
    assert r.value == pytest.approx(16 / (1e-3 * tau * N_TRAIN))
    assert "still falling" in r.verdict()


def test_the_value_is_in_the_runs_convention(tmp_path):
    torch_ = probe(objectives.turns_at_12, out=tmp_path, **SETUP)
    ind = probe(objectives.turns_at_12, out=tmp_path, study="ind", decay_scale="schedule",
                **SETUP)  # fmt: skip
    assert ind.decay_scale == "schedule"
    assert ind.value == pytest.approx(torch_.value * 1e-3)  # independent = lr_peak * torch


def test_refusals_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="grid cannot be used with probe"):
        probe(objectives.turns_at_12, out=tmp_path, grid=[0.0, 1.0], **SETUP)
    with pytest.raises(ValueError, match=r"trial.report\(loss, epoch\)"):
        probe(objectives.reports_nothing, out=tmp_path, **SETUP)
    no_bs = {k: v for k, v in SETUP.items() if k != "batch_size"}
    with pytest.raises(ValueError, match="probe needs epochs and batch_size"):
        probe(objectives.turns_at_12, out=tmp_path, study="nobs", **no_bs)


def _cli(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    argv = [sys.executable, "-m", "adamwkit.cli", "tune", "objectives:turns_at_12", "--examples",
            "100", "--lr", "1e-3", "--batch-size", "16", "--epochs", "40", "--out",
            str(tmp_path), "--quiet", *extra]  # fmt: skip
    env = {"PYTHONPATH": f"{ROOT / 'tests'}:{ROOT / 'src'}", "PATH": "/usr/bin:/bin"}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def test_cli_probe_and_confirm(tmp_path):
    proc = _cli(tmp_path, "--probe", "--confirm", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["turn"] == 12 and out["rule"] == "probe"
    grid = out["confirm"]["grid"]
    assert grid[0] == 0.0  # the range's ends are candidates (extension rounds may add more)
    for end in (out["low_value"], out["high_value"]):
        assert min(abs(g / end - 1) for g in grid[1:]) < 1e-5
    assert (tmp_path / "objectives.turns_at_12.probe-confirm" / "summary.json").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probe", "--grid", "0,1"], "--grid cannot be used with probe"),
        (["--probe", "--transfer"], "--transfer and --probe are exclusive"),
        (["--confirm", "--grid", "0,1"], "--confirm goes with --transfer or --probe"),
    ],
)
def test_cli_refusals_exit_2_with_one_line(tmp_path, extra, message):
    proc = _cli(tmp_path, *extra)
    assert proc.returncode == 2
    assert message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
