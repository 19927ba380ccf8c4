"""state_dicts move between adamwkit.AdamW and torch.optim.AdamW in both directions."""

from __future__ import annotations

import pytest
import torch

import adamwkit
from conftest import batches, loss_fn, make_model, max_rel_diff, three_groups

HALF = 100


def run(first, second, dtype=torch.float32, save="state_dict", **kw):
    """HALF steps with optimizer class ``first``, then HALF more with ``second``, which
    loads ``getattr(first_optimizer, save)()``; ``kw`` goes to ``first`` only."""
    model = make_model(dtype)
    opt = first(three_groups(model), lr=5e-3, **kw)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2 * HALF)
    for i, (x, y) in enumerate(batches(dtype, 2 * HALF)):
        if i == HALF and second is not None:
            saved = getattr(opt, save)()
            opt = second(three_groups(model), lr=5e-3)
            opt.load_state_dict(saved)
            sched_state = sched.state_dict()
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 2 * HALF)
            sched.load_state_dict(sched_state)
        opt.zero_grad()
        loss_fn(model, x, y).backward()
        opt.step()
        sched.step()
    return [p.detach().clone() for p in model.parameters()], opt


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize(
    "first,second",
    [(adamwkit.AdamW, torch.optim.AdamW), (torch.optim.AdamW, adamwkit.AdamW)],
    ids=["ours->torch", "torch->ours"],
)
def test_switching_keeps_the_trajectory(first, second, dtype):
    switched, _ = run(first, second, dtype)
    straight, _ = run(torch.optim.AdamW, None, dtype)
    assert max_rel_diff(switched, straight) <= (1e-6 if dtype == torch.float32 else 1e-12)


def test_same_keys_and_step_layout():
    ours = run(adamwkit.AdamW, None)[1].state_dict()
    theirs = run(torch.optim.AdamW, None)[1].state_dict()
    assert ours["state"].keys() == theirs["state"].keys()
    for k in theirs["state"]:
        assert ours["state"][k].keys() == theirs["state"][k].keys()
        a, b = ours["state"][k]["step"], theirs["state"][k]["step"]
        assert (a.shape, a.dtype, a.device) == (b.shape, b.dtype, b.device)
        assert a.item() == b.item() == 2 * HALF
    for g_ours, g_theirs in zip(ours["param_groups"], theirs["param_groups"], strict=True):
        assert set(g_theirs) <= set(g_ours)
        assert g_ours["decay_scale"] == "lr"


def test_decay_scale_is_saved_and_restored():
    w = torch.nn.Parameter(torch.ones(3))
    src = adamwkit.AdamW([w], lr=1e-2, decay_scale="schedule")
    w.grad = torch.ones(3)
    src.step()
    dst = adamwkit.AdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    with pytest.warns(UserWarning, match="saved with decay_scale='schedule'"):
        dst.load_state_dict(src.state_dict())
    group = dst.param_groups[0]
    assert group["decay_scale"] == "schedule"
    assert adamwkit.AdamW.lr_peak(group) == 1e-2


def test_torch_state_dict_is_read_in_torch_convention():
    """torch's groups say nothing of decay_scale: their weight decay is PyTorch's ("lr"),
    whatever the receiver's scale; the receiver's lr_peak stays."""
    src = torch.optim.AdamW([torch.nn.Parameter(torch.ones(3))], lr=1e-3)
    dst = adamwkit.AdamW(
        [{"params": [torch.nn.Parameter(torch.ones(3))], "lr_peak": 2e-2}],
        lr=1e-2,
        decay_scale="schedule",
    )
    with pytest.warns(UserWarning, match="saved by torch.optim.AdamW"):
        dst.load_state_dict(src.state_dict())
    group = dst.param_groups[0]
    assert group["decay_scale"] == "lr"
    assert group["lr"] == 1e-3 and adamwkit.AdamW.lr_peak(group) == 2e-2


def test_torch_state_dict_continues_a_schedule_run_in_torch():
    """A "schedule" run finished by torch.optim.AdamW from torch_state_dict() is unchanged."""
    kw = {"dtype": torch.float64, "decay_scale": "schedule"}
    switched, _ = run(adamwkit.AdamW, torch.optim.AdamW, save="torch_state_dict", **kw)
    straight, _ = run(adamwkit.AdamW, None, **kw)
    assert max_rel_diff(switched, straight) <= 1e-12


def test_float64_default_dtype_step_moves_to_fused_layout(float64_default):
    """A torch run under float64 default dtype keeps float64 CPU steps; ours converts them."""
    switched, opt = run(torch.optim.AdamW, adamwkit.AdamW, torch.float64)
    straight, _ = run(torch.optim.AdamW, None, torch.float64)
    assert max_rel_diff(switched, straight) <= 1e-12
    assert all(s["step"].dtype == torch.float32 for s in opt.state.values())
