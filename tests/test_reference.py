"""decay_scale="schedule" (and "lr") against the NumPy reference of Algorithm 2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import adamwkit
from adamwkit.reference import adamw_reference_step
from conftest import batches, loss_fn, make_model, reference_pair, rel

STEPS = 200


def run_pair(decay_scale: str, weight_decay: float, amsgrad: bool, lr: float = 1e-2):
    """Our AdamW (float64, cosine schedule) and the reference fed gradients at its own point."""
    return reference_pair(weight_decay, decay_scale=decay_scale, amsgrad=amsgrad, lr=lr)


@pytest.mark.parametrize("amsgrad", [False, True])
@pytest.mark.parametrize("decay_scale", ["schedule", "lr"])
def test_matches_reference_float64(decay_scale, amsgrad):
    ours, ref = run_pair(decay_scale, weight_decay=0.3, amsgrad=amsgrad)
    assert rel(ours, ref) <= 1e-12


def test_schedule_differs_from_lr():
    """The two scales must give different runs when lr != 1 (else the test above is vacuous)."""
    a, _ = run_pair("schedule", weight_decay=0.3, amsgrad=False)
    b, _ = run_pair("lr", weight_decay=0.3, amsgrad=False)
    assert rel(a, b) > 1e-3


def test_first_step_worked_number():
    """Step 1: mhat = g and vhat = g^2, so theta moves by alpha*sign(g) plus eta*lambda*theta."""
    theta = np.array([1.0, -2.0, 0.5])
    g = np.array([0.3, -4.0, 1e-3])
    new, m, v, _ = adamw_reference_step(
        theta, g, np.zeros(3), np.zeros(3), 1, alpha=0.1, eta=0.5, eps=0.0, weight_decay=0.2
    )
    expected = theta - 0.5 * (0.1 * np.sign(g) + 0.2 * theta)
    np.testing.assert_allclose(new, expected, rtol=1e-15)
    np.testing.assert_allclose(m, 0.1 * g)
    np.testing.assert_allclose(v, 0.001 * g * g)


def lr_peak_run(make_opt, make_sched, steps=60):
    model = make_model(torch.float64)
    opt = make_opt(model.parameters())
    sched = make_sched(opt)
    for x, y in batches(torch.float64, steps):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        sched.step()
    return [p.detach().numpy() for p in model.parameters()]


def test_one_cycle_peak_is_max_lr():
    """OneCycleLR's initial_lr is max_lr/25; the decay must divide by max_lr: the run equals
    torch.optim.AdamW with weight_decay / max_lr."""

    def one_cycle(opt):
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.02, total_steps=60)

    ours = lr_peak_run(
        lambda p: adamwkit.AdamW(p, lr=0.02, weight_decay=1e-3, decay_scale="schedule"),
        one_cycle,
    )
    theirs = lr_peak_run(lambda p: torch.optim.AdamW(p, lr=0.02, weight_decay=0.05), one_cycle)
    assert rel(ours, theirs) <= 1e-12


def test_explicit_lr_peak_wins_over_scheduler():
    def cosine_sched(opt):
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, 60)

    ours = lr_peak_run(
        lambda p: adamwkit.AdamW(
            [{"params": list(p), "lr_peak": 0.04}],
            lr=0.01,
            weight_decay=2e-3,
            decay_scale="schedule",
        ),
        cosine_sched,
    )
    theirs = lr_peak_run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.05), cosine_sched)
    assert rel(ours, theirs) <= 1e-12


def test_cyclic_lr_without_peak_is_refused():
    """CyclicLR stores its lowest lr as initial_lr: dividing by it would flip weights' sign."""
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamwkit.AdamW([w], lr=1e-2, weight_decay=0.1, decay_scale="schedule")
    sched = torch.optim.lr_scheduler.CyclicLR(
        opt, base_lr=1e-4, max_lr=1e-2, step_size_up=2, cycle_momentum=False
    )
    with pytest.raises(
        ValueError, match=r"lr=.* exceeds lr_peak=0\.0001.*set the group's 'lr_peak'"
    ):
        for _ in range(4):
            w.grad = torch.zeros(3)
            opt.step()
            sched.step()
