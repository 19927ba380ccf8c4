"""tune audits the optimizer of a study's first run with weight decay: stored with the study,
in summary.json, report.html and the command line's lines; never at the run's expense."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.optim.optimizer import _global_optimizer_pre_hooks

import tune_tasks
from adamwkit import AdamW, audit, param_groups, render, tune
from adamwkit.tuning import first_audit
from adamwkit.tuning.summary import TuneSummary

#: The fields of a row that say what the optimizer does to a tensor (the others, such as
#: its norm, are measurements of the weights).
ROW_KEYS = ("name", "shape", "dtype", "group", "family", "decay_kind", "weight_decay",
            "per_step", "over_run", "rule")  # fmt: skip


def _json(value):
    return json.loads(json.dumps(value))


def _adam_l2(trial, *, hand_over: bool = False) -> float:
    """The user's own loop with torch.optim.Adam and weight_decay=0.1 (an L2 penalty)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    y = x.sum(dim=1, keepdim=True)
    torch.manual_seed(trial.seed)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 1))
    if hand_over:
        trial.audit_model(model)
    opt = torch.optim.Adam(model.parameters(), lr=trial.lr, weight_decay=0.1)
    tr, va = trial.train_idx, trial.val_idx
    for _ in range(3):
        opt.zero_grad()
        ((model(x[tr]) - y[tr]) ** 2).mean().backward()
        opt.step()
    with torch.no_grad():
        return float(((model(x[va]) - y[va]) ** 2).mean())


def adam_l2(trial) -> float:
    return _adam_l2(trial)


def adam_l2_named(trial) -> float:
    return _adam_l2(trial, hand_over=True)


def _tune_objective(objective, out, **kw):
    return tune(objective, examples=64, lr=0.01, folds=2, grid=[0.0, 0.1], out=out,
                test=False, progress=False, extend=0, **kw)  # fmt: skip


def _section(page: str) -> str:
    start = page.index("<h2>Optimizer audit</h2>")
    return page[start : page.index("<h2>", start + 5)]


@pytest.mark.parametrize("vectorize", ["off", "on"])
def test_a_tasks_audit_is_that_of_adamwkits_own_optimizer(tmp_path, vectorize):
    """Oracle: audit() of the model and AdamW that fit builds for the audited run (the same
    seed, groups, weight decay and lr), run here on its own. One run at a time the live
    optimizer is audited at its first step; stacked, the standalone one fit would build."""
    task = tune_tasks.tiny()
    hooks = len(_global_optimizer_pre_hooks)
    result = tune(task, folds=2, grid=[0.0, 0.5], out=tmp_path, seed=3, test=False,
                  progress=False, extend=0, vectorize=vectorize)  # fmt: skip
    assert len(_global_optimizer_pre_hooks) == hooks  # the hook is gone
    got = json.loads((tmp_path / "tiny" / "summary.json").read_text())["audit"]
    assert got == _json(result.summary.audit)
    run = got["run"]
    assert run["weight_decay"] == 0.5 and run["lr"] == task.lr  # zero decay is skipped
    seed = 3 + run["fold"]
    torch.manual_seed(seed)
    model = task.model()
    opt = AdamW(param_groups(model, weight_decay=0.5, **task.param_groups), lr=task.lr,
                decay_scale="lr")  # fmt: skip
    steps = task.epochs * math.ceil(result.summary.n_train / task.batch_size)
    expected = audit(opt, model, total_steps=steps).to_dict()
    names = sorted(n for n, _ in model.named_parameters())
    assert sorted(r["name"] for r in got["tensors"]) == names
    assert got["total_steps"] == steps and got["optimizer"] == "AdamW"
    assert [{k: r[k] for k in ROW_KEYS} for r in got["tensors"]] == [
        _json({k: r[k] for k in ROW_KEYS}) for r in expected["tensors"]
    ]
    per_value = ("too-short", "too-long")  # left to the table in a sweep
    assert got["findings"] == _json([f for f in expected["findings"] if f["code"] not in per_value])
    how = "at its first step" if vectorize == "off" else "stacked population"
    assert how in got["captured"]
    page = (tmp_path / "tiny" / "report.html").read_text()
    section = _section(page)
    assert ">0.weight</td>" in section and ">2.bias</td>" in section
    for f in got["findings"]:  # each code with its text, then the table
        assert f"[{f['code']}]" in section
        assert section.index(f"[{f['code']}]") < section.index("<table>")


