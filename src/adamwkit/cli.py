"""The ``adamwkit`` command line: ``suggest``, ``explain``, ``tune``, ``convert`` and ``inspect``.

Bad input exits with code 2 and one line on stderr naming the flag, the value and the
accepted range. ``--json`` prints one JSON object on stdout instead of the tables
(non-finite numbers, such as the timescale of a zero weight decay, become ``null``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from . import __version__
from ._checks import ArgumentError, is_subnormal
from ._constants import CONVENTION_NAMES, DECAY_SCALES, PRECISIONS, SAMPLERS, VECTORIZE
from .tuning.options import CLI_MODES, TUNE_OPTIONS

DESCRIPTION = """\
AdamW done right, and the weight decay to use with it.

  adamwkit suggest --lr 1e-3 --batch-size 256 --dataset-size 100000 --epochs 100
  adamwkit explain --weight-decay 0.05 --lr 1e-3 --batch-size 1024 \\
      --dataset-size 1281167 --epochs 300
  adamwkit convert --weight-decay 0.1 --from torch --to independent --lr 6e-4

In Python:
  from adamwkit import AdamW, param_groups
  groups = param_groups(model, weight_decay=0.05)   # decay matrices, not norms or biases
  print(groups.plan)                                # which tensors decay, and why
  opt = AdamW(groups, lr=1e-3, decay_scale="schedule")
"""

# Library argument names and the flags that set them, for error messages.
_FLAGS = {
    "lr": "--lr",
    "lr_peak": "--lr",
    "batch_size": "--batch-size",
    "dataset_size": "--dataset-size",
    "epochs": "--epochs",
    "steps": "--steps",
    "total_steps": "--steps",
    "tokens": "--tokens",
    "params": "--params",
    "weight_decay": "--weight-decay",
    "beta1": "--beta1",
    "warmup_steps": "--warmup-steps",
    "model": "--model",
    "fractions": "--fractions",
    "decay_scale": "--decay-scale",
    "schedule": "--schedule",
    "from_convention": "--from",
    "to_convention": "--to",
    "objective": "TASK",
    "run": "--run",
    "transfer": "--transfer",
    "probe": "--probe",
    "confirm": "--confirm",
    "no_test": "--no-test",
}
# tune's options: their flags come from the one table of them (an inverted flag, such as
# --quiet for progress=False, cannot stand for its keyword in a message)
_FLAGS.update(
    {
        o.name: o.flag
        for o in TUNE_OPTIONS
        if o.flag is not None and o.flag != "TASK" and not o.inverted
    }
)
_FLAGS.update({name: flag for flag, name in CLI_MODES.items()})


class UsageError(Exception):
    """Bad command-line input: reported as one line, exit code 2."""

    def __init__(self, prog: str, message: str) -> None:
        super().__init__(message)
        self.prog = prog


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line (with a pointer to --help)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(self.prog, f"{message} (see {self.prog} --help)")


def _flagify(message: str, names: Sequence[str] = ()) -> str:
    """Rename the library's argument names to their flags: ``batch_size=`` becomes
    ``--batch-size=`` wherever it appears, ``lr is needed`` becomes ``--lr is needed``, and
    every whole-word mention of ``names`` (the arguments an
    :class:`~adamwkit._checks.ArgumentError` speaks of) becomes its flag."""
    known = "|".join(sorted(_FLAGS, key=len, reverse=True))
    message = re.sub(r"(?<![\w-])(" + known + r")=", lambda m: _FLAGS[m.group(1)] + "=", message)
    message = re.sub(
        r"(?<![\w-])(" + known + r")(?= is (?:needed|invalid|empty|unreachable))",
        lambda m: _FLAGS[m.group(1)],
        message,
    )
    mapped = [n for n in names if n in _FLAGS]
    if mapped:
        listed = "|".join(sorted(mapped, key=len, reverse=True))
        message = re.sub(
            r"(?<![\w'\"=-])(" + listed + r")(?![\w'\"=-])",
            lambda m: _FLAGS[m.group(1)],
            message,
        )
    return message


_NEGATIVE = re.compile(r"^-(?:\d|\.\d|inf|nan)", re.IGNORECASE)


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--lr -1e-3`` as ``--lr=-1e-3``: argparse would read ``-1e-3`` as a flag and say
    "expected one argument", where the range check has something useful to say."""
    out: list[str] = []
    for token in argv:
        prev = out[-1] if out else ""
        if _NEGATIVE.match(token) and prev.startswith("--") and "=" not in prev:
            out[-1] = f"{prev}={token}"
        else:
            out.append(token)
    return out


