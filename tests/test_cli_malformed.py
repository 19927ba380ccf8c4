"""Malformed command lines: each exits 2 with one line naming the argument, no traceback,
and none starts training."""

from __future__ import annotations

import argparse

import pytest
import torch

from adamwkit import cli

SECRET = "s3cr@t:pw"

SUGGEST = ["suggest", "--lr", "1e-3", "--batch-size", "32", "--dataset-size", "1000",
           "--epochs", "10"]  # fmt: skip
EXPLAIN = ["explain", "--weight-decay", "0.05", *SUGGEST[1:]]
CONVERT = ["convert", "--weight-decay", "0.1", "--from", "torch", "--to", "independent",
           "--lr", "1e-3"]  # fmt: skip

OVERFLOW = ["--weight-decay", "1e308", "--from", "independent", "--to", "torch", "--lr", "1e-12"]


def with_(base: list[str], *pairs: str) -> list[str]:
    """``base`` with each ``flag value`` replaced (or added); a value of None drops the flag."""
    out = list(base)
    it = iter(pairs)
    for flag in it:
        value = next(it)
        if flag in out:
            i = out.index(flag)
            del out[i : i + 2]
        if value is not None:
            out += [flag, value]
    return out


def without(base: list[str], flag: str) -> list[str]:
    out = list(base)
    i = out.index(flag)
    del out[i : i + 2]
    return out


# (argv, text that the one line must contain)
CASES: list[tuple[list[str], str]] = [
    # suggest
    (with_(SUGGEST, "--lr", "x"), "--lr"),
    (with_(SUGGEST, "--lr", "nan"), "--lr"),
    (with_(SUGGEST, "--lr", "inf"), "--lr"),
    (with_(SUGGEST, "--lr", "-inf"), "--lr"),
    (with_(SUGGEST, "--lr", "-1e-3"), "--lr"),
    (with_(SUGGEST, "--lr", "0"), "--lr"),
    (with_(SUGGEST, "--lr", "1e308"), "--lr"),
    (with_(SUGGEST, "--lr", "1e-320"), "--lr"),
    (with_(SUGGEST, "--lr", "1e4"), "--lr"),
    (with_(SUGGEST, "--lr", ""), "--lr"),
    (with_(SUGGEST, "--batch-size", "0"), "--batch-size"),
    (with_(SUGGEST, "--batch-size", "-32"), "--batch-size"),
    (with_(SUGGEST, "--batch-size", "nan"), "--batch-size"),
    (with_(SUGGEST, "--batch-size", "2000"), "--batch-size"),
    (with_(SUGGEST, "--batch-size", "1e400"), "--batch-size"),
    (with_(SUGGEST, "--dataset-size", "0"), "--dataset-size"),
    (with_(SUGGEST, "--dataset-size", "-5"), "--dataset-size"),
    (with_(SUGGEST, "--dataset-size", "inf"), "--dataset-size"),
    (with_(SUGGEST, "--epochs", "0"), "--epochs"),
    (with_(SUGGEST, "--epochs", "-1"), "--epochs"),
    (with_(SUGGEST, "--epochs", "nan"), "--epochs"),
    (with_(SUGGEST, "--epochs", "1e400"), "--epochs"),
    (with_(SUGGEST, "--epochs", None, "--steps", "0.5"), "--steps"),
    (with_(SUGGEST, "--epochs", None, "--steps", "-3"), "--steps"),
    (with_(SUGGEST, "--steps", "100"), "--steps"),
    (with_(SUGGEST, "--tokens", "1e9"), "--tokens"),
    (with_(SUGGEST, "--dataset-size", None, "--tokens", "-1"), "--tokens"),
    (
        with_(
            SUGGEST, "--dataset-size", None, "--epochs", None, "--tokens", "1e9", "--steps", "10"
        ),
        "--steps",
    ),
    (with_(SUGGEST, "--params", "0"), "--params"),
    (with_(SUGGEST, "--params", "nan"), "--params"),
    (with_(SUGGEST, "--beta1", "1"), "--beta1"),
    (with_(SUGGEST, "--beta1", "-0.1"), "--beta1"),
    (with_(SUGGEST, "--beta1", "nan"), "--beta1"),
    (with_(SUGGEST, "--decay-scale", "foo"), "--decay-scale"),
    (without(SUGGEST, "--lr"), "--lr"),
    (without(SUGGEST, "--batch-size"), "--batch-size"),
    (["suggest", "--lr", "1e-3", "--batch-size", "32"], "--dataset-size"),
    (with_(SUGGEST, "--epochs", None), "--epochs"),
    ([*SUGGEST, "--frobnicate"], "--frobnicate"),
    ([*SUGGEST, "--lr"], "--lr"),
    # explain
    (with_(EXPLAIN, "--weight-decay", "-0.1"), "--weight-decay"),
    (with_(EXPLAIN, "--weight-decay", "nan"), "--weight-decay"),
    (with_(EXPLAIN, "--weight-decay", "inf"), "--weight-decay"),
    (with_(EXPLAIN, "--weight-decay", "x"), "--weight-decay"),
    (without(EXPLAIN, "--weight-decay"), "--weight-decay"),
    (with_(EXPLAIN, "--lr", "-1"), "--lr"),
    (with_(EXPLAIN, "--lr", "1e308"), "--lr"),
    (with_(EXPLAIN, "--beta1", "2"), "--beta1"),
    (with_(EXPLAIN, "--schedule", "foo"), "--schedule"),
    (with_(EXPLAIN, "--schedule", "cosine", "--warmup-steps", "-1"), "--warmup-steps"),
    (with_(EXPLAIN, "--schedule", "cosine", "--warmup-steps", "1.5"), "--warmup-steps"),
    (with_(EXPLAIN, "--warmup-steps", "5"), "--warmup-steps"),
    (with_(EXPLAIN, "--epochs", None, "--schedule", "cosine"), "--schedule"),
    (with_(EXPLAIN, "--model", "no_such_module_xyz:thing"), "--model"),
    (with_(EXPLAIN, "--model", "os:sep"), "--model"),
    (with_(EXPLAIN, "--model", "nocolon"), "--model"),
    (with_(EXPLAIN, "--batch-size", "0"), "--batch-size"),
    # convert
    (with_(CONVERT, "--from", "foo"), "--from"),
    (with_(CONVERT, "--to", "bar"), "--to"),
    (without(CONVERT, "--from"), "--from"),
    (with_(CONVERT, "--weight-decay", "-1"), "--weight-decay"),
    (with_(CONVERT, "--weight-decay", "nan"), "--weight-decay"),
    (without(CONVERT, "--lr"), "--lr"),
    (with_(CONVERT, "--lr", "0"), "--lr"),
    (with_(CONVERT, "--lr", "-1e-3"), "--lr"),
    (with_(CONVERT, "--lr", "1e308"), "--lr"),
    (with_(CONVERT, "--schedule", "cosine"), "--steps"),
    (with_(CONVERT, "--steps", "100"), "--schedule"),
    (with_(CONVERT, "--schedule", "cosine", "--steps", "0"), "--steps"),
    (with_(CONVERT, "--schedule", "cosine", "--steps", "1.5"), "--steps"),
    (
        with_(CONVERT, "--schedule", "cosine", "--steps", "100", "--warmup-steps", "-1"),
        "--warmup-steps",
    ),
    (
        with_(CONVERT, "--schedule", "cosine", "--steps", "100", "--warmup-steps", "200"),
        "--warmup-steps",
    ),
    (with_(CONVERT, "--schedule", "nope", "--steps", "100"), "--schedule"),
    (with_(CONVERT, "--warmup-steps", "5"), "--schedule"),
    # a value that overflows in the target convention was printed as inf
    (with_(CONVERT, *OVERFLOW), "--weight-decay"),
    (with_(CONVERT, "--weight-decay", "1e-320"), "--weight-decay"),
]

