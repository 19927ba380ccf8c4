"""Every option of :func:`adamwkit.tune`, in one table: its keyword, its command-line flag,
its default, its help text, the values it accepts, and whether it belongs to the study's
identity or to one process.

- ``"input"``: what is tuned (the objective and its data).
- ``"study"``: part of the study's identity (:class:`adamwkit.tuning.config.StudySpec`):
  every worker on a study must agree on it; a rerun with another value is refused.
- ``"process"``: how this process takes part (:class:`adamwkit.tuning.config.TuneConfig`):
  where the study lives, devices, workers, progress; workers may differ.

The table makes the ``adamwkit tune`` parser (:mod:`adamwkit.cli`), the flag names in
its messages, and :func:`check`, which validates one option's own constraint (its range,
whole number or choice) with the same one-line message for the API and the command line.
:data:`MODE_FLAGS` says which options each mode of ``adamwkit tune`` (``--probe``,
``--transfer``) does not take, and why; :func:`check_mode` refuses them, for
:func:`~adamwkit.tuning.probe.probe` and :func:`~adamwkit.tuning.transfer.transfer` and for
the command line alike.

``tests/test_options.py`` holds the table equal to ``tune()``'s signature, to ``adamwkit
tune --help`` and to the option list in docs/tuning.md, so none of them can drift.

This module imports the standard library and adamwkit's constants only, so the command
line can build its parser without importing torch.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from .._checks import ArgumentError, check_choice, check_lr, check_range, check_whole
from .._constants import (
    DECAY_SCALES,
    MAX_CANDIDATES,
    MAX_EXTEND,
    MAX_REPEATS,
    PRECISIONS,
    SAMPLERS,
    SEED_MAX,
    VECTORIZE,
)
from .limits import MAX_TRIAL_TIMEOUT_S

__all__ = [
    "CLI_MODES",
    "MAX_HEARTBEAT_S",
    "MAX_MEMORY_GIB",
    "MAX_STORAGE_RETRY_S",
    "MAX_THREADS",
    "MAX_WORKERS",
    "MODE_FLAGS",
    "TUNE_OPTIONS",
    "ModeFlag",
    "Option",
    "check",
    "check_mode",
    "mode_of",
    "modes_taking",
    "option",
    "refused",
]

Scope = Literal["input", "study", "process"]
#: How a value is read: a whole number, a real number, text, an on/off flag, or real
#: numbers separated by commas (on the command line; a sequence in Python).
Kind = Literal["int", "float", "str", "flag", "floats"]

MAX_MEMORY_GIB = 2.0**20  # 1 PiB
MAX_HEARTBEAT_S = 3600
MAX_WORKERS = 1024
MAX_THREADS = 4096
MAX_STORAGE_RETRY_S = 7 * 24 * 3600.0  # a week


@dataclass(frozen=True)
class Option:
    """One option of :func:`adamwkit.tune`.

    ``flag`` is its command-line flag (``None``: the Python API only; ``"TASK"``: the
    positional argument). ``inverted``: the flag sets the opposite of the keyword
    (``--quiet`` is ``progress=False``). ``help`` is the flag's help text, ``metavar`` the
    name its value goes by in ``--help`` (``None``: argparse's).

    ``kind`` is how the value is read (``"int"`` is a whole number); ``choices`` the values
    it may take; ``low``/``high`` (``low_open``/``high_open`` exclude an end) the range a
    number (or each number of a list) must lie in; ``lr``: the range is a learning rate's,
    ``[LR_MIN, LR_MAX]`` of :mod:`adamwkit._constants`. ``None`` is accepted wherever it is
    the default.
    """

    name: str
    flag: str | None
    scope: Scope
    default: Any
    inverted: bool = False
    help: str = ""
    metavar: str | None = None
    kind: Kind = "str"
    choices: tuple[str, ...] | None = None
    low: float | None = None
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False
    lr: bool = False

    @property
    def whole(self) -> bool:
        """Whether the value is a whole number."""
        return self.kind == "int"

    @property
    def has_range(self) -> bool:
        """Whether the option's numbers have a range to check."""
        return self.lr or self.low is not None

    @property
    def cli_name(self) -> str:
        """How the command line names the option: its flag, or its keyword without one."""
        return self.name if self.flag is None else self.flag


_TASK_HELP = (
    "a built-in task (digits, charlm), or module:attribute naming a Task or an objective: a "
    "function objective(trial) -> validation loss (needs --examples, --lr)"
)

TUNE_OPTIONS: tuple[Option, ...] = (
    # what is tuned
    Option("objective", "TASK", "input", "digits", help=_TASK_HELP, metavar="TASK"),
    Option("examples", "--examples", "input", None, kind="int", low=2,
           help="with an objective: how many examples the folds split"),
    Option("data", None, "input", None),
    Option("labels", None, "input", None),
    Option("validation", "--validation", "input", None, metavar="SPEC",
           help="one fixed validation split instead of folds: START:STOP (example indices), "
                "a file of indices (.npy or text), or module:attribute (indices, or a "
                "dataset of its own)"),
    # the study's identity
    Option("folds", "--folds", "study", 5, kind="int", low=1,
           help="k of k-fold CV (default 5); 1: one validation split (--validation-fraction)"),
    Option("val_fraction", "--validation-fraction", "study", None, kind="float", low=0.0,
           high=1.0, low_open=True, high_open=True, metavar="FRACTION",
           help="with --folds 1: the share of the training pool held out for validation "
                "(default 0.2)"),
    Option("repeats", "--repeats", "study", 1, kind="int", low=1, high=MAX_REPEATS,
           help="draw the k folds this many times (small data)"),
    Option("epochs", "--epochs", "study", None, kind="int", low=1,
           help="epochs per training (default: the task's)"),
    Option("lr", "--lr", "study", None, kind="float", lr=True,
           help="peak learning rate (default: the task's)"),
    Option("batch_size", "--batch-size", "study", None, kind="int", low=1,
           help="batch size (default: the task's)"),
    Option("decay_scale", "--decay-scale", "study", None, choices=DECAY_SCALES,
           help="convention (default: task's)"),
    Option("test_fraction", "--test-fraction", "study", None, kind="float", low=0.0, high=1.0,
           high_open=True,
           help="share of the examples held out for the final test (default: the task's, "
                "or 0.2)"),
    Option("grid", "--grid", "study", None, kind="floats", low=0.0,
           help="explicit candidates, comma-separated: 0,1e-3,1e-2"),
    Option("grid_min", "--min", "study", None, kind="float", low=0.0, low_open=True,
           help="smallest non-zero candidate"),
    Option("grid_max", "--max", "study", None, kind="float", low=0.0, low_open=True,
           help="largest candidate"),
    Option("points", "--points", "study", None, kind="int", low=1, high=MAX_CANDIDATES - 1,
           help="log-spaced candidates from --min to --max (default 8)"),
    Option("budget", "--budget", "study", None, kind="int", low=3, high=MAX_CANDIDATES,
           metavar="RUNS",
           help="spend about this many training runs instead of the full grid: the probe, "
                "a search on one fold, the two best on more folds (docs/evidence-budget.md)"),
    Option("sampler", "--sampler", "study", "grid", choices=SAMPLERS,
           help="grid: every candidate; tpe or gp: a search of --trials candidates over the "
                "default grid's range (default grid)"),
    Option("trials", "--trials", "study", 12, kind="int", low=1, high=MAX_CANDIDATES,
           help="candidates a tpe/gp search tries"),
    Option("lr_grid", "--lr-grid", "study", None, kind="floats", lr=True,
           help="joint search: learning rates, comma-separated"),
    Option("search_lr", "--search-lr", "study", False, kind="flag",
           help="tpe/gp: search lr in [lr/10, 10 lr]"),
    Option("seed", "--seed", "study", 0, kind="int", low=0, high=SEED_MAX,
           help="seed of the splits and the runs (default 0)"),
    Option("prune_chance", "--no-prune-chance", "study", True, inverted=True, kind="flag",
           help="train stacked runs still at their untrained loss at 1/4 or 1/2 of the epochs "
                "to the end (default: stop them)"),
    Option("pretrained", "--pretrained", "study", False, kind="flag",
           help="the model starts from pretrained weights (a fine-tune): the default grid "
                "follows the fine-tuning rule, within its bound on the total decay"),
    Option("adapters", "--adapters", "study", False, kind="flag",
           help="a fine-tune of adapters (LoRA) on a frozen base (implies --pretrained)"),
    Option("precision", "--precision", "study", "fp32", choices=PRECISIONS,
           help="bf16: the forward pass under bfloat16 autocast (weights stay float32)"),
    # this process
    Option("storage", "--storage", "process", None,
           help="database URL shared by workers (default: $ADAMWKIT_STORAGE, else a journal "
                "file); leave the password out and set PGPASSWORD or ~/.pgpass, so that ps "
                "does not show it"),
    Option("study", "--study", "process", None,
           help="study name (default: the task's name, or the objective's module and function: "
                "train.objective); names the run folder"),
    Option("out", "--out", "process", "adamwkit-runs", help="folder of run folders"),
    Option("prune", "--prune", "process", False, kind="flag",
           help="stop hopeless candidates (Wilcoxon)"),
    Option("extend", "--extend", "process", 2, kind="int", low=0, high=MAX_EXTEND,
           help="rounds of two candidates added past the grid's edge when the best sits on it "
                "(default 2; 0: never)"),
    Option("heartbeat_interval", "--heartbeat-interval", "process", 10, kind="int", low=1,
           high=MAX_HEARTBEAT_S, help="seconds (databases)"),
    Option("storage_retry", "--storage-retry", "process", 120.0, kind="float", low=0.0,
           high=MAX_STORAGE_RETRY_S,
           help="seconds to retry a database through an outage before stopping (default 120)"),
    Option("test", "--no-test", "process", True, inverted=True, kind="flag",
           help="skip the refits on the test split"),
    Option("progress", "--quiet", "process", True, inverted=True, kind="flag",
           help="no progress bars"),
    Option("vectorize", "--vectorize", "process", "auto", choices=VECTORIZE,
           help="train candidates x folds together as one stacked model (auto: when a few "
                "measured steps say it is faster)"),
    Option("max_memory", "--max-memory", "process", None, kind="float", low=0.0,
           high=MAX_MEMORY_GIB, low_open=True,
           help="GiB cap on members trained together (per GPU with --gpus)"),
    Option("workers", "--workers", "process", 1, kind="int", low=1, high=MAX_WORKERS,
           help="worker processes to start on this machine (each with its share of the "
                "cores, and GPU i mod count on a machine with several)"),
    Option("threads", "--threads", "process", None, kind="int", low=1, high=MAX_THREADS,
           help="torch threads per worker (default: a share of the cores other programs "
                "leave free)"),
    Option("device", "--device", "process", "auto",
           help="auto (a GPU when there is one), cpu, cuda or cuda:<index>"),
    Option("devices", "--gpus", "process", None, metavar="0,1,2,3",
           help="GPUs to place the runs on: a worker per GPU (unless --workers says more), "
                "stacked members packed by each GPU's free memory (or --max-memory per GPU); "
                "under torchrun, local rank r on the r-th GPU (one run over several)"),
    Option("trial_timeout", "--trial-timeout", "process", None, kind="float", low=0.0,
           high=MAX_TRIAL_TIMEOUT_S, low_open=True, metavar="SECONDS",
           help="fail a run that takes longer (default: no limit); stacked, m runs trained "
                "together get m times as long"),
)  # fmt: skip

_BY_NAME: dict[str, Option] = {o.name: o for o in TUNE_OPTIONS}


def option(name: str) -> Option:
    """The row of ``name``; a one-line ``ArgumentError`` naming the options for another."""
    try:
        return _BY_NAME[name]
    except KeyError:
        listed = ", ".join(_BY_NAME)
        raise ArgumentError(
            f"option={name!r} is invalid: expected one of tune's options ({listed})", "option"
        ) from None


def check(name: str, value: Any) -> Any:
    """Validate ``value`` for the option ``name`` against its row's own constraint (its
    choices, its range, a whole number) and return it normalized: ``int`` for a whole
    number, ``float`` for a real one, a list of floats for a list. ``None`` passes where it
    is the default. Raises :class:`~adamwkit._checks.ArgumentError` in one line, such as
    ``folds=1 is invalid: expected a whole number >= 2``.

    Constraints between options (``grid_max >= grid_min``, ``batch_size`` at most the
    examples a fold trains on) and those that need the machine (``device``, ``devices``,
    ``storage``)
    are :func:`adamwkit.tune`'s own.

    Example: ``check("seed", 3.0) == 3``.
    """
    row = option(name)
    if value is None and row.default is None:
        return None
    if row.choices is not None:
        return check_choice(name, value, row.choices)
    if row.kind == "flag":
        return bool(value)
    if row.kind == "floats":
        if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
            raise ArgumentError(
                f"{name}={value!r} is invalid: expected a sequence of numbers", name
            )
        return [_number(row, v) for v in value]
    if row.kind in ("int", "float"):
        return _number(row, value)
    return value


def _number(row: Option, value: Any) -> float | int:
    """One number of ``row``: a learning rate, a whole number or a real one in its range."""
    if row.lr:
        return check_lr(row.name, value)
    low = -math.inf if row.low is None else row.low
    if row.whole:
        return check_whole(row.name, value, int(low), row.high)
    return check_range(
        row.name, value, low, row.high, low_open=row.low_open, high_open=row.high_open
    )


# ---------------------------------------------------------------------------- modes


@dataclass(frozen=True)
class ModeFlag:
    """A flag of ``adamwkit tune`` that chooses a mode or an output, not an option of
    :func:`adamwkit.tune`.

    ``kind``: ``"mode"`` (at most one: ``--transfer``, ``--probe``), ``"modifier"`` (goes
    with the modes in ``goes_with``) or ``"output"``. A mode runs its own function
    (:func:`~adamwkit.tuning.probe.probe`, :func:`~adamwkit.tuning.transfer.transfer`),
    which takes every option of ``tune`` but those in ``refuses``, for ``reason``.
    ``takes_value``: the flag takes a value (``--fractions 1/8,...``); else it is on/off.
    """

    name: str
    flag: str
    kind: Literal["mode", "modifier", "output"]
    help: str
    refuses: tuple[str, ...] = ()
    reason: str = ""
    goes_with: tuple[str, ...] = ()
    takes_value: bool = False


MODE_FLAGS: tuple[ModeFlag, ...] = (
    ModeFlag(
        "transfer",
        "--transfer",
        "mode",
        help="cross-validate on nested subsets (--fractions), fit tau_epoch* against the data "
        "size and extrapolate to the full training pool, with an 80% interval",
        refuses=tuple(
            "examples data labels test_fraction grid grid_min grid_max points lr_grid storage "
            "test workers devices".split()
        ),
        reason="it holds out the task's own test split, takes each subset's candidates from "
        "the suggestion's range, and runs in this process with a journal file",
    ),
    ModeFlag(
        "probe",
        "--probe",
        "mode",
        help="cross-validate zero decay alone and suggest weight decay from the epoch its "
        "validation loss turns, with an 80% range (about one candidate's cost)",
        refuses=tuple(
            "grid grid_min grid_max points sampler trials lr_grid search_lr test".split()
        ),
        reason="it cross-validates zero decay alone (and, to confirm it, a grid over its range)",
    ),
    ModeFlag(
        "fractions",
        "--fractions",
        "modifier",
        help="with --transfer: subset sizes, comma-separated (default 1/8,1/4,1/2)",
        goes_with=("transfer",),
        takes_value=True,
    ),
    ModeFlag(
        "confirm",
        "--confirm",
        "modifier",
        help="with --transfer or --probe: cross-validate a narrow grid over the interval "
        "(for --transfer at the full size)",
        goes_with=("transfer", "probe"),
    ),
    ModeFlag("json", "--json", "output", help="print the summary as one JSON object"),
)

_MODES: dict[str, ModeFlag] = {m.name: m for m in MODE_FLAGS}

#: Flags of ``adamwkit tune`` that choose a mode or an output, not an option of ``tune()``.
CLI_MODES: dict[str, str] = {m.flag: m.name for m in MODE_FLAGS}


def _mode(name: str) -> ModeFlag:
    found = _MODES.get(name)
    if found is None or found.kind != "mode":
        listed = ", ".join(repr(m.name) for m in MODE_FLAGS if m.kind == "mode")
        raise ArgumentError(f"mode={name!r} is invalid: expected one of {listed}", "mode")
    return found


def modes_taking(name: str) -> tuple[str, ...]:
    """The modes (``"transfer"``, ``"probe"``) that take the option ``name`` of tune."""
    option(name)
    return tuple(m.name for m in MODE_FLAGS if m.kind == "mode" and name not in m.refuses)


def mode_of(given: Collection[str]) -> str | None:
    """The mode that the mode flags in ``given`` (their names: ``"probe"``, ``"confirm"``)
    choose, or ``None`` (a plain ``tune``); raises naming them when two modes are given or a
    modifier lacks its mode (``confirm goes with --transfer or --probe``)."""
    modes = [m.name for m in MODE_FLAGS if m.kind == "mode" and m.name in given]
    if len(modes) > 1:
        raise ArgumentError(f"{' and '.join(modes)} are exclusive: choose one", *modes)
    mode = modes[0] if modes else None
    for m in MODE_FLAGS:
        if m.kind == "modifier" and m.name in given and mode not in m.goes_with:
            need = " or ".join(_MODES[g].flag for g in m.goes_with)
            raise ArgumentError(f"{m.name} goes with {need}", m.name)
    return mode


def refused(mode: str, given: Iterable[str]) -> list[str]:
    """The options among ``given`` that ``mode`` does not take, in the table's order."""
    names = set(given)
    return [o.name for o in TUNE_OPTIONS if o.name in names and o.name in _mode(mode).refuses]


def check_mode(mode: str, given: Iterable[str], *, flags: bool = False) -> None:
    """Refuse, in one line, the options among ``given`` that ``mode`` does not take:
    ``grid and sampler cannot be used with probe: it cross-validates zero decay alone ...``.
    ``flags``: name them by their command-line flags (``--grid``, ``--no-test``)."""
    bad = refused(mode, given)
    if not bad:
        return
    # by flag, the names are the flags: the CLI maps no word of the reason ("a grid")
    named = [_BY_NAME[n].cli_name for n in bad] if flags else bad
    raise ArgumentError(
        f"{' and '.join(named)} cannot be used with {mode}: {_mode(mode).reason}", *named
    )
