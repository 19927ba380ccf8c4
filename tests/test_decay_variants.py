"""The decay variants against the NumPy reference (adamwkit.reference), torch.optim.AdamW
and closed forms: AdamC's corrected decay, cautious decay, decay toward the initial
weights, weight-decay schedules, and the population step with each of them."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch

import adamwkit
from adamwkit.functional import adamw_step, effective_weight_decay
from adamwkit.reference import adamw_reference_step
from adamwkit.schedules import WeightDecayScheduler
from conftest import batches, cosine, loss_fn, make_model, reference_pair, rel

STEPS = 150
LR = 1e-2


def run_pair(wd: float, **kw):
    return reference_pair(wd, lr=LR, steps=STEPS, **kw)


@pytest.mark.parametrize("fused", [None, False])
@pytest.mark.parametrize(
    "variant",
    [
        {"decay_scale": "corrected"},
        {"cautious": True},
        {"decay_toward": "init"},
        {"cautious": True, "decay_toward": "init"},
    ],
    ids=["corrected", "cautious", "toward-init", "cautious-toward-init"],
)
def test_variants_match_the_reference(variant, fused):
    ours, ref = run_pair(0.5, fused=fused, **variant)
    assert rel(ours, ref) <= 1e-10
    plain, _ = run_pair(0.5)  # the variant must change the run, or the test says nothing
    assert rel(ours, plain) > 1e-4


def test_corrected_is_torch_with_the_decay_times_the_schedule():
    """AdamC's step decays by wd * lr_t**2 / lr_peak: torch.optim.AdamW with its weight
    decay set to wd * lr_t / lr_peak before each step takes the same steps."""
    model, twin = make_model(torch.float64), make_model(torch.float64)
    twin.load_state_dict(model.state_dict())
    ours = adamwkit.AdamW(model.parameters(), lr=LR, weight_decay=0.5, decay_scale="corrected")
    theirs = torch.optim.AdamW(twin.parameters(), lr=LR, weight_decay=0.5)
    scheds = [torch.optim.lr_scheduler.LambdaLR(o, cosine) for o in (ours, theirs)]
    for t, (x, y) in enumerate(batches(torch.float64, STEPS)):
        theirs.param_groups[0]["weight_decay"] = 0.5 * cosine(t)
        for m, o in ((model, ours), (twin, theirs)):
            o.zero_grad()
            loss_fn(m, x, y).backward()
            o.step()
        for s in scheds:
            s.step()
    assert rel([p.detach().numpy() for p in model.parameters()],
               [p.detach().numpy() for p in twin.parameters()]) <= 1e-12  # fmt: skip


def test_effective_weight_decay_of_corrected():
    assert effective_weight_decay(0.1, "corrected", lr_peak=1e-3, lr=2.5e-4) == pytest.approx(
        0.1 * 2.5e-4 / 1e-3
    )
    with pytest.raises(ValueError, match="pass this step's lr"):
        effective_weight_decay(0.1, "corrected", lr_peak=1e-3)


def test_cautious_first_step_worked_number():
    """Step 1: u = sign(g) (eps 0), so only the coordinates where g and theta share a sign decay."""
    theta = np.array([1.0, -2.0, 0.5, -1.0])
    g = np.array([0.3, -4.0, -1e-3, 2.0])
    new, *_ = adamw_reference_step(theta, g, np.zeros(4), np.zeros(4), 1, alpha=0.1, eps=0.0,
                                   weight_decay=0.2, cautious=True)  # fmt: skip
    expected = theta - 0.1 * np.sign(g) - 0.2 * theta * np.array([1, 1, 0, 0])
    np.testing.assert_allclose(new, expected, rtol=1e-15)


def test_toward_init_keeps_the_initial_weights_a_fixed_point():
    """With zero gradients the weights decay toward where they started: they stay there."""
    p = torch.nn.Parameter(torch.randn(5, 3, dtype=torch.float64))
    start = p.detach().clone()
    opt = adamwkit.AdamW([p], lr=0.1, weight_decay=1.0, decay_toward="init")
    for _ in range(20):
        p.grad = torch.zeros_like(p)
        opt.step()
    torch.testing.assert_close(p.detach(), start, rtol=0, atol=0)
    plain = torch.nn.Parameter(start.clone())
    opt = adamwkit.AdamW([plain], lr=0.1, weight_decay=1.0)
    for _ in range(20):
        plain.grad = torch.zeros_like(plain)
        opt.step()
    assert float(plain.detach().norm()) == pytest.approx(float(start.norm()) * 0.9**20, rel=1e-9)


def test_the_reference_survives_a_state_dict_round_trip():
    a, b = make_model(torch.float64), make_model(torch.float64)
    b.load_state_dict(a.state_dict())
    opt_a = adamwkit.AdamW(a.parameters(), lr=LR, weight_decay=0.5, decay_toward="init")
    data = list(batches(torch.float64, 40))
    for x, y in data[:20]:
        opt_a.zero_grad()
        loss_fn(a, x, y).backward()
        opt_a.step()
    b.load_state_dict(a.state_dict())
    opt_b = adamwkit.AdamW(b.parameters(), lr=LR, weight_decay=0.5, decay_toward="init")
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as torch.save would: no sharing
    for x, y in data[20:]:
        for m, o in ((a, opt_a), (b, opt_b)):
            o.zero_grad()
            loss_fn(m, x, y).backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_weight_decay_schedule_matches_the_reference_and_the_closed_form():
    rise = lambda t: 1.0 + 9.0 * 0.5 * (1 - math.cos(math.pi * min(t, STEPS) / STEPS))  # noqa: E731
    ours, ref = run_pair(0.04, wd_schedule=rise)
    assert rel(ours, ref) <= 1e-10
    p = torch.nn.Parameter(torch.zeros(2))
    opt = adamwkit.AdamW([{"params": [p]}, {"params": [], "weight_decay": 0.0}], lr=1e-3,
                         weight_decay=0.04)  # fmt: skip
    sched = WeightDecayScheduler.cosine(opt, end_factor=10, total_steps=100)
    seen = [sched.get_last_weight_decay()[0]]
    for _ in range(120):
        sched.step()
        seen.append(sched.get_last_weight_decay()[0])
    assert seen[0] == pytest.approx(0.04)
    assert seen[50] == pytest.approx(0.22)  # halfway: the mean of 0.04 and 0.4
    assert seen[100] == pytest.approx(0.4) and seen[120] == pytest.approx(0.4)
    assert opt.param_groups[1]["weight_decay"] == 0.0
    state = sched.state_dict()
    again = WeightDecayScheduler.cosine(opt, end_factor=10, total_steps=100)
    again.load_state_dict(state)
    assert again.get_last_weight_decay()[0] == pytest.approx(0.4)


@pytest.mark.parametrize("impl", ["fused", "forloop"])
@pytest.mark.parametrize(
    "variant",
    [{"decay_scale": "corrected"}, {"cautious": True}, {"decay_toward": "init"}],
    ids=["corrected", "cautious", "toward-init"],
)
def test_population_members_match_standalone_runs(variant, impl):
    """Member i of a stacked step with variant settings = AdamW run alone with its values."""
    g = torch.Generator().manual_seed(0)
    members, shape = 3, (4, 6)
    start = torch.randn((members, *shape), generator=g)
    grads = [torch.randn((members, *shape), generator=g) for _ in range(30)]
    wds, lrs = torch.tensor([0.0, 0.3, 1.0]), torch.tensor([1e-2, 2e-2, 5e-3])
    stacked = start.clone()
    m, v, step = torch.zeros_like(stacked), torch.zeros_like(stacked), torch.zeros(())
    refs = [start.clone()] if variant.get("decay_toward") == "init" else None
    scale = variant.get("decay_scale", "lr")
    for t, grad in enumerate(grads):
        s = cosine(t, 30)
        adamw_step([stacked], [grad], [m], [v], [step], lr=lrs * s, weight_decay=wds,
                   decay_scale=scale, lr_peak=lrs if scale != "lr" else None, impl=impl,
                   cautious=variant.get("cautious", False), references=refs)  # fmt: skip
    for i in range(members):
        p = torch.nn.Parameter(start[i].clone())
        opt = adamwkit.AdamW([p], lr=float(lrs[i]), weight_decay=float(wds[i]), **variant)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: cosine(t, 30))
        for grad in grads:
            p.grad = grad[i].clone()
            opt.step()
            sched.step()
        torch.testing.assert_close(stacked[i], p.detach(), rtol=1e-5, atol=1e-6)


def test_validation_and_refusals():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(ValueError, match="decay_toward"):
        adamwkit.AdamW([p], decay_toward="pretrained")
    with pytest.raises(ValueError, match="cautious='yes' is invalid"):
        adamwkit.AdamW([p], cautious="yes")
    with pytest.raises(ValueError, match="decay_scale"):
        adamwkit.AdamW([p], decay_scale="adamc")
    for kw in ({"decay_scale": "corrected"}, {"cautious": True}):
        opt = adamwkit.AdamW([p], **kw)
        with pytest.raises(ValueError, match="torch.optim.AdamW cannot continue"):
            opt.torch_state_dict()
    with pytest.raises(ValueError, match="references has 2 tensors"):
        adamw_step([p], [p], [p], [p], [torch.zeros(())], lr=1e-3, weight_decay=0.1,
                   references=[p, p])  # fmt: skip
    with pytest.raises(ValueError, match="factor"):
        WeightDecayScheduler(adamwkit.AdamW([p]), "cosine")  # type: ignore[arg-type]


def test_explain_reads_corrected_as_the_torch_value_with_the_same_total_decay():
    """Over a cosine schedule, mean(s^2) / mean(s) = (3/8) / (1/2) = 0.75: AdamC's 0.1
    decays as much in total as PyTorch's 0.075."""
    from adamwkit import explain

    kw = {"lr": 1e-3, "batch_size": 32, "dataset_size": 32_000, "epochs": 10}
    ex = explain(0.1, decay_scale="corrected", schedule="cosine", **kw)
    assert ex.weight_decay == pytest.approx(0.075, rel=1e-3)
    assert any("decay_scale='corrected'" in n for n in ex.notes)
    same = explain(0.075, decay_scale="lr", schedule="cosine", **kw)
    assert ex.tau_epoch == pytest.approx(same.tau_epoch, rel=1e-3)
    assert explain(0.1, decay_scale="corrected", **kw).weight_decay == 0.1  # equal at the peak


