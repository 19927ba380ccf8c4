"""suggest and explain against the papers' worked numbers and hand arithmetic."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from adamwkit.equilibrium import angular_update, equilibrium_norm
from adamwkit.explain import explain
from adamwkit.rules import power_lines_tau
from adamwkit.schedules import warmup_cosine
from adamwkit.suggest import suggest


def rules(sug):
    return {r.name: r for r in sug.rules}


# The paper's numbers, to the three decimals it gives them.
@pytest.mark.parametrize(("tpp", "tau"), [(1, 1.084), (20, 0.224), (100, 0.096), (1000, 0.028)])
def test_power_lines_tau(tpp, tau):
    assert round(power_lines_tau(tpp), 3) == tau


@pytest.mark.parametrize(("tpp", "tau"), [(20, 0.224), (100, 0.096)])
def test_power_lines_rule_lands_on_tau_opt(tpp, tau):
    params, batch = 1e9, 1_048_576
    sug = suggest(lr=3e-4, batch_size=batch, tokens=tpp * params, params=params)
    assert sug.rule == "power-lines"
    assert round(sug.tau_run, 3) == tau
    # lambda = B / (lr * tau * D), computed by hand.
    assert sug.weight_decay == pytest.approx(batch / (3e-4 * power_lines_tau(tpp) * tpp * params))


def test_loshchilov_hutter_cifar10():
    # Appendix B.1: b 128, N 50,000, T 100, lambda_norm 0.05 -> lambda 2.53e-4 (paper units).
    sug = suggest(lr=1e-3, batch_size=128, dataset_size=50_000, epochs=100)
    lh = rules(sug)["loshchilov-hutter"]
    assert float(f"{lh.weight_decay_independent:.3g}") == 2.53e-4
    assert lh.weight_decay == pytest.approx(lh.weight_decay_independent / 1e-3)


def test_kosson_angular_update():
    # lr 6e-4, lambda 0.1, beta1 0.9 -> 2.5e-3 rad/step.
    assert angular_update(6e-4, 0.1, 0.9) == pytest.approx(2.5e-3, abs=5e-5)


def test_kosson_equilibrium_against_a_simulation_with_torch_adamw():
    """Oracle: torch.optim.AdamW on a scale-invariant tensor (gradients orthogonal to w),
    run for 15 timescales; the norm and the angle per step settle where Kosson et al. say."""
    torch.manual_seed(0)
    c, lr, wd = 4096, 1e-2, 0.5
    w = nn.Parameter(torch.randn(c) * 3)
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=wd)
    norms, angles = [], []
    for t in range(3000):
        g = torch.randn(c)
        v = w.detach()
        w.grad = g - (g @ v) / (v @ v) * v
        prev = v.clone()
        opt.step()
        if t >= 1500:
            now = w.detach()
            cos = float(prev @ now / (prev.norm() * now.norm()))
            angles.append(math.acos(min(1.0, cos)))
            norms.append(float(now.norm()))
    assert sum(norms) / len(norms) == pytest.approx(equilibrium_norm(lr, wd, c), rel=0.05)
    assert sum(angles) / len(angles) == pytest.approx(angular_update(lr, wd, 0.9), rel=0.02)


def test_the_vit_s_question_in_one_call():
    # "ViT-S on 100k images for 100 epochs with lr 1e-3, batch 256": tau_epoch = sqrt(100).
    sug = suggest(lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100)
    assert sug.rule == "calibrated"  # multi-epoch: the rule fitted on the evidence
    wa = rules(sug)["wang-aitchison"]
    assert wa.weight_decay == pytest.approx(256 / (1e-3 * 10 * 100_000))
    assert wa.tau_epoch == pytest.approx(10.0)
    assert wa.weight_decay_independent == pytest.approx(wa.weight_decay * 1e-3)
    assert sug.value == sug.weight_decay
    assert "multi-epoch" in sug.reason and "cross-validated studies" in sug.reason
    # PyTorch's default would give tau_epoch 256 of 100 epochs: that row warns.
    default = rules(sug)["torch-default"]
    assert default.tau_epoch == pytest.approx(256.0)
    assert any("barely acts" in w for w in default.warnings)
    # Power Lines needs tokens and params, and says so.
    assert not rules(sug)["power-lines"].ran
    assert "needs tokens and params" in rules(sug)["power-lines"].note


def test_deit_b_recipe_is_close_to_the_suggestion():
    # The recipe's 0.05 sits at tau_epoch 16.0; Wang & Aitchison's rule aims at sqrt(300).
    wa = rules(suggest(lr=1e-3, batch_size=1024, dataset_size=1_281_167, epochs=300))
    assert wa["wang-aitchison"].tau_epoch == pytest.approx(math.sqrt(300))
    expected = 0.05 * 16.0 / math.sqrt(300)
    assert wa["wang-aitchison"].weight_decay == pytest.approx(expected, rel=2e-3)


def test_steps_and_epochs_agree():
    a = suggest(lr=1e-3, batch_size=100, dataset_size=10_000, epochs=50)
    b = suggest(lr=1e-3, batch_size=100, dataset_size=10_000, steps=5_000)
    assert a.weight_decay == pytest.approx(b.weight_decay)


def test_schedule_scale_returns_the_independent_value():
    sug = suggest(lr=2e-3, batch_size=64, dataset_size=6_400, epochs=16, decay_scale="schedule")
    assert sug.value == sug.weight_decay_independent == pytest.approx(2e-3 * sug.weight_decay)


def test_single_pass_without_params_falls_back_and_names_the_flag():
    sug = suggest(lr=6e-4, batch_size=500_000, tokens=1e10)
    assert sug.rule == "wang-aitchison"
    assert "needs params" in rules(sug)["power-lines"].note
    assert any("Power Lines" in w for w in sug.warnings)


def test_power_lines_warns_outside_its_fit():
    sug = suggest(lr=6e-4, batch_size=491_520, tokens=300e9, params=124e6)
    assert any("outside 1 to 1,000" in w for w in sug.warnings)
    inside = suggest(lr=6e-4, batch_size=491_520, tokens=20e9, params=1e9)
    assert inside.warnings == ()
    multi = suggest(lr=6e-4, batch_size=491_520, tokens=20e9, params=1e9, epochs=4)
    assert multi.rule == "wang-aitchison"
    assert any("one pass" in w for w in rules(multi)["power-lines"].warnings)


def test_no_rule_can_run_says_which_flags_would():
    with pytest.raises(ValueError, match=r"dataset_size with epochs or steps.*tokens with params"):
        suggest(lr=1e-3, batch_size=32, dataset_size=1000)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"lr": 0}, r"lr=0 is invalid: expected a learning rate in \[1e-12, 1000\]"),
        ({"lr": float("nan")}, r"lr=nan is invalid"),
        ({"batch_size": -1}, r"batch_size=-1 is invalid"),
        ({"dataset_size": 0}, r"dataset_size=0 is invalid"),
        ({"epochs": -3}, r"epochs=-3 is invalid"),
        ({"batch_size": 2000}, r"batch_size=2000 is invalid: .*\(0, 1000\]"),
        ({"steps": 10}, r"epochs=.* and steps=10 are exclusive"),
        ({"tokens": 1e6}, r"dataset_size=.* and tokens=.* are exclusive"),
        ({"decay_scale": "torch"}, r"decay_scale='torch' is invalid"),
        ({"beta1": 1.0}, r"beta1=1.0 is invalid"),
        ({"params": 0}, r"params=0 is invalid"),
    ],
)
def test_bad_input_names_the_argument(kwargs, match):
    base = {"lr": 1e-3, "batch_size": 10, "dataset_size": 1000, "epochs": 5}
    with pytest.raises(ValueError, match=match):
        suggest(**{**base, **kwargs})


# ---------------------------------------------------------------------------- explain


def test_explain_barely_acts():
    # tau_epoch = B / (lr * wd * N) = 163 epochs, trained for 82.
    wd = 128 / (1e-3 * 163 * 50_000)
    ex = explain(wd, lr=1e-3, batch_size=128, dataset_size=50_000, epochs=82)
    assert ex.verdict_code == "barely-acts"
    assert "tau_epoch is 163 epochs but you train 82: the decay barely acts" in ex.verdict
    assert ex.tau_epoch == pytest.approx(163)


def test_explain_dominates_and_in_window():
    kw = {"lr": 1e-3, "batch_size": 100, "dataset_size": 10_000, "epochs": 30}
    assert explain(20.0, **kw).verdict_code == "dominates"  # tau_epoch 0.5
    assert explain(0.5, **kw).verdict_code == "in-window"  # tau_epoch 20
    assert explain(0.0, **kw).verdict_code == "no-decay"


def test_explain_spots_a_value_from_the_other_convention():
    # 1e-4 written for the paper's convention, used as PyTorch's: tau_epoch 25,600.
    ex = explain(1e-4, lr=1e-3, batch_size=128, dataset_size=50_000, epochs=82)
    assert ex.verdict_code == "barely-acts"
    assert any("decay_scale='schedule'" in n for n in ex.notes)
    read_right = explain(
        1e-4, lr=1e-3, batch_size=128, dataset_size=50_000, epochs=82, decay_scale="schedule"
    )
    assert read_right.weight_decay == pytest.approx(0.1)
    assert read_right.verdict_code == "in-window"


def test_explain_weights_remaining_against_torch_scheduler_lrs():
    """Oracle: prod over the lrs torch's LambdaLR produces of (1 - lr_t * wd)."""
    lr, wd, n, b, epochs = 1e-3, 0.5, 1000, 10, 20
    steps = epochs * n // b
    sched = warmup_cosine(steps, 50)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    lambda_lr = sched.scheduler(opt)
    product = 1.0
    for _ in range(steps):
        product *= 1 - opt.param_groups[0]["lr"] * wd
        opt.step()
        lambda_lr.step()
    kw = {"lr": lr, "batch_size": b, "dataset_size": n, "epochs": epochs}
    assert explain(wd, schedule=sched, **kw).weights_remaining == pytest.approx(product, rel=1e-9)
    named = explain(wd, schedule="cosine", warmup_steps=50, **kw)
    assert named.weights_remaining == pytest.approx(product, rel=1e-9)
    assert explain(wd, **kw).weights_remaining == pytest.approx((1 - lr * wd) ** steps)


