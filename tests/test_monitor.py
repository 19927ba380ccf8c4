"""Monitor: weight norms and rotation against Kosson et al.'s equilibrium, and verdicts.

The oracles: the closed forms (equilibrium norm sqrt(lr*C/(2*wd)), angular update
sqrt(2*lr*wd*(1-beta1)/(1+beta1))) on a scale-invariant toy (random gradients orthogonal
to the weight) trained by torch.optim.AdamW and by adamwkit.AdamW in the paper's convention;
an angle built by hand; norms taken directly with torch.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from torch import nn

import adamwkit
from adamwkit import monitor as monitor_module
from adamwkit.monitor import Monitor, load_log

LR, WD = 3e-3, 0.1  # tau_iter = 1/(lr*wd) = 3333 steps
TAU = 1 / (LR * WD)


def scale_invariant_run(make_opt, init_scale, steps, seed=0, every=100, grad_scale=1.0,
                        lr_at=None, grad_at=None):  # fmt: skip
    """A 64x64 weight whose gradients are random and orthogonal to it (as behind a
    normalisation layer): the setting Kosson et al.'s equilibrium is exact for."""
    g = torch.Generator().manual_seed(seed)
    w = nn.Parameter(torch.randn(64, 64, generator=g) * 0.05 * init_scale)
    opt = make_opt([w])
    mon = Monitor(opt, every=every, names={w: "block.weight"})
    for t in range(steps):
        r = torch.randn(64, 64, generator=g) * grad_scale * (grad_at(t) if grad_at else 1.0)
        with torch.no_grad():
            r -= (r * w).sum() / (w * w).sum() * w
        w.grad = r
        if lr_at is not None:
            for group in opt.param_groups:
                group["lr"] = lr_at(t)
        opt.step()
    return w, mon


CONVENTIONS = {
    "torch": lambda p: torch.optim.AdamW(p, lr=LR, weight_decay=WD),
    "schedule": lambda p: adamwkit.AdamW(p, lr=LR, weight_decay=WD * LR, decay_scale="schedule"),
}


@pytest.mark.parametrize("init_scale", [1.0, 0.1])
@pytest.mark.parametrize("convention", list(CONVENTIONS))
def test_norm_and_angle_match_the_closed_forms_after_6_tau_iter(convention, init_scale):
    steps = int(6 * TAU)
    _, mon = scale_invariant_run(CONVENTIONS[convention], init_scale, steps)
    rows = mon.history()
    assert {"step", "name", "norm", "angle", "grad_norm", "pred_norm", "pred_angle"} <= set(rows[0])
    last = rows[-10:]
    pred_norm = math.sqrt(LR * 4096 / (2 * WD))  # Kosson et al.
    pred_angle = math.sqrt(2 * LR * WD * (1 - 0.9) / (1 + 0.9))
    assert last[-1]["pred_norm"] == pytest.approx(pred_norm, rel=1e-9)
    assert last[-1]["pred_angle"] == pytest.approx(pred_angle, rel=1e-9)
    assert last[-1]["norm"] == pytest.approx(pred_norm, rel=0.05)
    assert np.mean([r["angle"] for r in last]) == pytest.approx(pred_angle, rel=0.05)
    assert rows[-1]["step"] == steps and rows[0]["step"] == 1


def test_two_inits_reach_the_same_equilibrium_norm():
    """Custom initialisation: a 10x smaller init ends at the same norm (Kosson et al.)."""
    steps = int(6 * TAU)
    a, _ = scale_invariant_run(CONVENTIONS["torch"], 1.0, steps, seed=1)
    b, _ = scale_invariant_run(CONVENTIONS["torch"], 0.1, steps, seed=2)
    assert a.norm().item() == pytest.approx(b.norm().item(), rel=0.02)
    assert a.norm().item() / b.norm().item() != pytest.approx(10.0, rel=0.5)


def test_the_angle_of_a_known_rotation():
    w = nn.Parameter(torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))
    opt = torch.optim.SGD([w], lr=1.0)
    mon = Monitor(opt, names={w: "w"})
    for eps in (1e-4, 0.3, 2.0):
        w.grad = torch.tensor([0.0, -eps, 0.0], dtype=torch.float64)  # w += eps * e2
        opt.step()
    rows = mon.history()
    # After each step w = (1, sum of eps so far, 0): the angle turned is the difference.
    total = np.cumsum([1e-4, 0.3, 2.0])
    expected = np.diff(np.arctan(np.concatenate([[0.0], total])))
    assert [r["angle"] for r in rows] == pytest.approx(list(expected), rel=1e-6)
    assert rows[0]["update_norm"] == pytest.approx(1e-4, rel=1e-6)
    assert rows[2]["grad_norm"] == pytest.approx(2.0)
    assert all(math.isnan(r["decay"]) and math.isinf(r["pred_norm"]) for r in rows)  # SGD: L2