def _number(text: str) -> float:
    """A number that also reads ``1,281,167`` and ``300e9``; whole numbers come back as
    ``int`` (so that messages show ``--seed=4294967296``, not ``4294967296.0``)."""
    x = float(text.replace(",", "").replace("_", ""))
    if is_subnormal(x):
        # training flushes subnormals to zero: 1e-320 would silently run as 0
        raise argparse.ArgumentTypeError(
            f"{text} is below the smallest normal float and would run as 0; give 0 or a "
            "larger number"
        )
    if x.is_integer() and abs(x) < 2**63 and "." not in text:
        return int(x)
    return x


_number.__name__ = "number"


def _add_setup(p: argparse.ArgumentParser, required: bool = True) -> None:
    g = p.add_argument_group("training setup")
    g.add_argument("--lr", type=_number, required=required, help="peak learning rate")
    g.add_argument(
        "--batch-size",
        type=_number,
        required=required,
        help="examples per step (tokens per step with --tokens)",
    )
    g.add_argument("--dataset-size", type=_number, help="training examples (N)")
    g.add_argument(
        "--tokens",
        type=_number,
        help="training tokens of the whole run (D), for pre-training; sets the steps to D / B",
    )
    g.add_argument(
        "--epochs", type=_number, help="epochs (T); with --tokens, passes over the data (default 1)"
    )
    g.add_argument("--steps", type=_number, help="total optimizer steps (S), instead of --epochs")
    g.add_argument("--params", type=_number, help="model parameters (P), for tokens per parameter")
    scales = DECAY_SCALES if required else (*DECAY_SCALES, "corrected")
    g.add_argument(
        "--decay-scale",
        choices=scales,
        default="lr",
        help="convention of the weight decay: 'lr' (PyTorch) or 'schedule' (the paper)"
        + ("" if required else ", or 'corrected' (AdamC, read with --schedule)"),
    )
    g.add_argument("--beta1", type=_number, default=0.9, help="Adam beta1 (default 0.9)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")


def _setup_kwargs(a: argparse.Namespace) -> dict[str, Any]:
    return {
        "lr": a.lr,
        "batch_size": a.batch_size,
        "dataset_size": a.dataset_size,
        "epochs": a.epochs,
        "steps": a.steps,
        "tokens": a.tokens,
        "params": a.params,
        "decay_scale": a.decay_scale,
        "beta1": a.beta1,
    }


