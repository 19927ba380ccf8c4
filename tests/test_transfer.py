"""tune --transfer: CV on nested subsets, tau_epoch* fitted against N and extrapolated.

The oracle is a crafted study: ``tune`` is replaced by one whose CV loss is a bowl in
log tau_epoch with its bottom at a known law tau* = 3000 * N^-0.8, so the fit must recover
the exponent and the extrapolation must land on the law at the full size.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from adamwkit.tasks import get_task
from adamwkit.tuning import transfer as tr


def law(n: float) -> float:
    return 3000.0 * n**-0.8


def fake_tune(calls):
    def tune(task, *, folds, out, study, seed, progress, test=True, grid=None, **kw):
        n = len(task)
        n_train = n - math.ceil(n / folds)
        calls.append((n, task.label_array(), grid))
        cands = [{"weight_decay": 0.0, "tau_epoch": math.inf, "state": "complete",
                  "mean": 1.5, "paired_diff": 0.5, "paired_sem": 0.01}]  # fmt: skip
        best = None
        for k in range(-4, 30):
            tau = 2.0 ** (k / 2)
            wd = task.batch_size / (task.lr * tau * n_train)
            mean = 1.0 + 0.04 * (math.log2(tau) - math.log2(law(n_train))) ** 2
            cands.append({"weight_decay": wd, "tau_epoch": tau, "state": "complete",
                          "mean": mean, "paired_sem": 0.01})  # fmt: skip
        best = min(cands[1:], key=lambda c: c["mean"])
        for c in cands[1:]:
            c["paired_diff"] = c["mean"] - best["mean"]
        summary = {"candidates": cands, "best_weight_decay": best["weight_decay"],
                   "n_train": n_train, "flat": False, "lr": task.lr,
                   "batch_size": task.batch_size, "decay_scale": task.decay_scale}  # fmt: skip
        return SimpleNamespace(summary=summary, best_weight_decay=best["weight_decay"],
                               one_se_weight_decay=best["weight_decay"], flat=False,
                               run_dir=out)  # fmt: skip

    return tune


def test_the_law_is_recovered_and_extrapolated(tmp_path, monkeypatch):
    calls: list = []
    monkeypatch.setattr("adamwkit.tuning.run.tune", fake_tune(calls))
    task = get_task("digits")
    r = tr.transfer(task, out=tmp_path, progress=False, confirm=True)
    pool = 400  # 500 digits, 20% held out for the test
    assert [c[0] for c in calls[:3]] == [50, 100, 200]  # 1/8, 1/4, 1/2 of the pool
    assert r.slope == pytest.approx(-0.8, abs=0.08)
    assert r.n_target == pool
    assert r.tau_epoch == pytest.approx(law(pool), rel=0.15)
    assert r.tau_low < law(pool) < r.tau_high
    # weight decay from tau_epoch = B / (lr * wd * N), by hand
    assert r.weight_decay == pytest.approx(32 / (1e-3 * r.tau_epoch * pool))
    assert r.low < r.weight_decay < r.high
    # the confirmation grid: zero, then 2^0.5 steps over the interval
    grid = calls[3][2]
    assert grid[0] == 0.0 and min(grid[1:]) == pytest.approx(r.low, rel=1e-5)
    assert max(grid[1:]) == pytest.approx(r.high, rel=1e-5)
    saved = json.loads((tmp_path / "digits.transfer" / "transfer.json").read_text())
    assert saved["tau_epoch"] == pytest.approx(r.tau_epoch)
    png = (tmp_path / "digits.transfer" / "transfer.png").read_bytes()
    assert png.startswith(b"\x89PNG")


def test_subsets_are_nested_and_keep_the_class_proportions():
    labels = np.repeat(np.arange(4), [40, 20, 20, 120])
    pool = np.arange(200)
    a, b, c = tr._nested(pool, labels, [25, 50, 100], seed=3)
    assert set(a) <= set(b) <= set(c)
    for part in (a, b, c):
        share = np.bincount(labels[part], minlength=4) / len(part)
        assert share == pytest.approx([0.2, 0.1, 0.1, 0.6], abs=0.03)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fractions": (0.5,)}, "at least two distinct values"),
        ({"fractions": (0.5, 1.5)}, r"fractions=1.5 is invalid"),
        ({"fractions": (0.001, 0.5)}, "the smallest subset has 0 examples"),
        ({"folds": 1}, "folds=1 is invalid"),
    ],
)
def test_bad_arguments(kwargs, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        tr.transfer("digits", out=tmp_path, progress=False, **kwargs)


def test_an_objective_is_refused(tmp_path):
    with pytest.raises(ValueError, match="expected a Task"):
        tr.transfer(lambda trial: 0.0, out=tmp_path)  # type: ignore[arg-type]


def test_the_cli_runs_a_transfer_and_prints_json(tmp_path, monkeypatch, capsys):
    from adamwkit.cli import main

    calls: list = []
    monkeypatch.setattr("adamwkit.tuning.run.tune", fake_tune(calls))
    code = main(["tune", "digits", "--transfer", "--fractions", "0.25,0.5", "--out",
                 str(tmp_path), "--quiet", "--json"])  # fmt: skip
    assert code == 0
    obj = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [p["n_train"] for p in obj["points"]] == [80, 160]
    assert obj["tau_epoch"] == pytest.approx(law(400), rel=0.15)
    assert "Extrapolated to 400 examples" in obj["verdict"]
