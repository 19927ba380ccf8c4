"""adamwkit.audit: each failure case built on a small model gives its code on exactly the
intended tensors, and a correct param_groups + AdamW set-up gives none.

Oracles: the tensors' own properties (ndim, the module that owns them), torch's
optimizers applied for real (the precision case: one bf16 step with zero gradients leaves
exactly the flagged tensors unchanged)."""

from __future__ import annotations

import io
import json

import pytest
import torch
from rich.console import Console
from torch import nn

import adamwkit
from adamwkit import AdamW, audit, param_groups, render

STEPS = 50_000  # long enough that lr 1e-3 x wd 0.1 acts (D = 5)


def transformer() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Embedding(50, 16),
        nn.TransformerEncoderLayer(16, nhead=2, dim_feedforward=32, batch_first=True),
        nn.Linear(16, 4),
    )


def should_not_decay(model: nn.Module) -> set[str]:
    """The oracle: biases and normalisation weights, by construction (an ``nn.Embedding``
    decays, as param_groups' default and Hugging Face's do)."""
    out = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            full = f"{mname}.{pname}" if mname else pname
            if p.ndim < 2 or isinstance(module, nn.LayerNorm):
                out.add(full)
    return out


def found(report: adamwkit.Audit, code: str) -> set[str]:
    return {t for f in report.findings if f.code == code for t in f.tensors}


def test_a_correct_set_up_has_no_finding():
    model = transformer()
    report = audit(AdamW(param_groups(model, 0.1), lr=1e-3), model, total_steps=STEPS)
    assert report.findings == [], report.codes()
    assert len(report.rows) == len(list(model.parameters()))
    assert "no mistake found" in str(report)


def test_torch_adamw_over_every_parameter_decays_norms_biases_and_tables():
    model = transformer()
    report = audit(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1), model,
                   total_steps=STEPS)  # fmt: skip
    assert report.codes() == ["decays-norm-or-bias"]
    assert found(report, "decays-norm-or-bias") == should_not_decay(model)
    row = report.rows[0]
    assert (row.decay_kind, row.per_step, row.over_run) == ("decoupled", pytest.approx(1e-4),
                                                           pytest.approx(5.0))  # fmt: skip


def test_adam_with_weight_decay_is_l2_not_decoupled():
    model = transformer()
    report = audit(torch.optim.Adam(param_groups(model, 0.01), lr=1e-3), model)
    assert report.codes() == ["l2-not-decoupled"]
    decayed = {r.name for r in report.rows if r.weight_decay > 0}
    assert found(report, "l2-not-decoupled") == decayed
    assert decayed == {n for n, _ in model.named_parameters()} - should_not_decay(model)
    # SGD's L2 is its decay (no adaptive step): no finding
    assert audit(torch.optim.SGD(param_groups(model, 0.01), lr=0.1), model).findings == []


def test_a_tensor_left_out_and_one_in_two_groups():
    model = transformer()
    params = list(model.named_parameters())
    left_out, rest = params[0], params[1:]
    opt = torch.optim.AdamW([p for _, p in rest], lr=1e-3, weight_decay=0.0)
    assert audit(opt, model).codes() == ["not-in-optimizer"]
    assert found(audit(opt, model), "not-in-optimizer") == {left_out[0]}
    opt.add_param_group({"params": [left_out[1]], "weight_decay": 0.0})
    opt.param_groups[1]["params"].append(rest[-1][1])  # after the constructor's own check
    report = audit(opt, model)
    assert report.codes() == ["in-two-groups"] and found(report, "in-two-groups") == {rest[-1][0]}


def test_a_matrix_in_the_zero_decay_group_while_others_decay():
    model = transformer()
    groups = param_groups(model, 0.1)
    moved = groups[0]["params"].pop()  # a decayed matrix, moved to the no-decay group
    groups[-1]["params"].append(moved)
    report = audit(AdamW(groups, lr=1e-3), model, total_steps=STEPS)
    name = next(n for n, p in model.named_parameters() if p is moved)
    assert report.codes() == ["group-decay-zero"] and found(report, "group-decay-zero") == {name}


