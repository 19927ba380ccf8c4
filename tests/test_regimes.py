"""Regimes, total decay and the fine-tune guard rail, each against an independent oracle.

The oracles: torch.optim.AdamW itself (with zero gradients a step is its decay alone), the
lrs torch's LambdaLR produces, hand arithmetic written out in the test, and the values the
code gave before regimes existed, written in literally.
"""

from __future__ import annotations

import itertools
import math
import re

import pytest
import torch

from adamwkit import explain, suggest
from adamwkit.cli import main
from adamwkit.render import Table
from adamwkit.rules import D_MAX_FINETUNE, guard, total_decay, training_setup
from adamwkit.schedules import warmup_linear

# The issue's fine-tune: lr 2e-5, batch 32, 10,000 examples, 3 epochs: 937.5 steps.
ISSUE = ["--lr", "2e-5", "--batch-size", "32", "--dataset-size", "10000", "--epochs", "3"]
ISSUE_KW = {"lr": 2e-5, "batch_size": 32, "dataset_size": 10_000, "epochs": 3}
ISSUE_STEPS = 3 * 10_000 / 32
# The fine-tuning rule at that setup (PyTorch convention): D = 3e-3 (range 3e-4 to 3e-2)
# over lr * steps = 2e-5 * 937.5 = 0.01875, so wd = 3e-3 / 0.01875 = 0.16 and the range is
# 3e-4 / 0.01875 = 0.016 to 3e-2 / 0.01875 = 1.6.
WD = 0.16
BAND = (0.016, 1.6)


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, " ".join(out.split()), err


def hand_d(wd_torch: float, lr: float, steps: float) -> float:
    """D = sum over steps of lr * wd at a constant lr, by hand."""
    return wd_torch * lr * steps


def within(d: float, slack: float = 1e-12) -> bool:
    """D <= the bound, up to float rounding (a value can sit exactly on it)."""
    return d <= D_MAX_FINETUNE * (1 + slack)


# ---------------------------------------------------------------------------- total decay


def test_total_decay_by_hand():
    # 92.4 at lr 2e-5 over 937.5 steps: 92.4 * 2e-5 * 937.5 = 1.7325
    assert total_decay(92.4, 2e-5, 937.5) == pytest.approx(1.7325, rel=1e-12)
    # the paper's convention: 92.4 * 2e-5 = 1.848e-3 per step at the peak, times 937.5
    assert total_decay(1.848e-3, 2e-5, 937.5, "schedule") == pytest.approx(1.7325, rel=1e-12)
    # a schedule whose lr averages half the peak halves it
    assert total_decay(92.4, 2e-5, 937.5, lr_mean_factor=0.5) == pytest.approx(0.86625)
    assert total_decay(0.0, 2e-5, 937.5) == 0.0


def test_exp_minus_d_is_what_torch_adamw_does_to_the_weights():
    """Oracle: torch.optim.AdamW with zero gradients for 938 steps; the Adam part of each
    step is 0, so the weights shrink by decay alone: prod (1 - lr * wd) = exp(-D) to first
    order (relative error about D * lr * wd / 2 = 1.6e-3 here)."""
    lr, wd, steps = 2e-5, 92.4, 938
    w = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    opt = torch.optim.AdamW([w], lr=lr, weight_decay=wd)
    for _ in range(steps):
        w.grad = torch.zeros_like(w)
        opt.step()
    shrink = float(w.detach()[0])
    assert shrink == pytest.approx(math.exp(-total_decay(wd, lr, steps)), rel=5e-3)
    assert shrink == pytest.approx(0.177, abs=1e-3)  # the issue's e^-1.7


