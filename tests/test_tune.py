"""tune: CV numbers against a hand-rolled scikit-learn loop, resumption, reports, bad input."""

from __future__ import annotations

import base64
import itertools
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from sklearn.model_selection import StratifiedKFold, train_test_split

import tune_tasks
from adamwkit import ObjectiveFailed, Task, fit, tune
from adamwkit._io import atomic_write
from adamwkit.cli import main
from adamwkit.train import evaluate
from adamwkit.tuning.cv import Candidate, default_grid, summarize

TESTS = Path(__file__).parent


@pytest.mark.parametrize(("vectorize", "rel"), [("off", 1e-12), ("on", 1e-5)])
def test_cv_numbers_equal_a_hand_rolled_kfold_loop(tmp_path, vectorize, rel):
    """Oracle: scikit-learn's train_test_split and StratifiedKFold with fit, same seeds
    (exact one run at a time; stacked, batched products round differently)."""
    task = tune_tasks.tiny()
    result = tune(task, folds=3, grid=[0.0, 0.5], out=tmp_path, seed=7, test=False,
                  progress=False, vectorize=vectorize)  # fmt: skip
    y = task.labels.numpy()
    pool, _ = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=7)
    splits = StratifiedKFold(3, shuffle=True, random_state=7).split(pool, y[pool])
    folds = [(pool[a], pool[b]) for a, b in splits]
    for cand in result.summary["candidates"]:
        wd = cand["weight_decay"]
        expected = [
            fit(task, wd, train_idx=tr, val_idx=va, seed=7 + f).val_loss
            for f, (tr, va) in enumerate(folds)
        ]
        assert cand["fold_losses"] == pytest.approx(expected, rel=rel)
        assert cand["mean"] == pytest.approx(np.mean(expected), rel=rel)
        sem = np.std(expected, ddof=1) / math.sqrt(3)
        assert cand["sem"] == pytest.approx(sem, rel=1e-9 if vectorize == "off" else 1e-3)


def test_summary_fields_report_and_plot(tmp_path):
    result = tune(tune_tasks.tiny(), folds=3, grid=[0.0, 0.05, 0.5], out=tmp_path,
                  progress=False)  # fmt: skip
    run = tmp_path / "tiny"
    summary = json.loads((run / "summary.json").read_text())
    for key in ("best_weight_decay", "one_se_weight_decay", "decay_scale",
                "suggested_weight_decay", "candidates", "flat", "test"):  # fmt: skip
        assert key in summary
    for c in summary["candidates"]:
        assert {"weight_decay", "tau_epoch", "mean", "sem", "fold_losses", "paired_diff",
                "paired_sem"} <= set(c)  # fmt: skip
    assert set(summary["test"]) == {"best", "one_se", "zero", "torch_default"}
    assert summary["test"]["torch_default"]["weight_decay"] == 0.01
    png = (run / "cv_curve.png").read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    page = (run / "report.html").read_text()
    embedded = re.search(r'src="data:image/png;base64,([^"]+)"', page)
    assert embedded and base64.b64decode(embedded.group(1)) == png
    # titled by the study, a header cell for every column, the answer on top, settings
    assert "<title>adamwkit tune: tiny</title>" in page
    head = page.index('<div class="answer">')
    assert head < page.index("<h2>Candidates</h2>")
    assert "AdamW(param_groups(model, weight_decay=" in page[head : head + 2000]
    table = page[page.index("<h2>Candidates</h2>") : page.index("<h2>Held-out test split</h2>")]
    header = re.search(r"<tr>(.*?)</tr>", table).group(1)
    assert re.findall(r"<th>(.*?)</th>", header)[-1] == "state" and "<th></th>" not in header
    assert "<th>created</th>" in page and "<th>adamwkit</th>" in page
    assert "<th>device</th><td>cpu</td>" in page and result.summary["seconds"] > 0
    complete = result.summary["candidates"]
    lowest = min(complete, key=lambda c: sum(c["fold_losses"]) / len(c["fold_losses"]))
    assert result.best_weight_decay == lowest["weight_decay"]


