"""Shared helpers: a small model, a training loop, and the comparison metric."""

from __future__ import annotations

from collections.abc import Callable

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