def _linear_norm_linear_run() -> tuple[nn.Module, Monitor]:
    """Linear, LayerNorm, Linear under param_groups and AdamW, four steps recorded every 2."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.LayerNorm(16), nn.Linear(16, 4))
    opt = adamwkit.AdamW(adamwkit.param_groups(model, weight_decay=0.1), lr=1e-2)
    mon = Monitor(opt, every=2, model=model)
    x = torch.randn(32, 8)
    for _ in range(4):
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()
    return model, mon


def test_layer_view_combines_its_tensors_as_one_vector():
    model, mon = _linear_norm_linear_run()
    by_layer = {r["name"]: r for r in mon.history(by="layer") if r["step"] == 4}
    weight, bias = model[0].weight, model[0].bias
    direct = torch.cat([weight.detach().flatten(), bias.detach().flatten()]).norm().item()
    assert by_layer["0"]["norm"] == pytest.approx(direct, rel=1e-6)
    by_tensor = {r["name"]: r for r in mon.history() if r["step"] == 4}
    assert by_tensor["0.weight"]["norm"] == pytest.approx(weight.norm().item(), rel=1e-6)
    assert by_tensor["0.weight"]["decay"] == pytest.approx(1e-2 * 0.1)
    assert by_tensor["0.bias"]["decay"] == 0.0  # param_groups does not decay biases
    assert math.isinf(by_tensor["0.bias"]["pred_norm"])
    assert sorted({r["step"] for r in mon.history()}) == [1, 2, 4]


def test_the_log_file_round_trips_and_survives_a_torn_last_line(tmp_path):
    _, mon = scale_invariant_run(CONVENTIONS["torch"], 1.0, 500, every=50)
    path = mon.save(tmp_path / "run.jsonl")
    loaded = load_log(path)
    a, b = mon.history(), loaded.history()
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for x, y in zip(a, b, strict=True):
        for key in ("norm", "angle", "pred_norm", "pred_angle", "grad_norm"):
            assert y[key] == pytest.approx(x[key], rel=1e-5)
    assert [v.text for v in loaded.verdicts()] == [v.text for v in mon.verdicts()]
    text = path.read_text()
    path.write_text(text[: len(text) - 40])  # a crash while writing the last record
    assert len(load_log(path).steps) == len(mon.log().steps) - 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"something": 1}) + "\n")
    with pytest.raises(ValueError, match="expected a monitor log"):
        load_log(bad)


# ---------------------------------------------------------------------------- verdicts


def verdict(mon, code):
    found = [v for v in mon.verdicts() if v.code == code]
    assert found, [v.text for v in mon.verdicts()]
    return found[0].text


def test_verdict_healthy():
    _, mon = scale_invariant_run(CONVENTIONS["torch"], 0.1, int(6 * TAU))
    text = verdict(mon, "equilibrium")
    assert text.startswith("reached equilibrium at step ~")
    assert "tau_iter" in text and "at the equilibrium norm" in text


def test_verdict_too_weak():
    make = lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-3)  # noqa: E731
    _, mon = scale_invariant_run(make, 1.0, 500, every=10)  # tau_iter = 1e6 steps
    text = verdict(mon, "too-short")
    assert text.startswith("never reaches equilibrium: the run is 0.0005 tau_iter long")


def test_verdict_too_strong():
    """Vanishing gradients (far below Adam's eps) against a strong decay: the norm
    collapses far under the equilibrium the gradients would hold."""
    make = lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1.0)  # noqa: E731
    _, mon = scale_invariant_run(make, 1.0, 1000, every=10, grad_scale=1e-13)
    text = verdict(mon, "collapsing")
    assert text.startswith("norm collapsing") and "too strong" in text


def test_verdict_late_gradient_rise():
    steps = 2000

    def cosine(t):
        return LR * 0.5 * (1 + math.cos(math.pi * t / steps))

    _, mon = scale_invariant_run(
        CONVENTIONS["torch"], 1.0, steps, every=20, lr_at=cosine,
        grad_at=lambda t: 3.0 if t > 0.9 * steps else 1.0,
    )  # fmt: skip
    text = verdict(mon, "late-gradient-rise")
    assert "rises 3" in text and "AdamC" in text


@pytest.mark.parametrize("steps", [50, 200])
def test_verdict_embedding_rows_without_gradient(steps):
    """Rows no token reaches shrink by the decay alone, (1 - lr*wd)^steps: 95% of their
    start after 50 steps (a 5% fall, under the 10% threshold: no verdict), 82% after 200."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Embedding(100, 8), nn.Linear(8, 1))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    mon = Monitor(opt, model=model)
    before = model[0].weight[50:].detach().norm().item()
    for _ in range(steps):
        opt.zero_grad()
        tokens = torch.randint(0, 50, (32,))  # rows 50..99 never appear
        model(tokens).square().mean().backward()
        opt.step()
    after = model[0].weight[50:].detach().norm().item()
    fell = 1 - after / before
    assert fell == pytest.approx(1 - (1 - 1e-2 * 0.1) ** steps, rel=1e-3)
    assert mon.log().embeddings["0.weight"]["unseen_norm_ratio"] == pytest.approx(after / before)
    found = [v.text for v in mon.verdicts() if v.code == "unseen-rows"]
    if fell < monitor_module.UNSEEN_FALL:
        assert found == []
    else:
        assert len(found) == 1
        assert found[0].startswith("50 of 100 rows of 0.weight got no gradient")
        assert f"fell to {after / before:.0%} of its start" in found[0]


def test_verdict_for_an_l2_optimizer():
    make = lambda p: torch.optim.Adam(p, lr=1e-3, weight_decay=1e-2)  # noqa: E731
    _, mon = scale_invariant_run(make, 1.0, 50, every=10)
    assert verdict(mon, "not-decoupled")


def test_bad_arguments():
    w = nn.Parameter(torch.ones(2))
    with pytest.raises(ValueError, match="every=0 is invalid"):
        Monitor(torch.optim.AdamW([w]), every=0)
    with pytest.raises(ValueError, match="optimizer=list is invalid"):
        Monitor([w])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="by='module' is invalid"):
        Monitor(torch.optim.AdamW([w])).history(by="module")