def test_explain_uses_the_schedule_mean_lr_against_torch_lambdalr():
    """Oracle: the sum of the lrs torch's LambdaLR gives a linear schedule, times wd."""
    lr, wd, steps = 2e-5, 0.1, 938
    sched = warmup_linear(steps, 50)
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    lambda_lr = sched.scheduler(opt)
    d = 0.0
    for _ in range(steps):
        d += opt.param_groups[0]["lr"] * wd
        opt.step()
        lambda_lr.step()
    kw = {"lr": lr, "batch_size": 32, "dataset_size": 10_000 * steps / 937.5, "epochs": 3}
    ex = explain(wd, schedule=sched, pretrained=True, **kw)
    assert ex.total_decay == pytest.approx(d, rel=1e-9)
    assert "schedule's mean lr" in ex.lr_basis
    flat = explain(wd, pretrained=True, **kw)
    assert flat.total_decay == pytest.approx(wd * lr * steps) and flat.lr_basis == "the peak lr"
    assert "at the peak lr" in " ".join(str(flat).split())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"wd": -1.0}, r"wd=-1.0 is invalid"),
        ({"lr": 0.0}, r"lr=0.0 is invalid"),
        ({"steps": -5.0}, r"steps=-5.0 is invalid"),
        ({"decay_scale": "corrected"}, r"decay_scale='corrected' is invalid"),
        ({"lr_mean_factor": 1.5}, r"lr_mean_factor=1.5 is invalid"),
    ],
)
def test_total_decay_rejects_bad_input_in_one_line(kwargs, match):
    args = {"wd": 0.1, "lr": 1e-3, "steps": 100.0, **kwargs}
    with pytest.raises(ValueError, match=match) as err:
        total_decay(**args)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("flag", ["pretrained", "adapters"])
def test_the_regime_flags_must_be_booleans(flag):
    with pytest.raises(ValueError, match=rf"{flag}='yes' is invalid: expected True or False"):
        suggest(**ISSUE_KW, **{flag: "yes"})


# ---------------------------------------------------------------------------- the issue


def test_the_issue_with_pretrained_gives_a_fine_tune_value(capsys):
    sug = suggest(**ISSUE_KW, pretrained=True)
    assert sug.rule == "finetune" and sug.regime == "fine-tune" and sug.usable
    assert sug.value == pytest.approx(WD, rel=1e-12)
    assert sug.low == pytest.approx(BAND[0], rel=1e-12)
    assert sug.high == pytest.approx(BAND[1], rel=1e-12)
    assert BAND[0] * (1 - 1e-9) <= sug.low and sug.high <= BAND[1] * (1 + 1e-9)
    for wd in (sug.value, sug.low, sug.high):
        assert hand_d(wd, 2e-5, ISSUE_STEPS) <= D_MAX_FINETUNE
    code, out, _ = run(capsys, "suggest", *ISSUE, "--pretrained")
    assert code == 0
    assert f"Suggested weight decay: {sug.value:.3g}" in out
    assert "assumes fine-tune (full, of pretrained weights)" in out
    assert f"Use it: AdamW(param_groups(model, weight_decay={sug.value:.3g})" in out
    # 0.16 * 2e-5 * 937.5 = 3e-3; 1 - e^-0.003 = 0.2996%, printed to 3 digits
    assert "decays the weights by 0.3% (factor exp(-D) 0.997004, D 0.003)" in out
    assert "fine-tuning range 0.016 to 1.6;" in out
    # the range's top sits on the bound: 1.6 * 2e-5 * 937.5 = 0.03, 1 - e^-0.03 = 2.96%
    assert "1.6 by 2.96% (factor exp(-D) 0.970446, D 0.03)" in out
    assert "provisional" not in out and "docs/evidence-finetune.md" in out
    assert "this looks like a fine-tune" not in out
    code, out, _ = run(capsys, "suggest", *ISSUE, "--pretrained", "--json")
    obj = __import__("json").loads(out)
    assert obj["regime"] == "fine-tune" and obj["usable"] is True
    assert obj["total_decay"] == pytest.approx(hand_d(obj["weight_decay"], 2e-5, ISSUE_STEPS))


def test_the_issue_without_pretrained_warns_and_prints_no_use_it_line(capsys):
    code, out, _ = run(capsys, "suggest", *ISSUE)
    assert code == 0
    assert "this looks like a fine-tune" in out
    assert "pass --pretrained (pretrained=True)" in out
    assert "from-scratch rules would decay its weights by 82.3%" in out  # 1 - e^-1.7325
    assert "Use it:" not in out
    assert "assumes from scratch, multi-epoch" in out
    sug = suggest(**ISSUE_KW)
    assert not sug.usable and sug.regime_warning.startswith("this looks like a fine-tune")
    assert hand_d(sug.weight_decay, 2e-5, ISSUE_STEPS) > D_MAX_FINETUNE