def build_parser() -> argparse.ArgumentParser:
    from .schedules import SCHEDULES

    parser = _Parser(
        prog="adamwkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"adamwkit {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser(
        "suggest",
        help="a weight decay from your setup, with no training",
        description="A weight decay from lr, batch size, data size and length of training, "
        "by the rule that fits the regime, with every other rule side by side.",
    )
    _add_setup(p)

    p = sub.add_parser(
        "explain",
        help="read an existing weight decay, or a monitored run: timescales, equilibrium, verdict",
        description="Timescales, Kosson et al.'s equilibrium and a verdict for a weight decay; "
        "or, with --run, the verdicts of a run recorded by adamwkit's Monitor.",
    )
    p.add_argument("--weight-decay", type=_number, help="the weight decay to read (required)")
    p.add_argument(
        "--run",
        metavar="PATH",
        help="a monitor log (monitor.jsonl from Monitor.save, fit(monitor=...), the "
        "Trainer or Lightning callback, or tune's monitor-*.jsonl): print its verdicts",
    )
    _add_setup(p, required=False)
    p.add_argument("--schedule", choices=SCHEDULES, help="lr schedule (default: constant lr)")
    p.add_argument("--warmup-steps", type=_number, default=0, help="warmup steps of --schedule")
    p.add_argument(
        "--model",
        metavar="MODULE:ATTR",
        help="an nn.Module (or a function returning one) to set each decayed tensor's norm "
        "beside its equilibrium norm",
    )

    p = sub.add_parser(
        "tune",
        help="cross-validate weight decay on a task (default: digits) and write a report",
        description="k-fold cross-validated weight decay search, for a task or your own "
        "training loop written as an objective, in an Optuna study: a journal "
        "file in the run folder by default, or a database (--storage) shared by many workers "
        "running the same command. Rerunning resumes the study.",
    )
    p.add_argument(
        "objective",
        nargs="?",
        default="digits",
        metavar="TASK",
        help="a built-in task (digits, charlm), or module:attribute naming a Task or an "
        "objective: a function objective(trial) -> validation loss (needs --examples, --lr)",
    )
    p.add_argument(
        "--examples", type=_number, help="with an objective: how many examples the folds split"
    )
    p.add_argument("--folds", type=_number, default=5, help="k of k-fold CV (default 5)")
    p.add_argument(
        "--repeats", type=_number, default=1, help="draw the k folds this many times (small data)"
    )
    p.add_argument("--epochs", type=_number, help="epochs per training (default: the task's)")
    p.add_argument("--lr", type=_number, help="peak learning rate (default: the task's)")
    p.add_argument("--batch-size", type=_number, help="batch size (default: the task's)")
    p.add_argument("--decay-scale", choices=DECAY_SCALES, help="convention (default: task's)")
    p.add_argument(
        "--test-fraction",
        type=_number,
        help="share of the examples held out for the final test (default: the task's, or 0.2)",
    )
    p.add_argument("--grid", help="explicit candidates, comma-separated: 0,1e-3,1e-2")
    p.add_argument("--min", dest="grid_min", type=_number, help="smallest non-zero candidate")
    p.add_argument("--max", dest="grid_max", type=_number, help="largest candidate")
    p.add_argument("--points", type=_number, help="log-spaced candidates from --min to --max")
    p.add_argument("--sampler", choices=SAMPLERS, default="grid")
    p.add_argument("--trials", type=_number, default=12, help="candidates a tpe/gp search tries")
    p.add_argument("--lr-grid", help="joint search: learning rates, comma-separated")
    p.add_argument("--search-lr", action="store_true", help="tpe/gp: search lr in [lr/10, 10 lr]")
    p.add_argument(
        "--storage",
        help="database URL shared by workers (default: $ADAMWKIT_STORAGE, else a journal file); "
        "leave the password out and set PGPASSWORD or ~/.pgpass, so that ps does not show it",
    )
    p.add_argument("--study", help="study name (default: the task's name); names the run folder")
    p.add_argument("--out", default="adamwkit-runs", help="folder of run folders")
    p.add_argument("--seed", type=_number, default=0)
    p.add_argument("--prune", action="store_true", help="stop hopeless candidates (Wilcoxon)")
    p.add_argument(
        "--no-prune-chance",
        dest="prune_chance",
        action="store_false",
        help="train stacked runs still at their untrained loss at 1/4 or 1/2 of the epochs to "
        "the end (default: stop them)",
    )
    p.add_argument(
        "--transfer",
        action="store_true",
        help="cross-validate on nested subsets (--fractions), fit tau_epoch* against the data "
        "size and extrapolate to the full training pool, with an 80%% interval",
    )
    p.add_argument(
        "--fractions", help="with --transfer: subset sizes, comma-separated (default 1/8,1/4,1/2)"
    )
    p.add_argument(
        "--probe",
        action="store_true",
        help="cross-validate zero decay alone and suggest weight decay from the epoch its "
        "validation loss turns, with an 80%% range (about one candidate's cost)",
    )
    p.add_argument(
        "--confirm",
        action="store_true",
        help="with --transfer or --probe: cross-validate a narrow grid over the interval "
        "(for --transfer at the full size)",
    )
    p.add_argument(
        "--extend",
        type=_number,
        default=2,
        help="rounds of two candidates added past the grid's edge when the best sits on it "
        "(default 2; 0: never)",
    )
    p.add_argument("--heartbeat-interval", type=_number, default=10, help="seconds (databases)")
    p.add_argument(
        "--storage-retry",
        type=_number,
        default=120,
        help="seconds to retry a database through an outage before stopping (default 120)",
    )
    p.add_argument(
        "--vectorize",
        choices=VECTORIZE,
        default="auto",
        help="train candidates x folds together as one stacked model (auto: when a few "
        "measured steps say it is faster)",
    )
    p.add_argument("--max-memory", type=_number, help="GiB cap on members trained together")
    p.add_argument(
        "--workers",
        type=_number,
        default=1,
        help="worker processes to start on this machine (each with its share of the cores, "
        "and GPU i mod count on a machine with several)",
    )
    p.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU when there is one), cpu, cuda or cuda:<index>",
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: the forward pass under bfloat16 autocast (weights stay float32)",
    )
    p.add_argument(
        "--threads",
        type=_number,
        help="torch threads per worker (default: a share of the cores other programs leave free)",
    )
    p.add_argument(
        "--trial-timeout",
        type=_number,
        metavar="SECONDS",
        help="fail a run that takes longer (default: no limit); stacked, m runs trained "
        "together get m times as long",
    )
    p.add_argument("--no-test", action="store_true", help="skip the refits on the test split")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")

    p = sub.add_parser(
        "inspect",
        help="what a checkpoint holds: tensors, norms, decay decisions, optimizer groups",
        description="Read a checkpoint (.pt/.pth/.bin/.ckpt with weights_only loading, "
        ".safetensors, .npz, Keras .h5) and print each tensor's shape, dtype, norm and RMS, "
        "whether param_groups would decay it (by name and ndim), and a training "
        "checkpoint's optimizer groups. Every file is treated as hostile: a pickle that could "
        "run code, data kept in other files, sizes over --max-bytes and files that are not "
        "regular files are refused in one line (exit 2); names are printed escaped.",
    )
    p.add_argument("path", metavar="PATH", help="the checkpoint file")
    p.add_argument("--lr", type=_number, help="with --weight-decay: the run's peak lr")
    p.add_argument(
        "--weight-decay",
        type=_number,
        help="with --lr (PyTorch's convention): set each decayed matrix beside its "
        "equilibrium norm sqrt(lr * numel / (2 * weight_decay))",
    )
    p.add_argument("--all", action="store_true", help="every tensor (default: the first 40)")
    from ._safe_load import parse_byte_count

    p.add_argument(
        "--max-bytes",
        type=parse_byte_count,
        metavar="BYTES",
        help="refuse a file whose reading would take more (4GiB, 500MB, 1e9; sizes are "
        "checked as declared, before anything is allocated; default: half of the memory "
        "this process may use)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = sub.add_parser(
        "convert",
        help="convert a weight decay between conventions",
        description="Convert a weight decay between conventions: torch (= optax, Keras), "
        "independent (the paper, Composer), timm-corrected.",
    )
    p.add_argument("--weight-decay", type=_number, required=True)
    names = ", ".join(CONVENTION_NAMES)
    for flag, dest in (("--from", "from_"), ("--to", "to")):
        p.add_argument(
            flag,
            dest=dest,
            type=lambda v: v.strip().lower(),  # the names are case-insensitive, as in Python
            choices=CONVENTION_NAMES,
            required=True,
            metavar=flag[2:].upper(),
            help=f"a convention: {names}",
        )
    p.add_argument("--lr", type=_number, help="peak learning rate (needed for independent)")
    p.add_argument(
        "--schedule",
        choices=SCHEDULES,
        help="with --steps: match timm-corrected in total decay over this schedule",
    )
    p.add_argument("--steps", type=_number, help="total steps of --schedule")
    p.add_argument("--warmup-steps", type=_number, default=0)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


