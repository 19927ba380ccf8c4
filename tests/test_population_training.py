"""Population training: member i against a standalone fit with the same seed, fold and values."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import tune_tasks
from adamwkit import Task, fit
from adamwkit.tuning.cv import holdout_split, make_folds
from adamwkit.tuning.population import Member, fit_population, vectorize_refusal


def double(task: Task) -> Task:
    x, y = task.data
    return Task(name="tiny64", model=lambda: task.model().double(), data=(x.double(), y),
                loss=task.loss, labels=task.labels, metric=task.metric, epochs=4,
                batch_size=task.batch_size, lr=task.lr)  # fmt: skip


def members_for(task: Task) -> list[Member]:
    pool, _ = holdout_split(len(task), task.label_array(), 0.2, 0)
    folds = make_folds(pool, task.label_array(), 3, 0)
    return [
        Member(wd, lr, torch.as_tensor(folds[f][0]), torch.as_tensor(folds[f][1]), 10 + f)
        for wd in (0.0, 0.1, 3.0)
        for lr in (1e-2, 3e-2)
        for f in range(3)
    ]


@pytest.mark.parametrize("decay_scale", ["lr", "schedule"])
@pytest.mark.parametrize(("make", "rel"), [(double, 1e-9), (lambda t: t, 1e-3)])
def test_member_equals_standalone_fit(make, rel, decay_scale):
    """Oracle: fit, one member at a time (float64: 1e-9 relative; float32: 1e-3)."""
    task = make(tune_tasks.tiny())
    members = members_for(task)
    results = fit_population(task, members, epochs=task.epochs, batch_size=task.batch_size,
                             decay_scale=decay_scale)  # fmt: skip
    for m, r in zip(members, results, strict=True):
        ref = fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
                  seed=m.seed, decay_scale=decay_scale)  # fmt: skip
        assert r.val_losses == pytest.approx(ref.val_losses, rel=rel)
        assert r.val_metrics == pytest.approx(ref.val_metrics, rel=rel)
        assert r.train_losses == pytest.approx(ref.train_losses, rel=max(rel, 1e-6))


def test_a_diverging_member_leaves_the_others_alone():
    task = tune_tasks.tiny()
    members = members_for(task)[:2]
    bad = Member(1e30, 1e-2, members[0].train_idx, members[0].val_idx, members[0].seed)
    results = fit_population(task, [bad, *members], epochs=2, batch_size=16)
    assert "became" in results[0].diverged
    for m, r in zip(members, results[1:], strict=True):
        ref = fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
                  seed=m.seed, epochs=2)  # fmt: skip
        assert r.val_losses == pytest.approx(ref.val_losses, rel=1e-5)


def test_batchnorm_is_refused_by_name():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    assert "BatchNorm1d at '1'" in vectorize_refusal(model)
    task = tune_tasks.tiny()
    x, y = task.data
    bn = Task(name="bn", model=lambda: nn.Sequential(nn.Linear(8, 3), nn.BatchNorm1d(3)),
              data=(x, y), loss=task.loss)  # fmt: skip
    with pytest.raises(ValueError, match="not vectorizable: BatchNorm1d"):
        fit_population(bn, members_for(task)[:1], epochs=1, batch_size=16)