def test_the_issue_in_explain(capsys):
    code, out, _ = run(capsys, "explain", "--weight-decay", "92.4", *ISSUE, "--pretrained")
    assert code == 0
    assert "above the bound D <= 0.03" in out and "82.3%" in out
    ex = explain(92.4, **ISSUE_KW, pretrained=True)
    assert ex.verdict_code == "finetune-above-bound"
    assert explain(0.05, **ISSUE_KW, pretrained=True).verdict_code == "finetune-within-bound"
    # either side of the bound D 0.03: 1.5 * 0.01875 = 0.028125, 1.7 * 0.01875 = 0.031875
    assert explain(1.5, **ISSUE_KW, pretrained=True).verdict_code == "finetune-within-bound"
    assert explain(1.7, **ISSUE_KW, pretrained=True).verdict_code == "finetune-above-bound"
    # without --pretrained the value is read from scratch, with the fine-tune warning
    code, out, _ = run(capsys, "explain", "--weight-decay", "92.4", *ISSUE)
    assert "this looks like a fine-tune" in out and "pass --pretrained" in out


def test_adapters_are_a_fine_tune_of_their_own(capsys):
    # LoRA at lr 2e-4: lr * steps = 2e-4 * 937.5 = 0.1875, so D 3e-3 is wd 0.016 and the
    # range 3e-4 to 3e-2 is wd 0.0016 to 0.16.
    kw = {**ISSUE_KW, "lr": 2e-4}
    sug = suggest(**kw, adapters=True)
    assert sug.regime == "fine-tune-adapters" and sug.setup.pretrained
    assert sug.rule == "finetune" and "frozen base" in sug.reason
    assert sug.value == pytest.approx(0.016, rel=1e-12)
    assert (sug.low, sug.high) == pytest.approx((0.0016, 0.16), rel=1e-12)
    code, out, _ = run(capsys, "suggest", *ISSUE[:1], "2e-4", *ISSUE[2:], "--adapters")
    assert code == 0 and "assumes fine-tune (adapters such as LoRA)" in out
    ex = explain(1.0, **kw, adapters=True)  # D = 1 * 2e-4 * 937.5 = 0.1875
    assert ex.verdict_code == "finetune-above-bound" and "frozen base" in ex.verdict


def test_a_fine_tune_needs_its_length():
    with pytest.raises(ValueError, match=r"fine-tune .* needs the run's length"):
        suggest(lr=2e-5, batch_size=32, dataset_size=10_000, pretrained=True)
    # steps alone are enough
    sug = suggest(lr=2e-5, batch_size=32, steps=1000, pretrained=True)
    assert sug.total_decay == pytest.approx(3e-3)
    assert sug.weight_decay == pytest.approx(0.15)  # 3e-3 / (2e-5 * 1000)


# ---------------------------------------------------------------------------- from scratch


def test_a_long_run_from_scratch_is_unaffected(capsys):
    # digits-mlp (docs/evidence.md): 1,437 examples, 300 epochs, batch 32, lr 1e-3; the
    # values the code gave before regimes existed (the range: the calibration refit on
    # eleven families).
    kw = {"lr": 1e-3, "batch_size": 32, "dataset_size": 1437, "epochs": 300}
    sug = suggest(**kw)
    assert sug.rule == "calibrated" and sug.regime == "multi-epoch" and sug.usable
    assert sug.weight_decay == pytest.approx(1.2856790963164946, rel=1e-12)
    assert sug.low == pytest.approx(0.1260817488395211, rel=1e-12)
    assert sug.high == pytest.approx(2.8415817776632153, rel=1e-12)
    assert [r.name for r in sug.rules] == [
        "calibrated", "wang-aitchison", "power-lines", "loshchilov-hutter", "torch-default"
    ]  # fmt: skip
    assert not any(r.blocked for r in sug.rules)
    # D is large, as it should be from scratch: 1.29 * 1e-3 * 13,471.875 = 17.3
    assert sug.total_decay == pytest.approx(hand_d(sug.weight_decay, 1e-3, 300 * 1437 / 32))
    assert guard(sug.value, sug.setup) is None
    code, out, _ = run(capsys, "suggest", "--lr", "1e-3", "--batch-size", "32",
                       "--dataset-size", "1437", "--epochs", "300")  # fmt: skip
    assert code == 0
    assert "Use it: AdamW(param_groups(model, weight_decay=1.29)" in out
    assert "this looks like a fine-tune" not in out