def test_explain_single_pass_against_power_lines():
    params, batch, lr = 1e9, 1_000_000, 3e-4
    kw = {"lr": lr, "batch_size": batch, "tokens": 20 * params, "params": params}
    best = batch / (lr * power_lines_tau(20) * 20 * params)
    assert explain(best, **kw).verdict_code == "near-optimal"
    assert explain(best / 10, **kw).verdict_code == "weaker-than-optimal"
    assert explain(best * 10, **kw).verdict_code == "stronger-than-optimal"


def test_explain_per_layer_equilibrium_norms():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 20), nn.LayerNorm(20), nn.Linear(20, 3))
    ex = explain(0.1, lr=1e-3, batch_size=10, dataset_size=100, epochs=10, model=model)
    layers = {layer.name: layer for layer in ex.layers}
    assert set(layers) == {"0.weight", "2.weight"}  # biases and the norm do not decay
    assert layers["0.weight"].equilibrium_norm == pytest.approx(math.sqrt(1e-3 * 200 / 0.2))
    assert layers["0.weight"].norm == pytest.approx(float(model[0].weight.detach().norm()))


def test_explain_rejects_bad_weight_decay():
    with pytest.raises(ValueError, match=r"weight_decay=-0.1 is invalid"):
        explain(-0.1, lr=1e-3, batch_size=10, dataset_size=100, epochs=1)


