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
from adamwkit.tuning.config import StudySpec
from adamwkit.tuning.options import CLI_MODES, TUNE_OPTIONS
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
