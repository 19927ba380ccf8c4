"""skip_nonfinite=True: a step with a NaN/inf gradient changes nothing and is counted."""

from __future__ import annotations

import copy

import pytest
import torch

import adamwkit
from conftest import batches, loss_fn, make_model, max_rel_diff

BAD_STEP = 7


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("fused", [None, False])
def test_bad_step_is_skipped(bad, fused):
    model = make_model()
    oracle_model = copy.deepcopy(model)
    opt = adamwkit.AdamW(model.parameters(), weight_decay=0.1, skip_nonfinite=True, fused=fused)
    oracle = torch.optim.AdamW(oracle_model.parameters(), weight_decay=0.1)
    for i, (x, y) in enumerate(batches(torch.float32, 20)):
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        if i == BAD_STEP:
            before = copy.deepcopy(opt.state_dict())
            params = [p.detach().clone() for p in model.parameters()]
            next(model.parameters()).grad[0, 0] = bad
            opt.step()
            after = opt.state_dict()
            assert max_rel_diff([p.detach() for p in model.parameters()], params) == 0.0
            for k, s in before["state"].items():
                for key, t in s.items():
                    assert torch.equal(after["state"][k][key], t), key
            continue  # the oracle never sees this step
        opt.step()
        oracle.zero_grad()
        loss_fn(oracle_model, x, y).backward()
        oracle.step()
    assert opt.nonfinite_skips == 1
    assert opt.state_dict()["param_groups"][0]["nonfinite_skips"] == 1
    assert max_rel_diff(list(model.parameters()), list(oracle_model.parameters())) <= 1e-6


def test_off_by_default_lets_nan_through():
    w = torch.nn.Parameter(torch.ones(3))
    opt = adamwkit.AdamW([w])
    w.grad = torch.tensor([1.0, float("nan"), 1.0])
    opt.step()
    assert torch.isnan(w).any() and opt.nonfinite_skips == 0