def test_decay_lost_in_bf16_is_what_a_real_step_does():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.Linear(32, 32)).to(torch.bfloat16)
    w0, w1 = model[0].weight, model[1].weight
    opt = torch.optim.AdamW([{"params": [w0], "lr": 1e-3, "weight_decay": 0.1},   # 1e-4 a step
                             {"params": [w1], "lr": 1e-1, "weight_decay": 0.1}],  # 1e-2 a step
                            foreach=False)  # fmt: skip
    report = audit(opt, model)
    assert found(report, "decay-lost-in-precision") == {"0.weight"}
    # the oracle: one real step with zero gradients (the update is 0, decay alone acts)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in (w0, w1):
        p.grad = torch.zeros_like(p)
    opt.step()
    assert torch.equal(w0.detach(), before["0.weight"])  # flagged: nothing moved
    assert not torch.equal(w1.detach(), before["1.weight"])  # not flagged: it decayed
    # without the model, the tensors go by their place in the optimizer
    report = audit(opt)
    assert found(report, "decay-lost-in-precision") == {"param_groups[0]['params'][0]"}


def test_lora_adapters_decayed_toward_zero_and_a_run_too_short():
    class Lora(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.base = nn.Linear(8, 8)
            self.base.requires_grad_(False)
            self.lora_A = nn.Linear(8, 2, bias=False)
            self.lora_B = nn.Linear(2, 8, bias=False)

    model = Lora()
    report = audit(AdamW(param_groups(model, 0.01), lr=1e-4), model, total_steps=1000)
    assert set(report.codes()) == {"decay-toward-base", "too-short"}
    assert found(report, "decay-toward-base") == {"lora_A.weight", "lora_B.weight"}
    assert found(report, "too-short") == {"lora_A.weight", "lora_B.weight"}  # D = 1e-3


def test_state_space_parameters_follow_the_extended_rules():
    class Mamba(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.A_log = nn.Parameter(torch.zeros(4, 8))  # a matrix, yet not to decay
            self.proj = nn.Linear(8, 8, bias=False)

    model = Mamba()
    report = audit(torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1), model,
                   total_steps=STEPS)  # fmt: skip
    assert found(report, "decays-norm-or-bias") == {"A_log"}


def test_json_text_and_80_columns():
    model = transformer()
    report = audit(torch.optim.Adam(model.parameters(), weight_decay=0.01), model)
    data = json.loads(json.dumps(report.to_dict()))
    assert {"tensors", "findings"} <= set(data)
    assert {f["code"] for f in data["findings"]} == set(report.codes())
    assert all(set(f) == {"code", "severity", "tensors", "text"} for f in data["findings"])
    console = Console(width=80, highlight=False, file=io.StringIO(), record=True)
    render.to_rich(report.blocks(), console)
    rows = [ln for ln in console.export_text().splitlines() if ln.startswith(("  ", "> "))]
    assert rows and all(len(ln) <= 80 for ln in rows)


@pytest.mark.parametrize(
    ("kw", "message"),
    [({"optimizer": "adam"}, "optimizer='adam'"[:9]), ({"total_steps": 0}, "total_steps")],
)
def test_bad_arguments_are_one_line(kw, message):
    model = transformer()
    args = {"optimizer": torch.optim.SGD(model.parameters(), lr=0.1), "model": model, **kw}
    with pytest.raises(ValueError, match=message) as err:
        audit(args.pop("optimizer"), **args)
    assert "\n" not in str(err.value)


def build_adam() -> tuple[nn.Module, torch.optim.Optimizer]:
    """For the command line: a model and Adam with L2 weight decay."""
    model = transformer()
    return model, torch.optim.Adam(param_groups(model, 0.01), lr=1e-3)


def build_left_out() -> dict:
    """For the command line: a tensor left out of the optimizer (an error)."""
    model = transformer()
    params = list(model.parameters())[1:]
    return {"model": model, "optimizer": AdamW(params, lr=1e-3), "total_steps": STEPS}


def build_nothing() -> int:
    return 5


def test_the_command_line_audits_a_module_function(capsys):
    from adamwkit.cli import main

    assert main(["audit", "test_audit:build_adam", "--steps", "1000"]) == 0
    out = capsys.readouterr().out
    assert "warning [l2-not-decoupled]:" in out and "Adam: 15 tensors, 1,000 steps" in out
    assert main(["audit", "test_audit:build_left_out", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    codes = {f["code"]: f["severity"] for f in data["findings"]}
    assert codes["not-in-optimizer"] == "error"  # beside the biases decayed and D = 0.5
    assert data["total_steps"] == STEPS
    assert main(["audit", "test_audit:build_left_out", "--strict"]) == 1
    capsys.readouterr()
    assert main(["audit", "test_audit:build_nothing"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "expected (model, optimizer)" in err[0]


# --- optimizers, schedules, hybrids, aliases, scale invariance --------------------------


def _zero_grad_step(opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> None:
    for p in params:
        p.grad = torch.zeros_like(p)
    opt.step()


@pytest.mark.parametrize(
    ("build", "kind"),
    [
        (lambda ps: torch.optim.AdamW(ps, lr=0.1, weight_decay=0.1), "decoupled"),
        (lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1), "L2"),
        (
            lambda ps: torch.optim.Adam(ps, lr=0.1, weight_decay=0.1, decoupled_weight_decay=True),
            "decoupled",
        ),
        (lambda ps: torch.optim.NAdam(ps, lr=0.1, weight_decay=0.1), "L2"),
        (
            lambda ps: torch.optim.NAdam(ps, lr=0.1, weight_decay=0.1, decoupled_weight_decay=True),
            "decoupled",
        ),
        (lambda ps: torch.optim.RAdam(ps, lr=0.1, weight_decay=0.1), "L2"),
        (lambda ps: torch.optim.SGD(ps, lr=0.1, weight_decay=0.1, momentum=0.9), "L2"),
        (lambda ps: torch.optim.RMSprop(ps, lr=0.1, weight_decay=0.1), "L2"),
        (lambda ps: torch.optim.Adagrad(ps, lr=0.1, weight_decay=0.1), "L2"),
        (lambda ps: torch.optim.Adamax(ps, lr=0.1, weight_decay=0.1), "L2"),
        (lambda ps: torch.optim.Muon(ps, lr=0.1, weight_decay=0.1), "decoupled"),
        (lambda ps: AdamW(ps, lr=0.1, weight_decay=0.1), "decoupled"),
        (lambda ps: AdamW(ps, lr=0.1, weight_decay=0.01, decay_scale="schedule"), "decoupled"),
        (lambda ps: AdamW(ps, lr=0.1, weight_decay=0.1, decay_scale="corrected"), "decoupled"),
    ],
)
def test_each_optimizer_s_kind_and_per_step_decay_match_a_real_step(build, kind):
    """The oracle: one real step on zero gradients in float64. Decoupled decay alone moves
    the weights, by exactly the audited fraction, and leaves the optimizer's state at zero;
    L2 goes through the gradient, so it lands in the state (momentum, second moment)."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(6, 5, dtype=torch.float64))
    opt = build([w])
    row = audit(opt).rows[0]
    assert row.decay_kind == kind
    before = w.detach().clone()
    _zero_grad_step(opt, [w])
    shrink = 1.0 - (w.detach() / before)
    state = [v for v in opt.state[w].values() if torch.is_tensor(v) and v.ndim > 0]
    assert state  # every optimizer here keeps a buffer the gradient goes into
    touched = any(bool(v.abs().sum() > 0) for v in state)
    if kind == "decoupled":
        assert torch.allclose(shrink, torch.full_like(shrink, row.per_step), rtol=1e-9)
        assert row.tau_iter == pytest.approx(1.0 / row.per_step)
        assert not touched
    else:
        assert row.per_step is None and touched


def test_wrapped_optimizers_are_looked_through():
    accelerate = pytest.importorskip("accelerate")
    lightning_optimizer = pytest.importorskip("lightning.pytorch.core.optimizer")
    model = transformer()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    plain = audit(opt, model).to_dict()
    _, wrapped = accelerate.Accelerator(cpu=True).prepare(model, opt)
    assert type(wrapped).__name__ == "AcceleratedOptimizer"
    assert audit(wrapped, model).to_dict() == plain
    assert audit(lightning_optimizer.LightningOptimizer(opt), model).to_dict() == plain


def test_the_hugging_face_trainer_s_own_groups_have_no_mistake(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50,
                                     n_positions=16, bos_token_id=0, eos_token_id=0)  # fmt: skip
    model = transformers.GPT2LMHeadModel(config)
    args = transformers.TrainingArguments(str(tmp_path), weight_decay=0.1, report_to=[],
                                          use_cpu=True)  # fmt: skip
    trainer = transformers.Trainer(model=model, args=args)
    report = audit(trainer.create_optimizer(), model)
    assert [f.code for f in report.findings if f.severity != "info"] == []
    # and the same model under a plain AdamW decays its norms and biases
    plain = audit(torch.optim.AdamW(model.parameters(), weight_decay=0.1), model)
    assert found(plain, "decays-norm-or-bias") == should_not_decay_hf(model)


def should_not_decay_hf(model: nn.Module) -> set[str]:
    """Biases and LayerNorm weights by the modules' types (GPT-2's Conv1D has a 1-D bias)."""
    out = set()
    for mname, module in model.named_modules():
        for pname, p in module.named_parameters(recurse=False):
            if p.ndim < 2 or isinstance(module, nn.LayerNorm):
                out.add(f"{mname}.{pname}" if mname else pname)
    return out


def test_the_total_decay_follows_the_scheduler_which_does_not_move():
    """The oracle: the same optimizer and schedule stepped for real, summing lr_t * wd."""
    model = transformer()

    def build() -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
        opt = AdamW(param_groups(model, 0.1), lr=1e-3)
        warm = lambda t: min(1.0, (t + 1) / 100) * max(0.0, 1 - t / 3000)  # noqa: E731
        return opt, torch.optim.lr_scheduler.LambdaLR(opt, warm)

    opt, sched = build()
    report = audit(opt, model, scheduler=sched, total_steps=3000)
    assert sched.last_epoch == 0 and opt.param_groups[0]["lr"] == pytest.approx(1e-5)
    real_opt, real_sched = build()
    lrs = []
    for _ in range(3000):
        lrs.append(real_opt.param_groups[0]["lr"])
        real_opt.step()
        real_sched.step()
    decayed = [r for r in report.rows if r.decay_kind != "none"]
    assert decayed and all(r.over_run == pytest.approx(0.1 * sum(lrs), rel=1e-9) for r in decayed)
    assert all(r.per_step == pytest.approx(0.1 * max(lrs)) for r in decayed)  # not step 0's
    # without the schedule, the peak lr recorded by the scheduler (initial_lr), not warmup's
    flat = audit(opt, model, total_steps=3000)
    assert next(r.over_run for r in flat.rows if r.decay_kind != "none") == pytest.approx(0.3)
    with pytest.raises(ValueError, match="total_steps"):
        audit(opt, model, scheduler=sched)


def test_bf16_decay_vanishes_from_the_step_a_real_step_says():
    """Cosine decay to zero of a bf16 tensor: from the audited step on, a real decay step at
    that step's lr leaves most elements unchanged; one step earlier it does not."""
    torch.manual_seed(0)
    w = nn.Parameter(torch.randn(64, 64).to(torch.bfloat16))
    opt = torch.optim.AdamW([w], lr=0.05, weight_decay=0.1)  # 5e-3 a step at the peak
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=1000)
    report = audit(opt, scheduler=sched, total_steps=1000)
    row = report.rows[0]
    assert row.lost_from is not None and 0 < row.lost_from < 1000
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(999):
        opt.step()  # no gradients: nothing moves, but the order is the real one
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])

    def moved(lr: float) -> float:
        stepped = w.detach() * (1.0 - lr * 0.1)
        return float((stepped != w.detach()).float().mean())

    assert moved(lrs[row.lost_from]) < 0.5 <= moved(lrs[row.lost_from - 1])
    # most of the decay still acts, so no finding; the share lost is what the lrs say
    share = sum(lrs[row.lost_from :]) / sum(lrs)
    assert row.lost_share == pytest.approx(share, rel=1e-6) and share < 0.5
    assert "decay-lost-in-precision" not in report.codes()


def _hybrid_model() -> nn.Module:
    torch.manual_seed(0)
    hidden = [nn.Linear(128, 128, bias=False) for _ in range(2)]
    return nn.Sequential(nn.Embedding(64, 128), *hidden, nn.Linear(128, 64, bias=False))


def _muon_and_adamw(model: nn.Module, **muon: object) -> list[torch.optim.Optimizer]:
    hidden = [model[1].weight, model[2].weight]
    rest = [model[0].weight, model[3].weight]
    return [torch.optim.Muon(hidden, **muon),  # type: ignore[arg-type]
            torch.optim.AdamW(rest, lr=3e-4, weight_decay=0.1)]  # fmt: skip


def _measured_update_rms(opt: torch.optim.Optimizer, p: torch.Tensor, lr: float) -> float:
    """The oracle: 300 real steps on unit-variance random gradients, the update's RMS per
    unit lr (decay off, so only the update moves the weights)."""
    torch.manual_seed(1)
    for g in opt.param_groups:
        g["weight_decay"] = 0.0
    rms = []
    for t in range(300):
        before = p.detach().clone()
        p.grad = torch.randn_like(p)
        opt.step()
        if t >= 100:
            rms.append(float((p.detach() - before).pow(2).mean().sqrt()) / lr)
    return sum(rms) / len(rms)


def test_muon_and_adamw_with_one_coefficient_is_a_hybrid_mismatch():
    model = _hybrid_model()
    opts = _muon_and_adamw(model, lr=0.02, weight_decay=0.1)
    report = audit(opts, model)
    assert report.optimizer == "Muon + AdamW"
    assert found(report, "hybrid-mismatch") == {"1.weight", "2.weight"}
    text = next(f.text for f in report.findings if f.code == "hybrid-mismatch")
    ratio = float(text.split("update per step is ")[1].split("x")[0])
    # the ratio against the updates measured for real, per step at each group's lr
    muon_rms = _measured_update_rms(opts[0], model[1].weight, 1.0)  # per step
    adam_rms = _measured_update_rms(opts[1], model[0].weight, 1.0)
    assert ratio == pytest.approx(muon_rms / adam_rms, rel=0.35)
    # Muon scaled to AdamW's update size, with AdamW's lr and coefficient: no mismatch
    model = _hybrid_model()
    matched = _muon_and_adamw(model, lr=3e-4, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    assert "hybrid-mismatch" not in audit(matched, model).codes()
    assert _measured_update_rms(matched[0], model[1].weight, 3e-4) == pytest.approx(
        _measured_update_rms(matched[1], model[0].weight, 3e-4), rel=0.35
    )


def test_a_run_many_timescales_long_is_too_long():
    model = transformer()
    opt = AdamW(param_groups(model, 0.1), lr=1e-3)
    report = audit(opt, model, total_steps=2_000_000)  # D = 200
    decayed = {r.name for r in report.rows if r.decay_kind != "none"}
    assert report.codes() == ["too-long"] and found(report, "too-long") == decayed
    assert audit(opt, model, total_steps=100_000).findings == []  # D = 10


def test_tied_aliases_held_as_two_tensors_are_decayed_twice():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(10, 8), nn.Linear(8, 10, bias=False))
    model[1].weight = nn.Parameter(model[0].weight.detach().t())  # not the same memory view
    shared = nn.Parameter(model[0].weight.detach())  # the same memory, another tensor
    opt = torch.optim.AdamW([{"params": [model[0].weight], "weight_decay": 0.1},
                             {"params": [shared], "weight_decay": 0.0},
                             {"params": [model[1].weight], "weight_decay": 0.1}])  # fmt: skip
    report = audit(opt, model)
    hit = found(report, "in-two-groups")
    assert hit == {"0.weight", "param_groups[1]['params'][0]"}
    assert "different coefficients (0, 0.1)" in report.findings[0].text


def test_weights_before_a_batch_norm_are_scale_invariant():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                          nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 4 * 4, 10))  # fmt: skip
    report = audit(AdamW(param_groups(model, 0.05), lr=1e-3), model)
    assert report.codes() == ["scale-invariant"] and report.findings[0].severity == "info"
    assert found(report, "scale-invariant") == {"0.weight"}
    # the oracle: scaling the weight does not change the (train-mode) output
    x = torch.randn(4, 3, 8, 8)
    out = model(x)
    with torch.no_grad():
        model[0].weight.mul_(3.0)
        model[0].bias.mul_(3.0)
    assert torch.allclose(model(x), out, atol=1e-4)
    # with example inputs the forward pass decides, and agrees
    assert found(audit(AdamW(param_groups(model, 0.05), lr=1e-3), model, inputs=x),
                 "scale-invariant") == {"0.weight"}  # fmt: skip


