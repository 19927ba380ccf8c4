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
    assert "no finding" in str(report)


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
