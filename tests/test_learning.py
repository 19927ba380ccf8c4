"""Did the model learn, and does a difference matter? (tune's verdict on what it cannot judge)

Oracles: hand-made fold losses whose verdict follows from the documented rules
(``cv.PRACTICAL_FRACTION``: differences below 0.1% of the loss tie, and ties go to the least
decay; ``cv.LEARNED_FRACTION``: the best must beat the untrained baseline by 1% and two
paired SEs), objectives whose losses are known in closed form, and a task trained with a
learning rate too small to move its weights (its loss stays at its untrained value).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

import adamwkit
from adamwkit.cli import main
from adamwkit.tuning import cv

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

import tune_tasks  # noqa: E402

GRID = [0.0, 1e-3, 1e-2, 1e-1]


def _cand(wd: float, losses: list[float], baselines: list[float] | None = None) -> cv.Candidate:
    c = cv.Candidate(wd, 1e-3, fold_losses=dict(enumerate(losses)))
    if baselines is not None:
        c.fold_baselines = dict(enumerate(baselines))
    return c


def test_ties_within_the_margin_that_matters_go_to_the_least_decay():
    """Fold offsets cancel in the paired differences. 0.1 is lowest by 5e-5 (0.005% of the
    loss, under the 0.1% margin), so 0, 1e-3, 1e-2 and 0.1 all tie and zero is the best;
    nothing is worse by a margin that matters, so nothing hurts and there is no edge."""
    offsets = [0.0, 0.3, -0.2]
    cands = [_cand(wd, [1.0 + o - 5e-4 * wd for o in offsets]) for wd in GRID]
    s = cv.summarize(cands, 3)
    assert s.best is not None and s.best.weight_decay == 0.0
    assert s.lowest is not None and s.lowest.weight_decay == 0.1
    assert s.flat and s.hurts_from is None and s.edge is None and s.learned is None


def test_a_difference_that_matters_still_decides():
    """0.1 is lower by 0.01 (1% of the loss, 10x the margin) on every fold, with a spread:
    it is the best, at the grid's high edge, and zero is worse."""
    cands = [
        _cand(wd, [1.0 + o - 0.1 * wd + 1e-4 * (i * wd) for i, o in enumerate([0, 0.3, -0.2])])
        for wd in GRID
    ]
    s = cv.summarize(cands, 3)
    assert s.best is not None and s.best.weight_decay == 0.1
    assert s.edge == "high" and not s.flat


@pytest.mark.parametrize(
    ("gain", "learned"),
    [(0.005, False), (0.02, True)],  # 0.5% below the baseline: not learned; 2%: learned
)
def test_learned_means_clearly_below_the_untrained_baseline(gain, learned):
    base = [1.4, 1.5, 1.3]
    cands = [_cand(wd, [b * (1 - gain) + 1e-4 * wd for b in base], base) for wd in GRID]
    s = cv.summarize(cands, 3)
    assert s.learned is learned
    assert s.baseline == pytest.approx(1.4)
    assert (s.best is None) is (not learned) and (s.edge is None or learned)


def test_two_runs_that_both_gain_clearly_learned_however_unequal():
    """A budget's two shared folds: gains of 0.30 and 0.94 below baselines 1.08 and 1.07
    (28% and 88%). Their mean gain 0.62 is under two paired SEs (0.64, the gap between
    the two gains), yet every run is far below its own baseline: the model learned. One
    run at its baseline is not enough."""
    base = [1.08, 1.07]
    cands = [_cand(wd, [1.08 - 0.30 + 1e-3 * wd, 1.07 - 0.94 + 1e-3 * wd], base) for wd in GRID]
    assert cv.summarize(cands, 2).learned is True
    cands = [_cand(wd, [1.08 - 0.001, 1.07 - 0.94 + 1e-3 * wd], base) for wd in GRID]
    assert cv.summarize(cands, 2).learned is False


def constant(trial) -> float:
    """Returns the same loss whatever it is given."""
    return 0.7


def at_chance(trial) -> float:
    """ln 4, plus a difference of 1e-6 of the loss per candidate, and a baseline of ln 4:
    a four-class model that learned nothing."""
    trial.report_baseline(math.log(4))
    return math.log(4) * (1 + 1e-6 * math.log1p(trial.weight_decay) + 1e-7 * trial.seed)


@pytest.mark.parametrize("objective", [constant, at_chance], ids=["constant", "at chance"])
def test_an_objective_that_learned_nothing_gets_no_best_and_no_extension(tmp_path, objective):
    r = adamwkit.tune(objective, examples=40, lr=1e-3, grid=GRID, folds=2, out=tmp_path,
                      progress=False)  # fmt: skip
    s = r.summary
    assert s["learned"] is False and r.best_weight_decay is None
    assert s["extended"] == [] and s["test"] == {} and s["state"] == "complete"
    assert s["verdict"].startswith("The model did not learn on these folds")
    assert len(s["candidates"]) == len(GRID)  # nothing was added past an edge


def test_a_task_at_its_untrained_loss_is_not_judged(tmp_path):
    """A learning rate of 1e-9 leaves the weights where they started: every candidate's loss
    is its untrained loss, which the task reports as the baseline."""
    r = adamwkit.tune(tune_tasks.tiny(), lr=1e-9, epochs=2, grid=GRID, folds=2,
                      out=tmp_path, progress=False, vectorize="off")  # fmt: skip
    s = r.summary
    assert s["learned"] is False and r.best_weight_decay is None and s["extended"] == []
    assert s["baseline"] == pytest.approx(min(c["mean"] for c in s["candidates"]), rel=1e-3)
    assert all(c["fold_baselines"] for c in s["candidates"])


def test_a_task_that_learns_is_judged_and_reports_its_baseline(tmp_path):
    r = adamwkit.tune(tune_tasks.tiny(), grid=[0.0, 1e-2], folds=2, out=tmp_path,
                      progress=False, extend=0, test=False)  # fmt: skip
    s = r.summary
    assert s["learned"] is True and r.best_weight_decay is not None
    assert s["baseline"] > s["best_mean"] * 1.01


def test_the_command_line_says_it_in_one_line_and_exits_1(tmp_path, capsys):
    code = main(["tune", "test_learning:constant", "--examples", "40", "--lr", "1e-3",
                 "--grid", "0,1e-3,1e-2", "--folds", "2", "--out", str(tmp_path),
                 "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "the model did not learn on these folds" in lines[0], err
    assert "weight decay cannot be judged" in lines[0]
    assert "did not learn" in out  # the table and the verdict are shown too


def test_an_extension_says_what_it_costs(tmp_path):
    """The best at the high edge: the note names the candidates and the runs they add."""

    r = adamwkit.tune(bowl, examples=40, lr=1e-3, grid=[0.0, 1e-3, 1e-2], folds=2,
                      out=tmp_path, progress=False, extend=1, test=False)  # fmt: skip
    assert any("(4 more runs)" in n for n in r.summary["notes"]), r.summary["notes"]


def bowl(trial) -> float:
    """Lowest near weight decay 0.3: past the grid [0, 1e-3, 1e-2]."""
    trial.report_baseline(10.0)
    return 1.0 + (math.log10(trial.weight_decay + 1e-4) + 0.5) ** 2 + 0.1 * (trial.fold or 0)
