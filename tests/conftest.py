"""Shared helpers: a small model, a training loop, the run against the NumPy reference,
and the comparison metrics."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

STEPS = 200


def make_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Linear(12, 24),
        nn.LayerNorm(24),
        nn.Tanh(),
        nn.Linear(24, 24),
        nn.Tanh(),
        nn.Linear(24, 3),
    )
    return model.to(dtype)


def three_groups(model: nn.Module) -> list[dict]:
    """Several groups with different hyperparameters, one with weight_decay 0."""
    p = list(model.parameters())
    return [
        {"params": p[:2], "lr": 1e-2, "weight_decay": 0.1},
        {"params": p[2:4], "lr": 3e-3, "weight_decay": 0.0, "betas": (0.8, 0.99)},
        {"params": p[4:], "eps": 1e-6, "weight_decay": 0.5},
    ]


def batches(dtype: torch.dtype, steps: int = STEPS, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(16, 12, generator=g)
        y = torch.randn(16, 3, generator=g)
        yield x.to(dtype), y.to(dtype)


def loss_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return ((model(x) - y) ** 2).mean()


def train(
    make_opt: Callable[[nn.Module], torch.optim.Optimizer],
    dtype: torch.dtype = torch.float32,
    steps: int = STEPS,
    scheduler: bool = True,
    maximize: bool = False,
) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    """Train a fresh model with a cosine LR schedule; return its parameters and optimizer.

    With ``maximize`` the objective is the negated loss, so the run converges either way.
    """
    sign = -1.0 if maximize else 1.0
    model = make_model(dtype)
    opt = make_opt(model)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if scheduler else None
    for x, y in batches(dtype, steps):
        opt.zero_grad()
        (sign * loss_fn(model, x, y)).backward()
        opt.step()
        if sched is not None:
            sched.step()
    return [p.detach().clone() for p in model.parameters()], opt


def max_rel_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """Largest over tensors of max|a - b| / max|b| (computed in float64)."""
    out = 0.0
    for x, y in zip(a, b, strict=True):
        x, y = x.double(), y.double()
        out = max(out, ((x - y).abs().max() / y.abs().max().clamp_min(1e-300)).item())
    return out


@pytest.fixture
def float64_default():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``gpu`` skip on a machine without CUDA."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def cosine(t: int, total: int = STEPS) -> float:
    """Schedule multiplier of step t (0-based), as CosineAnnealingLR with eta_min=0."""
    return 0.5 * (1 + math.cos(math.pi * t / total))


def reference_pair(
    weight_decay: float,
    *,
    decay_scale: str = "lr",
    lr: float = 1e-2,
    steps: int = STEPS,
    amsgrad: bool = False,
    wd_schedule: Callable[[int], float] | None = None,
    **variant: object,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """adamwkit.AdamW (float64, cosine schedule over ``steps``) and the NumPy reference of
    the same run, the reference fed the gradients at its own point. ``variant``: AdamW's
    ``cautious``, ``decay_toward``, ``fused``; ``wd_schedule`` scales the weight decay per
    step (through adamwkit's WeightDecayScheduler on one side, by hand on the other)."""
    import adamwkit
    from adamwkit.reference import AdamWReference
    from adamwkit.schedules import WeightDecayScheduler

    model, twin = make_model(torch.float64), make_model(torch.float64)
    opt = adamwkit.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, amsgrad=amsgrad,
                         decay_scale=decay_scale, **variant)  # fmt: skip
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cosine(t, steps))
    wd_sched = None if wd_schedule is None else WeightDecayScheduler(opt, wd_schedule)
    # the paper's lambda: "lr" scales the decay by the lr itself; "corrected" is
    # lambda = lr * wd with eta**2 as the decay's multiplier (corrected=True)
    lam = lr * weight_decay if decay_scale == "lr" else weight_decay
    ref = AdamWReference([p.detach().numpy() for p in twin.parameters()], alpha=lr,
                         weight_decay=lam, amsgrad=amsgrad,
                         corrected=decay_scale == "corrected",
                         cautious=bool(variant.get("cautious", False)),
                         decay_toward=str(variant.get("decay_toward", "zero")))  # fmt: skip
    for t, (x, y) in enumerate(batches(torch.float64, steps)):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            for p, r in zip(twin.parameters(), ref.params, strict=True):
                p.copy_(torch.from_numpy(r))
        twin.zero_grad()
        loss_fn(twin, x, y).backward()
        lam_t = None if wd_schedule is None else lam * wd_schedule(t)
        ref.step([p.grad.numpy() for p in twin.parameters()], eta=cosine(t, steps),
                 weight_decay=lam_t)  # fmt: skip
        if wd_sched is not None:
            wd_sched.step()
    return [p.detach().numpy() for p in model.parameters()], ref.params


def rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    """The largest relative difference of paired arrays (by each array's largest entry)."""
    return max(float(np.abs(x - y).max() / np.abs(y).max()) for x, y in zip(a, b, strict=True))
