"""The command line: tables, --json and one-line errors with exit code 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from adamwkit.cli import main

VIT_S = ["--lr", "1e-3", "--batch-size", "256", "--dataset-size", "100000", "--epochs", "100"]


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def calibrated_tau(epochs: float, n: float, b: float, lr: float) -> float:
    """The calibrated tau_epoch by hand from the fitted constants (natural logs)."""
    from adamwkit import _calibration as cal

    f = {"log_T": math.log(epochs), "log_N": math.log(n), "log_B": math.log(b),
         "log_lr": math.log(lr), "log_steps_per_epoch": math.log(n / b)}  # fmt: skip
    x = cal.COEF["const"] + sum(c * f[k] for k, c in cal.COEF.items() if k != "const")
    return math.exp(x + sum(c * f[k] for k, c in cal.FIXED.items()))


def last_json(out: str) -> dict:
    return json.loads(out.strip().splitlines()[-1])


def test_suggest_prints_the_value_the_rule_and_the_table(capsys):
    code, out, _ = run(capsys, "suggest", *VIT_S)
    assert code == 0
    wd = 256 / (1e-3 * calibrated_tau(100, 100_000, 256, 1e-3) * 100_000)
    assert f"Suggested weight decay: {wd:.3g}" in out
    assert "80% range" in out
    assert "Why calibrated" in out
    for rule in ("calibrated", "wang-aitchison", "power-lines", "loshchilov-hutter"):
        assert rule in out


def test_suggest_json_fields(capsys):
    code, out, _ = run(capsys, "suggest", *VIT_S, "--json")
    assert code == 0
    obj = last_json(out)
    tau = calibrated_tau(100, 100_000, 256, 1e-3)
    assert obj["weight_decay"] == pytest.approx(256 / (1e-3 * tau * 100_000))
    assert obj["weight_decay_independent"] == pytest.approx(obj["weight_decay"] * 1e-3)
    assert obj["tau_epoch"] == pytest.approx(tau)
    assert obj["tau_iter"] == pytest.approx(1 / (1e-3 * obj["weight_decay"]))
    assert obj["rule"] == "calibrated"
    assert obj["low"] < obj["weight_decay"] < obj["high"]
    names = [r["name"] for r in obj["rules"]]
    assert names == [
        "calibrated", "wang-aitchison", "power-lines", "loshchilov-hutter", "torch-default"
    ]  # fmt: skip
    assert all({"name", "weight_decay", "source", "fitted_on"} <= set(r) for r in obj["rules"])
    # tau_epoch = sqrt(100): wd = B / (lr * 10 * N), by hand.
    assert obj["rules"][1]["weight_decay"] == pytest.approx(256 / (1e-3 * 10 * 100_000))
    assert obj["rules"][2]["weight_decay"] is None  # skipped: no tokens


def test_suggest_tokens_for_pretraining(capsys):
    code, out, _ = run(
        capsys,
        "suggest",
        "--lr", "3e-4", "--batch-size", "1048576", "--tokens", "20e9", "--params", "1e9",
        "--json",
    )  # fmt: skip
    assert code == 0
    obj = last_json(out)
    assert obj["rule"] == "power-lines"
    assert round(obj["tau_run"], 3) == 0.224


def test_explain_json_and_table(capsys):
    args = ["--lr", "1e-3", "--batch-size", "128", "--dataset-size", "50000", "--epochs", "82"]
    wd = str(128 / (1e-3 * 163 * 50_000))
    code, out, _ = run(capsys, "explain", "--weight-decay", wd, *args, "--json")
    assert code == 0
    obj = last_json(out)
    assert obj["tau_epoch"] == pytest.approx(163)
    assert obj["verdict_code"] == "barely-acts"
    assert {"weight_decay", "weight_decay_independent", "tau_iter", "rule", "rules"} <= set(obj)
    code, out, _ = run(capsys, "explain", "--weight-decay", wd, *args, "--schedule", "cosine")
    assert code == 0
    assert "tau_epoch is 163 epochs but you train 82" in " ".join(out.split())


def test_explain_zero_decay_gives_null_timescales(capsys):
    code, out, _ = run(capsys, "explain", "--weight-decay", "0", *VIT_S, "--json")
    assert code == 0
    obj = last_json(out)
    assert obj["tau_iter"] is None and obj["verdict_code"] == "no-decay"


def test_explain_with_a_model(capsys, tmp_path, monkeypatch):
    (tmp_path / "mymodels.py").write_text(
        "import torch\n"
        "def net():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Linear(8, 2))\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out, _ = run(capsys, "explain", "--weight-decay", "0.1", *VIT_S,
                       "--model", "mymodels:net", "--json")  # fmt: skip
    assert code == 0
    layers = last_json(out)["layers"]
    assert [layer["name"] for layer in layers] == ["0.weight", "1.weight"]
    assert layers[0]["equilibrium_norm"] == pytest.approx((1e-3 * 32 / 0.2) ** 0.5)


def test_convert(capsys):
    code, out, _ = run(
        capsys, "convert", "--weight-decay", "0.1", "--from", "torch", "--to", "independent",
        "--lr", "6e-4", "--json",
    )  # fmt: skip
    assert code == 0
    assert last_json(out)["value"] == pytest.approx(6e-5)
    code, out, _ = run(
        capsys, "convert", "--weight-decay", "0.1", "--from", "torch", "--to", "independent",
        "--lr", "6e-4",
    )  # fmt: skip
    assert code == 0 and "6e-05 (independent)" in out


@pytest.mark.parametrize(
    ("argv", "flag_and_range"),
    [
        (
            ["suggest", *VIT_S[:-2], "--epochs", "0"],
            "--epochs=0 is invalid: expected a finite number in (0, inf)",
        ),
        (
            ["suggest", "--lr", "-1", *VIT_S[2:]],
            "--lr=-1 is invalid: expected a learning rate in [1e-12, 1000]",
        ),
        (["suggest", "--lr", "nan", *VIT_S[2:]], "--lr=nan is invalid"),
        (["suggest", *VIT_S[:2], "--batch-size", "0", *VIT_S[4:]], "--batch-size=0 is invalid"),
        (
            ["suggest", *VIT_S[:4], "--dataset-size", "-5", *VIT_S[6:]],
            "--dataset-size=-5 is invalid",
        ),
        (["suggest", *VIT_S, "--params", "0"], "--params=0 is invalid"),
        (
            ["suggest", *VIT_S, "--steps", "10"],
            "exclusive: give --epochs or --steps",
        ),
        (["suggest", "--lr", "abc", *VIT_S[2:]], "argument --lr: invalid number value: 'abc'"),
        (["suggest", *VIT_S[2:]], "the following arguments are required: --lr"),
        (["suggest", *VIT_S, "--decay-scale", "torch"], "argument --decay-scale: invalid choice"),
        (["suggest", *VIT_S[:4]], "no rule can run"),
        (["explain", "--weight-decay", "-1", *VIT_S], "--weight-decay=-1 is invalid"),
        (
            ["explain", "--weight-decay", "0.1", *VIT_S, "--model", "nothing"],
            "--model='nothing' is invalid: expected 'module:attribute'",
        ),
        (
            ["explain", "--weight-decay", "0.1", *VIT_S, "--model", "no_such_mod:x"],
            "importing 'no_such_mod' failed",
        ),
        (
            ["convert", "--weight-decay", "0.1", "--from", "torch", "--to", "independent"],
            "--lr is needed: converting to or from the 'independent' convention",
        ),
        (
            ["convert", "--weight-decay", "0.1", "--from", "torch", "--to", "sgd"],
            "argument --to: invalid choice",
        ),
        (["tune-nothing"], "invalid choice"),
        (
            [
                "explain",
                "--weight-decay",
                "0.1",
                *VIT_S,
                "--schedule",
                "cosine",
                "--warmup-steps",
                "inf",
            ],
            "--warmup-steps=inf is invalid",
        ),
        (
            ["explain", "--weight-decay", "0.1", *VIT_S, "--model", "torch.nn:Linear"],
            "calling it with no arguments failed",
        ),
        (
            [
                "convert",
                "--weight-decay",
                "0.1",
                "--from",
                "torch",
                "--to",
                "timm-corrected",
                "--steps",
                "100",
            ],
            "give --schedule too",
        ),
        (
            ["suggest", "--lr", "1e-3", "--batch-size", "256", "--tokens", "1e9", "--steps", "9"],
            "are exclusive",
        ),
    ],
)
def test_bad_input_exits_2_with_one_line(capsys, argv, flag_and_range):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert flag_and_range in lines[0]


def test_every_rules_warnings_are_printed(capsys):
    argv = ["--lr", "1e-3", "--batch-size", "256", "--tokens", "1e9", "--epochs", "3"]
    code, out, _ = run(capsys, "suggest", *argv, "--params", "1e8")
    assert code == 0
    text = " ".join(out.split())
    assert "warning (power-lines): fitted for one pass over the data" in text
    assert "warning (loshchilov-hutter): fitted on multi-epoch image classification" in text


def test_console_script_runs():
    script = Path(sys.executable).with_name("adamwkit")
    proc = subprocess.run(
        [str(script), "suggest", *VIT_S, "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert last_json(proc.stdout)["rule"] == "calibrated"