EXPLAIN = "--lr 1e-3 --batch-size 32 --dataset-size 32000 --epochs 10 --schedule cosine"


@pytest.mark.parametrize(
    "argv",
    [
        "convert --weight-decay 0.1 --from Optax --to corrected --lr 1e-3",
        "convert --weight-decay 0.1 --from schedule --to ADAMC --lr 1e-3",
        f"explain --weight-decay 0.1 --decay-scale corrected {EXPLAIN}",
    ],
)
def test_cli_accepts_every_name_the_api_accepts(argv, capsys):
    from adamwkit.cli import main

    assert main([*argv.split(), "--json"]) == 0
    assert capsys.readouterr().out.strip().startswith("{")


def test_a_torch_state_dict_keeps_the_receivers_variant():
    """torch.optim.AdamW saves no cautious/decay_toward keys: the receiver keeps its own."""
    p = torch.nn.Parameter(torch.randn(4, 3))
    theirs = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1)
    p.grad = torch.randn(4, 3)
    theirs.step()
    ours = adamwkit.AdamW([p], lr=1e-3, weight_decay=0.1, cautious=True, decay_toward="init")
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    assert ours.param_groups[0]["cautious"] is True
    assert ours.param_groups[0]["decay_toward"] == "init"


@pytest.mark.parametrize("variant", [{"cautious": True}, {"decay_toward": "init"}])
def test_grad_scaler_skips_and_unscales_the_decay_pass(variant):
    """With GradScaler the fused kernel gets scaled gradients and a skip flag: the decay
    pass must skip with it, and the cautious sign test must read unscaled gradients."""
    g = torch.Generator().manual_seed(0)
    start = torch.randn(6, 5, generator=g)
    grads = [torch.randn(6, 5, generator=g) for _ in range(5)]
    runs = []
    for scaled in (False, True):
        p = torch.nn.Parameter(start.clone())
        opt = adamwkit.AdamW([p], lr=0.05, weight_decay=1.0, fused=True, **variant)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16) if scaled else None
        for grad in grads:
            if scaler is None:
                p.grad = grad.clone()
                opt.step()
            else:
                p.grad = None
                scaler.scale((p * grad).sum()).backward()  # the gradient is grad, scaled
                scaler.step(opt)
                scaler.update()
        runs.append(p.detach().clone())
        if scaler is not None:  # a step with an infinite gradient changes nothing
            p.grad = None
            scaler.scale((p * math.inf).sum()).backward()
            scaler.step(opt)
            torch.testing.assert_close(p.detach(), runs[-1], rtol=0, atol=0)
    torch.testing.assert_close(runs[1], runs[0], rtol=1e-6, atol=1e-7)


