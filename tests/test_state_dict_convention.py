"""A loaded state_dict keeps the weight-decay convention it was saved in.

The oracle is ``torch.optim.AdamW`` itself: a run saved from it and resumed in
``adamwkit.AdamW`` (of either decay_scale) must continue exactly as torch continues it.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch

import adamwkit

BEFORE, AFTER = 5, 20


def make_params(seed: int = 0) -> list[torch.nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [
        torch.nn.Parameter(torch.randn(4, 3, generator=g)),
        torch.nn.Parameter(torch.randn(4, generator=g)),
    ]


def copy_of(params: list[torch.nn.Parameter]) -> list[torch.nn.Parameter]:
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def gradients(steps: int, seed: int):
    """The same gradient sequence for every optimizer that consumes it."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        yield [torch.randn(4, 3, generator=g), torch.randn(4, generator=g)]


def advance(opt: torch.optim.Optimizer, params, steps: int, seed: int) -> None:
    for grads in gradients(steps, seed):
        for p, grad in zip(params, grads, strict=True):
            p.grad = grad.clone()
        opt.step()


def max_diff(a, b) -> float:
    return max((x.detach() - y.detach()).abs().max().item() for x, y in zip(a, b, strict=True))


def torch_run(lr: float = 1e-2, weight_decay: float = 0.1):
    """torch.optim.AdamW after BEFORE steps: its params, optimizer and saved state_dict."""
    params = make_params()
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    advance(opt, params, BEFORE, seed=1)
    return params, opt, opt.state_dict()


def resume(opt_cls, saved, source_params, **kw):
    """A fresh optimizer of ``opt_cls`` on copies of ``source_params`` that loads a copy of
    ``saved`` (as from a checkpoint file: a state_dict shares the optimizer's tensors)."""
    params = copy_of(source_params)
    opt = opt_cls(params, **kw)
    opt.load_state_dict(copy.deepcopy(saved))
    return params, opt


def test_torch_state_dict_into_schedule_receiver_continues_as_torch():
    src_params, src, saved = torch_run()
    with pytest.warns(UserWarning, match=r"param_groups\[0\]"):
        params, opt = resume(adamwkit.AdamW, saved, src_params, lr=1e-2, decay_scale="schedule")
    assert opt.param_groups[0]["decay_scale"] == "lr"
    # The old reading: the receiver's "schedule" applied to torch's weight_decay=0.1.
    wrong_params = copy_of(src_params)
    wrong = adamwkit.AdamW(wrong_params, lr=1e-2, decay_scale="schedule")
    with pytest.warns(UserWarning):
        wrong.load_state_dict(copy.deepcopy(saved))
    wrong.param_groups[0]["decay_scale"] = "schedule"

    advance(src, src_params, AFTER, seed=2)
    advance(opt, params, AFTER, seed=2)
    advance(wrong, wrong_params, AFTER, seed=2)
    assert max_diff(params, src_params) <= 1e-6
    assert max_diff(wrong_params, src_params) > 1e-3


def test_warning_names_group_values_and_action():
    src_params, _, saved = torch_run()
    groups = [
        {"params": [p], "decay_scale": scale}
        for p, scale in zip(copy_of(src_params), ["lr", "schedule"], strict=True)
    ]
    saved = {
        "state": saved["state"],
        "param_groups": [
            {**saved["param_groups"][0], "params": [0]},
            {**saved["param_groups"][0], "params": [1]},
        ],
    }
    opt = adamwkit.AdamW(groups, lr=1e-2, weight_decay=0.1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.load_state_dict(saved)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    assert len(messages) == 1  # only the group whose convention changes
    (message,) = messages
    assert "\n" not in message
    for part in (
        "param_groups[1]",
        "torch.optim.AdamW",
        "weight_decay=0.1",
        "decay_scale='lr'",
        "decay_scale='schedule'",
        "continues exactly as saved",
    ):
        assert part in message, (part, message)
    assert [g["decay_scale"] for g in opt.param_groups] == ["lr", "lr"]


@pytest.mark.parametrize("scale", ["lr", "schedule"])
def test_same_scale_round_trip_is_silent_and_identical(scale):
    wd = 0.1 if scale == "lr" else 1e-3
    src_params = make_params()
    src = adamwkit.AdamW(src_params, lr=1e-2, weight_decay=wd, decay_scale=scale)
    advance(src, src_params, BEFORE, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, opt = resume(adamwkit.AdamW, src.state_dict(), src_params, decay_scale=scale)
    assert opt.param_groups[0]["decay_scale"] == scale
    assert adamwkit.AdamW.lr_peak(opt.param_groups[0]) == 1e-2
    advance(src, src_params, AFTER, seed=2)
    advance(opt, params, AFTER, seed=2)
    assert max_diff(params, src_params) == 0.0


def test_saved_schedule_wins_over_lr_receiver():
    """weight_decay=1e-3 with "schedule" at lr_peak=1e-2 is torch's weight_decay=0.1."""
    oracle_params = make_params()
    oracle = torch.optim.AdamW(oracle_params, lr=1e-2, weight_decay=0.1)
    src_params = make_params()
    src = adamwkit.AdamW(src_params, lr=1e-2, weight_decay=1e-3, decay_scale="schedule")
    advance(oracle, oracle_params, BEFORE, seed=1)
    advance(src, src_params, BEFORE, seed=1)
    with pytest.warns(UserWarning, match=r"param_groups\[0\] was saved with decay_scale='sched"):
        params, opt = resume(adamwkit.AdamW, src.state_dict(), src_params, lr=1e-3)
    group = opt.param_groups[0]
    assert group["decay_scale"] == "schedule" and adamwkit.AdamW.lr_peak(group) == 1e-2
    advance(oracle, oracle_params, AFTER, seed=2)
    advance(opt, params, AFTER, seed=2)
    assert max_diff(params, oracle_params) <= 1e-6


def test_loaded_state_dict_round_trips_with_the_scale_used():
    src_params, src, saved = torch_run()
    with pytest.warns(UserWarning):
        params, opt = resume(adamwkit.AdamW, saved, src_params, lr=1e-2, decay_scale="schedule")
    advance(src, src_params, 3, seed=2)
    advance(opt, params, 3, seed=2)
    again = opt.state_dict()
    assert again["param_groups"][0]["decay_scale"] == "lr"
    # into adamwkit with the scale actually used: silent; into torch: extra keys are harmless
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours_params, ours = resume(adamwkit.AdamW, again, params, decay_scale="lr")
    theirs_params, theirs = resume(torch.optim.AdamW, again, params)
    assert theirs.param_groups[0]["decay_scale"] == "lr"  # torch keeps the key, unused
    advance(src, src_params, AFTER, seed=3)
    advance(ours, ours_params, AFTER, seed=3)
    advance(theirs, theirs_params, AFTER, seed=3)
    assert max_diff(ours_params, src_params) <= 1e-6
    assert max_diff(theirs_params, src_params) <= 1e-6


def test_torch_state_dict_into_lr_receiver_is_silent():
    src_params, src, saved = torch_run()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params, opt = resume(adamwkit.AdamW, saved, src_params)
    advance(src, src_params, AFTER, seed=2)
    advance(opt, params, AFTER, seed=2)
    assert max_diff(params, src_params) <= 1e-6