def test_low_bit_optimizers_when_installed():
    bnb = pytest.importorskip("bitsandbytes")
    w = nn.Parameter(torch.randn(64, 64))
    assert audit(bnb.optim.AdamW8bit([w], lr=1e-3, weight_decay=0.1)).rows[0].decay_kind == (
        "decoupled"
    )


def test_torchao_low_bit_adamw_when_installed():
    optim = pytest.importorskip("torchao.optim")
    w = nn.Parameter(torch.randn(64, 64))
    assert audit(optim.AdamW8bit([w], lr=1e-3, weight_decay=0.1)).rows[0].decay_kind == (
        "decoupled"
    )


class Adapters(nn.Module):
    """Two LoRA matrices and nothing else (no frozen base: only the adapters train)."""

    def __init__(self) -> None:
        super().__init__()
        self.lora_A = nn.Linear(8, 2, bias=False)
        self.lora_B = nn.Linear(2, 8, bias=False)


def test_every_group_at_zero_against_the_configured_coefficient():
    """LoRA+-style groups built with weight_decay 0 while the user configured a value."""

    model = Adapters()
    groups = [{"params": [model.lora_A.weight], "weight_decay": 0.0, "lr": 1e-4},
              {"params": [model.lora_B.weight], "weight_decay": 0.0, "lr": 1.6e-3}]  # fmt: skip
    report = audit(torch.optim.AdamW(groups, weight_decay=0.05), model)
    assert found(report, "group-decay-zero") == {"lora_A.weight", "lora_B.weight"}
    assert "weight_decay=0.05 was configured" in report.findings[0].text
    # torch's own default (0.01) is not a choice the user made ...
    assert audit(torch.optim.AdamW(groups), model).findings == []
    # ... unless the configured value is given
    assert audit(torch.optim.AdamW(groups), model, weight_decay=0.01).codes() == [
        "group-decay-zero"
    ]
    with pytest.raises(ValueError, match="weight_decay"):
        audit(torch.optim.AdamW(groups), model, weight_decay=-1.0)