def test_statistics_by_hand():
    a = Candidate(0.0, 1e-3, {0: 1.0, 1: 1.2, 2: 1.1})
    b = Candidate(0.1, 1e-3, {0: 0.9, 1: 1.0, 2: 1.05})
    c = Candidate(1.0, 1e-3, {0: 0.95, 1: 1.06, 2: 1.07})
    s = summarize([a, b, c], folds=3)
    assert s.best is b
    assert b.mean == pytest.approx((0.9 + 1.0 + 1.05) / 3)
    assert b.sem == pytest.approx(np.std([0.9, 1.0, 1.05], ddof=1) / math.sqrt(3))
    d = np.array([0.05, 0.06, 0.02])  # c - b, fold by fold
    assert c.paired_diff == pytest.approx(d.mean())
    assert c.paired_sem == pytest.approx(d.std(ddof=1) / math.sqrt(3))
    # c's mean (1.0267) is within b's unpaired SE (0.9833 + 0.0441), but fold by fold it is
    # worse by 0.043 +- 0.012 (3.6 paired SEs): the paired one-SE rule keeps b.
    assert s.one_se is b
    # a - b = (0.1, 0.2, 0.05): 0.117 +- 0.044 is more than two paired SEs: not flat.
    assert not s.flat


def test_flat_when_no_candidate_differs_by_two_paired_ses():
    a = Candidate(0.0, 1e-3, {0: 1.0, 1: 1.2, 2: 1.1})
    b = Candidate(0.1, 1e-3, {0: 1.01, 1: 1.18, 2: 1.12})
    assert summarize([a, b], folds=3).flat


def test_default_grid_spans_the_timescale_window_at_2x():
    lr, bs, n, epochs = 1e-3, 32, 320, 100
    grid = default_grid(lr=lr, batch_size=bs, n_train=n, epochs=epochs, decay_scale="lr",
                        anchor=10.0)  # fmt: skip
    assert grid[0] == 0.0 and 10.0 in grid
    positive = grid[1:]
    assert all(b / a == pytest.approx(2.0, rel=1e-5) for a, b in itertools.pairwise(positive))
    taus = [bs / (lr * w * n) for w in positive]  # tau_epoch = B / (lr * wd * N)
    assert min(taus) <= 0.25 < min(taus) * 2 and max(taus) >= 4 * epochs > max(taus) / 2


