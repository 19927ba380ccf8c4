"""tune's budget (``budget=B``): about B training runs, chosen as docs/evidence-budget.md
found best, and never more.

Oracles: a loss whose optimum is known in closed form (a bowl in log weight decay, plus a
per-fold offset every candidate shares), the budget itself (runs counted call by call),
and a rerun that must train nothing.
"""

from __future__ import annotations

import json
import math

import pytest

import adamwkit
from adamwkit.cli import main
from adamwkit.tuning import budget, cv

TARGET = 5.0  # the bowl's optimum
CALLS: list[tuple[float, int | None]] = []


def loss(wd: float, split: int) -> float:
    return 1.0 + 0.3 * (math.log10(wd + 1e-5) - math.log10(TARGET)) ** 2 + 0.05 * split


def bowl(trial) -> float:
    """The bowl; a validation curve that falls, then rises after epoch 4 (it turns). With
    the tests' setup the probe reads 4 epochs into tau_epoch ~ 7, weight decay ~ 22:
    4.5x the optimum, two 2x steps away."""
    CALLS.append((trial.weight_decay, trial.fold))
    split = trial.fold or 0
    for epoch in range(1, 11):
        trial.report(loss(trial.weight_decay, split) + 0.01 * (epoch - 4) ** 2, epoch)
    trial.report_baseline(10.0)
    return loss(trial.weight_decay, split)


def _simulate(b: int, folds: int = 5, first: float = 0.2) -> tuple[dict, int]:
    """The rounds next_step chooses, with the bowl's losses filled in by hand."""
    cands: dict[float, cv.Candidate] = {}
    used = 0
    while (step := budget.next_step(cands, used, b, folds, first)) is not None:
        for w in step.weight_decays:
            c = cands.setdefault(w, cv.Candidate(w, 1e-3))
            c.fold_losses[step.split] = loss(w, step.split)
            used += 1
    return cands, used


@pytest.mark.parametrize("first", [0.01, 22.0, 5.0, 1e3])
@pytest.mark.parametrize("b", [3, 6, 10, 20])
def test_the_rounds_never_spend_more_than_the_budget(b, first):
    cands, used = _simulate(b, first=first)
    assert used <= b and 0.0 in cands


@pytest.mark.parametrize("b", [6, 10, 20])
def test_a_start_within_reach_ends_within_1_5x_of_the_optimum(b):
    """From 1.4x the optimum (the probe's usual error), every budget from 6 gets there."""
    cands, _ = _simulate(b, first=7.0)
    top = budget.finalists(cands)
    assert 1 / 1.5 <= top[0] / TARGET <= 1.5, (b, sorted(cands))


def test_the_search_steps_past_an_end_that_wins():
    """From 20 (the optimum 5 lies two 2x steps below), with room, the search walks
    down: 10, 20, 40; 5 and 2.5 past the winning end; then 5's 2^0.5 neighbours (3.54,
    7.07); then the two best on more folds."""
    cands, _ = _simulate(20, first=20.0)
    assert {10.0, 20.0, 40.0, 5.0, 2.5, 3.54, 7.07} <= set(cands)
    assert budget.finalists(cands)[0] == 5.0
    assert max(len(c.fold_losses) for c in cands.values()) > 1


def test_tune_with_a_budget_spends_it_and_finds_the_optimum(tmp_path):
    CALLS.clear()
    kw = {"examples": 100, "lr": 1e-3, "batch_size": 10, "epochs": 10, "budget": 10,
          "out": tmp_path, "progress": False}  # fmt: skip
    r = adamwkit.tune(bowl, **kw)
    s = r.summary
    assert len(CALLS) == s["spent_runs"] <= 10 and s["budget"] == 10
    assert r.best_weight_decay is not None
    assert 1 / 1.5 <= r.best_weight_decay / TARGET <= 1.5, r.best_weight_decay
    assert s["test"] == {} and "there are no refits under a budget" in s["notes"]
    assert {c["state"] for c in s["candidates"]} <= {"complete", "screened"}
    CALLS.clear()
    adamwkit.tune(bowl, **kw)
    assert CALLS == []  # resumed: nothing trains again


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"budget": 2}, "budget=2 is invalid"),
        ({"budget": 6, "grid": [0, 1]}, "budget and grid are exclusive"),
        ({"budget": 6, "epochs": None}, "budget needs epochs and batch_size"),
        ({"budget": 6, "sampler": "tpe"}, "budget searches the weight decay alone"),
    ],
)
def test_bad_budgets_are_refused_in_one_line(tmp_path, extra, message):
    kw = {"examples": 100, "lr": 1e-3, "batch_size": 10, "epochs": 10, "out": tmp_path,
          **extra}  # fmt: skip
    with pytest.raises(ValueError) as err:
        adamwkit.tune(bowl, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_takes_a_budget(tmp_path, capsys):
    code = main(["tune", "test_budget:bowl", "--examples", "100", "--lr", "1e-3",
                 "--batch-size", "10", "--epochs", "10", "--budget", "6", "--out",
                 str(tmp_path), "--quiet", "--json"])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["budget"] == 6 and out["spent_runs"] <= 6


def test_the_start_reads_the_turn_at_the_step_it_was_reported():
    """A curve reported unevenly (epochs 1, 2, 4, 8, 10) that turns at epoch 4 starts where
    the same curve reported every epoch does (counting points would read epoch 6)."""

    def zero(points: list[tuple[int, float]]) -> dict[float, cv.Candidate]:
        c = cv.Candidate(0.0, 1e-3, fold_losses={0: 1.0})
        c.fold_curves[0] = points
        return {0.0: c}

    def at(e: int) -> float:
        return 1.0 + 0.01 * (e - 4) ** 2

    every = budget.start(zero([(e, at(e)) for e in range(1, 11)]), 100.0, 10, fallback=1.0)
    uneven = budget.start(zero([(e, at(e)) for e in (1, 2, 4, 8, 10)]), 100.0, 10, fallback=1.0)
    assert every == uneven != 1.0
