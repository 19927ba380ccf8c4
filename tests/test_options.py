"""The one table of tune's options (adamwkit/tuning/options.py) against everything that
restates it: ``tune()``'s signature (names and defaults), ``adamwkit tune``'s parser and
``--help``, the study's identity (StudySpec), the flag names in messages, and the option
list in docs/tuning.md. Adding an option without its row fails here."""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from adamwkit import cli
from adamwkit._checks import ArgumentError
from adamwkit.tuning.config import StudySpec
from adamwkit.tuning.options import (
    CLI_MODES,
    MODE_FLAGS,
    TUNE_OPTIONS,
    check,
    check_mode,
    modes_taking,
)
from adamwkit.tuning.run import tune

DOCS = Path(__file__).parent.parent / "docs" / "tuning.md"
BY_NAME = {o.name: o for o in TUNE_OPTIONS}
# keywords that shape the candidates: the study stores the grid or range they make
SHAPES_THE_GRID = {"grid_min", "grid_max", "points", "search_lr"}


def _tune_parser() -> argparse.ArgumentParser:
    sub = next(a for a in cli.build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["tune"]


def test_the_table_is_tunes_signature():
    params = inspect.signature(tune).parameters
    assert set(params) == set(BY_NAME) and len(TUNE_OPTIONS) == len(BY_NAME)
    for name, param in params.items():
        assert BY_NAME[name].default == param.default, name


def test_the_table_is_the_parsers_flags_and_help():
    parser = _tune_parser()
    flags = {s for a in parser._actions for s in a.option_strings if s.startswith("--")}
    flags.discard("--help")
    table = {o.flag for o in TUNE_OPTIONS if o.flag not in (None, "TASK")}
    assert flags == table | set(CLI_MODES)
    text = " ".join(parser.format_help().split())
    for flag in flags:
        assert re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text), flag


@pytest.mark.parametrize("option", [o for o in TUNE_OPTIONS if o.flag not in (None, "TASK")],
                         ids=lambda o: o.name)  # fmt: skip
def test_each_flag_gives_its_keywords_default(option):
    """The parser's default for the flag is the keyword's default (or its negation for an
    inverted flag such as --quiet), so the CLI and the API start from the same values."""
    action = next(a for a in _tune_parser()._actions if option.flag in a.option_strings)
    default = action.default
    if option.inverted and action.dest != option.name:  # --quiet stores quiet, not progress
        default = not default
    assert default == option.default, (option.name, action.default)


def test_the_scope_is_the_studys_identity():
    spec = {f.name for f in dataclasses.fields(StudySpec)}
    for o in TUNE_OPTIONS:
        if o.scope == "study" and o.name not in SHAPES_THE_GRID:
            assert o.name in spec, o.name
        if o.scope == "process":
            assert o.name not in spec, o.name


def test_messages_name_each_option_by_its_flag():
    for o in TUNE_OPTIONS:
        if o.flag not in (None, "TASK") and not o.inverted:
            assert cli._FLAGS[o.name] == o.flag
            assert cli._flagify(f"{o.name}=3 is invalid") == f"{o.flag}=3 is invalid"


def test_the_docs_list_every_option():
    text = DOCS.read_text()
    section = text[text.index("## Every option") :]
    rows = [ln for ln in section.split("\n## ")[0].splitlines() if ln.startswith("| ")][1:]
    listed = {}
    for row in rows:
        cells = [c.strip().strip("`") for c in row.strip("|").split("|")]
        listed[cells[1]] = (cells[0], cells[3])
    assert set(listed) == set(BY_NAME)
    for name, (flag, scope) in listed.items():
        expected = BY_NAME[name].flag or "(Python only)"
        assert (flag, scope) == (expected, BY_NAME[name].scope), name


# ---------------------------------------------------------------------------- the constraints


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if tune gets as far as opening its study's storage."""
    from adamwkit.tuning import study

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(study, "open_storage", refuse)


def test_every_flag_has_its_help_and_every_number_its_range():
    for o in TUNE_OPTIONS:
        if o.flag is not None:
            assert o.help, o.name
        if o.kind in ("int", "float", "floats"):
            assert o.has_range, o.name
        if o.choices is not None:
            assert o.default is None or o.default in o.choices, o.name