CASES_EXPECTED = {
    "correct": set(),
    "loraplus_zero": {"group-decay-zero"},
    "bf16_rl": {"decay-lost-in-precision", "too-short"},
    "decay_everything": {"decays-norm-or-bias"},
    "adam_for_adamw": {"l2-not-decoupled"},
    "lora_toward_base": {"decay-toward-base", "too-short"},
    "muon_hybrid": {"hybrid-mismatch"},
    "left_out_and_twice": {"decays-norm-or-bias", "not-in-optimizer", "in-two-groups"},
    "run_length": {"too-long"},
    "batchnorm_cnn": {"scale-invariant"},
}


@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_the_documented_cases_give_their_codes(monkeypatch):
    """examples/audit_cases.py (docs/audit.md shows its output) on config-built GPT-2 and
    PEFT LoRA models: each case gives exactly its codes, on the tensors the oracle picks."""
    pytest.importorskip("transformers")
    pytest.importorskip("peft")
    import importlib.util
    from pathlib import Path

    from adamwkit.audit import audit_spec

    path = Path(__file__).parents[1] / "examples" / "audit_cases.py"
    monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location("audit_cases", path)
    cases = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cases)
    assert set(cases.CASES) == set(CASES_EXPECTED)
    for name, build in cases.CASES.items():
        case = build()
        model = case["model"]
        report = audit_spec(f"audit_cases:{name}")  # as the command line reads it
        assert set(report.codes()) == CASES_EXPECTED[name], name
        if name in ("loraplus_zero", "lora_toward_base"):
            lora = {n for n, p in model.named_parameters() if p.requires_grad}
            assert all(".lora_" in n for n in lora)
            code = "group-decay-zero" if name == "loraplus_zero" else "decay-toward-base"
            assert found(report, code) == lora
        if name == "muon_hybrid":
            assert found(report, "hybrid-mismatch") == {
                n for n, p in model.named_parameters() if p.ndim == 2 and ".h." in n
            }
        if name == "bf16_rl":
            assert found(report, "decay-lost-in-precision") == {
                r.name for r in report.rows if r.decay_kind == "decoupled"
            }


