"""When Kosson et al.'s equilibrium applies: the weights' cosine with their gradient, the
verdicts of layers that are and are not scale-invariant, one ratio in explain --run's table
and verdicts, older logs, and damaged logs.

The oracles: the cosine and norms computed directly with torch; the closed-form equilibrium
norm sqrt(lr * C / (2 * wd)); the layers a LayerNorm follows (scale-invariant by
construction: the loss cannot change along w, so w . g = 0) against those it does not; the
line numbers of the lines a test damages itself.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
import torch
from torch import nn

import adamwkit
from adamwkit import cli
from adamwkit.explain import explain_run
from adamwkit.monitor import SCALE_INVARIANT_LIMIT, Monitor, load_log

ALARMS = {"off-equilibrium", "collapsing", "too-short", "equilibrium", "late-gradient-rise"}


def ln_model(dtype=torch.float32):
    """A weight a LayerNorm follows (layer 0: scale-invariant), the LayerNorm, and an MLP
    layer whose loss depends on its scale (layer 3)."""
    return nn.Sequential(nn.Linear(16, 64, bias=False), nn.LayerNorm(64), nn.ReLU(),
                         nn.Linear(64, 1)).to(dtype)  # fmt: skip


def regression(seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(512, 16, generator=g, dtype=dtype)
    return x, torch.sin(x @ torch.randn(16, 1, generator=g, dtype=dtype)), g


def test_the_recorded_cosine_is_the_weights_cosine_with_their_gradient():
    """Per tensor and per layer (the layer's tensors as one vector), at every recorded step,
    against torch's own dot product of the weights and the gradient the step used."""
    torch.manual_seed(0)
    model = ln_model(torch.float64)
    x, y, _ = regression(dtype=torch.float64)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    mon = Monitor(opt, model=model)
    expected = []
    for _ in range(3):
        opt.zero_grad()
        ((model(x[:32]) - y[:32]) ** 2).mean().backward()
        expected.append({n: (p.detach().clone(), p.grad.clone()) for n, p in
                         model.named_parameters()})  # fmt: skip
        opt.step()
    rows = mon.history()
    for r in rows:
        w, grad = expected[r["step"] - 1][r["name"]]
        cos = float((w * grad).sum() / (w.norm() * grad.norm()))
        assert r["grad_cos"] == pytest.approx(cos, rel=1e-6, abs=1e-12, nan_ok=True)  # float32
    layer3 = {r["step"]: r["grad_cos"] for r in mon.history(by="layer") if r["name"] == "3"}
    for step, tensors in enumerate(expected, start=1):
        w = torch.cat([tensors[n][0].flatten() for n in ("3.weight", "3.bias")])
        grad = torch.cat([tensors[n][1].flatten() for n in ("3.weight", "3.bias")])
        assert layer3[step] == pytest.approx(float(w @ grad / (w.norm() * grad.norm())))
    # The weight the LayerNorm follows: w . g = 0 but for the LayerNorm's eps (1e-5 against
    # a variance near 1), against 0.01 to 0.3 for layer 3.
    assert max(abs(r["grad_cos"]) for r in rows if r["name"] == "0.weight") < 1e-4
    assert min(abs(r) for r in layer3.values()) > 1e-2


@pytest.fixture(scope="module")
def ln_run():
    """800 steps of AdamW (lr 1e-2, wd 1: tau_iter = 100 steps) on the LayerNorm model."""
    torch.manual_seed(0)
    model = ln_model()
    x, y, g = regression()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    mon = Monitor(opt, every=5, model=model)
    for _ in range(800):
        i = torch.randint(0, 512, (32,), generator=g)
        opt.zero_grad()
        ((model(x[i]) - y[i]) ** 2).mean().backward()
        opt.step()
    return model, mon.log()


def test_a_weight_a_layernorm_follows_is_scale_invariant_an_mlp_layer_is_not(ln_run):
    _, log = ln_run
    layers = log.layers()
    names = [t.name for t in layers.tensors]
    invariant = dict(zip(names, layers.scale_invariant(), strict=True))
    assert invariant == {"0": True, "1": False, "3": False}
    size = np.array([math.prod(t.shape) for t in layers.tensors])
    scaled = np.median(np.abs(layers.grad_cos) * np.sqrt(size), axis=0)
    by_name = dict(zip(names, scaled, strict=True))
    # Far on either side of the limit: the measurement, not the threshold, decides.
    assert by_name["0"] < SCALE_INVARIANT_LIMIT / 100
    assert by_name["3"] > SCALE_INVARIANT_LIMIT * 10


def test_the_scale_invariant_layer_keeps_its_verdict_the_other_gets_a_reference(ln_run):
    model, log = ln_run
    verdicts = log.verdicts()
    by_layer: dict[str, list] = {}
    for v in verdicts:
        by_layer.setdefault(v.layer, []).append(v)
    # Layer 0 settles within 8 tau_iter: the equilibrium verdict, as for any such layer.
    assert [v.code for v in by_layer["0"]] == ["equilibrium"]
    pred0 = math.sqrt(1e-2 * 1024 / (2 * 1.0))  # Kosson et al., C = 16 * 64
    ratio0 = model[0].weight.detach().norm().item() / pred0
    assert f"{ratio0:.2g}x the equilibrium norm at step 800" in by_layer["0"][0].text
    # Layer 3 (weight and bias, both decayed by torch's AdamW): one reference verdict.
    (v3,) = by_layer["3"]
    assert v3.code == "reference"
    assert v3.text.startswith("not scale-invariant (its gradient is not orthogonal to it")
    assert "the equilibrium norm is a reference only" in v3.text
    both = torch.cat([model[3].weight.detach().flatten(), model[3].bias.detach().flatten()])
    ratio3 = both.norm().item() / math.sqrt(1e-2 * 65 / (2 * 1.0))
    assert f"its norm is {ratio3:.2g}x it at step 800" in v3.text
    assert not {v.code for v in by_layer["1"] + by_layer["3"]} & ALARMS


@pytest.fixture(scope="module")
def digits_log(tmp_path_factory):
    """The digits MLP (Linear, ReLU, Linear, ReLU, Linear; no normalisation) trained for 260
    steps under a cosine schedule to zero, recorded every 5 steps."""
    from adamwkit.tasks import get_task

    result = adamwkit.fit(get_task("digits"), 0.5, epochs=20, batch_size=32, monitor=5)
    path = result.monitor.save(tmp_path_factory.mktemp("digits") / "monitor.jsonl")
    return result.monitor, path


def test_the_digits_mlp_gets_no_equilibrium_alarm(digits_log):
    log, _ = digits_log
    assert len(log.steps) > 40
    layers = log.layers()
    assert layers.scale_invariant() == [False, False, False]
    codes = {v.layer: v.code for v in log.verdicts()}
    assert codes == {"0": "reference", "2": "reference", "4": "reference"}


def cosine_si_log(steps=1500):
    """A scale-invariant 64x64 weight (random gradients orthogonal to it) under a cosine
    schedule to zero: the end of the run, where the equilibrium norm falls with the lr."""
    g = torch.Generator().manual_seed(0)
    w = nn.Parameter(torch.randn(64, 64, generator=g) * 0.05)
    opt = torch.optim.AdamW([w], lr=3e-2, weight_decay=0.1)
    mon = Monitor(opt, every=10, names={w: "block.weight"})
    for t in range(steps):
        r = torch.randn(64, 64, generator=g)
        with torch.no_grad():
            r -= (r * w).sum() / (w * w).sum() * w
        w.grad = r
        opt.param_groups[0]["lr"] = 3e-2 * 0.5 * (1 + math.cos(math.pi * t / steps))
        opt.step()
    return mon.log()


RATIO = re.compile(r"([0-9.e+-]+)x (?:the equilibrium norm|it) at step (\d{1,3}(?:,\d{3})*)")


@pytest.mark.parametrize("which", ["digits", "scale-invariant"])
def test_explain_run_table_and_verdicts_give_one_ratio(which, digits_log, tmp_path, capsys):
    if which == "digits":
        log, path = digits_log
    else:
        log = cosine_si_log()
        path = log.save(tmp_path / "monitor.jsonl")
    run = explain_run(path)
    history = {(r["name"], r["step"]): r for r in log.history(by="layer")}
    last = int(log.steps[-1])
    lr = {t.name: log.layers().lr[:, j] for j, t in enumerate(log.layers().tensors)}
    checked = 0
    for row in run.layers:
        if row["norm_ratio"] is None:
            continue
        # The row is taken where the verdict judges: before the schedule's tail.
        assert row["step"] < last
        k = int(np.nonzero(log.steps == row["step"])[0][0])
        assert lr[row["layer"]][k] >= 0.1 * lr[row["layer"]].max()
        assert lr[row["layer"]][k + 1] < 0.1 * lr[row["layer"]].max()
        at = history[(row["layer"], row["step"])]
        assert row["norm"] == pytest.approx(at["norm"], rel=1e-6)  # the file keeps 7 digits
        assert row["pred_norm"] == pytest.approx(at["pred_norm"], rel=1e-6)
        assert row["norm_ratio"] == pytest.approx(row["norm"] / row["pred_norm"])
        texts = [v["text"] for v in run.verdicts if v["layer"] == row["layer"]]
        quoted = [m for t in texts for m in RATIO.findall(t)]
        assert quoted == [(f"{row['norm_ratio']:.2g}", f"{row['step']:,}")], texts
        checked += 1
    assert checked == (3 if which == "digits" else 1)
    # The command prints the same rows.
    assert cli.main(["explain", "--run", str(path), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)["layers"]
    assert [r["norm_ratio"] for r in printed] == [r["norm_ratio"] for r in run.layers]


def test_a_log_without_the_cosine_reads_as_unknown(tmp_path):
    """A log saved before the cosine was recorded (version 1: five fields per tensor)."""
    torch.manual_seed(0)
    model = ln_model()
    x, y, _ = regression()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    mon = Monitor(opt, every=2, model=model)
    for _ in range(10):
        opt.zero_grad()
        ((model(x[:32]) - y[:32]) ** 2).mean().backward()
        opt.step()
    new = mon.save(tmp_path / "new.jsonl")
    lines = [json.loads(line) for line in new.read_text().splitlines()]
    header, records = lines[0], lines[1:]
    assert header["adamwkit_monitor"] == 2 and header["fields"][-1] == "grad_dot"
    header.update(adamwkit_monitor=1, fields=header["fields"][:5])
    for r in records:
        r["values"] = [v[:5] for v in r["values"]]
    old = tmp_path / "old.jsonl"
    old.write_text("\n".join(json.dumps(x) for x in [header, *records]) + "\n")
    log = load_log(old)
    assert np.all(np.isnan(log.grad_cos))
    assert log.layers().scale_invariant() == [None, None, None]
    np.testing.assert_allclose(log.values[:, :, :5], load_log(new).values[:, :, :5])
    for v in log.verdicts():
        assert v.code == "reference"
        assert v.text.startswith("its scale-invariance is unknown")
        assert "the equilibrium norm is a reference only" in v.text
    assert [r["scale_invariant"] for r in explain_run(old).layers] == [None, None, None]


def _monitored(steps: int) -> Monitor:
    """A Monitor on torch's AdamW over ``steps`` steps of the LayerNorm model."""
    model = ln_model()
    x, y, _ = regression()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    mon = Monitor(opt, model=model)
    for _ in range(steps):
        opt.zero_grad()
        ((model(x[:32]) - y[:32]) ** 2).mean().backward()
        opt.step()
    return mon


def test_log_since_gives_the_later_records_and_rereads_nothing():
    mon = _monitored(6)
    full = mon.log()
    part = mon.log(since=4)
    assert part.steps.tolist() == [5, 6]
    np.testing.assert_array_equal(part.values, full.values[4:])
    np.testing.assert_array_equal(mon.log().values, full.values)  # read again: the same
    with pytest.raises(ValueError, match="since"):
        mon.log(since=-1)


# ---------------------------------------------------------------------------- damaged logs


@pytest.fixture(scope="module")
def good_lines(tmp_path_factory):
    path = _monitored(3).save(tmp_path_factory.mktemp("good") / "monitor.jsonl")
    return path.read_text().splitlines()


_DROP = object()


def _edit(line, **changes):
    """``line`` (a JSON object) with ``changes`` made; ``_DROP`` removes a key."""
    obj = json.loads(line)
    for key, value in changes.items():
        if value is _DROP:
            del obj[key]
        else:
            obj[key] = value
    return json.dumps(obj)


def _record(lines, k=1, **changes):
    return _edit(lines[k], **changes)


def _header(lines, **changes):
    return [_edit(lines[0], **changes), *lines[1:]]


# (name, builds the file's lines from a good log's, the damaged line, what the error says)
DAMAGED = [
    ("a JSON list", lambda ls: [json.dumps([json.loads(x) for x in ls])], 1, "is a list"),
    ("a record that is a list", lambda ls: [ls[0], "[1, 2]", *ls[2:]], 2, "is a list"),
    ("a record that is a string", lambda ls: [ls[0], ls[1], '"x"', ls[3]], 3, "is a string"),
    ("a record that is a number", lambda ls: [*ls[:3], "7", ls[3]], 4, "is a number"),
    ("a record without tensors", lambda ls: [ls[0], _record(ls, values=[]), *ls[2:]], 2,
     "'values' holds no tensors"),
    ("a record without values", lambda ls: [ls[0], _record(ls, values=_DROP), *ls[2:]], 2,
     "'values' is missing"),
    ("a record without its step", lambda ls: [ls[0], ls[1], _record(ls, 2, step=_DROP),
                                              ls[3]], 3, "'step' is missing"),
    ("a step that is text", lambda ls: [ls[0], _record(ls, step="one"), *ls[2:]], 2,
     "'step' is a string"),
    ("a huge step", lambda ls: [ls[0], _record(ls, step=10**30), *ls[2:]], 2, "'step' is"),
    ("steps out of order", lambda ls: [ls[0], ls[2], ls[1], ls[3]], 3, "steps must increase"),
    ("values of the wrong shape", lambda ls: [ls[0], _record(ls, values=[[1.0, 2.0]]),
                                              *ls[2:]], 2, "'values' has shape 1 x 2"),
    ("values that are text", lambda ls: [ls[0], _record(ls, values=[["a"] * 6] * 5),
                                         *ls[2:]], 2, "other than numbers"),
    ("ragged decay", lambda ls: [ls[0], _record(ls, decay=[[1], 2, 3, 4, 5]), *ls[2:]], 2,
     "'decay' is not a table"),
    ("bad JSON", lambda ls: [ls[0], ls[1], "{not json", ls[3]], 3, "is not JSON"),
    ("a header without tensors", lambda ls: _header(ls, tensors=_DROP), 1,
     "'tensors' is missing"),
    ("a tensor without a name",
     lambda ls: _header(ls, tensors=[{"numel": 3, "shape": [3], "layer": "a"}]), 1,
     "'name' is missing"),
    ("embeddings that are a list", lambda ls: _header(ls, embeddings=[1]), 1,
     "'embeddings' is a list"),
]  # fmt: skip


@pytest.mark.parametrize("name,build,line,needle", DAMAGED, ids=[d[0] for d in DAMAGED])
def test_a_damaged_log_is_one_line_naming_the_file_and_line(
    name, build, line, needle, good_lines, tmp_path, capsys
):
    lines = build(good_lines)
    path = tmp_path / "monitor.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError) as err:
        load_log(path)
    message = str(err.value)
    assert repr(str(path)) in message and f"line {line}" in message and needle in message
    code = cli.main(["explain", "--run", str(path)])
    captured = capsys.readouterr()
    assert code == 2 and captured.out == ""
    assert len(captured.err.strip().splitlines()) == 1 and "Traceback" not in captured.err
    assert str(path) in captured.err and f"line {line}" in captured.err


def test_a_torn_last_line_is_dropped_not_damage(good_lines, tmp_path):
    path = tmp_path / "monitor.jsonl"
    path.write_text("\n".join([*good_lines[:-1], good_lines[-1][:20]]) + "\n")
    assert load_log(path).steps.tolist() == [1, 2]


def test_the_callbacks_summary_is_taken_where_the_verdicts_judge(tmp_path):
    """What a callback logs along the run (MonitorCore, as the Trainer and Lightning
    callbacks drive it) against explain --run's rows for the same log: a scale-invariant
    weight and an MLP layer under a cosine schedule to zero, logged every 50 steps."""
    from adamwkit.integrations._monitor import SUMMARY_KEYS, MonitorCore

    torch.manual_seed(0)
    model = ln_model()
    x, y, g = regression()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=1.0)
    core = MonitorCore(every=5)
    core._attach(opt, model, 0)
    steps, logged = 600, []
    for t in range(steps):
        i = torch.randint(0, 512, (32,), generator=g)
        opt.zero_grad()
        ((model(x[i]) - y[i]) ** 2).mean().backward()
        opt.param_groups[0]["lr"] = 1e-2 * 0.5 * (1 + math.cos(math.pi * t / steps))
        opt.step()
        if (t + 1) % 50 == 0:
            logged.append(core._latest())
    assert core._latest() == {}  # nothing new since the last event
    last = logged[-1]
    assert set(last) == set(SUMMARY_KEYS)
    path = core.monitor.log().save(tmp_path / "monitor.jsonl")
    rows = {r["layer"]: r for r in explain_run(path).layers}
    # Layer 0 is the only scale-invariant one; the LayerNorm and layer 3 are references.
    assert rows["0"]["scale_invariant"] and not rows["3"]["scale_invariant"]
    assert last["monitor/layers_reference"] == 2
    assert last["monitor/layers_equilibrium"] + last["monitor/layers_off_equilibrium"] == 1
    # The schedule's tail is not judged: the ratio is the table's, before it.
    assert rows["0"]["step"] < steps
    assert last["monitor/norm_ratio_median"] == pytest.approx(rows["0"]["norm_ratio"], rel=1e-6)
    assert last["monitor/decay_per_step"] == pytest.approx(core.monitor.log().decay[-1, 0])
