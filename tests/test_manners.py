"""API and notebook manners: a missing optional dependency is one line with the pip
command, and an objective's default study name carries its module."""

from __future__ import annotations

import importlib.util

import pytest

from adamwkit import _extras
from adamwkit.cli import main
from adamwkit.tuning.planning import default_study_name


@pytest.mark.parametrize(
    ("name", "study"),
    [
        ("pkg.train:objective", "train.objective"),
        ("other.train2:objective", "train2.objective"),
        ("__main__:objective", "objective"),
        ("tests.test_x:test_y.<locals>.objective", "test_x.objective"),
        ("digits", "digits"),
        ("mod:weird name!", "mod.weird-name"),
    ],
)
def test_the_default_study_name_carries_the_module(name, study):
    assert default_study_name(name) == study


@pytest.fixture
def no_optuna(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        _extras.importlib.util, "find_spec", lambda m: None if m == "optuna" else real(m)
    )


def test_tune_without_its_extra_names_the_pip_command(no_optuna):
    from adamwkit import tuning

    with pytest.raises(_extras.MissingExtra) as err:
        tuning.__getattr__("tune")
    assert str(err.value) == (
        "adamwkit.tune needs optuna, which is not installed: pip install 'adamwkit[tune]'"
    )
    assert isinstance(err.value, ImportError)


def test_the_command_line_says_it_in_one_line(no_optuna, capsys):
    assert main(["tune", "digits", "--epochs", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "adamwkit tune: error: adamwkit tune needs optuna, which is not installed: "
        "pip install 'adamwkit[tune]'"
    ]


def test_the_framework_extras_bring_tunes_dependencies():
    from pathlib import Path

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    extras = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    extras = extras["project"]["optional-dependencies"]
    for name in ("transformers", "lightning"):
        assert "adamwkit[tune]" in extras[name], name


def test_the_version_is_one_number():
    from pathlib import Path

    import adamwkit

    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert adamwkit.__version__ == project["project"]["version"]


@pytest.mark.parametrize(
    "argv",
    [
        ["adamwkit", "tune", "t", "--storage", "postgresql://role:p@ss#w0:rd/@db:5432/x"],
        ["adamwkit", "tune", "t", "--storage=postgresql://role:p@ss#w0:rd/@db:5432/x"],
        ["adamwkit", "tune", "t", "postgresql://role:p@ss#w0:rd/@db/x?password=p@ss#w0:rd"],
    ],
)
def test_the_reports_command_line_never_shows_a_password(monkeypatch, argv):
    from adamwkit.tuning.report import _command_line

    monkeypatch.setattr("sys.argv", argv)
    text = _command_line()
    assert "w0" not in text and "p@ss" not in text and text.startswith("adamwkit tune t")
