"""Every option of :func:`adamwkit.tune`, in one table: its keyword, its command-line flag,
its default, and whether it belongs to the study's identity or to one process.

- ``"input"``: what is tuned (the objective and its data).
- ``"study"``: part of the study's identity (:class:`adamwkit.tuning.config.StudySpec`):
  every worker on a study must agree on it; a rerun with another value is refused.
- ``"process"``: how this process takes part (:class:`adamwkit.tuning.config.TuneConfig`):
  where the study lives, devices, workers, progress; workers may differ.

The command line's flag names in messages (``adamwkit.cli._FLAGS``) come from this table,
and ``tests/test_options.py`` holds it equal to ``tune()``'s signature, to ``adamwkit
tune --help`` and to the option list in docs/tuning.md, so none of them can drift.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["CLI_MODES", "TUNE_OPTIONS", "Option"]

Scope = Literal["input", "study", "process"]


@dataclass(frozen=True)
class Option:
    """One option of :func:`adamwkit.tune`.

    ``flag`` is its command-line flag (``None``: the Python API only; ``"TASK"``: the
    positional argument). ``inverted``: the flag sets the opposite of the keyword
    (``--quiet`` is ``progress=False``).
    """

    name: str
    flag: str | None
    scope: Scope
    default: Any
    inverted: bool = False


TUNE_OPTIONS: tuple[Option, ...] = (
    # what is tuned
    Option("objective", "TASK", "input", "digits"),
    Option("examples", "--examples", "input", None),
    Option("data", None, "input", None),
    Option("labels", None, "input", None),
    # the study's identity
    Option("folds", "--folds", "study", 5),
    Option("repeats", "--repeats", "study", 1),
    Option("epochs", "--epochs", "study", None),
    Option("lr", "--lr", "study", None),
    Option("batch_size", "--batch-size", "study", None),
    Option("decay_scale", "--decay-scale", "study", None),
    Option("test_fraction", "--test-fraction", "study", None),
    Option("grid", "--grid", "study", None),
    Option("grid_min", "--min", "study", None),
    Option("grid_max", "--max", "study", None),
    Option("points", "--points", "study", None),
    Option("sampler", "--sampler", "study", "grid"),
    Option("trials", "--trials", "study", 12),
    Option("lr_grid", "--lr-grid", "study", None),
    Option("search_lr", "--search-lr", "study", False),
    Option("seed", "--seed", "study", 0),
    Option("prune_chance", "--no-prune-chance", "study", True, inverted=True),
    Option("precision", "--precision", "study", "fp32"),
    # this process
    Option("storage", "--storage", "process", None),
    Option("study", "--study", "process", None),
    Option("out", "--out", "process", "adamwkit-runs"),
    Option("prune", "--prune", "process", False),
    Option("extend", "--extend", "process", 2),
    Option("heartbeat_interval", "--heartbeat-interval", "process", 10),
    Option("storage_retry", "--storage-retry", "process", 120.0),
    Option("test", "--no-test", "process", True, inverted=True),
    Option("progress", "--quiet", "process", True, inverted=True),
    Option("vectorize", "--vectorize", "process", "auto"),
    Option("max_memory", "--max-memory", "process", None),
    Option("workers", "--workers", "process", 1),
    Option("threads", "--threads", "process", None),
    Option("device", "--device", "process", "auto"),
    Option("trial_timeout", "--trial-timeout", "process", None),
)

#: Flags of ``adamwkit tune`` that choose a mode or an output, not an option of ``tune()``.
CLI_MODES: dict[str, str] = {
    "--probe": "probe",
    "--confirm": "confirm",
    "--transfer": "transfer",
    "--fractions": "fractions",
    "--json": "json",
}