# ---------------------------------------------------------------------------- output


def _print_json(obj: dict[str, Any]) -> None:
    from ._io import json_safe

    sys.stdout.write(json.dumps(json_safe(obj), allow_nan=False) + "\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _show_suggestion(sug: Any) -> None:
    from .render import suggestion, to_rich

    to_rich(suggestion(sug), _console())


def _show_explanation(ex: Any) -> None:
    from .render import explanation, to_rich

    to_rich(explanation(ex), _console())


# ---------------------------------------------------------------------------- commands


def _cmd_suggest(a: argparse.Namespace) -> int:
    from .suggest import suggest

    sug = suggest(**_setup_kwargs(a))
    if a.json:
        _print_json(sug.to_dict())
    else:
        _show_suggestion(sug)
    return 0


def _load_model(spec: str) -> Any:
    from torch import nn

    from ._loading import load_object

    obj = load_object(spec, "model")
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(
                f"model={spec!r} is invalid: calling it with no arguments failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    if not isinstance(obj, nn.Module):
        raise ValueError(
            f"model={spec!r} is invalid: expected an nn.Module or a function returning one, "
            f"got {type(obj).__name__}"
        )
    return obj


def _cmd_explain(a: argparse.Namespace) -> int:
    from .explain import explain

    if a.run is not None:
        return _explain_run(a)
    missing = [f for f, v in (("--weight-decay", a.weight_decay), ("--lr", a.lr),
                              ("--batch-size", a.batch_size)) if v is None]  # fmt: skip
    if missing:
        raise UsageError(
            "adamwkit explain",
            f"the following arguments are required: {', '.join(missing)} (or --run PATH) "
            "(see adamwkit explain --help)",
        )
    model = _load_model(a.model) if a.model else None
    if a.schedule is None and a.warmup_steps:
        raise ArgumentError("warmup_steps needs a schedule", "warmup_steps", "schedule")
    ex = explain(
        a.weight_decay,
        schedule=a.schedule,
        warmup_steps=_whole("warmup_steps", a.warmup_steps),
        model=model,
        **_setup_kwargs(a),
    )
    if a.json:
        _print_json(ex.to_dict())
    else:
        _show_explanation(ex)
    return 0


def _explain_run(a: argparse.Namespace) -> int:
    """The verdicts of a monitored run, with each layer's last numbers."""
    import numpy as np
    from rich.markup import escape
    from rich.table import Table

    from ._format import fmt as _fmt
    from ._safe_load import printable
    from .monitor import load_log

    def shown(text: str, limit: int = 200) -> str:  # from the log file: escaped for a terminal
        return escape(printable(text, limit))

    setup = (("--weight-decay", a.weight_decay), ("--lr", a.lr),
             ("--batch-size", a.batch_size), ("--model", a.model))  # fmt: skip
    given = [flag for flag, value in setup if value is not None]
    if given:
        raise ArgumentError(
            f"run reads a saved monitor log, which holds its settings: give it without {given[0]}",
            "run",
        )
    log = load_log(a.run)
    layers = log.layers()
    verdicts = log.verdicts()
    tail = max(1, len(layers.steps) // 10)
    rows: list[dict[str, Any]] = []
    for j, t in enumerate(layers.tensors):
        rows.append(
            {
                "layer": t.name,
                "norm": float(layers.values[-1, j, 1]) if len(layers.steps) else None,
                "pred_norm": float(layers.pred_norm[-1, j]) if len(layers.steps) else None,
                "angle": float(np.mean(layers.angle[-tail:, j])) if len(layers.steps) else None,
                "pred_angle": float(layers.pred_angle[-1, j]) if len(layers.steps) else None,
            }
        )
    if a.json:
        _print_json(
            {
                "run": a.run,
                "steps": int(log.steps[-1]) if len(log.steps) else 0,
                "every": log.every,
                "optimizer": log.optimizer,
                "layers": rows,
                "verdicts": [{"layer": v.layer, "code": v.code, "text": v.text} for v in verdicts],
            }
        )
        return 0
    console = _console()
    last = int(log.steps[-1]) if len(log.steps) else 0
    console.print(
        f"[dim]{shown(a.run)}: {shown(log.optimizer)}, {last:,} steps, "
        f"recorded every {log.every}[/dim]"
    )
    table = Table(title="Each layer at the end of the run (Kosson et al.'s equilibrium)")
    for col in ("layer", "norm", "equilibrium norm", "angle rad/step", "predicted angle"):
        table.add_column(col, justify="left" if col == "layer" else "right")
    for r in rows:
        cells = [_fmt(r[k]) if r[k] is not None else "-" for k in ("norm", "pred_norm", "angle",
                                                                   "pred_angle")]  # fmt: skip
        table.add_row(shown(r["layer"]), *cells)
    console.print(table)
    for v in verdicts:
        if v.code != "no-decay":
            console.print(f"[bold]{shown(v.layer)}[/bold]: {shown(v.text, 5000)}")
    quiet = [v.layer for v in verdicts if v.code == "no-decay"]
    if quiet:
        console.print(f"[dim]not decayed: {shown(', '.join(quiet))}[/dim]")
    return 0


def _whole(name: str, value: float, low: int = 0) -> int:
    from ._checks import check_whole

    return check_whole(name, value, low)


def _cmd_convert(a: argparse.Namespace) -> int:
    from ._format import fmt as _fmt
    from .schedules import make_schedule
    from .timescale import CONVENTIONS, canonical_convention, convert_weight_decay

    schedule = None
    if a.schedule is None and (a.steps is not None or a.warmup_steps):
        raise ArgumentError(
            "steps and warmup_steps describe a schedule: give schedule too",
            "steps",
            "warmup_steps",
            "schedule",
        )
    if a.schedule is not None:
        if a.steps is None:
            raise ArgumentError(
                "schedule needs the run's length: give steps too", "schedule", "steps"
            )
        schedule = make_schedule(
            a.schedule, _whole("steps", a.steps, 1), _whole("warmup_steps", a.warmup_steps)
        )
    src, dst = canonical_convention(a.from_), canonical_convention(a.to)
    value = convert_weight_decay(a.weight_decay, src, dst, lr_peak=a.lr, schedule=schedule)
    every = {}
    for name in CONVENTIONS:
        if "independent" in (name, src) and name != src and a.lr is None:
            continue
        every[name] = convert_weight_decay(
            a.weight_decay, src, name, lr_peak=a.lr, schedule=schedule
        )
    if a.json:
        _print_json(
            {
                "weight_decay": a.weight_decay,
                "from": src,
                "to": dst,
                "value": value,
                "lr_peak": a.lr,
                "schedule": schedule.describe() if schedule else None,
                "conventions": every,
            }
        )
        return 0
    console = _console()
    console.print(
        f"[bold green]{_fmt(a.weight_decay)} ({src}) = {_fmt(value)} ({dst})[/bold green]"
        + (f" at lr_peak {_fmt(a.lr)}" if a.lr is not None else "")
    )
    for name, v in every.items():
        console.print(f"  {name:15s} {_fmt(v):>10s}   {CONVENTIONS[name]}")
    if "timm-corrected" in (src, dst) and src != dst:
        how = (
            f"in total decay over the schedule ({schedule.describe()})"
            if schedule
            else "at the peak step only (add --schedule and --steps to match a whole run)"
        )
        console.print(f"[dim]note: timm-corrected decays as lr_t^2; matched {how}[/dim]")
    return 0


def _floats(name: str, text: str | None) -> list[float] | None:
    if text is None:
        return None
    try:
        return [_number(v) for v in text.split(",") if v.strip()]
    except argparse.ArgumentTypeError as err:
        raise ArgumentError(f"{name}={text!r} is invalid: {err}", name) from None
    except ValueError:
        raise ValueError(
            f"{name}={text!r} is invalid: expected numbers separated by commas"
        ) from None


def _cmd_tune(a: argparse.Namespace) -> int:
    try:
        from .tuning import tune
        from .tuning.journal import JournalDamaged, JournalLockUnusable
        from .tuning.objective import NoResult
        from .tuning.storage import StorageUnavailable
        from .tuning.workers import FolderUnusable
    except ImportError as err:
        raise ValueError(
            f"tune needs Optuna, scikit-learn and matplotlib ({err}): pip install 'adamwkit[tune]'"
        ) from err
    from ._io import WriteFailed

    try:
        if a.transfer and a.probe:
            raise ArgumentError("transfer and probe are exclusive: choose one", "transfer", "probe")
        if a.transfer:
            return _run_transfer(a)
        if a.probe:
            return _run_probe(a)
        for flag in ("fractions", "confirm"):
            if getattr(a, flag):
                need = "--transfer" if flag == "fractions" else "--transfer or --probe"
                raise ArgumentError(f"{flag} goes with {need}", flag)
        result = _run_tune(a, tune)
    except WriteFailed as err:
        raise RunFailed(
            f"cannot write {err.filename}: {err.strerror}; free space (or fix the cause) and "
            "run the same command again to resume"
        ) from None
    except (StorageUnavailable, JournalDamaged, JournalLockUnusable, FolderUnusable) as err:
        raise RunFailed(str(err)) from None
    except NoResult as err:  # the runs ended without a result: not a bad argument
        raise RunFailed(_flagify(" ".join(str(err).split()), _RUN_LIMITS)) from None
    if result.best_weight_decay is None:
        if a.json:
            _print_json(result.summary)
        raise RunFailed(_no_result(result.summary, result.paths["report"]))
    if a.json:
        _print_json(result.summary)
        return 0
    _show_tune(result)
    return 0


def _run_transfer(a: argparse.Namespace) -> int:
    from .tuning.transfer import transfer

    fractions = _floats("fractions", a.fractions) or (0.125, 0.25, 0.5)
    from ._checks import ArgumentError

    given = [n for n in ("grid", "grid_min", "grid_max", "points", "storage", "lr_grid",
                         "test_fraction", "examples")
             if getattr(a, n) is not None]  # fmt: skip
    if a.workers != 1:
        given.append("workers")
    if given:
        raise ArgumentError(
            f"{' and '.join(given)} cannot be used with transfer: it holds out the task's own "
            "test split, takes each subset's candidates from the suggestion's range, and runs "
            "in this process with a journal file",
            *given,
        )
    result = transfer(a.objective, fractions=fractions, confirm=a.confirm, **_run_settings(a))
    if a.json:
        _print_json({**result.to_dict(), "verdict": result.verdict()})
        return 0
    from rich.markup import escape
    from rich.table import Table

    console = _console()
    table = Table(title="Cross-validated subsets", title_justify="left")
    for col in ("fraction", "N (fold)", "tau_epoch*", "one-SE band", "best weight_decay"):
        table.add_column(col, justify="right")
    for p in result.points:
        table.add_row(f"{p.fraction:g}", f"{p.n_train:,}", _fmt_num(p.tau_star),
                      f"{_fmt_num(p.band[0])} to {_fmt_num(p.band[1])}",
                      f"{p.best_weight_decay:.4g}")  # fmt: skip
    console.print(table)
    console.print(f"[bold green]{escape(result.verdict())}[/bold green]")
    console.print(f"Plot: {result.paths['plot']}  (summary: {result.paths['summary']})")
    return 0


def _run_probe(a: argparse.Namespace) -> int:
    from rich.markup import escape

    from .tuning.probe import probe

    given = [n for n in ("grid", "grid_min", "grid_max", "points", "lr_grid", "fractions")
             if getattr(a, n) is not None]  # fmt: skip
    given += [n for n in ("search_lr", "no_test") if getattr(a, n)]
    if a.sampler != "grid":
        given.append("sampler")
    if given:
        raise ArgumentError(
            f"{' and '.join(given)} cannot be used with probe: it cross-validates zero decay "
            "alone (with --confirm, then a grid over its range)",
            *given,
        )
    settings = {
        **_run_settings(a),
        **{k: getattr(a, k) for k in ("examples", "test_fraction", "storage", "workers",
                                      "heartbeat_interval", "storage_retry")},
    }  # fmt: skip
    result = probe(a.objective, confirm=a.confirm, **settings)
    if a.json:
        _print_json(result.to_dict())
        return 0
    console = _console()
    console.print(f"[bold green]{escape(result.verdict())}[/bold green]")
    console.print(f"Probe: {result.run_dir}")
    if result.confirm is not None:
        _show_tune(result.confirm)
    return 0


def _fmt_num(x: float) -> str:
    from ._format import fmt

    return fmt(x)


def _no_result(summary: dict[str, Any], report: Any) -> str:
    """Why no candidate finished every fold, in one line."""
    states: dict[str, int] = {}
    for c in summary["candidates"]:
        states[c["state"]] = states.get(c["state"], 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    reasons = sorted({c["reason"] for c in summary["candidates"] if c.get("reason")})
    why = f" (first reason: {_flagify(reasons[0], _RUN_LIMITS)})" if reasons else ""
    return (
        f"no candidate finished every fold: {counts or 'no candidates'}{why}; nothing to "
        f"recommend (report: {report})"
    )


# Settings a run's recorded reason may name (``exceeded trial_timeout of 60 s``).
_RUN_LIMITS = ("trial_timeout",)


def _run_settings(a: argparse.Namespace) -> dict[str, Any]:
    """The flags every tune run takes, plain or one of a transfer's."""
    return {
        "folds": a.folds,
        "repeats": a.repeats,
        "extend": a.extend,
        "prune_chance": a.prune_chance,
        "epochs": a.epochs,
        "lr": a.lr,
        "batch_size": a.batch_size,
        "decay_scale": a.decay_scale,
        "study": a.study,
        "out": a.out,
        "seed": a.seed,
        "progress": not a.quiet,
        "vectorize": a.vectorize,
        "max_memory": a.max_memory,
        "threads": a.threads,
        "device": a.device,
        "precision": a.precision,
        "trial_timeout": a.trial_timeout,
    }


def _run_tune(a: argparse.Namespace, tune: Any) -> Any:
    return tune(
        a.objective,
        **_run_settings(a),
        examples=a.examples,
        test_fraction=a.test_fraction,
        grid=_floats("grid", a.grid),
        grid_min=a.grid_min,
        grid_max=a.grid_max,
        points=a.points,
        sampler=a.sampler,
        trials=a.trials,
        lr_grid=_floats("lr_grid", a.lr_grid),
        search_lr=a.search_lr,
        storage=a.storage,
        prune=a.prune,
        heartbeat_interval=a.heartbeat_interval,
        test=not a.no_test,
        workers=a.workers,
        storage_retry=a.storage_retry,
    )


def _show_tune(result: Any) -> None:
    from rich.markup import escape
    from rich.table import Table

    s = result.summary
    console = _console()
    epochs = f", {s['epochs']} epochs" if s.get("epochs") else ""
    table = Table(title=f"{s['task']}: {s['folds']}-fold CV{epochs}", title_justify="left")
    for col in ("weight_decay", "lr", "tau_epoch", "CV loss +- SE", "paired diff +- SE", "state"):
        table.add_column(col, justify="left" if col == "state" else "right")
    g = "{:.4g}".format
    for c in s["candidates"]:
        mark = ""
        if c["lr"] == s["best_lr"] and c["weight_decay"] == s["best_weight_decay"]:
            mark = " [bold]best[/bold]"
        elif c["lr"] == s["best_lr"] and c["weight_decay"] == s["one_se_weight_decay"]:
            mark = " [bold]one-SE[/bold]"
        mean = "-" if c["mean"] is None else f"{g(c['mean'])} +- {(c['sem'] or 0):.2g}"
        diff = (
            "-"
            if c["paired_diff"] is None
            else f"{c['paired_diff']:+.3g} +- {(c['paired_sem'] or 0):.2g}"
        )
        tau = "-" if c["tau_epoch"] is None else g(c["tau_epoch"])
        reason = _flagify(c["reason"], _RUN_LIMITS) if c["reason"] else ""
        state = c["state"] + (f" ({reason})" if reason else "")
        table.add_row(g(c["weight_decay"]), g(c["lr"]), tau, mean, diff, escape(state) + mark)
    console.print(table)
    style = "bold yellow" if s["flat"] else "bold green"
    console.print(f"[{style}]{escape(s['verdict'])}[/{style}]")
    console.print(f"[dim]vectorize: {escape(s['vectorize'])}[/dim]")
    for note in s.get("notes", ()):
        console.print(f"[dim]note: {escape(_flagify(note))}[/dim]")
    console.print(f"Report: {result.paths['report']}  (summary: {result.paths['summary']})")


def _cmd_inspect(a: argparse.Namespace) -> int:
    import dataclasses

    from rich.table import Table
    from rich.text import Text

    from ._format import fmt
    from ._safe_load import printable
    from .checkpoint import inspect_checkpoint

    def shown(s: str) -> Text:  # a string from the file: escaped, never read as markup
        return Text(printable(s, limit=120))

    info = inspect_checkpoint(a.path, lr=a.lr, weight_decay=a.weight_decay, max_bytes=a.max_bytes)
    rows = info["tensors"]
    if a.json:
        out = {**info, "tensors": [{**dataclasses.asdict(r), "norm_ratio": r.norm_ratio}
                                   for r in rows]}  # fmt: skip
        _print_json(out)
        return 0
    console = _console()
    share = 100.0 * info["decayed_parameters"] / max(1, info["parameters"])
    header = Text(printable(info["path"], limit=500), style="bold")
    header.append(
        f" ({info['format']}): {len(rows)} tensors, {info['parameters']:,} parameters; "
        f"{info['decayed_parameters']:,} ({share:.1f}%) would decay under param_groups (by "
        "name and ndim)"
    )
    console.print(header)
    eq = info["lr"] is not None
    dtypes = sorted({r.dtype for r in rows})
    table = Table(title=f"dtype {dtypes[0]}" if len(dtypes) == 1 else None, title_justify="left")
    table.add_column("tensor", no_wrap=True, overflow="fold")
    table.add_column("shape", no_wrap=True)
    if len(dtypes) > 1:
        table.add_column("dtype")
    table.add_column("norm", justify="right")
    table.add_column("RMS", justify="right")
    table.add_column("decays")
    if eq:
        table.add_column("eq. norm", justify="right")
        table.add_column("norm/eq", justify="right")
    shown_rows = rows if a.all else rows[:40]
    for r in shown_rows:
        cells: list[Any] = [shown(r.name), "x".join(map(str, r.shape)) or "scalar"]
        cells += [r.dtype] if len(dtypes) > 1 else []
        cells += [fmt(r.norm), fmt(r.rms), Text("yes") if r.decays else shown(f"no: {r.rule}")]
        if eq:
            ratio = r.norm_ratio
            cells += [fmt(r.equilibrium_norm) if r.equilibrium_norm else "-",
                      f"{ratio:.2f}" if ratio is not None else "-"]  # fmt: skip
        table.add_row(*cells)
    console.print(table)
    if len(shown_rows) < len(rows):
        console.print(f"[dim]{len(rows) - len(shown_rows)} more tensors: --all shows them[/dim]")
    if info["optimizer"] is not None:
        opt = Table(title="Optimizer groups", title_justify="left")
        for col in ("group", "params", "lr", "weight_decay", "decay_scale", "step", "saved by"):
            opt.add_column(col)
        for g in info["optimizer"]:
            opt.add_row(str(g["group"]), str(g["params"]), _maybe(g["lr"]),
                        _maybe(g["weight_decay"]), shown(g["decay_scale"]),
                        "-" if g["step"] is None else str(g["step"]), g["convention"])  # fmt: skip
        console.print(opt)
    if info["extra"]:
        console.print("Run: " + ", ".join(f"{k} {v}" for k, v in info["extra"].items()))
    for note in info["notes"]:
        console.print(Text(f"note: {printable(note, limit=500)}", style="dim"))
    if eq:
        console.print(
            "[dim]norm / eq. far above 1: the decay had not yet pulled the matrix to its "
            "equilibrium (Kosson et al., arXiv:2305.17212); near 1: in equilibrium[/dim]"
        )
    return 0


def _maybe(x: float | None) -> str:
    from ._format import fmt

    return "-" if x is None else fmt(x)


_COMMANDS = {
    "suggest": _cmd_suggest,
    "explain": _cmd_explain,
    "tune": _cmd_tune,
    "convert": _cmd_convert,
    "inspect": _cmd_inspect,
}


class RunFailed(Exception):
    """A run that could not finish for a reason outside the user's code (a full disk, a
    database down for longer than the retry bound, no candidate finished): one line, exit 1."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``adamwkit`` console script; returns the exit code."""
    parser = build_parser()
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning
        return _main(parser, argv)


def _show_warning(message: Any, category: Any, *_: Any, **__: Any) -> None:
    """A warning as one line: ``adamwkit: warning: ...``."""
    print(f"adamwkit: warning: {message}", file=sys.stderr)


def _main(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    name = "adamwkit"
    try:
        args = parser.parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help()
            return 0
        name = f"adamwkit {args.command}"
        return _COMMANDS[args.command](args)
    except UsageError as err:
        print(f"{err.prog}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        resume = "; run the same command again to resume" if name == "adamwkit tune" else ""
        print(f"{name}: interrupted{resume}", file=sys.stderr)
        return 130
    except RunFailed as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        names = getattr(err, "names", ())
        text = " ".join(str(err).split())  # one line
        print(f"{name}: error: {_flagify(text, names)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
