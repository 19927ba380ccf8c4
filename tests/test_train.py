"""fit and the built-in tasks: seeds, early stopping, Datasets, divergence, charlm's text."""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.data import TensorDataset

import tune_tasks
from adamwkit import AdamW, Task, fit, param_groups
from adamwkit.schedules import warmup_cosine
from adamwkit.tasks import cross_entropy
from adamwkit.tasks.charlm import VOCAB, encode, stdlib_docstrings
from adamwkit.train import TrainingDiverged


def test_fit_is_the_hand_written_loop():
    """Oracle: the loop written out with torch and adamwkit's parts, same seeds."""
    task = tune_tasks.tiny()
    idx = torch.arange(0, 96)
    result = fit(task, 0.05, train_idx=idx, seed=3, epochs=2)

    torch.manual_seed(3)
    model = task.model()
    gen = torch.Generator().manual_seed(4)
    opt = AdamW(param_groups(model, weight_decay=0.05), lr=task.lr)
    steps = 2 * math.ceil(96 / task.batch_size)
    sched = warmup_cosine(steps).scheduler(opt)
    x, y = task.data
    for _ in range(2):
        order = idx[torch.randperm(96, generator=gen)]
        for s in range(0, 96, task.batch_size):
            b = order[s : s + task.batch_size]
            loss = cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    for ours, ref in zip(result.model.parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)


def test_same_seed_same_run_and_dataset_equals_tensors():
    task = tune_tasks.tiny()
    a = fit(task, 0.1, val_idx=range(100, 120), seed=1)
    x, y = task.data
    as_dataset = Task(name="ds", model=task.model, data=TensorDataset(x, y), loss=task.loss,
                      epochs=task.epochs, batch_size=task.batch_size, lr=task.lr)  # fmt: skip
    b = fit(as_dataset, 0.1, val_idx=range(100, 120), seed=1)
    assert a.val_losses == b.val_losses
    assert a.train_losses == b.train_losses


def test_early_stopping_restores_the_best_epoch():
    task = tune_tasks.tiny()
    r = fit(task, 0.0, train_idx=range(40), val_idx=range(40, 120), epochs=60, lr=0.05,
            patience=3)  # fmt: skip
    assert r.stopped_early and r.epochs < 60
    assert r.best_epoch is not None and r.val_loss == min(r.val_losses)
    from adamwkit.train import evaluate

    assert evaluate(r.model, task, range(40, 120))[0] == pytest.approx(r.val_loss)


def test_divergence_is_reported():
    with pytest.raises(TrainingDiverged, match="became"):
        fit(tune_tasks.tiny(), 1e30, epochs=2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"weight_decay": -1}, r"weight_decay=-1 is invalid"),
        ({"lr": 0}, r"lr=0 is invalid"),
        ({"epochs": 0}, r"epochs=0 is invalid"),
        ({"patience": 2}, r"patience needs val_idx"),
        ({"train_idx": [500]}, r"train_idx is invalid: expected indices in \[0, 119\]"),
        ({"val_idx": []}, r"val_idx is empty"),
        ({"schedule": "step"}, r"schedule='step' is invalid"),
    ],
)
def test_fit_bad_input(kwargs, match):
    args = {"weight_decay": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        fit(tune_tasks.tiny(), **args)


def test_task_validation():
    task = tune_tasks.tiny()
    x, y = task.data
    with pytest.raises(ValueError, match="labels has 3 entries: expected one per example"):
        Task(name="t", model=task.model, data=(x, y), loss=task.loss, labels=[0, 1, 2])
    with pytest.raises(ValueError, match="inputs have 120 examples but targets 7"):
        Task(name="t", model=task.model, data=(x, y[:7]), loss=task.loss)
    with pytest.raises(ValueError, match="test_fraction=1.0 is invalid"):
        Task(name="t", model=task.model, data=(x, y), loss=task.loss, test_fraction=1.0)


def test_stdlib_docstrings_are_read_without_importing():
    import sys

    before = set(sys.modules)
    text = stdlib_docstrings(max_chars=20_000)
    assert len(text) == 20_000
    assert "antigravity" not in set(sys.modules) - before  # nothing was imported
    ids = encode("a\n\u00e9")
    assert [VOCAB[i] for i in ids] == ["a", "\n", "?"]


def test_charlm_trains(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    from adamwkit.tasks.charlm import charlm_task

    task = charlm_task(n_examples=64)
    assert any(tmp_path.rglob("stdlib-docstrings-*.txt"))  # cached for next time
    r = fit(task, 0.1, train_idx=range(48), val_idx=range(48, 64), epochs=2, batch_size=16)
    assert r.train_losses[-1] < math.log(len(VOCAB))  # better than uniform
    assert math.isfinite(r.val_loss)