@pytest.mark.parametrize(
    ("kwargs", "looks"),
    [
        ({"lr": 1e-3, "batch_size": 32, "dataset_size": 10_000, "epochs": 3}, False),  # lr
        ({"lr": 2e-5, "batch_size": 32, "dataset_size": 10_000, "epochs": 50}, False),  # long
        ({"lr": 6e-5, "batch_size": 3.2e6, "tokens": 300e9, "params": 175e9}, False),  # GPT-3
        ({"lr": 1e-4, "batch_size": 32, "dataset_size": 10_000, "epochs": 5}, True),
        ({"lr": 5e-5, "batch_size": 16, "dataset_size": 2_000, "steps": 300}, True),
    ],
)
def test_what_looks_like_a_fine_tune(kwargs, looks):
    sug = suggest(**kwargs)
    assert bool(sug.regime_warning) is looks


# ---------------------------------------------------------------------------- guard rail


def _printed_usable_values(sug) -> list[float]:
    """Every weight decay the blocks print as usable (PyTorch convention): the "Use it"
    value, the range ends, and each rule row of the table that is neither skipped nor
    blocked."""
    text = " ".join(str(sug).split())
    values = []
    use = re.search(r"Use it: AdamW\(param_groups\(model, weight_decay=([^)]+)\)", text)
    assert use is not None
    scale = 1.0 if sug.decay_scale == "lr" else 1.0 / sug.setup.lr
    values.append(float(use.group(1).replace(",", "")) * scale)
    rng = re.search(r"range ([\d.e+,-]+) to ([\d.e+,-]+);", text)
    assert rng is not None
    values += [float(g.replace(",", "")) * scale for g in rng.groups()]
    table = next(b for b in sug.blocks() if isinstance(b, Table))
    for row in table.rows:
        if row[2] != "skipped" and not row[4].endswith("blocked"):
            values.append(float(row[2].replace(",", "")))
    return values


LRS = (1e-6, 2e-5, 1e-4, 3e-4, 1e-3, 1e-2)
EPOCHS = (0.5, 1, 3, 20, 300)
SIZES = (100, 10_000, 1_000_000)
BATCHES = (1, 32, 1024)


@pytest.mark.parametrize("regime", ["pretrained", "adapters"])
@pytest.mark.parametrize("scale", ["lr", "schedule"])
def test_no_printed_usable_value_of_a_fine_tune_exceeds_the_bound(regime, scale):
    checked = 0
    for lr, epochs, n, b in itertools.product(LRS, EPOCHS, SIZES, BATCHES):
        if b > n:
            continue
        sug = suggest(lr=lr, batch_size=b, dataset_size=n, epochs=epochs, decay_scale=scale,
                      **{regime: True})  # fmt: skip
        steps = epochs * n / b  # by hand, not from the setup
        assert sug.rule == "finetune" and sug.usable
        for wd in (sug.weight_decay, sug.low, sug.high):
            assert within(hand_d(wd, lr, steps))
        for r in sug.rules:
            if r.usable:
                assert within(hand_d(r.weight_decay, lr, steps)), (r.name, lr, epochs, n, b)
            elif r.ran:
                assert not within(hand_d(r.weight_decay, lr, steps), -1e-12), r.name
        for wd in _printed_usable_values(sug):
            # printed to 3 significant digits: allow their rounding
            assert within(hand_d(wd, lr, steps), 0.005), (wd, lr, epochs, n, b)
        assert guard(sug.value, sug.setup) is None
        checked += 1
    assert checked == 6 * 5 * (2 + 3 + 3)  # a batch never exceeds the dataset


def test_guard_names_the_bound_for_a_fine_tune_and_is_quiet_within_it():
    s = training_setup(**ISSUE_KW, pretrained=True)
    text = guard(92.4, s)
    assert text is not None and "D <= 0.03" in text and "82.3%" in text
    assert guard(0.1, s) is None  # D = 0.1 * 0.01875 = 1.9e-3
    # in the paper's convention the same decay is 92.4 * 2e-5
    sched = training_setup(**ISSUE_KW, pretrained=True, decay_scale="schedule")
    assert guard(92.4 * 2e-5, sched) is not None and guard(0.1 * 2e-5, sched) is None
    # a schedule's mean lr lowers D: 2.4 * 2e-5 * 937.5 = 0.045 at the peak, 0.0225 at half
    assert guard(2.4, s) is not None and guard(2.4, s, lr_mean_factor=0.5) is None
    # unknown length: nothing to check
    assert guard(92.4, training_setup(lr=2e-5, batch_size=32, pretrained=True)) is None
