"""tune on objectives: the user's loop, a Hugging Face Trainer, a LightningModule.

Each set-up tunes end to end from the CLI and from the API: a failing candidate fails with
its traceback while the study goes on, a rerun retries it and trains nothing else (the
objective's calls are counted), and the report draws the learning curves the objective
reported.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import objectives
from adamwkit import AdamW, Trial, param_groups, tune
from adamwkit.cli import main
from adamwkit.tuning.objective import outcome_of

TESTS = Path(__file__).parent
ROOT = TESTS.parent

SETUPS = {
    # name: (examples, lr, batch size, epochs)
    "plain": (500, 3e-3, 32, 3),
    "trainer": (192, 1e-3, 16, 1),
    "lightning": (500, 3e-3, 32, 2),
}
GRID = [0.0, 0.1, 1.0]
FOLDS = 2


def calls(log: Path) -> list[tuple[float, str]]:
    if not log.exists():
        return []
    return [(float(w), f) for _, w, f in (line.split() for line in log.read_text().splitlines())]


def cli(setup: str, out: Path, *extra: str) -> list[str]:
    n, lr, bs, epochs = SETUPS[setup]
    return [sys.executable, "-m", "adamwkit.cli", "tune", f"objectives:{setup}", "--examples",
            str(n), "--lr", repr(lr), "--batch-size", str(bs), "--epochs", str(epochs),
            "--grid", ",".join(map(str, GRID)), "--folds", str(FOLDS), "--out", str(out),
            "--quiet", "--no-test", "--json", "--extend", "0", *extra]  # fmt: skip


def check_first_run(summary: dict, run: Path, epochs: int) -> None:
    states = {c["weight_decay"]: c for c in summary["candidates"]}
    assert states[0.1]["state"] == "failed"
    assert "RuntimeError: injected failure at weight decay 0.1" in states[0.1]["reason"]
    for wd in (0.0, 1.0):
        assert states[wd]["state"] == "complete"
        curves = states[wd]["fold_curves"]
        assert sorted(curves) == ["0", "1"] and all(len(c) >= epochs for c in curves.values())
    assert summary["best_weight_decay"] in (0.0, 1.0)
    assert (run / "learning_curves.png").read_bytes().startswith(b"\x89PNG")
    assert "Learning curves" in (run / "report.html").read_text()


@pytest.mark.parametrize("setup", list(SETUPS))
def test_cli_tunes_resumes_and_retries_a_failed_candidate(tmp_path, setup):
    log = tmp_path / "calls.log"
    env = {**os.environ, "ADAMWKIT_TEST_CALL_LOG": str(log), "ADAMWKIT_TEST_FAIL_WD": "0.1"}
    first = subprocess.run(cli(setup, tmp_path), cwd=TESTS, env=env, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert "Traceback" in first.stderr and "injected failure" in first.stderr
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    check_first_run(summary, tmp_path / f"objectives.{setup}", SETUPS[setup][3])
    ran = calls(log)
    assert len(ran) == len(GRID) * FOLDS - 1  # the failing candidate stopped at its first fold

    del env["ADAMWKIT_TEST_FAIL_WD"]
    log.unlink()
    second = subprocess.run(cli(setup, tmp_path), cwd=TESTS, env=env, capture_output=True,
                            text=True, timeout=600)  # fmt: skip
    assert second.returncode == 0, second.stderr
    assert sorted(calls(log)) == [(0.1, "0"), (0.1, "1")]  # finished folds: 0 calls
    summary = json.loads(second.stdout.strip().splitlines()[-1])
    assert all(c["state"] == "complete" for c in summary["candidates"])


@pytest.mark.parametrize("setup", list(SETUPS))
def test_api_tunes_resumes_and_retries_a_failed_candidate(tmp_path, monkeypatch, setup):
    n, lr, bs, epochs = SETUPS[setup]
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ADAMWKIT_TEST_CALL_LOG", str(log))
    monkeypatch.setenv("ADAMWKIT_TEST_FAIL_WD", "0.1")
    refits = setup == "plain"
    kw = {"examples": n, "lr": lr, "batch_size": bs, "epochs": epochs, "grid": GRID,
          "folds": FOLDS, "out": tmp_path, "progress": False, "test": refits,
          "extend": 0}  # fmt: skip
    objective = getattr(objectives, setup)
    first = tune(objective, **kw)
    check_first_run(first.summary, first.run_dir, epochs)
    if refits:  # the objective is called on the whole pool, scored on the test split
        test = first.summary["test"]
        assert {"best", "one_se", "zero", "torch_default"} <= set(test)
        assert all(v["loss"] > 0 for v in test.values())
        assert sum(1 for _, f in calls(log) if f == "None") == len(
            {v["weight_decay"] for v in test.values()}
        )
    monkeypatch.delenv("ADAMWKIT_TEST_FAIL_WD")
    log.unlink()
    second = tune(objective, **kw)
    assert sorted(c for c in calls(log) if c[1] != "None") == [(0.1, "0"), (0.1, "1")]
    assert all(c["state"] == "complete" for c in second.summary["candidates"])
    log.unlink()
    tune(objective, **kw)
    assert not [c for c in calls(log) if c[1] != "None"]  # a finished study trains nothing


@pytest.mark.parametrize("name", ["plain_loop", "hf_trainer", "lightning_module"])
def test_examples_run_as_scripts(tmp_path, name):
    proc = subprocess.run([sys.executable, f"examples/{name}.py", "--out", str(tmp_path),
                           "--folds", "2"], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Best weight decay" in proc.stdout
    if name == "lightning_module":  # the logged accuracy is the table's metric column
        summary = json.loads((tmp_path / "lightning-module" / "summary.json").read_text())
        assert summary["metric_name"] == "val_acc"
        assert all(0 <= c["metric"] <= 1 for c in summary["candidates"])
    (run,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert (run / "report.html").exists() and (run / "learning_curves.png").exists()


def test_a_nan_loss_fails_its_candidate_and_the_study_goes_on(tmp_path):
    result = tune(objectives.nan_at_large_decay, examples=60, lr=1e-3, grid=[0.0, 0.3, 1.0],
                  folds=2, out=tmp_path, progress=False, test=False)  # fmt: skip
    states = {c["weight_decay"]: c for c in result.summary["candidates"]}
    assert (
        states[1.0]["state"] == "failed" and states[1.0]["reason"] == "the validation loss is nan"
    )
    assert result.best_weight_decay == 0.3  # oracle: the loss is |wd - 0.3| + 0.1 * fold


def test_workers_share_the_study_in_two_processes(tmp_path, monkeypatch):
    log = tmp_path / "calls.log"
    monkeypatch.setenv("ADAMWKIT_TEST_CALL_LOG", str(log))
    monkeypatch.setenv("ADAMWKIT_TEST_SLEEP", "0.4")  # the second process starts in seconds
    grid = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5]
    result = tune(objectives.nan_at_large_decay, examples=60, lr=1e-3, grid=grid, folds=3,
                  out=tmp_path, progress=False, test=False, workers=2)  # fmt: skip
    lines = [line.split() for line in log.read_text().splitlines()]
    assert sorted((float(w), f) for _, w, f in lines) == sorted(
        (w, str(f)) for w in grid for f in range(3)
    )  # every (candidate, fold) once
    assert len({pid for pid, _, _ in lines}) == 2
    assert result.best_weight_decay == 0.3


def test_workers_need_an_objective_they_can_import(tmp_path):
    def local(trial: Trial) -> float:
        return 1.0

    with pytest.raises(ValueError, match="workers > 1 starts worker processes, which must load"):
        tune(local, examples=10, lr=1e-3, grid=[0.0], folds=2, out=tmp_path, workers=2,
             progress=False)  # fmt: skip


def test_trial_optimizer_is_adamw_over_param_groups():
    """Oracle: the optimizer built by hand from param_groups and AdamW."""
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    trial = Trial(weight_decay=0.3, lr=2e-3, decay_scale="schedule", fold=0,
                  train_idx=torch.arange(4), val_idx=torch.arange(4, 6), seed=0)  # fmt: skip
    opt = trial.optimizer(model, betas=(0.8, 0.99))
    ref = AdamW(param_groups(model, 0.3), lr=2e-3, decay_scale="schedule", betas=(0.8, 0.99))
    assert isinstance(opt, AdamW)
    mine = [(g["weight_decay"], g["lr"], g["decay_scale"], g["betas"], len(g["params"]))
            for g in opt.param_groups]  # fmt: skip
    theirs = [(g["weight_decay"], g["lr"], g["decay_scale"], g["betas"], len(g["params"]))
              for g in ref.param_groups]  # fmt: skip
    assert mine == theirs
    with pytest.raises(ValueError, match=r"trial.train_data needs tune\(data=...\)"):
        _ = trial.train_data
    data = list(range(10))
    with_data = Trial(0.0, 1e-3, "lr", 0, torch.tensor([1, 3]), torch.tensor([2]), 0, data=data)
    assert list(with_data.train_data) == [1, 3] and list(with_data.val_data) == [2]
    with_data.report(0.5, 3)
    assert with_data.curve == [(3, 0.5)]


@pytest.mark.parametrize(
    ("value", "loss", "metric", "reason"),
    [
        (0.25, 0.25, None, ""),
        ({"loss": 0.5, "accuracy": 0.9}, 0.5, 0.9, ""),
        ({"accuracy": 0.9}, None, None, "without 'loss'"),
        (float("inf"), None, None, "the validation loss is inf"),
        ("high", None, None, "returned str, not a number"),
    ],
)
def test_what_an_objective_may_return(value, loss, metric, reason):
    out = outcome_of(value)
    assert (out.loss, out.metric) == (loss, metric)
    assert reason in out.reason and (out.ok == (not reason))


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["objectives:plain", "--lr", "1e-3", "--grid", "0"], "--examples is needed with an"),
        (["objectives:plain", "--examples", "500", "--grid", "0"], "--lr is needed"),
        (["objectives:plain", "--examples", "500", "--lr", "1e-3"], "--grid is needed with an"),
        (["objectives:plain", "--examples", "1", "--lr", "1e-3"], "--examples=1 is invalid"),
        (["digits", "--examples", "10"], "examples is invalid with task='digits'"),
        (["objectives:plain", "--examples", "500", "--lr", "1e-3", "--grid", "0",
          "--vectorize", "on"], "vectorize='on' is invalid"),
        (["digits", "--device", "tpu"], "--device='tpu' is invalid: expected auto, cpu, cuda"),
        (["digits", "--test-fraction", "1"], "--test-fraction=1 is invalid"),
    ],
)  # fmt: skip
def test_bad_objective_input_exits_2_with_one_line(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(TESTS)
    code = main(["tune", *argv, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_cuda_without_a_gpu_exits_2(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(["tune", "digits", "--device", "cuda", "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and "--device='cuda' is invalid: this machine has no CUDA device" in err


def test_an_objective_pickles_by_name():
    assert pickle.loads(pickle.dumps(objectives.plain)) is objectives.plain