def test_close_detaches():
    w = nn.Parameter(torch.ones(2))
    opt = torch.optim.AdamW([w])
    mon = Monitor(opt)
    mon.close()
    w.grad = torch.ones(2)
    opt.step()
    assert mon.history() == []


# ---------------------------------------------------------------------------- where it shows


def test_fit_records_into_its_result():
    from adamwkit.tasks import get_task

    task = get_task("digits")
    result = adamwkit.fit(task, 0.5, epochs=2, batch_size=32, monitor=3, train_idx=range(192))
    log = result.monitor
    assert log is not None and log.optimizer == "AdamW"
    assert result.steps == 12 and list(log.steps) == [1, 3, 6, 9, 12]
    last = {r["name"]: r for r in log.history() if r["step"] == 12}
    for name, p in result.model.named_parameters():
        assert last[name]["norm"] == pytest.approx(p.detach().norm().item(), rel=1e-5)


def test_explain_run_prints_the_verdicts(tmp_path, capsys):
    from adamwkit.cli import main

    make = lambda p: torch.optim.AdamW(p, lr=1e-3, weight_decay=1e-3)  # noqa: E731
    _, mon = scale_invariant_run(make, 1.0, 200, every=10)
    path = mon.save(tmp_path / "monitor.jsonl")
    assert main(["explain", "--run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "never reaches equilibrium" in " ".join(out.split())
    assert main(["explain", "--run", str(path), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["steps"] == 200 and data["verdicts"][0]["code"] == "too-short"
    assert data["layers"][0]["pred_norm"] == pytest.approx(math.sqrt(1e-3 * 4096 / 2e-3), rel=1e-6)
    for argv, needle in (
        (["explain", "--run", str(path), "--lr", "1e-3"], "--run reads a saved monitor log"),
        (["explain", "--run", str(tmp_path / "none.jsonl")], "--run="),
        (["explain", "--lr", "1e-3"], "required: --weight-decay, --batch-size"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and needle in err, err


def test_tune_report_draws_the_refits_norms(tmp_path):
    from adamwkit import tune

    result = tune("digits", epochs=3, grid=[0.0, 1.0], folds=2, out=tmp_path, progress=False)
    assert result.paths["monitor"].read_bytes().startswith(b"\x89PNG")
    html = result.paths["report"].read_text()
    assert "Weight norms and rotation in the refits" in html
    best = result.summary["test"]["best"]
    log = load_log(result.run_dir / best["monitor"])
    assert len(log.steps) > 10 and best["verdicts"]


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
    lambda p: torch.optim.SparseAdam(p, lr=0.01),
], ids=["SGD", "SparseAdam"])  # fmt: skip
def test_sparse_gradients_are_recorded_as_their_dense_twin(make):
    """A sparse embedding's gradient raised inside the user's ``opt.step()``. Oracle: the
    same embedding with dense gradients; the norms must agree (repeated indices summed)."""
    torch.manual_seed(0)
    sparse = torch.nn.Embedding(10, 3, sparse=True)
    dense = torch.nn.Embedding(10, 3)
    dense.load_state_dict(sparse.state_dict())
    ids = torch.tensor([1, 2, 2, 7])
    opt = make(sparse.parameters())
    monitor = adamwkit.Monitor(opt, model=sparse)
    for _ in range(3):
        opt.zero_grad()
        sparse(ids).square().sum().backward()
        dense.zero_grad()
        dense(ids).square().sum().backward()
        expected = float(dense.weight.grad.norm())
        w = dense.weight.detach()
        cos = float((w * dense.weight.grad).sum() / (w.norm() * dense.weight.grad.norm()))
        opt.step()
        with torch.no_grad():
            dense.weight.copy_(sparse.weight)
        assert monitor.latest()[0]["grad_norm"] == pytest.approx(expected, rel=1e-6)
        assert monitor.latest()[0]["grad_cos"] == pytest.approx(cos, rel=1e-5)
    assert monitor.recorded == 3
    assert monitor.log().embeddings["weight"]["unseen"] == 7


def test_a_closed_monitor_records_nothing_more():
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters())
    monitor = adamwkit.Monitor(opt, before_hook=False)
    model(torch.randn(3, 4)).sum().backward()
    monitor.before_step()
    opt.step()
    assert monitor.recorded == 1 and not monitor.closed
    monitor.close()
    monitor.close()  # twice is harmless
    for _ in range(2):
        monitor.before_step()  # a callback that still calls it
        opt.step()
    assert monitor.closed and monitor.recorded == 1 and monitor.step == 1
    assert len(monitor.history()) == 2  # what was recorded stays readable (two tensors)


def test_explain_run_shows_names_from_the_log_escaped(tmp_path, capsys):
    """A log is a file like any other: a layer name holding terminal escapes (a window
    title, a screen clear) or rich markup is printed as text, never obeyed."""
    from adamwkit import cli

    model = nn.Linear(4, 2)
    opt = torch.optim.AdamW(model.parameters(), weight_decay=0.1)
    hostile = "\x1b]0;pwned\x07\x1b[2J[/bold]fake.weight"
    monitor = Monitor(opt, names={model.weight: hostile, model.bias: "[red]bias"})
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 4)).square().sum().backward()
        opt.step()
    path = monitor.save(tmp_path / "monitor.jsonl")
    assert cli.main(["explain", "--run", str(path)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out
    assert "\\x1b]0;pwned" in out and "[/bold]fake" in out and "[red]bias" in out


@pytest.mark.parametrize("by", ["tensor", "layer"])
def test_dataframe_holds_the_history_rows(by):
    """The documented pandas view: one row per (step, tensor or layer), the norms equal to
    the weights' own (oracle: torch's norm of each tensor at the last step)."""
    model, mon = _linear_norm_linear_run()
    frame = mon.log().dataframe(by)
    rows = mon.history(by)
    assert len(frame) == len(rows) and list(frame.columns) == list(rows[0])
    last = frame[frame["step"] == 4].set_index("name")["norm"]
    if by == "tensor":
        for name, p in model.named_parameters():
            assert last[name] == pytest.approx(p.norm().item(), rel=1e-6)
    else:
        weight, bias = model[2].weight, model[2].bias
        both = torch.cat([weight.detach().flatten(), bias.detach().flatten()])
        assert last["2"] == pytest.approx(both.norm().item(), rel=1e-6)
