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


# --- a state that does not fit its parameter (a resized head) -------------------------------

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PATHS = {"default": {}, "fused": {"fused": True}, "foreach": {"foreach": True}, "forloop": {}}
PATHS["forloop"] = {"foreach": False, "fused": False}


def _stepped(out_features: int, device: str, **kw) -> tuple[torch.nn.Linear, adamwkit.AdamW]:
    torch.manual_seed(0)
    layer = torch.nn.Linear(16, out_features).to(device)
    opt = adamwkit.AdamW(layer.named_parameters(), **kw)
    layer(torch.randn(5, 16, device=device)).sum().backward()
    opt.step()
    return layer, opt


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("saved,loaded", [(3, 3000), (3000, 3)], ids=["smaller", "larger"])
def test_state_for_another_shape_is_refused_on_load(path, device, saved, loaded):
    """The issue's reproduction (a smaller state overran the fused kernel's buffers: exit
    139), and a larger one (it stepped silently with the wrong moments). Oracle:
    torch.optim.AdamW refuses both too (RuntimeError), at its first step."""
    _, source = _stepped(saved, device, **PATHS[path])
    layer, opt = _stepped(loaded, device, **PATHS[path])
    before = {k: v.clone() for k, v in opt.state[layer.weight].items()}
    with pytest.raises(ValueError) as err:
        opt.load_state_dict(source.state_dict())
    message = str(err.value)
    assert "param_groups[0]['params'][0] ('weight')" in message
    assert f"({saved}, 16)" in message and f"({loaded}, 16)" in message
    # refused whole: the receiver's state is untouched and it keeps stepping
    for key, value in opt.state[layer.weight].items():
        assert torch.equal(value, before[key])
    layer(torch.randn(5, 16, device=device)).sum().backward()
    opt.step()


@pytest.mark.parametrize("saved,loaded", [(3, 3000), (3000, 3)], ids=["smaller", "larger"])
def test_torch_refuses_the_same_state(saved, loaded):
    """The oracle for the refusal: torch.optim.AdamW's default path fails its first step."""
    source = torch.nn.Linear(16, saved)
    first = torch.optim.AdamW(source.parameters())
    source(torch.randn(5, 16)).sum().backward()
    first.step()
    layer = torch.nn.Linear(16, loaded)
    opt = torch.optim.AdamW(layer.parameters())
    opt.load_state_dict(first.state_dict())
    layer(torch.randn(5, 16)).sum().backward()
    with pytest.raises(RuntimeError):
        opt.step()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "replacement",
    [lambda w: torch.randn(3000, 16, device=w.device), lambda w: w.detach().double()],
    ids=["larger", "float64"],
)
def test_parameter_replaced_between_steps_is_refused(path, device, replacement):
    """``layer.weight.data = other`` after the state was made: a ValueError naming the
    parameter and both shapes and dtypes, never a step."""
    layer, opt = _stepped(3, device, **PATHS[path])
    new = replacement(layer.weight)
    layer.weight.data = new
    layer.weight.grad = torch.ones_like(new)
    bias = layer.bias.detach().clone()
    with pytest.raises(ValueError, match=r"param_groups\[0\]\['params'\]\[0\] \('weight'\)") as err:
        opt.step()
    assert str(tuple(new.shape)) in str(err.value) and "(3, 16)" in str(err.value)
    assert torch.equal(layer.bias, bias)  # the group did not step partway
    del opt.state[layer.weight]  # the remedy the message names
    opt.step()
