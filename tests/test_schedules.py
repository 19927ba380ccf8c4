"""Schedules against PyTorch's own schedulers and the NumPy reference of Algorithm 2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from adamwkit import AdamW
from adamwkit.reference import AdamWReference
from adamwkit.schedules import (
    constant,
    make_schedule,
    warmup_cosine,
    warmup_linear,
    warmup_stable_decay,
)
from conftest import batches, loss_fn, make_model


def torch_lrs(make_sched, steps: int, lr: float = 1.0) -> np.ndarray:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make_sched(opt)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return np.array(out)


def test_cosine_without_warmup_is_torch_cosine_annealing():
    ref = torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=100), 100)
    np.testing.assert_allclose(warmup_cosine(100).multipliers(), ref, rtol=1e-12, atol=1e-15)


def test_cosine_final_is_torch_eta_min():
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=80, eta_min=0.1), 80
    )
    np.testing.assert_allclose(warmup_cosine(80, final=0.1).multipliers(), ref, rtol=1e-12)


def test_linear_without_warmup_is_torch_linear_lr():
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=1.0, end_factor=0.0, total_iters=50
        ),
        50,
    )
    np.testing.assert_allclose(warmup_linear(50).multipliers(), ref, rtol=1e-12, atol=1e-15)


def test_warmup_is_torch_linear_lr_up_to_the_peak():
    w = 10
    ref = torch_lrs(
        lambda o: torch.optim.lr_scheduler.LinearLR(
            o, start_factor=1 / w, end_factor=1.0, total_iters=w - 1
        ),
        w,
    )
    for sched in (constant(100, w), warmup_cosine(100, w), warmup_linear(100, w)):
        np.testing.assert_allclose(sched.multipliers()[:w], ref, rtol=1e-12)
        assert sched(w - 1) == 1.0


def test_wsd_values_by_hand():
    s = warmup_stable_decay(100, warmup_steps=10, decay_steps=20)
    assert s(0) == pytest.approx(0.1)
    assert s(10) == s(79) == 1.0
    assert s(80) == 1.0  # first cooldown step, p = 0
    assert s(90) == pytest.approx(0.5)
    assert s(99) == pytest.approx(1 / 20)
    assert s(150) == 0.0
    sq = warmup_stable_decay(100, 0, 20, cooldown="sqrt")
    assert sq(85) == pytest.approx(1 - math.sqrt(5 / 20))
    assert make_schedule("wsd", 1000).decay_steps == 200


def test_scheduler_drives_torch_and_keeps_the_peak_as_initial_lr():
    sched = warmup_cosine(40, 5, final=0.05)
    lrs = torch_lrs(sched.scheduler, 40, lr=3e-3)
    np.testing.assert_allclose(lrs, 3e-3 * sched.multipliers(), rtol=1e-12)


def test_schedule_scale_decay_follows_the_multiplier():
    """Oracle: the NumPy reference of Algorithm 2 with eta_t = the schedule's multiplier."""
    steps, lr, wd = 60, 2e-2, 0.3
    sched = warmup_stable_decay(steps, warmup_steps=6, decay_steps=20, cooldown="cosine")
    model = make_model(torch.float64)
    ref = AdamWReference(
        [p.detach().numpy() for p in model.parameters()], alpha=lr, weight_decay=wd
    )
    opt = AdamW(model.parameters(), lr=lr, weight_decay=wd, decay_scale="schedule")
    lr_sched = sched.scheduler(opt)
    for t, (x, y) in enumerate(batches(torch.float64, steps=steps)):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        ref.step([p.grad.numpy() for p in model.parameters()], eta=sched(t))
        opt.step()
        lr_sched.step()
    for p, r in zip(model.parameters(), ref.params, strict=True):
        np.testing.assert_allclose(p.detach().numpy(), r, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: make_schedule("step", 10), r"schedule='step' is invalid: expected one of"),
        (lambda: warmup_cosine(0), r"total_steps=0 is invalid"),
        (lambda: warmup_cosine(10.5), r"total_steps=10.5 is invalid: expected a whole number"),
        (lambda: warmup_cosine(10, 10), r"warmup_steps=10 is invalid: .*\[0, 9\]"),
        (lambda: warmup_cosine(10, -1), r"warmup_steps=-1 is invalid"),
        (lambda: warmup_cosine(10, final=1.5), r"final=1.5 is invalid: .*\[0, 1\]"),
        (lambda: warmup_stable_decay(10, 5, 6), r"decay_steps=6 is invalid: .*\[1, 5\]"),
        (lambda: warmup_stable_decay(10, cooldown="exp"), r"cooldown='exp' is invalid"),
        (lambda: constant(10)(-1), r"step=-1 is invalid"),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