def build_unknown_key() -> dict:
    model = transformer()
    return {"model": model, "optimizer": AdamW(model.parameters()), "steps": 10}


def test_a_mapping_with_an_unknown_key_is_one_line(capsys):
    from adamwkit.cli import main

    assert main(["audit", "test_audit:build_unknown_key"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "keys model, optimizer, steps" in err[0]


def test_a_notebook_shows_the_same_table_and_findings():
    model = transformer()
    report = audit(torch.optim.Adam(model.parameters(), weight_decay=0.01), model)
    page = report._repr_html_()
    assert page.count("<tr>") == len(report.rows) + 1  # the header and a row per tensor
    assert "[l2-not-decoupled]" in page and "[decays-norm-or-bias]" in page
    assert repr(report) == "Audit(Adam, 15 tensors: l2-not-decoupled, decays-norm-or-bias)"


def test_adapters_decayed_toward_their_start_are_not_pulled_toward_the_base():
    """decay_toward='init' decays the adapters toward their starting weights (the oracle:
    one real zero-gradient step moves w toward w0, not toward zero), so no finding."""

    model = Adapters()
    opt = AdamW(model.parameters(), lr=0.1, weight_decay=0.1, decay_toward="init")
    report = audit(opt, model, total_steps=1000)
    assert "decay-toward-base" not in report.codes()
    assert {r.decay_toward for r in report.rows} == {"init"}
    assert all(r.equilibrium_norm is None for r in report.rows)
    w0 = model.lora_A.weight.detach().clone()
    _zero_grad_step(opt, list(model.parameters()))
    assert torch.allclose(model.lora_A.weight.detach(), w0)  # at its start: nothing to pull
    zero = audit(AdamW(model.parameters(), lr=0.1, weight_decay=0.1), model, total_steps=1000)
    assert "decay-toward-base" in zero.codes()


def test_hybrid_mismatch_in_the_schedule_convention():
    """adamwkit.AdamW(decay_scale='schedule') takes wd itself per step: the match is worked
    out per step (0.1 per AdamW step, not 1e-4), and the same typed 0.1 is still flagged."""
    model = _hybrid_model()
    hidden = [model[1].weight, model[2].weight]
    rest = [model[0].weight, model[3].weight]
    muon = torch.optim.Muon(hidden, lr=0.02, weight_decay=0.1)
    adamw = AdamW(rest, lr=1e-3, weight_decay=0.1, decay_scale="schedule")
    report = audit([muon, adamw], model)
    text = next(f.text for f in report.findings if f.code == "hybrid-mismatch")
    ratio = float(text.split("update per step is ")[1].split("x")[0])
    suggested = float(text.split("use weight_decay=")[1].split(" ")[0])
    # the oracle: per-step AdamW decay 0.1, Muon's per step lr_M x wd, so wd = 0.1 r^2 / lr_M
    assert suggested == pytest.approx(0.1 * ratio**2 / 0.02, rel=0.1)
