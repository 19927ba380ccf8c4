"""The ``adamwkit`` command line: ``suggest``, ``explain``, ``tune``, ``convert`` and ``inspect``.

Bad input exits with code 2 and one line on stderr naming the flag, the value and the
accepted range. ``--json`` prints one JSON object on stdout instead of the tables
(non-finite numbers, such as the timescale of a zero weight decay, become ``null``).

This module only parses and prints: ``tune``'s arguments, and the options its modes
refuse, come from the table in :mod:`adamwkit.tuning.options`; what a command prints is
its result's blocks (:mod:`adamwkit.render`), the same content as the result's ``str()``.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, NoReturn

from . import __version__, render
from ._checks import ArgumentError, is_subnormal
from ._constants import CONVENTION_NAMES, DECAY_SCALES
from ._extras import MissingExtra
from .tuning.options import (
    CLI_MODES,
    MODE_FLAGS,
    TUNE_OPTIONS,
    Option,
    check_mode,
    mode_of,
    refused,
)

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
    "decay_scale": "--decay-scale",
    "schedule": "--schedule",
    "from_convention": "--from",
    "to_convention": "--to",
    "objective": "TASK",
    "run": "--run",
    "pretrained": "--pretrained",
    "adapters": "--adapters",
}
# tune's options and modes: their flags come from the one table of them (an inverted flag,
# such as --quiet for progress=False, cannot stand for its keyword in a message)
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
    g.add_argument(
        "--pretrained",
        action="store_true",
        help="the run fine-tunes pretrained weights: the fine-tuning rule, and no value whose "
        "total decay lr*wd*steps exceeds 0.03 (docs/evidence-finetune.md)",
    )
    g.add_argument(
        "--adapters",
        action="store_true",
        help="the run fine-tunes adapters such as LoRA (implies --pretrained): decay pulls the "
        "model back toward the frozen base",
    )
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
        "pretrained": a.pretrained,
        "adapters": a.adapters,
    }


def build_parser() -> argparse.ArgumentParser:
    """The ``adamwkit`` parser: one subcommand each, built by the ``_add_*`` below."""
    parser = _Parser(
        prog="adamwkit",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"adamwkit {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser, metavar="COMMAND")
    for add in (_add_suggest, _add_explain, _add_tune, _add_inspect, _add_convert, _add_audit):
        add(sub)
    return parser


def _add_suggest(sub: Any) -> None:
    """``adamwkit suggest``."""
    p = sub.add_parser(
        "suggest",
        help="a weight decay from your setup, with no training",
        description="A weight decay from lr, batch size, data size and length of training, "
        "by the rule that fits the regime, with every other rule side by side.",
    )
    _add_setup(p)


def _add_explain(sub: Any) -> None:
    """``adamwkit explain``."""
    from .schedules import SCHEDULES

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


def _add_tune(sub: Any) -> None:
    """``adamwkit tune``: its arguments come from the table of tune's options
    (:data:`~adamwkit.tuning.options.TUNE_OPTIONS`) and of its modes
    (:data:`~adamwkit.tuning.options.MODE_FLAGS`)."""
    p = sub.add_parser(
        "tune",
        help="cross-validate weight decay on a task (default: digits) and write a report",
        description="k-fold cross-validated weight decay search, for a task or your own "
        "training loop written as an objective, in an Optuna study: a journal "
        "file in the run folder by default, or a database (--storage) shared by many workers "
        "running the same command. Rerunning resumes the study.",
    )
    for option in TUNE_OPTIONS:
        if option.flag is not None:
            _add_option(p, option)
    for mode in MODE_FLAGS:
        action = "store" if mode.takes_value else "store_true"
        p.add_argument(mode.flag, dest=mode.name, action=action, help=_help(mode.help))


def _help(text: str) -> str:
    """A help text as argparse reads it (``%`` is its format character)."""
    return text.replace("%", "%%")


def _add_option(p: argparse.ArgumentParser, o: Option) -> None:
    """The argument of one option of tune, stored under its keyword; an inverted flag
    (``--quiet``) stores ``False`` in its keyword (``progress``)."""
    if o.flag == "TASK":
        p.add_argument(o.name, nargs="?", default=o.default, metavar=o.metavar, help=_help(o.help))
        return
    assert o.flag is not None
    if o.kind == "flag":
        action = "store_false" if o.inverted else "store_true"
        p.add_argument(o.flag, dest=o.name, action=action, help=_help(o.help))
        return
    kwargs: dict[str, Any] = {"dest": o.name, "default": o.default, "help": _help(o.help)}
    if o.metavar is not None:
        kwargs["metavar"] = o.metavar
    if o.choices is not None:
        kwargs["choices"] = o.choices
    elif o.kind in ("int", "float"):
        kwargs["type"] = _number
    p.add_argument(o.flag, **kwargs)


def _add_inspect(sub: Any) -> None:
    """``adamwkit inspect``."""
    from ._safe_load import parse_byte_count

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
    p.add_argument(
        "--max-bytes",
        type=parse_byte_count,
        metavar="BYTES",
        help="refuse a file whose reading would take more (4GiB, 500MB, 1e9; sizes are "
        "checked as declared, before anything is allocated; default: half of the memory "
        "this process may use)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_audit(sub: Any) -> None:
    """``adamwkit audit``."""
    p = sub.add_parser(
        "audit",
        help="does an optimizer decay what you think? a live set-up, before the first step",
        description="Build your model and optimizer with module:attribute (a function "
        "returning (model, optimizer), (model, optimizer, total_steps), (model, optimizer, "
        "scheduler, total_steps) or a dict with those keys and optionally inputs) and print "
        "each tensor's decay (decoupled, L2 or none; its share per step, timescale and total "
        "over the run, following the scheduler) and what looks wrong, each finding with a "
        "code and what to do.",
    )
    p.add_argument("spec", metavar="MODULE:FUNCTION", help="returns the model and optimizer")
    p.add_argument("--steps", type=_number, help="the run's optimizer steps (total decay)")
    p.add_argument("--strict", action="store_true",
                   help="exit 1 when a finding of severity error is present")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _add_convert(sub: Any) -> None:
    """``adamwkit convert``."""
    from .schedules import SCHEDULES

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


# ---------------------------------------------------------------------------- output


def _print_json(obj: Mapping[str, Any]) -> None:
    from ._io import json_safe

    sys.stdout.write(json.dumps(json_safe(dict(obj)), allow_nan=False) + "\n")


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _show(blocks: Sequence[render.Block]) -> None:
    """Print a result's blocks on the terminal."""
    render.to_rich(blocks, _console())


