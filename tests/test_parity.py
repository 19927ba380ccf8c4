"""decay_scale="lr" is torch.optim.AdamW: same arguments, same trajectory."""

from __future__ import annotations

import pytest
import torch

import adamwkit
from conftest import STEPS, max_rel_diff, three_groups, train

PATHS = {
    "default": {},
    "fused": {"fused": True},
    "foreach": {"foreach": True},
    "forloop": {"foreach": False},
}
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16], ids=str)
@pytest.mark.parametrize("amsgrad", [False, True], ids=["adam", "amsgrad"])
@pytest.mark.parametrize("maximize", [False, True], ids=["min", "max"])
@pytest.mark.parametrize("path", list(PATHS))
def test_matches_torch_adamw(dtype, amsgrad, maximize, path):
    kw = dict(lr=5e-3, amsgrad=amsgrad, maximize=maximize, **PATHS[path])
    ours, _ = train(lambda m: adamwkit.AdamW(three_groups(m), **kw), dtype, maximize=maximize)
    theirs, _ = train(lambda m: torch.optim.AdamW(three_groups(m), **kw), dtype, maximize=maximize)
    if dtype == torch.bfloat16:
        # within one bfloat16 rounding step (8 significant bits) of every element
        for a, b in zip(ours, theirs, strict=True):
            step = b.double().abs() * 2.0**-7 + 2.0**-133
            assert ((a.double() - b.double()).abs() <= step).all()
    else:
        assert max_rel_diff(ours, theirs) <= TOL[dtype]


def test_defaults_match_torch():
    ours = adamwkit.AdamW([torch.zeros(2, requires_grad=True)])
    theirs = torch.optim.AdamW([torch.zeros(2, requires_grad=True)])
    for key, value in theirs.defaults.items():
        assert ours.defaults[key] == value, key
    assert ours.defaults["decay_scale"] == "lr"


def test_default_path_is_fused_on_cpu_float():
    """The default on CPU float32 is the fused kernel: it agrees with torch fused to the bit."""
    ours, _ = train(lambda m: adamwkit.AdamW(m.parameters(), weight_decay=0.1), steps=20)
    fused, _ = train(
        lambda m: torch.optim.AdamW(m.parameters(), weight_decay=0.1, fused=True), steps=20
    )
    assert max_rel_diff(ours, fused) == 0.0


def test_weight_decay_changes_the_result():
    """Guards the tests above: decay must matter for the model they train."""
    a, _ = train(lambda m: adamwkit.AdamW(m.parameters(), weight_decay=0.0), steps=STEPS)
    b, _ = train(lambda m: adamwkit.AdamW(m.parameters(), weight_decay=0.5), steps=STEPS)
    assert max_rel_diff(a, b) > 1e-3


def test_closure_returns_loss():
    w = torch.ones(3, requires_grad=True)
    opt = adamwkit.AdamW([w])

    def closure():
        opt.zero_grad()
        loss = (w**2).sum()
        loss.backward()
        return loss

    assert opt.step(closure).item() == pytest.approx(3.0)


def test_default_path_handles_gradients_with_other_strides():
    """A gradient laid out unlike its parameter: torch's CPU fused kernel mishandles it, so the
    default path must not send it there."""
    torch.manual_seed(0)
    w0 = torch.randn(5, 7)
    grads = [torch.randn(7, 5).t() for _ in range(3)]  # strides (1, 5) vs the param's (7, 1)
    results = []
    for cls in (adamwkit.AdamW, torch.optim.AdamW):
        w = torch.nn.Parameter(w0.clone())
        opt = cls([w], lr=0.1, weight_decay=0.1)
        for g in grads:
            w.grad = g.clone().t().contiguous().t()
            opt.step()
        results.append(w.detach())
    assert max_rel_diff([results[0]], [results[1]]) <= 1e-6


def test_param_group_added_later_and_amsgrad_groups():
    a, b = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    ours = adamwkit.AdamW([a], lr=1e-2)
    ours.add_param_group({"params": [b], "weight_decay": 0.5, "amsgrad": True})
    a2, b2 = torch.nn.Parameter(torch.ones(3, 3)), torch.nn.Parameter(torch.ones(3))
    theirs = torch.optim.AdamW([a2], lr=1e-2)
    theirs.add_param_group({"params": [b2], "weight_decay": 0.5, "amsgrad": True})
    for k in range(5):
        for p in (a, b, a2, b2):
            p.grad = torch.full_like(p, 0.1 * (k + 1))
        ours.step()
        theirs.step()
    assert max_rel_diff([a, b], [a2, b2]) <= 1e-6
