"""tune's statistics end to end: the grid extended past its edge on the same folds, chance-
level runs pruned inside a stacked population, and repeated CV.

Oracles: a plain study whose grid holds the extension's values from the start (the same
folds and seeds give the same fold losses), the same population trained without pruning,
and the folds of plain k-fold CV.
"""

from __future__ import annotations

import math

import pytest

import tune_tasks
from adamwkit import tune
from adamwkit.tasks import get_task


def _by_wd(result):
    return {c["weight_decay"]: c for c in result.summary["candidates"]}


OPTIMUM = 0.3


def bowl(trial):
    """A crafted objective: the loss is a bowl in log10(weight decay) around OPTIMUM, plus
    each fold's own difficulty (zero decay scores as 1e-6)."""
    wd = max(trial.weight_decay, 1e-6)
    return (math.log10(wd) - math.log10(OPTIMUM)) ** 2 + 0.1 * trial.fold


def _expected(wd, fold):
    return (math.log10(max(wd, 1e-6)) - math.log10(OPTIMUM)) ** 2 + 0.1 * fold


@pytest.mark.parametrize(
    ("grid", "added"),
    [
        ([0.0, 0.01, 0.02, 0.04], [0.08, 0.16, 0.32, 0.64]),  # below the optimum: upward
        ([0.0, 10.0, 20.0], [0.625, 1.25, 2.5, 5.0]),  # above it: downward
    ],
)
def test_best_at_the_grid_edge_extends_it(tmp_path, grid, added):
    kw = dict(examples=40, lr=1e-3, folds=3, test=False, progress=False, out=tmp_path)
    result = tune(bowl, grid=grid, extend=2, **kw)
    s = result.summary
    assert s["extended"] == pytest.approx(added)
    assert len([n for n in s["notes"] if "optimum may lie past it" in n]) == 2
    for c in s["candidates"]:  # every candidate ran every fold, with the right losses
        wd = c["weight_decay"]
        assert c["fold_losses"] == pytest.approx([_expected(wd, f) for f in range(3)])
    best = min(grid + added, key=lambda w: _expected(w, 0))
    assert s["best_weight_decay"] == best
    assert s["edge"] is None or best in (added[0], added[-1])
    # a rerun finds the same edges and resumes the extension studies: nothing new
    again = tune(bowl, grid=grid, extend=2, **kw)
    assert again.summary["extended"] == s["extended"]
    assert again.summary["candidates"] == s["candidates"]


def test_edge_left_after_the_last_round_is_said(tmp_path):
    result = tune(bowl, grid=[0.0, 1e-4, 2e-4], extend=1, examples=40, lr=1e-3, folds=3,
                  test=False, progress=False, out=tmp_path)  # fmt: skip
    s = result.summary
    assert s["extended"] == pytest.approx([4e-4, 8e-4])
    assert s["edge"] == "high" and s["best_weight_decay"] == 8e-4
    assert any("after 1 extension(s), the best weight decay 0.0008 is the largest" in n
               for n in s["notes"])  # fmt: skip
    assert "optimum may lie beyond it" in s["verdict"]
    none = tune(bowl, grid=[0.0, 1e-4, 2e-4], extend=0, examples=40, lr=1e-3, folds=3,
                test=False, progress=False, out=tmp_path / "none")  # fmt: skip
    assert none.summary["extended"] == [] and none.summary["edge"] == "high"


def test_chance_level_runs_are_pruned_in_the_population(tmp_path):
    task = get_task("digits")
    grid = [0.0, 0.5, 300.0, 1000.0]  # 300 and 1000 hold the weights at zero
    pruned = tune(task, folds=2, epochs=40, grid=grid, out=tmp_path / "a", test=False,
                  progress=False, vectorize="on", extend=0)  # fmt: skip
    full = tune(task, folds=2, epochs=40, grid=grid, out=tmp_path / "b", test=False,
                progress=False, vectorize="on", extend=0, prune_chance=False)  # fmt: skip
    p, f = _by_wd(pruned), _by_wd(full)
    for wd in (300.0, 1000.0):
        assert p[wd]["state"] == "pruned"
        assert "at chance level after 10 of 40 epochs" in p[wd]["reason"]
        assert f[wd]["state"] == "complete"
        assert f[wd]["fold_losses"][0] > 2.0  # trained to the end it stays near log(10)
    for wd in (0.0, 0.5):  # the members kept trained exactly as without pruning
        assert p[wd]["state"] == "complete"
        assert p[wd]["fold_losses"] == pytest.approx(f[wd]["fold_losses"], rel=1e-5)
    assert pruned.summary["pruned"] == 2
    assert pruned.best_weight_decay == full.best_weight_decay


def test_repeated_cv_runs_every_candidate_on_k_times_r_folds(tmp_path):
    grid = [0.0, 0.01]
    rep = tune(tune_tasks.tiny(), folds=2, repeats=2, grid=grid, out=tmp_path / "r",
               test=False, progress=False, vectorize="off", extend=0)  # fmt: skip
    one = tune(tune_tasks.tiny(), folds=2, grid=grid, out=tmp_path / "o", test=False,
               progress=False, vectorize="off", extend=0)  # fmt: skip
    r, o = _by_wd(rep), _by_wd(one)
    assert rep.summary["repeats"] == 2
    for wd in grid:
        assert len(r[wd]["fold_losses"]) == 4
        # draw 0 is the plain 2-fold CV: same folds, same seeds, same losses
        assert r[wd]["fold_losses"][:2] == pytest.approx(o[wd]["fold_losses"], rel=1e-6)
        assert r[wd]["fold_losses"][2:] != pytest.approx(o[wd]["fold_losses"], rel=1e-6)