# ---------------------------------------------------------------------------- commands


def _cmd_suggest(a: argparse.Namespace) -> int:
    from .suggest import suggest

    sug = suggest(**_setup_kwargs(a))
    if a.json:
        _print_json(sug.to_dict())
    else:
        _show(sug.blocks())
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
        _show(ex.blocks())
    return 0


def _explain_run(a: argparse.Namespace) -> int:
    """The verdicts of a monitored run, with each layer's last numbers."""
    from .explain import explain_run

    setup = (("--weight-decay", a.weight_decay), ("--lr", a.lr),
             ("--batch-size", a.batch_size), ("--model", a.model))  # fmt: skip
    given = [flag for flag, value in setup if value is not None]
    if given:
        raise ArgumentError(
            f"run reads a saved monitor log, which holds its settings: give it without {given[0]}",
            "run",
        )
    run = explain_run(a.run)
    if a.json:
        _print_json(run.to_dict())
    else:
        _show(run.blocks())
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
    """Numbers separated by commas (``--grid 0,1e-3,1e-2``); ``None`` stays ``None``."""
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


# Settings a run's messages may name (``exceeded trial_timeout of 60 s``, ``widen the grid
# with grid_max``).
_RUN_LIMITS = ("trial_timeout", "grid_min", "grid_max")


def _run_names(text: str) -> str:
    """A run's message (a note, a candidate's reason) with the flags for the names."""
    return _flagify(text, _RUN_LIMITS)


def _tune_failures() -> tuple[type[Exception], ...]:
    """The errors that end a run for a reason outside the user's code (exit 1), once tune's
    dependencies are known to be installed (:class:`MissingExtra`, one line, otherwise)."""
    from ._extras import require

    require("tune", "adamwkit tune")
    from .tuning.journal import JournalDamaged, JournalLockUnusable
    from .tuning.storage import StorageUnavailable
    from .tuning.workers import FolderUnusable

    return (StorageUnavailable, JournalDamaged, JournalLockUnusable, FolderUnusable)