def test_tokens_count_the_whole_run():
    # D = 300B tokens over 4 passes is still 300B tokens per parameter count: TPP = D / P.
    one = suggest(lr=6e-4, batch_size=491_520, tokens=300e9, params=124e6)
    four = suggest(lr=6e-4, batch_size=491_520, tokens=300e9, params=124e6, epochs=4)
    assert one.setup.tokens_per_param == four.setup.tokens_per_param == pytest.approx(300e9 / 124e6)
    assert four.setup.total_steps == pytest.approx(300e9 / 491_520)
    assert four.setup.dataset_size == pytest.approx(75e9)
    with pytest.raises(ValueError, match=r"tokens=.* and steps=.* are exclusive"):
        suggest(lr=6e-4, batch_size=491_520, tokens=300e9, params=124e6, steps=1000)


def test_explain_a_decay_that_flips_the_weights():
    # lr * wd = 1: one step at the peak zeroes the weights; no math domain error.
    ex = explain(1.0, lr=1e-3, batch_size=256, dataset_size=100_000, epochs=100,
                 decay_scale="schedule")  # fmt: skip
    assert ex.weight_decay == pytest.approx(1000.0)
    assert ex.verdict_code == "dominates" and ex.weights_remaining == 0.0
    assert any("decay_scale='lr'" in n for n in ex.notes)


def test_explain_single_pass_can_be_dominated():
    # tau_iter = 1 / (1e-3 * 500) = 2 steps of a 390-step single pass.
    ex = explain(500, lr=1e-3, batch_size=256, dataset_size=100_000, epochs=1)
    assert ex.verdict_code == "dominates"


def test_steps_must_be_at_least_one():
    with pytest.raises(ValueError, match=r"steps=0.5 is invalid"):
        suggest(lr=1e-3, batch_size=10, dataset_size=1000, steps=0.5)


def test_the_calibrated_range_is_shown_and_brackets_the_value():
    from adamwkit import _calibration as cal

    sug = suggest(lr=1e-3, batch_size=32, dataset_size=400, epochs=300)
    assert sug.rule == "calibrated"
    # the range is the band of tau_epoch around the prediction, read back as weight decay
    tau = sug.tau_epoch
    lo_tau, hi_tau = tau * math.exp(cal.BAND[0]), tau * math.exp(cal.BAND[1])
    assert sug.low == pytest.approx(32 / (1e-3 * hi_tau * 400))
    assert sug.high == pytest.approx(32 / (1e-3 * lo_tau * 400))
    assert sug.low < sug.weight_decay < sug.high
    assert "80% range" in str(sug)
    inside = explain(sug.low * 1.01, lr=1e-3, batch_size=32, dataset_size=400, epochs=300)
    assert "is inside its 80% range" in str(inside)
    outside = explain(sug.high * 3, lr=1e-3, batch_size=32, dataset_size=400, epochs=300)
    assert "is outside its 80% range" in str(outside)
    # in the paper's convention the range scales with lr like the value
    sched = suggest(lr=1e-3, batch_size=32, dataset_size=400, epochs=300, decay_scale="schedule")
    assert sched.low_value == pytest.approx(sug.low * 1e-3)


def test_outside_the_evidence_the_calibrated_rule_warns():
    sug = suggest(lr=1e-3, batch_size=32, dataset_size=400, epochs=5000)
    assert any("an extrapolation" in w for w in sug.warnings)
    single = suggest(lr=1e-3, batch_size=32, dataset_size=400, epochs=1)
    assert single.rule == "wang-aitchison"
    assert "not single-pass" in rules(single)["calibrated"].note