def test_a_resumed_fused_state_moves_its_step_with_decay_toward_init():
    p = torch.nn.Parameter(torch.randn(4, 3, dtype=torch.float64))
    theirs = torch.optim.AdamW([p], lr=1e-3, foreach=True)
    p.grad = torch.randn_like(p)
    theirs.step()
    ours = adamwkit.AdamW([p], lr=1e-3, fused=True, decay_toward="init")
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    ours.step()
    assert ours.state[p]["step"].dtype == torch.float32 and "decay_ref" in ours.state[p]


def test_cautious_refuses_complex_parameters():
    p = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    p.grad = torch.randn_like(p)
    with pytest.raises(ValueError, match="cautious=True takes real parameters"):
        adamwkit.AdamW([p], cautious=True).step()


def test_weight_decay_scheduler_takes_groups_added_later():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = adamwkit.AdamW([a], weight_decay=0.1)
    sched = WeightDecayScheduler(opt, lambda t: 1.0 + t)
    opt.add_param_group({"params": [b], "weight_decay": 0.2})
    sched.step()
    assert sched.get_last_weight_decay() == pytest.approx([0.2, 0.4])


def test_a_schedule_value_that_looks_like_pytorchs_warns_once_at_the_first_step():
    """0.05 with decay_scale="schedule" at lr 1e-3 takes 5% off per step (the oracle: one
    step of zero gradient multiplies the weights by 1 - 0.05); a warning says so, once."""
    import warnings

    p = torch.nn.Parameter(torch.ones(4))
    opt = adamwkit.AdamW([p], lr=1e-3, weight_decay=0.05, decay_scale="schedule")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(3):
            p.grad = torch.zeros_like(p)
            opt.step()
    texts = [str(w.message) for w in seen if issubclass(w.category, UserWarning)]
    assert len(texts) == 1 and "takes 5% off the weights at every step" in texts[0]
    assert "weight_decay=5e-05 with 'schedule'" in texts[0]
    assert torch.allclose(p.detach(), torch.full((4,), 0.95**3))
    for kw in ({"weight_decay": 5e-5, "decay_scale": "schedule"}, {"weight_decay": 0.05}):
        q = torch.nn.Parameter(torch.ones(2))
        quiet = adamwkit.AdamW([q], lr=1e-3, **kw)
        q.grad = torch.zeros_like(q)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            quiet.step()
