"""Population steps: member i equals a standalone torch.optim.AdamW run with its own values."""

from __future__ import annotations

import pytest
import torch

from adamwkit import functional
from conftest import max_rel_diff

P = 4
SHAPES = [(6, 5), (6,), (3, 6), (3,)]
STEPS = 60


def member_loss(params: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """A two-layer net; params are one member's tensors."""
    w1, b1, w2, b2 = params
    return ((torch.tanh(x @ w1.T + b1) @ w2.T + b2 - y) ** 2).mean()


def data(steps: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(3)
    return [
        (torch.randn(P, 8, 5, generator=g).to(dtype), torch.randn(P, 8, 3, generator=g).to(dtype))
        for _ in range(steps)
    ]


def init(dtype: torch.dtype) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [(0.5 * torch.randn((P, *s), generator=g)).to(dtype) for s in SHAPES]


def run_population(dtype, lr, wd, *, impl="auto", amsgrad=False, maximize=False, **kw):
    params = [t.clone().requires_grad_() for t in init(dtype)]
    m = [torch.zeros_like(t) for t in params]
    v = [torch.zeros_like(t) for t in params]
    vmax = [torch.zeros_like(t) for t in params]
    steps = [torch.zeros((), dtype=torch.float32) for _ in params]
    sign = -1.0 if maximize else 1.0
    for x, y in data(STEPS, dtype):
        loss = sum(member_loss([p[i] for p in params], x[i], y[i]) for i in range(P))
        grads = torch.autograd.grad(sign * loss, params)
        with torch.no_grad():
            functional.adamw_step(
                params,
                list(grads),
                m,
                v,
                steps,
                max_exp_avg_sqs=vmax,
                lr=lr,
                weight_decay=wd,
                amsgrad=amsgrad,
                maximize=maximize,
                impl=impl,
                **kw,
            )
    return [p.detach() for p in params]


def run_member(i, dtype, lr, wd, *, amsgrad=False, maximize=False, fused=None):
    """The oracle: member i alone with torch.optim.AdamW."""
    params = [t[i].clone().requires_grad_() for t in init(dtype)]
    opt = torch.optim.AdamW(
        params, lr=lr, weight_decay=wd, amsgrad=amsgrad, maximize=maximize, fused=fused
    )
    sign = -1.0 if maximize else 1.0
    for x, y in data(STEPS, dtype):
        opt.zero_grad()
        (sign * member_loss(params, x[i], y[i])).backward()
        opt.step()
    return [p.detach() for p in params]


WDS = torch.tensor([0.0, 0.01, 0.3, 2.0])
LRS = torch.tensor([1e-2, 3e-3, 2e-2, 5e-3])
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("impl", ["fused", "forloop"])
@pytest.mark.parametrize("per_member_lr", [False, True], ids=["shared-lr", "own-lr"])
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
def test_member_equals_standalone(dtype, impl, per_member_lr, amsgrad, maximize):
    lr = LRS if per_member_lr else 1e-2
    pop = run_population(dtype, lr, WDS, impl=impl, amsgrad=amsgrad, maximize=maximize)
    for i in range(P):
        lr_i = float(LRS[i]) if per_member_lr else lr
        alone = run_member(
            i, dtype, lr_i, float(WDS[i]), amsgrad=amsgrad, maximize=maximize, fused=impl == "fused"
        )
        assert max_rel_diff([p[i] for p in pop], alone) <= TOL[dtype]


def test_fused_per_member_kernel_matches(monkeypatch):
    """Force the one-kernel-call-per-member branch (taken for large slices)."""
    monkeypatch.setattr(functional, "_PER_MEMBER_MIN_NUMEL", 0)
    pop = run_population(torch.float32, 1e-2, WDS, impl="fused")
    for i in range(P):
        alone = run_member(i, torch.float32, 1e-2, float(WDS[i]), fused=True)
        assert max_rel_diff([p[i] for p in pop], alone) == 0.0


def test_schedule_scale_with_member_peaks():
    """decay_scale="schedule" with a constant lr: torch.optim.AdamW with weight_decay / lr_peak."""
    peaks = torch.tensor([1e-2, 2e-2, 1e-2, 4e-2])
    pop = run_population(torch.float64, 5e-3, WDS, decay_scale="schedule", lr_peak=peaks)
    for i in range(P):
        alone = run_member(i, torch.float64, 5e-3, float(WDS[i].double() / peaks[i].double()))
        assert max_rel_diff([p[i] for p in pop], alone) <= 1e-12


def test_zero_dim_lr_and_single_entry_tensors_act_as_scalars():
    pop = run_population(torch.float64, torch.tensor(1e-2, dtype=torch.float64), WDS)
    ref = run_population(torch.float64, 1e-2, WDS)
    assert max_rel_diff(pop, ref) == 0.0
    one = run_population(
        torch.float64,
        torch.tensor([1e-2], dtype=torch.float64),
        torch.tensor([0.3], dtype=torch.float64),
    )
    assert max_rel_diff(one, run_population(torch.float64, 1e-2, 0.3)) == 0.0


def test_auto_falls_back_for_non_contiguous_tensors():
    """Transposed (non-contiguous) population tensors: auto takes the for-loop path."""
    base = [t.transpose(-1, -2).contiguous().transpose(-1, -2) for t in init(torch.float64)]
    assert not base[0].is_contiguous()
    grads = [torch.randn_like(t) for t in base]
    m = [torch.zeros_like(t) for t in base]
    v = [torch.zeros_like(t) for t in base]
    steps = [torch.zeros(()) for _ in base]
    functional.adamw_step(base, grads, m, v, steps, lr=1e-2, weight_decay=WDS)
    for i in range(P):
        w = [t[i].clone().requires_grad_() for t in init(torch.float64)]
        opt = torch.optim.AdamW(w, lr=1e-2, weight_decay=float(WDS[i]))
        for p, g in zip(w, grads, strict=True):
            p.grad = g[i].clone()
        opt.step()
        assert max_rel_diff([t[i] for t in base], [p.detach() for p in w]) <= 1e-12


def test_members_really_differ():
    pop = run_population(torch.float64, 1e-2, WDS)
    assert max_rel_diff([pop[0][0]], [pop[0][3]]) > 1e-2


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"weight_decay": torch.zeros(3)}, "weight_decay has shape \\(3,\\)"),
        ({"lr": torch.full((5,), 1e-3)}, "lr has shape \\(5,\\)"),
        ({"weight_decay": torch.tensor([0.1, -1.0, 0.0, 0.0])}, "weight_decay=.*finite >= 0"),
        ({"weight_decay": WDS, "impl": "foreach"}, "impl='foreach'"),
    ],
)
def test_bad_population_input(kwargs, match):
    params = init(torch.float32)
    state = [[torch.zeros_like(t) for t in params] for _ in range(3)]
    steps = [torch.zeros(()) for _ in params]
    kw = {"lr": 1e-3, "weight_decay": 0.0, **kwargs}
    with pytest.raises(ValueError, match=match):
        functional.adamw_step(params, state[0], state[1], state[2], steps, **kw)