def _cmd_tune(a: argparse.Namespace) -> int:
    failures = _tune_failures()
    from ._io import WriteFailed
    from .tuning.objective import NoResult

    try:
        mode = mode_of([m.name for m in MODE_FLAGS if getattr(a, m.name) not in (None, False)])
        kwargs = _tune_kwargs(a, mode)
        if mode == "transfer":
            return _run_transfer(a, kwargs)
        if mode == "probe":
            return _run_probe(a, kwargs)
        return _run_tune(a, kwargs)
    except WriteFailed as err:
        raise RunFailed(
            f"cannot write {err.filename}: {err.strerror}; free space (or fix the cause) and "
            "run the same command again to resume"
        ) from None
    except failures as err:
        raise RunFailed(str(err)) from None
    except NoResult as err:  # the runs ended without a result: not a bad argument
        raise RunFailed(_run_names(" ".join(str(err).split()))) from None


def _tune_kwargs(a: argparse.Namespace, mode: str | None) -> dict[str, Any]:
    """The keywords of tune's options as parsed, for ``mode`` (``None``: tune itself):
    the options the mode does not take are refused when set, and left out."""
    flagged = [o for o in TUNE_OPTIONS if o.flag is not None]
    if mode is not None:
        check_mode(mode, [o.name for o in flagged if getattr(a, o.name) != o.default], flags=True)
    skip = set(refused(mode, [o.name for o in flagged])) if mode is not None else set()
    kwargs: dict[str, Any] = {}
    for o in flagged:
        if o.name not in skip:
            value = getattr(a, o.name)
            kwargs[o.name] = _floats(o.name, value) if o.kind == "floats" else value
    return kwargs


def _run_tune(a: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    """``adamwkit tune``: the study, its table and verdict (or the summary as JSON)."""
    from .tuning import tune

    result = tune(**kwargs)
    if result.best_weight_decay is None:  # no result, or a model that did not learn
        if a.json:
            _print_json(result.summary)
        elif result.summary["learned"] is False:
            _show(result.blocks(_run_names))
        raise RunFailed(render.no_result(result.summary, result.paths["report"], _run_names))
    if a.json:
        _print_json(result.summary)
    else:
        _show(result.blocks(_run_names))
    return 0


def _run_transfer(a: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    """``adamwkit tune --transfer``."""
    from .tuning.transfer import transfer

    fractions = _floats("fractions", a.fractions) or (0.125, 0.25, 0.5)
    task = kwargs.pop("objective")
    result = transfer(task, fractions=fractions, confirm=a.confirm, **kwargs)
    if a.json:
        _print_json({**result.to_dict(), "verdict": result.verdict()})
    else:
        _show(result.blocks())
    return 0


def _run_probe(a: argparse.Namespace, kwargs: dict[str, Any]) -> int:
    """``adamwkit tune --probe``."""
    from .tuning.probe import probe

    objective = kwargs.pop("objective")
    result = probe(objective, confirm=a.confirm, **kwargs)
    if a.json:
        _print_json(result.to_dict())
    else:
        _show(result.blocks(_run_names))
    return 0


def _cmd_inspect(a: argparse.Namespace) -> int:
    import dataclasses

    from ._safe_load import printable
    from .checkpoint import inspect_checkpoint

    info = inspect_checkpoint(a.path, lr=a.lr, weight_decay=a.weight_decay, max_bytes=a.max_bytes)
    if a.json:
        tensors = [{**dataclasses.asdict(r), "norm_ratio": r.norm_ratio} for r in info["tensors"]]
        _print_json({**info, "tensors": tensors})
    else:
        _show(render.checkpoint_report(info, printable, show_all=a.all))
    return 0


def _cmd_audit(a: argparse.Namespace) -> int:
    from .audit import audit_spec

    steps = None if a.steps is None else _whole("steps", a.steps)
    report = audit_spec(a.spec, total_steps=steps)
    if a.json:
        _print_json(report.to_dict())
    else:
        _show(report.blocks())
    return 1 if a.strict and any(f.severity == "error" for f in report.findings) else 0


_COMMANDS = {
    "audit": _cmd_audit,
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
    except (RunFailed, MissingExtra) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:
        names = getattr(err, "names", ())
        text = " ".join(str(err).split())  # one line
        print(f"{name}: error: {_flagify(text, names)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
