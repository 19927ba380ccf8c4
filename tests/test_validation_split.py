"""The validation data people already have: ``validation=`` (indices into ``data``, or a
dataset of its own) and ``folds=1`` with ``val_fraction`` (one random validation split,
``repeats`` for repeated holdout).

Oracles: scikit-learn's ``train_test_split`` with the same seed (the test split, then the
validation split of the rest), the indices the user gave, and a rerun that must call the
objective zero times.
"""

from __future__ import annotations

import json
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


# ------------------------------------------------- a Task's per-example losses, --validation


def test_example_losses_are_cross_entropy_example_by_example():
    from adamwkit.tasks import get_task
    from adamwkit.train import evaluate, example_losses

    for name in ("digits", "charlm"):
        task = get_task(name)
        torch.manual_seed(0)
        model = task.model()
        idx = torch.arange(0, 40, 3)
        got = np.array(example_losses(model, task, idx, batch_size=7))
        x, y = task.data[0][idx], task.data[1][idx]
        with torch.no_grad():
            out = model(x)
        # the oracle: PyTorch's unreduced cross-entropy, averaged over each example's positions
        ce = (
            torch.nn.functional.cross_entropy(
                out.reshape(-1, out.shape[-1]), y.reshape(-1), reduction="none"
            )
            .reshape(len(idx), -1)
            .mean(dim=1)
        )
        np.testing.assert_allclose(got, ce.double().numpy(), rtol=1e-5)
        assert got.mean() == pytest.approx(evaluate(model, task, idx)[0], rel=1e-5)


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_a_task_with_one_split_reports_errors_over_its_examples(tmp_path, vectorize):
    r = adamwkit.tune("digits", folds=1, epochs=2, grid=[0.0, 0.1, 1.0], vectorize=vectorize,
                      out=tmp_path, progress=False, test=False)  # fmt: skip
    s = r.summary
    assert s["uncertainty"] == "examples"
    cands = {c["weight_decay"]: c for c in s["candidates"]}
    assert all(c["sem"] > 0 for c in cands.values())
    TASK_SEMS[vectorize] = {wd: (c["mean"], c["sem"]) for wd, c in cands.items()}
    if len(TASK_SEMS) == 2:  # one model at a time and stacked agree (two implementations)
        for wd, (mean, sem) in TASK_SEMS["off"].items():
            assert TASK_SEMS["on"][wd][0] == pytest.approx(mean, rel=1e-5)
            assert TASK_SEMS["on"][wd][1] == pytest.approx(sem, rel=1e-4)


TASK_SEMS: dict[str, dict[float, tuple[float, float]]] = {}


def test_the_command_line_takes_a_validation_split(tmp_path, capsys):
    SEEN.clear()
    args = ["tune", "test_validation_split:per_example", "--examples", "80", "--lr", "1e-3",
            "--grid", "0,0.1,0.3,1", "--out", str(tmp_path), "--quiet"]  # fmt: skip
    assert main([*args, "--validation", "60:80"]) == 0
    out = capsys.readouterr().out
    assert "one validation split: the standard errors are over its 20 examples" in out
    summary = json.loads(
        (tmp_path / "test_validation_split.per_example" / "summary.json").read_text()
    )
    assert summary["uncertainty"] == "examples" and summary["best_weight_decay"] == 0.3
    # the same split from a text file resumes the study: nothing trains again
    f = tmp_path / "val.txt"
    f.write_text(", ".join(str(i) for i in range(60, 80)))
    calls = []
    import test_validation_split as me

    real = me.per_example
    me.per_example = lambda trial: calls.append(1) or real(trial)
    np.save(tmp_path / "val.npy", np.arange(60, 80))
    try:
        assert main([*args, "--validation", str(f)]) == 0
        assert calls == []
        # a new study trains (the patched objective is the one called) ...
        assert main([*args, "--study", "again", "--validation", "test_validation_split:VAL"]) == 0
        assert len(calls) == 4
        # ... and the same indices from a .npy file resume it
        assert main([*args, "--study", "again", "--validation", str(tmp_path / "val.npy")]) == 0
        assert len(calls) == 4
    finally:
        me.per_example = real
    capsys.readouterr()


VAL = list(range(60, 80))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("70:90", "expected START:STOP with 0 <= START < STOP <= 80"),
        ("nothing-here", "expected START:STOP, a file of indices"),
    ],
)
def test_a_bad_validation_spec_is_one_line_with_exit_2(tmp_path, spec, message):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}
    bad = subprocess.run([sys.executable, "-m", "adamwkit.cli", "tune",
                          "test_validation_split:bowl", "--examples", "80", "--lr", "1e-3",
                          "--validation", spec, "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and message in lines[0], bad.stderr
    assert "--validation" in lines[0]
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        adamwkit.tune(bowl, examples=80, lr=1e-3, validation=spec, out=tmp_path)
