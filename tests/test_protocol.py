"""tune's parts: ``plan()`` validates before anything runs; every worker runs every round.

Oracles: a closed-form objective whose loss we know for each (weight decay, fold), the
extension rule of the grid (two values past the edge at the grid's 10x spacing), and a
plain ``tune`` run in a fresh folder.
"""

from __future__ import annotations

import dataclasses
import math

import pytest

from adamwkit.tuning import TunePlan, plan, protocol, tune

CALLS: list[tuple[float, int | None]] = []
TARGET = 0.3  # the loss's minimum in weight decay: past the grid [0, 1e-3, 1e-2]


def bowl(trial) -> float:
    """A loss with its minimum at TARGET, the same offset per fold for every candidate (a
    paired comparison sees only the candidate's effect), plus a tiny candidate-fold term."""
    CALLS.append((trial.weight_decay, trial.fold))
    wd, fold = trial.weight_decay, -1 if trial.fold is None else trial.fold
    shape = (math.log10(wd + 1e-4) - math.log10(TARGET)) ** 2
    return 1.0 + shape + 0.1 * fold + 1e-3 * math.sin(7 * wd + fold)


KW = {"examples": 40, "lr": 1e-3, "grid": [0.0, 1e-3, 1e-2], "folds": 2, "extend": 1,
      "progress": False}  # fmt: skip


def test_plan_validates_everything_and_runs_nothing(tmp_path):
    CALLS.clear()
    p = plan(bowl, out=tmp_path, **KW)
    assert isinstance(p, TunePlan) and not CALLS
    assert p.config.spec.grid == (0.0, 1e-3, 1e-2) and p.config.total_runs == 6
    assert p.config.spec.folds == 2 and p.config.extend == 1
    assert [f.name for f in (tmp_path / "test_protocol.bowl").iterdir()] == []  # the write check
    with pytest.raises(TypeError, match="'fold'"):
        plan(bowl, fold=3, out=tmp_path, **KW)
    with pytest.raises(ValueError, match=r"^folds=0 is invalid"):
        plan(bowl, out=tmp_path, **{**KW, "folds": 0})
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.notes = ()  # type: ignore[misc]


def test_a_worker_alone_runs_every_round_and_the_caller_then_trains_nothing(tmp_path):
    """The rounds after the CV (the extension past the grid's edge, the refits) are studies
    every worker works on: a worker process alone does them all; the calling process then
    finds every run recorded and gives the summary a plain run gives."""
    CALLS.clear()
    p = plan(bowl, out=tmp_path / "shared", **KW)
    protocol._worker_process(p.source, protocol._this_machine(p))  # as workers=N starts it
    cv_runs = {(wd, f) for wd, f in CALLS if f is not None}
    extension = {0.1, 1.0}  # the edge 1e-2, then two values at the grid's 10x spacing
    assert cv_runs == {(wd, f) for wd in (0.0, 1e-3, 1e-2, *extension) for f in (0, 1)}
    refits = sorted(wd for wd, f in CALLS if f is None)
    assert len(CALLS) == len(cv_runs) + len(refits)  # nothing trained twice
    CALLS.clear()
    shared = p.run()
    assert not CALLS  # every round was done by the worker
    assert sorted(shared.summary["extended"]) == sorted(extension)
    assert shared.best_weight_decay == 0.1
    assert sorted({e["weight_decay"] for e in shared.summary["test"].values()}) == refits

    alone = tune(bowl, out=tmp_path / "alone", **KW)
    for key in ("best_weight_decay", "one_se_weight_decay", "extended", "candidates"):
        assert alone.summary[key] == shared.summary[key], key
    for label, entry in alone.summary["test"].items():
        assert entry["loss"] == shared.summary["test"][label]["loss"], label
