"""Timescales and conventions against worked numbers from the papers and torch itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from adamwkit import AdamW
from adamwkit.timescale import (
    CONVENTIONS,
    canonical_convention,
    convert_weight_decay,
    tau_epoch,
    tau_iter,
    tau_run,
    weight_decay_from_tau_epoch,
    weight_decay_from_tau_iter,
    weight_decay_from_tau_run,
)
from conftest import batches, loss_fn, make_model, max_rel_diff

positive = st.floats(min_value=1e-8, max_value=1e8, allow_nan=False, allow_infinity=False)
rate = st.floats(min_value=1e-7, max_value=1.0, allow_nan=False)
decay = st.floats(min_value=1e-9, max_value=1e3, allow_nan=False)


def test_deit_b_tau_epoch_is_16():
    # Wang & Aitchison's reading of the DeiT-B recipe: lr 1e-3, B 1024, wd 0.05, ImageNet.
    assert tau_epoch(1e-3, 0.05, 1024, 1_281_167) == pytest.approx(16.0, abs=0.05)


def test_nanogpt_tau_iter_and_tau_run():
    # nanoGPT 124M: lr 6e-4, wd 0.1, 600k steps -> tau_iter 16,667 steps, tau_run 0.028.
    assert tau_iter(6e-4, 0.1) == pytest.approx(16_667, abs=1)
    assert tau_run(6e-4, 0.1, 600_000) == pytest.approx(0.028, abs=5e-4)


def test_zero_decay_has_infinite_timescale():
    assert tau_iter(1e-3, 0.0) == math.inf
    assert weight_decay_from_tau_iter(math.inf, 1e-3) == 0.0


@given(lr=rate, wd=decay, b=positive, n=positive)
def test_tau_epoch_inverse(lr, wd, b, n):
    t = tau_epoch(lr, wd, b, n)
    assert weight_decay_from_tau_epoch(t, lr, b, n) == pytest.approx(wd, rel=1e-12)


@given(lr=rate, wd=decay, s=positive)
def test_tau_iter_and_tau_run_inverses(lr, wd, s):
    assert weight_decay_from_tau_iter(tau_iter(lr, wd), lr) == pytest.approx(wd, rel=1e-12)
    assert weight_decay_from_tau_run(tau_run(lr, wd, s), lr, s) == pytest.approx(wd, rel=1e-12)


multipliers = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=1, max_size=50).filter(
    lambda m: sum(m) > 1e-6
)


@given(
    wd=decay,
    lr=rate,
    a=st.sampled_from(list(CONVENTIONS)),
    b=st.sampled_from(list(CONVENTIONS)),
    sched=st.none() | multipliers,
)
def test_every_conversion_round_trips(wd, lr, a, b, sched):
    there = convert_weight_decay(wd, a, b, lr_peak=lr, schedule=sched)
    back = convert_weight_decay(there, b, a, lr_peak=lr, schedule=sched)
    assert back == pytest.approx(wd, rel=1e-12)


def test_torch_to_independent_is_times_lr_peak():
    # Wortsman et al.: lambda_ind = eta_peak * lambda_torch; PyTorch's 0.01 at 1e-3 is 1e-5.
    assert convert_weight_decay(0.1, "torch", "independent", lr_peak=6e-4) == pytest.approx(6e-5)
    assert convert_weight_decay(0.01, "optax", "paper", lr_peak=1e-3) == pytest.approx(1e-5)


def test_independent_conversion_reproduces_torch_training():
    """Oracle: torch.optim.AdamW with wd_torch; adamwkit's "schedule" scale with the
    converted value, under a cosine schedule, follows the same trajectory."""

    def run(opt_factory):
        model = make_model(torch.float64)
        opt = opt_factory(model)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=60)
        for x, y in batches(torch.float64, steps=60):
            opt.zero_grad()
            loss_fn(model, x, y).backward()
            opt.step()
            sched.step()
        return [p.detach().clone() for p in model.parameters()]

    lr, wd = 3e-2, 0.2
    ind = convert_weight_decay(wd, "torch", "independent", lr_peak=lr)
    ours = run(lambda m: AdamW(m.parameters(), lr=lr, weight_decay=ind, decay_scale="schedule"))
    ref = run(lambda m: torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=wd))
    assert max_rel_diff(ours, ref) < 1e-12


def test_timm_conversion_matches_total_decay_over_a_torch_schedule():
    """Oracle: the lrs torch's CosineAnnealingLR produces; timm's per-step decay
    wd * lr_t^2 / lr_peak summed over the run equals torch's lr_t * wd summed."""
    lr, steps, wd = 1e-3, 500, 0.05
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    lrs = np.array(lrs)
    timm = convert_weight_decay(wd, "torch", "timm-corrected", schedule=lrs / lr)
    assert (timm * lrs**2 / lr).sum() == pytest.approx((wd * lrs).sum(), rel=1e-12)
    # With no schedule the two agree at the peak step, where lr_t = lr_peak.
    assert convert_weight_decay(wd, "torch", "timm-corrected") == wd


def test_aliases():
    assert canonical_convention("PyTorch") == "torch"
    assert canonical_convention("schedule") == "independent"
    assert canonical_convention("composer") == "independent"


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: tau_iter(0, 0.1), r"lr=0 is invalid: expected a learning rate in \[1e-12, 1000\]"),
        (lambda: tau_iter(1e-3, -1), r"weight_decay=-1 is invalid"),
        (lambda: tau_epoch(1e-3, 0.1, float("nan"), 10), r"batch_size=nan is invalid"),
        (lambda: tau_epoch(1e-3, 0.1, 10, 0), r"dataset_size=0 is invalid"),
        (lambda: tau_run(1e-3, 0.1, -5), r"total_steps=-5 is invalid"),
        (lambda: weight_decay_from_tau_epoch(0, 1e-3, 1, 1), r"tau_epoch=0 is invalid"),
        (
            lambda: convert_weight_decay(0.1, "torch", "independent"),
            r"lr_peak is needed: .*needs the peak learning rate",
        ),
        (lambda: convert_weight_decay(0.1, "torch", "sgd"), r"convention='sgd' is invalid"),
        (
            lambda: convert_weight_decay(0.1, "torch", "timm-corrected", schedule=[0.0, 0.0]),
            r"schedule is invalid",
        ),
        (
            lambda: convert_weight_decay(0.1, "torch", "timm-corrected", schedule=[2.0]),
            r"schedule is invalid",
        ),
    ],
)
def test_bad_input_names_the_argument(call, match):
    with pytest.raises(ValueError, match=match):
        call()