def test_an_adam_loop_gets_l2_not_decoupled_in_summary_and_report(tmp_path):
    hooks = len(_global_optimizer_pre_hooks)
    result = _tune_objective(adam_l2, tmp_path, study="plain")
    assert len(_global_optimizer_pre_hooks) == hooks
    run = tmp_path / "plain"
    got = json.loads((run / "summary.json").read_text())["audit"]
    assert got["optimizer"] == "Adam" and got["total_steps"] is None
    (l2,) = [f for f in got["findings"] if f["code"] == "l2-not-decoupled"]
    # no model handed over: tensors named by their place in the optimizer
    assert l2["tensors"] == [f"param_groups[0]['params'][{i}]" for i in range(4)]
    assert "by their place" in got["captured"]
    section = _section((run / "report.html").read_text())
    assert "[l2-not-decoupled]" in section and "param_groups[0][&#x27;params&#x27;][3]" in section
    lines = render.plain(result.blocks())
    assert "audit warning [l2-not-decoupled]:" in lines
    assert "param_groups[0]" not in lines  # the table belongs in the report


def test_a_model_handed_over_names_the_tensors(tmp_path):
    result = _tune_objective(adam_l2_named, tmp_path, study="named")
    (l2,) = [f for f in result.summary.audit["findings"] if f["code"] == "l2-not-decoupled"]
    assert l2["tensors"] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert "named from the model" in result.summary.audit["captured"]


def test_a_failing_audit_changes_no_result_and_leaves_a_note(tmp_path, monkeypatch):
    clean = _tune_objective(adam_l2, tmp_path, study="clean")

    def boom(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(first_audit, "audit", boom)
    hooks = len(_global_optimizer_pre_hooks)
    broken = _tune_objective(adam_l2, tmp_path, study="broken")
    assert len(_global_optimizer_pre_hooks) == hooks
    assert broken.summary.candidates == clean.summary.candidates  # every fold's loss
    assert broken.summary.audit is None
    note = "the optimizer audit of the first run failed (RuntimeError: boom)"
    assert any(note in n for n in broken.summary.notes)
    assert note in (tmp_path / "broken" / "report.html").read_text()
    assert json.loads((tmp_path / "broken" / "summary.json").read_text())["audit"] is None


def test_a_rerun_keeps_the_stored_audit(tmp_path, monkeypatch):
    """The audit lives in the study: a rerun (resuming, or rebuilding the report of a
    finished study) reads it back and audits nothing again."""
    first = _tune_objective(adam_l2, tmp_path, study="again")
    monkeypatch.setattr(first_audit, "audit", lambda *a, **k: pytest.fail("audited again"))
    again = _tune_objective(adam_l2, tmp_path, study="again")
    assert again.summary.audit == first.summary.audit is not None
    assert "[l2-not-decoupled]" in (tmp_path / "again" / "report.html").read_text()


def test_summaries_written_before_the_audit_still_read():
    s = TuneSummary.from_dict({k: v for k, v in _summary().items() if k != "audit"})
    assert s.audit is None
    with pytest.raises(ValueError, match="'verdict'"):
        TuneSummary.from_dict({k: v for k, v in _summary().items() if k != "verdict"})


def test_the_command_line_says_no_mistake_in_one_line():
    none = "audit: no mistake found in the optimizer's set-up (report.html has the table)"
    assert render.plain(first_audit.audit_lines({"findings": []})) == none
    info = {"code": "scale-invariant", "severity": "info", "tensors": ["a"], "text": "t"}
    assert render.plain(first_audit.audit_lines({"findings": [info]})) == none
    assert first_audit.audit_lines(None) == []


def test_run_length_findings_are_left_to_the_table():
    """too-short judges one candidate's value, not the set-up the sweep shares."""
    model = nn.Linear(4, 4)
    report = audit(AdamW(param_groups(model, 1e-3), lr=1e-3), model, total_steps=100)
    assert report.codes() == ["too-short"]
    kept = first_audit._for_a_sweep(report)
    assert kept["findings"] == [] and "too-short / too-long are left out" in kept["notes"][0]


def _summary() -> dict:
    from adamwkit.tuning import cv
    from adamwkit.tuning.config import StudySpec
    from adamwkit.tuning.summary import build_summary

    spec = StudySpec(source="x", data="d", folds=2, epochs=None, lr=0.01, batch_size=None,
                     decay_scale="lr", schedule=None, seed=0, test_fraction=0.0,
                     sampler="grid", grid=(0.0, 0.1))  # fmt: skip
    cands = [cv.Candidate(w, 0.01, {0: 1.0 + w, 1: 1.1 + w}) for w in (0.0, 0.1)]
    return build_summary(task="x", description="", metric_name="metric", spec=spec,
                         device="cpu", n_train=10, suggestion=None, candidates=cands,
                         decision=None, stack_refusal=None).to_dict()  # fmt: skip
