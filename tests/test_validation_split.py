"""The validation data people already have: ``validation=`` (indices into ``data``, or a
dataset of its own) and ``folds=1`` with ``val_fraction`` (one random validation split,
``repeats`` for repeated holdout).

Oracles: scikit-learn's ``train_test_split`` with the same seed (the test split, then the
validation split of the rest), the indices the user gave, and a rerun that must call the
objective zero times.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.model_selection import train_test_split

import adamwkit
from adamwkit.cli import main

SEEN: list[tuple[float, int | None, list[int], list[int]]] = []
GRID = [0.0, 0.1, 0.3, 1.0]


def bowl(trial) -> float:
    """Lowest at weight decay 0.3; records the split it was given."""
    SEEN.append((trial.weight_decay, trial.fold, trial.train_idx.tolist(), trial.val_idx.tolist()))
    trial.report_baseline(10.0)
    return 1.0 + abs(trial.weight_decay - 0.3)


def test_one_random_split_is_scikit_learns_split_of_the_pool(tmp_path):
    SEEN.clear()
    r = adamwkit.tune(bowl, examples=100, lr=1e-3, grid=GRID, folds=1, val_fraction=0.25,
                      seed=3, out=tmp_path, progress=False, test=False)  # fmt: skip
    pool, _ = train_test_split(np.arange(100), test_size=0.2, random_state=3)
    train, val = train_test_split(np.arange(len(pool)), test_size=0.25, random_state=3)
    runs = {(f, tuple(tr), tuple(va)) for _, f, tr, va in SEEN}
    assert runs == {(0, tuple(pool[train]), tuple(pool[val]))}  # one split, every candidate
    assert len(SEEN) == len(GRID)
    assert r.best_weight_decay == 0.3 and r.summary["folds"] == 1
    assert any(n.startswith("one validation split") for n in r.summary["notes"])
    SEEN.clear()
    adamwkit.tune(bowl, examples=100, lr=1e-3, grid=GRID, folds=1, val_fraction=0.25, seed=3,
                  out=tmp_path, progress=False, test=False)  # fmt: skip
    assert SEEN == []  # resumed: nothing trains again


def test_repeated_holdout_draws_a_split_per_repeat(tmp_path):
    SEEN.clear()
    r = adamwkit.tune(bowl, examples=60, lr=1e-3, grid=GRID, folds=1, repeats=3,
                      out=tmp_path, progress=False, test=False)  # fmt: skip
    splits = {tuple(va) for _, _, _, va in SEEN}
    assert len(splits) == 3 and {f for _, f, _, _ in SEEN} == {0, 1, 2}
    assert not any(n.startswith("one validation split") for n in r.summary["notes"])


def test_validation_indices_are_the_one_split_and_no_test_split_is_drawn(tmp_path):
    SEEN.clear()
    data = torch.arange(50.0).reshape(50, 1)
    val = [3, 7, 11, 40, 41]
    r = adamwkit.tune(bowl, data=data, validation=torch.tensor(val), lr=1e-3, grid=GRID,
                      out=tmp_path, progress=False)  # fmt: skip
    assert {tuple(va) for _, _, _, va in SEEN} == {tuple(val)}
    assert {tuple(tr) for _, _, tr, _ in SEEN} == {tuple(i for i in range(50) if i not in val)}
    assert r.summary["test"] == {} and r.summary["settings"]["test_fraction"] == 0.0


def test_a_validation_dataset_of_its_own(tmp_path):
    data, validation = torch.arange(30.0).reshape(30, 1), torch.full((6, 1), -1.0)
    got = []

    def objective(trial) -> float:
        got.append((len(trial.train_data), [float(x) for (x,) in trial.val_data]))
        return 1.0 + abs(trial.weight_decay - 0.3)

    adamwkit.tune(objective, data=data, validation=validation, lr=1e-3, grid=GRID,
                  out=tmp_path, progress=False)  # fmt: skip
    assert got and all(n == 30 and v == [-1.0] * 6 for n, v in got)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"folds": 3, "val_fraction": 0.2}, "val_fraction=0.2 goes with folds=1"),
        ({"folds": 1, "val_fraction": 1.0}, "val_fraction=1.0 is invalid"),
        ({"validation": [1, 2], "repeats": 2}, "validation is one fixed split"),
        ({"validation": [1, 99]}, "expected distinct indices in [0, 49]"),
        ({"validation": list(range(50))}, "expected from 1 to 49"),
    ],
)
def test_bad_splits_are_refused_in_one_line(tmp_path, kw, message):
    kw = {"data": torch.zeros(50, 1), "lr": 1e-3, "grid": GRID, "out": tmp_path, **kw}
    with pytest.raises(ValueError) as err:
        adamwkit.tune(bowl, **kw)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_the_command_line_takes_one_split(tmp_path, capsys):
    code = main(["tune", "test_validation_split:bowl", "--examples", "80", "--lr", "1e-3",
                 "--grid", "0,0.1,0.3,1", "--folds", "1", "--validation-fraction", "0.25",
                 "--out", str(tmp_path), "--quiet", "--no-test"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "one validation split" in out
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    bad = subprocess.run([sys.executable, "-m", "adamwkit.cli", "tune",
                          "test_validation_split:bowl", "--examples", "80", "--lr", "1e-3",
                          "--validation-fraction", "0.25", "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and "--validation-fraction=0.25 goes with --folds=1" in lines[0]


def per_example(trial) -> float:
    """Per-example losses 1 + |wd - 0.3| + a per-example term shared by every candidate
    (the examples' difficulty, which pairing cancels) + a small candidate-example term."""
    idx = trial.val_idx.double()
    losses = (
        1.0
        + abs(trial.weight_decay - 0.3)
        + 0.5 * torch.sin(idx)
        + 1e-3 * torch.cos(idx * (1 + trial.weight_decay))
    )
    trial.report_example_losses(losses)
    trial.report_baseline(10.0)
    return float(losses.mean())


def test_one_split_with_per_example_losses_pairs_over_the_examples(tmp_path):
    r = adamwkit.tune(per_example, examples=200, lr=1e-3, grid=GRID, folds=1, out=tmp_path,
                      progress=False, test=False)  # fmt: skip
    s = r.summary
    assert s["uncertainty"] == "examples" and r.best_weight_decay == 0.3
    assert any(n.startswith("one validation split: the standard errors are over its 32")
               for n in s["notes"]), s["notes"]  # fmt: skip
    # the oracle: the same losses recomputed here, paired example by example
    pool, _ = train_test_split(np.arange(200), test_size=0.2, random_state=0)
    _, val = train_test_split(np.arange(len(pool)), test_size=0.2, random_state=0)
    idx = torch.tensor(pool[val]).double()

    def losses(wd: float) -> np.ndarray:
        x = 1.0 + abs(wd - 0.3) + 0.5 * torch.sin(idx) + 1e-3 * torch.cos(idx * (1 + wd))
        return x.numpy()

    best = losses(0.3)
    for c in s["candidates"]:
        mine = losses(c["weight_decay"])
        assert c["sem"] == pytest.approx(mine.std(ddof=1) / np.sqrt(len(mine)), rel=1e-9)
        if c["weight_decay"] != 0.3:
            d = mine - best
            assert c["paired_sem"] == pytest.approx(d.std(ddof=1) / np.sqrt(len(d)), rel=1e-9)


def test_one_split_without_them_says_there_is_no_error(tmp_path):
    r = adamwkit.tune(bowl, examples=60, lr=1e-3, grid=GRID, folds=1, out=tmp_path,
                      progress=False, test=False)  # fmt: skip
    assert r.summary["uncertainty"] == "none"
    assert any("there is no standard error" in n for n in r.summary["notes"])
