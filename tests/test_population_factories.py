"""Stacked populations leave the factory's modules alone and keep buffers per member.

A fine-tune factory often loads its pretrained base once and wraps it with fresh adapters
on every call; a population must neither move that base nor change it, nor hold a second
copy of it while it builds the members. A model may also update a buffer in its forward
(a running mean), which each member must keep for itself. Oracle: each member's standalone
:func:`adamwkit.fit`, run before and after the population.
"""

from __future__ import annotations

import gc
import math
import weakref

import pytest
import torch
from torch import nn

from adamwkit import Task, fit, tune
from adamwkit.tasks import cross_entropy
from adamwkit.train.loop import RunSettings
from adamwkit.train.population import Member, StackedEngine, fit_population

torch.manual_seed(123)
BASE = nn.Linear(8, 3).requires_grad_(False)  # "loaded once", shared by every call


class Adapter(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.base = BASE
        self.A = nn.Parameter(torch.randn(2, 8) / math.sqrt(8))
        self.B = nn.Parameter(torch.zeros(3, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.A.t()) @ self.B.t()


class RunningMean(nn.Module):
    """An input normaliser with a running mean (a buffer the forward updates), then an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(8))
        self.body = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return self.body(x - self.mean)


def _task(model) -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 8, generator=g) + 1
    y = (x @ torch.randn(8, 3, generator=g)).argmax(1)
    return Task(name="t", model=model, data=(x, y), loss=cross_entropy, labels=y, epochs=2,
                batch_size=16, lr=1e-2)  # fmt: skip


def _members() -> list[Member]:
    idx = torch.arange(60)
    return [Member(wd, 1e-2, idx[:40], idx[40:], s) for wd in (0.0, 0.3) for s in (0, 1)]


def _alone(task: Task, m: Member) -> list[float]:
    return fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
               seed=m.seed).val_losses  # fmt: skip


def test_a_base_the_factory_holds_is_left_where_it_was_and_unchanged():
    task = _task(Adapter)
    members = _members()
    before = [_alone(task, m) for m in members]
    weight = BASE.weight.detach().clone()
    results = fit_population(task, members, epochs=2, batch_size=16)
    assert BASE.weight.device.type == "cpu" and torch.equal(BASE.weight, weight)
    for m, r, want in zip(members, results, before, strict=True):
        assert r.val_losses == pytest.approx(want, rel=1e-5)
        assert _alone(task, m) == want  # the factory still builds a working model


def test_tune_auto_measures_and_trains_on_such_a_factory(tmp_path):
    """vectorize='auto' builds populations to measure; every run then trains (it failed
    on a base the measurement had moved to the meta device)."""
    result = tune(_task(Adapter), grid=[0.0, 0.3], folds=2, vectorize="auto", out=tmp_path,
                  progress=False, test=False)  # fmt: skip
    assert all(c["state"] == "complete" for c in result.summary["candidates"])
    assert BASE.weight.device.type == "cpu"


def test_a_buffer_the_forward_updates_is_kept_per_member():
    task = _task(RunningMean)
    members = _members()
    results = fit_population(task, members, epochs=2, batch_size=16)
    for m, r in zip(members, results, strict=True):
        assert r.val_losses == pytest.approx(_alone(task, m), rel=1e-5)
        assert not torch.equal(r.state["mean"], torch.zeros(8))  # it ran, per member
    assert not torch.equal(results[0].state["mean"], results[1].state["mean"])  # other folds' seeds


def test_building_a_population_holds_the_first_base_and_the_one_being_built_only():
    """Each member's frozen base is compared with the first's and dropped: when a member's
    model is built, only the first member's base is still alive (weak references)."""
    alive: weakref.WeakSet[torch.Tensor] = weakref.WeakSet()
    counts: list[int] = []

    class Fresh(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            gc.collect()
            counts.append(len(alive))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(5)
                self.base = nn.Linear(8, 8).requires_grad_(False)
            alive.add(self.base.weight)
            self.head = nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.head(torch.tanh(self.base(x)))

    task = _task(Fresh)
    settings = RunSettings.resolve(task, epochs=1, batch_size=16, decay_scale=None,
                                   schedule=None, warmup_steps=None, device="cpu",
                                   precision="fp32")  # fmt: skip
    engine = StackedEngine(task, _members() + _members(), settings)
    assert counts == [0, 1, 1, 1, 1, 1, 1, 1]
    assert set(engine.shared) == {"base.weight", "base.bias"}