def test_atomic_write_keeps_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    target = tmp_path / "summary.json"
    atomic_write(target, "old")

    def boom(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write(target, "new")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_a_diverging_candidate_fails_and_the_study_goes_on(tmp_path):
    result = tune(tune_tasks.tiny(), folds=2, grid=[0.0, 1e30], out=tmp_path, test=False,
                  progress=False, extend=0)  # fmt: skip
    states = {c["weight_decay"]: c for c in result.summary["candidates"]}
    assert states[0.0]["state"] == "complete"
    assert states[1e30]["state"] == "failed"
    assert "became" in states[1e30]["reason"] or "validation loss" in states[1e30]["reason"]
    assert result.summary["best_weight_decay"] == 0.0


def _journal_trials(run: Path, study: str) -> list[optuna.trial.FrozenTrial]:
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    st = optuna.load_study(
        study_name=study, storage=JournalStorage(JournalFileBackend(str(run / "study.journal")))
    )
    return st.get_trials(deepcopy=False)


def _journal_folds(run: Path, study: str) -> set[tuple[float, int]]:
    return {
        (t.params["weight_decay"], step)
        for t in _journal_trials(run, study)
        if "weight_decay" in t.params
        for step in t.intermediate_values
    }


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "adamwkit.cli", "tune", "tune_tasks:tiny", *args]


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_killed_study_resumes_without_repeating_a_fold(tmp_path, monkeypatch, vectorize):
    """Kill -9 mid-study, rerun: the rerun trains exactly the folds with no recorded loss.
    Stacked, a memory cap of three members makes each population one candidate's folds."""
    grid, folds = ["0", "0.01", "0.1", "1"], 3
    args = ["--grid", ",".join(grid), "--folds", str(folds), "--out", str(tmp_path),
            "--no-test", "--quiet", "--vectorize", vectorize]  # fmt: skip
    if vectorize == "on":
        from adamwkit.train.population import member_bytes

        monkeypatch.setenv("ADAMWKIT_TEST_SLOW", "0.02")  # the model the workers build
        task = tune_tasks.tiny()
        args += ["--max-memory", repr(3.5 * member_bytes(task, task.batch_size) / 2**30)]
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    env = {**os.environ, "ADAMWKIT_TEST_FIT_LOG": str(first_log), "ADAMWKIT_TEST_SLOW": "0.02"}
    proc = subprocess.Popen(_cli(*args), cwd=TESTS, env=env)
    run = tmp_path / "tiny"
    deadline = time.monotonic() + 120
    done: set[tuple[float, int]] = set()
    while time.monotonic() < deadline and len(done) < 5:
        time.sleep(0.2)
        if (run / "study.journal").exists():
            done = _journal_folds(run, "tiny")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _journal_folds(run, "tiny")
    assert 5 <= len(before) < len(grid) * folds
    env = {**os.environ, "ADAMWKIT_TEST_FIT_LOG": str(second_log)}
    resumed = subprocess.run(_cli(*args, "--json"), cwd=TESTS, env=env, capture_output=True,
                             text=True, timeout=300)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert all(c["state"] == "complete" for c in summary["candidates"])
    assert all(len(c["fold_losses"]) == folds for c in summary["candidates"])
    probes = 1 if vectorize == "on" else 0  # tune builds one model to inspect it
    trained_after = len(second_log.read_text().splitlines()) - probes
    assert trained_after == len(grid) * folds - len(before)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["no_such_task"], "task='no_such_task' is invalid: expected a built-in task"),
        (["no_such_module:task"], "importing 'no_such_module' failed"),
        (["tune_tasks:nothing"], "has no attribute 'nothing'"),
        (["tune_tasks:tiny", "--folds", "500"], "--folds=500 is invalid: expected at most 96"),
        (["tune_tasks:tiny", "--folds", "0"], "--folds=0 is invalid"),
        (["tune_tasks:tiny", "--epochs", "0"], "--epochs=0 is invalid"),
        (["tune_tasks:tiny", "--workers", "0"], "--workers=0 is invalid"),
        (["tune_tasks:tiny", "--grid", ""], "--grid=[] is invalid"),
        (["tune_tasks:tiny", "--grid", "0.1,-1"], "--grid=[0.1, -1] is invalid"),
        (["tune_tasks:tiny", "--grid", "a,b"], "--grid='a,b' is invalid"),
        (["tune_tasks:tiny", "--lr-grid", "0"], "--lr-grid=[0] is invalid"),
        (["tune_tasks:tiny", "--study", "../x"], "--study='../x' is invalid"),
        (["tune_tasks:tiny", "--sampler", "tpe", "--grid", "0"], "expected at least one"),
        (["tune_tasks:tiny", "--sampler", "tpe", "--lr-grid", "0.1"], "goes with --sampler"),
        (["tune_tasks:tiny", "--search-lr"], "--search-lr needs --sampler"),
        (["tune_tasks:tiny", "--batch-size", "100"], "expected at most"),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, monkeypatch, tmp_path, argv, message):
    monkeypatch.chdir(TESTS)
    code = main(["tune", *argv, "--out", str(tmp_path), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert message in err


def test_unreachable_storage_fails_fast_naming_the_host(capsys, tmp_path, monkeypatch):
    """Fast: one connection attempt (retries are for two workers creating the tables at
    once, not for a server that is not there)."""
    from adamwkit.tuning import study as study_mod

    attempts: list[str] = []
    real = study_mod.RetryingStorage

    def counted(url: str, **kwargs: object) -> object:
        attempts.append(url)
        return real(url, **kwargs)

    monkeypatch.setattr(study_mod, "RetryingStorage", counted)
    url = "postgresql://user:secret@127.0.0.1:1/nowhere"
    code = main(["tune", "digits", "--storage", url, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and len(attempts) == 1
    assert "127.0.0.1:1" in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1


def test_joint_lr_grid(tmp_path):
    result = tune(tune_tasks.tiny(), folds=2, grid=[0.0, 0.1], lr_grid=[0.005, 0.02],
                  out=tmp_path, test=False, progress=False, extend=0)  # fmt: skip
    pairs = {(c["lr"], c["weight_decay"]) for c in result.summary["candidates"]}
    assert pairs == {(0.005, 0.0), (0.005, 0.1), (0.02, 0.0), (0.02, 0.1)}
    best = min(result.summary["candidates"], key=lambda c: c["mean"])
    assert (result.summary["best_lr"], result.best_weight_decay) == (
        best["lr"],
        best["weight_decay"],
    )


def test_tpe_search_starts_from_the_suggestion(tmp_path):
    result = tune(tune_tasks.tiny(), folds=2, sampler="tpe", trials=3, out=tmp_path,
                  test=False, progress=False)  # fmt: skip
    cands = result.summary["candidates"]
    assert len(cands) == 3 and all(c["state"] == "complete" for c in cands)
    suggested = float(f"{result.summary['suggested_weight_decay']:.6g}")
    assert suggested in [c["weight_decay"] for c in cands]
    lo, hi = result.summary["settings"]["range"]
    assert all(lo <= c["weight_decay"] <= hi for c in cands)


def test_tpe_workers_do_not_repeat_candidates(tmp_path):
    # Two searches on one study (one after the other here) must not propose the same values.
    for _ in range(2):
        tune(tune_tasks.tiny(), folds=2, sampler="tpe", trials=3, out=tmp_path, test=False,
             progress=False)  # fmt: skip
    result = tune(tune_tasks.tiny(), folds=2, sampler="tpe", trials=3, out=tmp_path,
                  test=False, progress=False)  # fmt: skip
    values = [c["weight_decay"] for c in result.summary["candidates"]]
    assert len(values) == len(set(values)) == 3


def test_tau_epoch_uses_each_candidates_lr(tmp_path):
    # Independent convention: tau_epoch = B / (wd_ind * N), whatever the lr.
    result = tune(tune_tasks.tiny(), folds=2, grid=[0.01], lr_grid=[0.005, 0.02],
                  decay_scale="schedule", out=tmp_path, test=False, progress=False)  # fmt: skip
    n = result.summary["n_train"]
    for c in result.summary["candidates"]:
        assert c["tau_epoch"] == pytest.approx(16 / (0.01 * n))


def test_a_crashing_task_shows_its_traceback(tmp_path):
    """A bug in the task's code is the user's to see: every run fails with its reason, the
    first traceback is printed once, and with no candidate left the command exits 1 with
    the error chained (not one line with exit 2, which is for bad arguments)."""
    env = {**os.environ, "ADAMWKIT_TEST_FIT_LOG": "/nonexistent-dir/log"}  # model() raises
    args = ("--grid", "0,0.1", "--folds", "2", "--out", str(tmp_path), "--quiet", "--no-test",
            "--vectorize", "off")  # fmt: skip
    proc = subprocess.run(_cli(*args), cwd=TESTS, env=env, capture_output=True, text=True,
                          timeout=120)  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "tune_tasks.py" in proc.stderr and "FileNotFoundError" in proc.stderr
    assert proc.stderr.count("the objective raised") == 1  # later repeats take one line
    assert "ObjectiveFailed: no candidate finished" in proc.stderr
    reasons = {
        t.user_attrs.get("fail_reason", "") for t in _journal_trials(tmp_path / "tiny", "tiny")
    }
    assert all(r.startswith("FileNotFoundError") for r in reasons)


def test_a_model_that_fails_to_build_stops_with_its_traceback(tmp_path, monkeypatch):
    """Before any run, tune builds the model once to see whether it stacks: a bug there
    propagates unchanged."""
    monkeypatch.setenv("ADAMWKIT_TEST_FIT_LOG", "/nonexistent-dir/log")
    with pytest.raises(FileNotFoundError):
        tune(tune_tasks.tiny(), folds=2, grid=[0.0], out=tmp_path, test=False, progress=False)


def test_wilcoxon_pruner_stops_a_hopeless_candidate(tmp_path):
    # wd 300 at lr 0.01 shrinks every weight 3% a step: far worse on every fold.
    result = tune(tune_tasks.tiny(), folds=5, grid=[0.0, 300.0], prune=True, out=tmp_path,
                  test=False, progress=False, extend=0)  # fmt: skip
    states = {c["weight_decay"]: c for c in result.summary["candidates"]}
    assert states[0.0]["state"] == "complete"
    assert states[300.0]["state"] == "pruned"
    assert len([v for v in states[300.0]["fold_losses"] if v is not None]) < 5
    assert not result.flat  # a pruned candidate was significantly worse


def test_rerun_with_other_settings_is_refused(tmp_path):
    tune(tune_tasks.tiny(), folds=2, grid=[0.0], out=tmp_path, test=False, progress=False)
    with pytest.raises(ValueError, match=r"was made with folds=2, not 3"):
        tune(tune_tasks.tiny(), folds=3, grid=[0.0], out=tmp_path, test=False, progress=False)


def test_vectorized_tune_gives_the_sequential_numbers(tmp_path):
    """Oracle: the sequential path (one fit per candidate and fold)."""
    kw = {"folds": 3, "grid": [0.0, 0.05, 0.5, 1e30], "test": False, "progress": False}
    seq = tune(tune_tasks.tiny(), vectorize="off", out=tmp_path / "seq", **kw)
    vec = tune(tune_tasks.tiny(), vectorize="on", out=tmp_path / "vec", **kw)
    assert vec.summary["vectorize"].startswith("on") and seq.summary["vectorize"].startswith("off")
    for a, b in zip(seq.summary["candidates"], vec.summary["candidates"], strict=True):
        assert a["weight_decay"] == b["weight_decay"] and a["state"] == b["state"]
        if a["state"] == "complete":
            assert b["fold_losses"] == pytest.approx(a["fold_losses"], rel=1e-5)
    assert vec.best_weight_decay == seq.best_weight_decay


@pytest.mark.parametrize(("members", "largest"), [(2.5, 2), (None, 6)], ids=["capped", "free"])
def test_memory_cap_splits_the_population(tmp_path, monkeypatch, members, largest):
    """The populations actually trained are counted: with room for 2.5 members they hold
    at most two, without a cap all six runs (3 folds x 2 candidates) go together."""
    from adamwkit.train.population import member_bytes
    from adamwkit.tuning.objective import TaskObjective

    sizes: list[int] = []
    real = TaskObjective.population

    def counted(self, trials, *args, **kwargs):
        sizes.append(len(trials))
        return real(self, trials, *args, **kwargs)

    monkeypatch.setattr(TaskObjective, "population", counted)
    task = tune_tasks.tiny()
    cap = None if members is None else members * member_bytes(task, task.batch_size) / 2**30
    result = tune(task, folds=3, grid=[0.0, 0.05], max_memory=cap, out=tmp_path, test=False,
                  progress=False, vectorize="on")  # fmt: skip
    assert all(c["state"] == "complete" for c in result.summary["candidates"])
    assert sum(sizes) == 6 and max(sizes) == largest


def test_batchnorm_task_falls_back_or_refuses(tmp_path):
    task = tune_tasks.tiny()
    x, y = task.data
    bn = Task(name="bn", model=lambda: torch.nn.Sequential(torch.nn.Linear(8, 3),
              torch.nn.BatchNorm1d(3)), data=(x, y), loss=task.loss, labels=y, epochs=1,
              batch_size=16)  # fmt: skip
    result = tune(bn, folds=2, grid=[0.0], out=tmp_path, test=False, progress=False)
    assert result.summary["vectorize"].startswith("off (BatchNorm1d at '1'")
    with pytest.raises(ValueError, match="vectorize='on' is invalid for task='bn'"):
        tune(bn, folds=2, grid=[0.0], out=tmp_path / "b", vectorize="on", test=False,
             progress=False)  # fmt: skip


class _DataDependent(torch.nn.Module):
    """Python control flow on a tensor's value: torch.func.vmap cannot run it."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lin(x) if x.sum().item() > -1e9 else -self.lin(x)


class _Attention(torch.nn.Module):
    """Scaled dot-product attention: torch.func runs it member by member on CPU."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.out = torch.nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.lin(x).view(-1, 1, 2, 4)  # (batch, heads, length, width)
        attended = torch.nn.functional.scaled_dot_product_attention(h, h, h)
        return self.out(attended.reshape(-1, 8))


def test_auto_falls_back_for_a_model_vmap_cannot_run(tmp_path):
    """Oracle: the sequential path; the fallback names why. Forced on, the runs fail with
    vmap's error."""
    task = tune_tasks.tiny()
    x, y = task.data
    odd = Task(name="odd", model=_DataDependent, data=(x, y), loss=task.loss, labels=y,
               epochs=1, batch_size=16)  # fmt: skip
    kw = {"folds": 2, "grid": [0.0, 0.1], "test": False, "progress": False}
    auto = tune(odd, out=tmp_path / "auto", **kw)
    assert auto.summary["vectorize"].startswith("off (the model fails under torch.func.vmap")
    seq = tune(odd, out=tmp_path / "off", vectorize="off", **kw)
    for a, b in zip(auto.summary["candidates"], seq.summary["candidates"], strict=True):
        assert a["fold_losses"] == b["fold_losses"]
    with pytest.raises(ObjectiveFailed) as caught:
        tune(odd, out=tmp_path / "on", vectorize="on", **kw)
    assert "vmap" in str(caught.value.__cause__)


@pytest.mark.parametrize(("stacked_s", "mode"), [(0.5, "on"), (8.0, "off")])
def test_auto_measures_both_paths_and_records_the_ratio(tmp_path, monkeypatch, stacked_s, mode):
    """Scaled dot-product attention has no batching rule on CPU. The measured times are
    set (1 s a step alone, ``stacked_s`` for the four stacked), so each path is taken
    whatever the machine's load: ratio 4 x 1 / stacked_s; the numbers are the sequential
    ones either way."""
    from adamwkit.tuning.objective import TaskObjective

    monkeypatch.setattr(TaskObjective, "measure", lambda self, trials: (1.0, stacked_s, []))
    task = tune_tasks.tiny()
    x, y = task.data
    odd = Task(name="attn", model=_Attention, data=(x, y), loss=task.loss, labels=y,
               epochs=1, batch_size=16)  # fmt: skip
    kw = {"folds": 2, "grid": [0.0, 0.1], "test": False, "progress": False}
    auto = tune(odd, out=tmp_path / "auto", **kw)
    stacking = auto.summary["stacking"]
    assert stacking["ratio"] == pytest.approx(4 / stacked_s) and stacking["members"] == 4
    assert stacking["mode"] == mode and auto.summary["vectorize"].startswith(mode)
    seq = tune(odd, out=tmp_path / "off", vectorize="off", **kw)
    for a, b in zip(auto.summary["candidates"], seq.summary["candidates"], strict=True):
        assert a["fold_losses"] == pytest.approx(b["fold_losses"], rel=1e-5)


def _item_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """A loss with Python control flow on a value: vmap cannot run it."""
    loss = torch.nn.functional.cross_entropy(outputs, targets)
    return loss if loss.item() >= 0 else -loss


def test_an_mlp_with_a_loss_vmap_cannot_run_falls_back(tmp_path):
    task = tune_tasks.tiny()
    x, y = task.data
    odd = Task(name="odd-loss", model=task.model, data=(x, y), loss=_item_loss, labels=y,
               epochs=1, batch_size=16)  # fmt: skip
    result = tune(odd, folds=2, grid=[0.0], out=tmp_path, test=False, progress=False)
    assert result.summary["vectorize"].startswith("off (the model fails under torch.func.vmap")


def test_a_failing_population_fails_every_claimed_trial_with_the_traceback(tmp_path):
    """Regression: failing a candidate once per fold used to leave the batch running."""
    proc = subprocess.run(_cli("--grid", "0,0.1", "--folds", "2", "--out", str(tmp_path),
                               "--no-test", "--quiet", "--vectorize", "on"),
                          cwd=TESTS, env={**os.environ, "ADAMWKIT_TEST_FAIL_LOSS": "1"},
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "4 runs trained together: the objective raised" in proc.stderr
    assert "RuntimeError: loss failed" in proc.stderr and "_failing_loss" in proc.stderr
    states = {c.state for c in _journal_trials(tmp_path / "tiny", "tiny")}
    assert states == {optuna.trial.TrialState.FAIL}


@pytest.mark.parametrize(("vectorize", "rel"), [("off", 1e-12), ("on", 1e-5)])
def test_refits_equal_a_hand_written_refit_on_the_test_split(tmp_path, vectorize, rel):
    """Oracle: scikit-learn's train_test_split, fit on the whole pool and evaluate on the
    test split (refits train one at a time, whatever ``vectorize`` says)."""
    task = tune_tasks.tiny()
    result = tune(task, folds=2, grid=[0.0, 0.5], out=tmp_path, seed=7, progress=False,
                  vectorize=vectorize)  # fmt: skip
    y = task.labels.numpy()
    pool, test = train_test_split(np.arange(len(y)), test_size=0.2, stratify=y, random_state=7)
    for label, entry in result.summary["test"].items():
        model = fit(task, entry["weight_decay"], train_idx=pool, seed=7).model
        loss, metric = evaluate(model, task, test)
        assert entry["loss"] == pytest.approx(loss, rel=rel), label
        assert entry["metric"] == pytest.approx(metric, rel=rel), label


def test_auto_measures_on_folds_of_unequal_sizes(tmp_path):
    """96 examples in 5 folds: validation splits of 19 and 20. Regression: the measurement
    stacked them together, failed, and blamed vmap."""
    result = tune(tune_tasks.tiny(), folds=5, grid=[0.0, 0.1], out=tmp_path, test=False,
                  progress=False)  # fmt: skip
    stacking = result.summary["stacking"]
    assert "fails" not in stacking["reason"] and stacking["ratio"] > 0


def test_a_sampler_starts_inside_the_range_given(tmp_path):
    result = tune(tune_tasks.tiny(), folds=2, sampler="tpe", trials=2, grid_min=1e-4,
                  grid_max=1e-3, out=tmp_path, test=False, progress=False)  # fmt: skip
    assert all(1e-4 <= c["weight_decay"] <= 1e-3 for c in result.summary["candidates"])