# (keyword, a value its row refuses, the other keywords tune needs to reach the check)
OUT_OF_RANGE = [
    ("folds", 0, {}), ("folds", 2.5, {}), ("repeats", 21, {}), ("extend", 9, {}),
    ("trials", 0, {}), ("seed", -1, {}), ("seed", 2**32, {}), ("heartbeat_interval", 0, {}),
    ("heartbeat_interval", 3601, {}), ("workers", 1025, {}), ("threads", 4097, {}),
    ("storage_retry", -1, {}), ("storage_retry", 7 * 24 * 3600 + 1, {}),
    ("trial_timeout", 0, {}), ("trial_timeout", 1e9, {}), ("max_memory", 0, {}),
    ("max_memory", 2.0**21, {}), ("test_fraction", 1, {}), ("epochs", 0, {}),
    ("batch_size", 1.5, {}), ("lr", 0, {}), ("lr", 1e4, {}),
    ("points", 0, {"grid_min": 1e-3, "grid_max": 1}),
    ("points", 1000, {"grid_min": 1e-3, "grid_max": 1}),
    ("grid_min", 0, {"grid_max": 1}), ("sampler", "x", {}), ("vectorize", "x", {}),
    ("precision", "fp16", {}), ("decay_scale", "torch", {}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "value", "extra"), OUT_OF_RANGE,
                         ids=[f"{n}={v}" for n, v, _ in OUT_OF_RANGE])  # fmt: skip
def test_check_refuses_what_tune_refuses_in_the_same_words(
    name, value, extra, tmp_path, no_training
):
    """The row's range is tune's: check() and tune() refuse the value with one message."""
    with pytest.raises(ArgumentError) as by_check:
        check(name, value)
    assert name in by_check.value.names and "\n" not in str(by_check.value)
    with pytest.raises(ValueError) as by_tune:
        tune("digits", out=tmp_path, progress=False, **{name: value, **extra})
    assert str(by_tune.value) == str(by_check.value)


@pytest.mark.parametrize(
    ("name", "value", "normalized"),
    [("seed", 3.0, 3), ("folds", "5", 5), ("storage_retry", 0, 0.0), ("lr", 1e-3, 1e-3),
     ("grid", (0, 1e-3), [0.0, 1e-3]), ("epochs", None, None), ("sampler", "tpe", "tpe"),
     ("search_lr", 1, True), ("device", "cpu", "cpu")],
)  # fmt: skip
def test_check_returns_the_value_normalized(name, value, normalized):
    got = check(name, value)
    assert got == normalized and type(got) is type(normalized)


def test_check_names_an_unknown_option():
    with pytest.raises(ArgumentError, match="option='nope' is invalid"):
        check("nope", 1)


# ---------------------------------------------------------------------------- the modes

# a value each refused option can be given with on the command line
GIVEN = {"examples": "100", "test_fraction": "0.1", "grid": "0,1", "grid_min": "1e-3",
         "grid_max": "1", "points": "4", "lr_grid": "1e-3,2e-3", "sampler": "tpe",
         "trials": "5", "storage": "postgresql://localhost/db", "workers": "2",
         "devices": "0,1"}  # fmt: skip
REFUSALS = [(m.name, name) for m in MODE_FLAGS for name in m.refuses
            if BY_NAME[name].flag is not None]  # fmt: skip


def _cli_args(name: str) -> list[str]:
    o = BY_NAME[name]
    assert o.flag is not None
    return [o.flag] if o.kind == "flag" else [o.flag, GIVEN[name]]


def _api_value(name: str):
    o = BY_NAME[name]
    if o.kind == "flag":
        return not o.default
    if o.kind == "floats":
        return cli._floats(name, GIVEN[name])
    return cli._number(GIVEN[name]) if o.kind in ("int", "float") else GIVEN[name]


@pytest.mark.parametrize(("mode", "name"), REFUSALS, ids=[f"{m}-{n}" for m, n in REFUSALS])
def test_a_mode_refuses_its_options_on_the_command_line_and_in_python(
    mode, name, tmp_path, capsys, no_training
):
    """The command line and probe()/transfer() refuse the same options, in one line each,
    naming the flag and the keyword."""
    flag = BY_NAME[name].flag
    code = cli.main(["tune", f"--{mode}", *_cli_args(name), "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{flag} cannot be used with {mode}: " in err
    from adamwkit.tuning.probe import probe
    from adamwkit.tuning.transfer import transfer

    run = {"probe": probe, "transfer": transfer}[mode]
    with pytest.raises(ArgumentError, match=f"^{name} cannot be used with {mode}: ") as found:
        run("digits", out=tmp_path, progress=False, **{name: _api_value(name)})
    assert found.value.names == (name,)


def test_each_option_a_mode_takes_is_not_refused():
    for o in TUNE_OPTIONS:
        for mode in modes_taking(o.name):
            check_mode(mode, [o.name])


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--probe", "--transfer"], "--transfer and --probe are exclusive: choose one"),
        (["--confirm"], "--confirm goes with --transfer or --probe"),
        (["--fractions", "0.25,0.5"], "--fractions goes with --transfer"),
        (["--probe", "--fractions", "0.25,0.5"], "--fractions goes with --transfer"),
        (["--probe", "--grid", "0,1", "--no-test"], "--grid and --no-test cannot be used"),
    ],
)
def test_mode_flags_that_do_not_go_together(extra, message, tmp_path, capsys, no_training):
    code = cli.main(["tune", *extra, "--out", str(tmp_path), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err
