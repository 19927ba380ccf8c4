"""Bad input gets a ValueError that names the argument, the value and the accepted range."""

from __future__ import annotations

import math

import pytest
import torch

import adamwkit
from adamwkit import functional


def params():
    return [torch.nn.Parameter(torch.ones(2, 2))]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": -1.0}, r"lr=-1.0 is invalid: expected a finite number in \[0, inf\)"),
        ({"lr": math.nan}, r"lr=nan is invalid"),
        ({"eps": -1e-8}, r"eps=-1e-08 is invalid"),
        ({"betas": (1.0, 0.999)}, r"betas\[0\]=1.0 is invalid: .* in \[0, 1\)"),
        ({"betas": (0.9, -0.1)}, r"betas\[1\]=-0.1 is invalid"),
        ({"betas": (0.9,)}, r"betas=\(0.9,\) is invalid: expected a pair"),
        ({"weight_decay": -0.1}, r"weight_decay=-0.1 is invalid"),
        ({"weight_decay": math.nan}, r"weight_decay=nan is invalid"),
        (
            {"decay_scale": "paper"},
            r"decay_scale='paper' is invalid: expected one of 'lr', 'schedule'",
        ),
        (
            {"lr": 0.0, "decay_scale": "schedule"},
            r"lr_peak=0.0 is invalid with decay_scale='schedule'",
        ),
        ({"fused": True, "foreach": True}, r"fused=True and foreach=True"),
        ({"lr": torch.ones(2)}, r"lr is a tensor of shape \(2,\)"),
    ],
)
def test_constructor_rejects(kwargs, match):
    with pytest.raises(ValueError, match=match):
        adamwkit.AdamW(params(), **kwargs)


def test_group_values_are_checked_and_group_not_added():
    opt = adamwkit.AdamW(params())
    with pytest.raises(ValueError, match=r"param_groups\[1\]\.weight_decay=-1 is invalid"):
        opt.add_param_group({"params": [torch.nn.Parameter(torch.ones(1))], "weight_decay": -1})
    assert len(opt.param_groups) == 1


def test_parameter_in_two_groups():
    p = torch.nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="more than one parameter group"):
        adamwkit.AdamW([{"params": [p]}, {"params": [p]}])


def test_sparse_gradient():
    emb = torch.nn.Embedding(10, 3, sparse=True)
    opt = adamwkit.AdamW(emb.parameters())
    emb(torch.tensor([1, 2])).sum().backward()
    with pytest.raises(RuntimeError, match="sparse gradients.*SparseAdam"):
        opt.step()


def test_functional_rejects_mismatched_lists():
    p = [torch.zeros(2)]
    with pytest.raises(ValueError, match="grads has 0 tensors but params has 1"):
        functional.adamw_step(p, [], p, p, [torch.zeros(())], lr=1e-3, weight_decay=0.0)


@pytest.mark.parametrize("impl", ["magic", "FUSED"])
def test_functional_rejects_unknown_impl(impl):
    with pytest.raises(ValueError, match=f"impl='{impl}' is invalid"):
        functional.adamw_step([], [], [], [], [], lr=1e-3, weight_decay=0.0, impl=impl)


def test_effective_weight_decay_needs_peak():
    assert functional.effective_weight_decay(0.1, "schedule", 1e-3) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="lr_peak=-1.0 is invalid"):
        functional.effective_weight_decay(0.1, "schedule", -1.0)