TUNE_CASES: list[tuple[list[str], str]] = [
    (["--folds", "0"], "--folds"),
    (["--folds", "2.5"], "--folds"),
    (["--folds", "0"], "--folds"),
    (["--folds", "nan"], "--folds"),
    (["--epochs", "0"], "--epochs"),
    (["--epochs", "2.5"], "--epochs"),
    (["--epochs", "-1"], "--epochs"),
    (["--lr", "1e308"], "--lr"),
    (["--lr", "-1e-3"], "--lr"),
    (["--lr", "0"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--batch-size", "0"], "--batch-size"),
    (["--batch-size", "1.5"], "--batch-size"),
    (["--batch-size", "100000"], "--batch-size"),
    (["--decay-scale", "foo"], "--decay-scale"),
    (["--test-fraction", "1"], "--test-fraction"),
    (["--test-fraction", "-0.1"], "--test-fraction"),
    (["--test-fraction", "nan"], "--test-fraction"),
    (["--grid", "a,b"], "--grid"),
    (["--grid", "-1,0.1"], "--grid"),
    (["--grid", ","], "--grid"),
    (["--grid", "nan"], "--grid"),
    (["--grid", "0,1", "--min", "1e-3", "--max", "1"], "--grid"),
    (["--grid", "0,1", "--points", "4"], "--points"),
    (["--min", "1e-3"], "--max"),
    (["--max", "1"], "--min"),
    (["--min", "-1", "--max", "1"], "--min"),
    (["--min", "1", "--max", "0.1"], "--max"),
    (["--min", "1e-3", "--max", "1", "--points", "0"], "--points"),
    (["--min", "1e-3", "--max", "1", "--points", "1e6"], "--points"),
    (["--min", "1e-3", "--max", "1", "--points", "2.5"], "--points"),
    (["--grid", ",".join(str(i) for i in range(1001))], "--grid"),
    (["--sampler", "foo"], "--sampler"),
    (["--sampler", "tpe", "--trials", "0"], "--trials"),
    (["--sampler", "tpe", "--trials", "1e6"], "--trials"),
    (["--sampler", "tpe", "--trials", "2.5"], "--trials"),
    (["--lr-grid", "x"], "--lr-grid"),
    (["--lr-grid", "1e-3,2e-3", "--sampler", "tpe"], "--lr-grid"),
    (["--search-lr"], "--search-lr"),
    (["--lr-grid", "1e308"], "--lr-grid"),
    (["--storage", "notaurl"], "--storage"),
    (["--storage", f"postgresql://u:{SECRET}@localhost:99999/db"], "--storage"),
    (["--storage", f"postgresql://u:{SECRET}@localhost:abc/db"], "--storage"),
    (["--storage", f"postgresql://u@localhost:0/db?password={SECRET}"], "--storage"),
    (["--storage", f"redis://u:{SECRET}@localhost/0"], "--storage"),
    (["--storage", ""], "--storage"),
    (["--study", "bad name/"], "--study"),
    (["--study", ""], "--study"),
    (["--seed", "4294967296"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "1.5"], "--seed"),
    # subnormals: training flushes them to zero, so they ran as seed 0 / a duplicate of 0
    (["--seed", "1e-320"], "--seed"),
    (["--grid", "0,1e-320"], "--grid"),
    (["--min", "1e-320", "--max", "1"], "--min"),
    (["--heartbeat-interval", "1e12"], "--heartbeat-interval"),
    (["--heartbeat-interval", "0"], "--heartbeat-interval"),
    (["--storage-retry", "-1"], "--storage-retry"),
    (["--storage-retry", "nan"], "--storage-retry"),
    (["--max-memory", "1e300"], "--max-memory"),
    (["--max-memory", "0"], "--max-memory"),
    (["--max-memory", "-1"], "--max-memory"),
    (["--workers", "0"], "--workers"),
    (["--workers", "1e9"], "--workers"),
    (["--threads", "0"], "--threads"),
    (["--device", "tpu"], "--device"),
    (["--device", "cuda:x"], "--device"),
    (["--precision", "fp16"], "--precision"),
    (["--vectorize", "maybe"], "--vectorize"),
    (["--examples", "10"], "--examples"),
    (["--out", ""], "--out"),
    (["--out", "/proc/adamwkit-no-such/x"], "--out"),
]


def _tune_argv(extra: list[str], tmp_path) -> list[str]:
    if "--out" in extra:
        return ["tune", "--quiet", *extra]
    return ["tune", "--quiet", "--out", str(tmp_path / "runs"), *extra]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if a malformed command gets as far as training anything: opening the
    study's storage fails it, and so does starting a worker, wherever tune keeps it."""
    import importlib

    from adamwkit.tuning import study

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(study, "open_storage", refuse)
    for module, name in (
        ("adamwkit.tuning.run", "_Worker"),
        ("adamwkit.tuning.protocol", "Worker"),
    ):
        try:
            found = importlib.import_module(module)
        except ImportError:
            continue
        if hasattr(found, name):
            monkeypatch.setattr(found, name, refuse)


def check_one_line(argv, code, out, err, needle):
    assert code == 2, (argv, out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1, (argv, err)
    assert "Traceback" not in err
    assert lines[0].startswith("adamwkit"), lines[0]
    assert needle in lines[0], (argv, lines[0])
    assert SECRET not in err and SECRET not in out
    assert "s3cr" not in err


@pytest.mark.parametrize("argv,needle", CASES, ids=[" ".join(a)[:60] for a, _ in CASES])
def test_malformed_command_lines_exit_2_with_one_line(argv, needle, capsys, no_training):
    code = cli.main(argv)
    captured = capsys.readouterr()
    check_one_line(argv, code, captured.out, captured.err, needle)


@pytest.mark.parametrize("extra,needle", TUNE_CASES, ids=[" ".join(a)[:60] for a, _ in TUNE_CASES])
def test_malformed_tune_command_lines_exit_2_before_training(
    extra, needle, tmp_path, capsys, no_training
):
    argv = _tune_argv(extra, tmp_path)
    code = cli.main(argv)
    captured = capsys.readouterr()
    check_one_line(argv, code, captured.out, captured.err, needle)


def test_out_that_is_a_file_or_under_a_file(tmp_path, capsys, no_training):
    f = tmp_path / "file"
    f.write_text("x")
    for out, says in ((f, "is a file"), (f / "sub", "lies under")):
        code = cli.main(["tune", "--quiet", "--out", str(out)])
        captured = capsys.readouterr()
        check_one_line([], code, captured.out, captured.err, "--out")
        assert says in captured.err


def test_out_on_a_read_only_folder(tmp_path, capsys, no_training, monkeypatch):
    import os

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        if os.access(ro, os.W_OK):  # root ignores the mode: use a folder root cannot write
            ro = "/sys/adamwkit-no-such"
        code = cli.main(["tune", "--quiet", "--out", str(ro)])
        captured = capsys.readouterr()
        check_one_line([], code, captured.out, captured.err, "--out")
        assert "not writable" in captured.err
    finally:
        (tmp_path / "ro").chmod(0o700)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu(tmp_path, capsys, no_training):
    code = cli.main(_tune_argv(["--device", "cuda"], tmp_path))
    captured = capsys.readouterr()
    check_one_line([], code, captured.out, captured.err, "--device")


def test_unknown_task(tmp_path, capsys, no_training):
    for name in ("nope", "os:sep"):
        code = cli.main(_tune_argv([name], tmp_path))
        captured = capsys.readouterr()
        check_one_line([], code, captured.out, captured.err, name)


def test_at_least_100_malformed_invocations():
    assert len(CASES) + len(TUNE_CASES) >= 100


# The Python API refuses what the CLI refuses: each tune case above, as keyword arguments.
_KWARG = {"--min": "grid_min", "--max": "grid_max", "--lr-grid": "lr_grid",
          "--search-lr": "search_lr"}  # fmt: skip


def _as_kwargs(extra: list[str]) -> dict:
    kw: dict = {}
    i = 0
    while i < len(extra):
        flag = extra[i]
        name = _KWARG.get(flag, flag[2:].replace("-", "_"))
        if flag == "--search-lr":
            kw[name] = True
            i += 1
            continue
        text = extra[i + 1]
        if name in ("grid", "lr_grid"):
            try:
                value = cli._floats(name, text)
            except ValueError:
                try:  # what the CLI refuses while parsing (a subnormal) goes to the API as is
                    value = [float(v) for v in text.split(",")]
                except ValueError:
                    value = text
        elif name in ("storage", "study", "out", "device", "precision", "sampler",
                      "vectorize", "decay_scale"):  # fmt: skip
            value = text
        else:
            try:
                value = cli._number(text)
            except argparse.ArgumentTypeError:
                value = float(text)
            except ValueError:
                value = text
        kw[name] = value
        i += 2
    return kw


@pytest.mark.parametrize("extra,needle", TUNE_CASES, ids=[" ".join(a)[:60] for a, _ in TUNE_CASES])
def test_the_api_refuses_what_the_cli_refuses(extra, needle, tmp_path, no_training):
    from adamwkit import tune

    kw = {"out": tmp_path / "runs", "progress": False, **_as_kwargs(extra)}
    name = _KWARG.get(needle, needle[2:].replace("-", "_"))
    with pytest.raises(ValueError) as err:
        tune("digits", **kw)
    assert name in str(err.value) or name in getattr(err.value, "names", ())


@pytest.mark.parametrize(
    "call,name",
    [
        (
            lambda: __import__("adamwkit").suggest(
                lr=1e308, batch_size=32, dataset_size=1000, epochs=10
            ),
            "lr",
        ),
        (
            lambda: __import__("adamwkit").suggest(
                lr=1e-320, batch_size=32, dataset_size=1000, epochs=10
            ),
            "lr",
        ),
        (
            lambda: __import__("adamwkit").explain(float("nan"), lr=1e-3, batch_size=32),
            "weight_decay",
        ),
        (
            lambda: __import__("adamwkit").convert_weight_decay(
                0.1, "torch", "independent", lr_peak=1e308
            ),
            "lr_peak",
        ),
        (lambda: __import__("adamwkit").convert_weight_decay(0.1, "torch", "nope"), "convention"),
    ],
)
def test_the_library_functions_refuse_out_of_range_values(call, name):
    with pytest.raises(ValueError, match=name):
        call()


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "damaged", "foreign"])
def test_explain_run_reads_only_a_monitor_log(kind, tmp_path, capsys):
    """A FIFO blocked the read forever and /dev/zero filled the memory: each is one line."""
    import json
    import os

    path = tmp_path / "log"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "device":
        path = "/dev/zero"
    elif kind == "folder":
        path = tmp_path
    elif kind == "damaged":
        path.write_text(json.dumps({"adamwkit_monitor": 1, "tensors": [{"name": 3}]}) + "\n")
    else:
        path.write_bytes(b"\xff\xfe not text")
    code = cli.main(["explain", "--run", str(path)])
    captured = capsys.readouterr()
    check_one_line([], code, captured.out, captured.err, "--run")
    assert str(path) in captured.err
