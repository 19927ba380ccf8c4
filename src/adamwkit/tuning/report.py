"""The verdict of ``adamwkit tune``: summary.json, cv_curve.png, report.html, the terminal table.

Every file is written atomically (a temporary file, then a rename), so a crash leaves the
previous report or the new one, never a torn file.

The report always says which run of the study it belongs to and how that run ended:
``summary.json`` has a ``state``. When a run starts working on the study,
:func:`begin` writes ``{"state": "running"}`` and removes the report and plots left by
an earlier run, so an old report never looks current. The run then ends with
:func:`write_reports` (``"complete"``: a recommendation; ``"failed"``: no candidate
finished every fold, each one's reason in the report), or, stopped by Ctrl-C or an error,
with :func:`write_stopped` (``"interrupted"``, with the reason).

The plots take whatever the runs gave: a loss that is not finite, or larger in magnitude
than :data:`LOSS_SHOWN_MAX`, is left out of them, with a note in the figure and in the
summary's ``notes``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .. import render
from .._format import sig, splits
from .._io import WriteFailed, atomic_write, json_safe

__all__ = [
    "LOSS_SHOWN_MAX",
    "begin",
    "off_scale",
    "plot_cv_curve",
    "plot_learning_curves",
    "render_html",
    "write_reports",
    "write_stopped",
]

#: Losses larger in magnitude than this are left out of the plots (with a note): no
#: trained model's loss is that large, and axes cannot span it with the others.
LOSS_SHOWN_MAX = 1e30

#: The files of a run's report besides summary.json (removed when a new run starts).
REPORT_FILES = ("report.html", "cv_curve.png", "learning_curves.png", "monitor.png")


#: The learning curves' y axis is logarithmic when the losses span this factor or more.
LOG_SPAN = 3.0


def short_names(names: list[str], width: int = 34) -> tuple[str, dict[str, str]]:
    """The dotted prefix every name shares (said once) and each name without it, broken
    over two lines at a dot when longer than ``width`` characters (a plot's row label)."""
    prefix = render._common_prefix(names)
    out = {}
    for name in names:
        rest = name[len(prefix) :]
        if len(rest) > width and "." in rest:
            dots = [i for i, ch in enumerate(rest) if ch == "."]
            cut = min(dots, key=lambda i: abs(i - len(rest) / 2))
            rest = rest[: cut + 1] + "\n" + rest[cut + 1 :]
        out[name] = rest
    return prefix, out


def _plain_ticks(axis: Any) -> None:
    """Tick labels of a log axis as plain numbers (``0.3``, not ``3 x 10^-1``)."""
    from matplotlib.ticker import FuncFormatter

    def minor(v: float, _pos: Any) -> str:  # 2, 3 and 5 of each decade
        lead = round(v / 10 ** math.floor(math.log10(v))) if v > 0 else 0
        return f"{v:.3g}" if lead in (2, 3, 5) else ""

    axis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.3g}"))
    axis.set_minor_formatter(FuncFormatter(minor))


def _legend_below(ax: Any, columns: int, size: int) -> None:
    """The legend under the plot, where it covers no curve."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=size, loc="upper center", bbox_to_anchor=(0.5, -0.16),
                  ncol=columns, frameon=False)  # fmt: skip


def shown(value: float | None) -> bool:
    """Whether a loss is drawn: a finite number within :data:`LOSS_SHOWN_MAX`."""
    return value is not None and math.isfinite(value) and abs(value) <= LOSS_SHOWN_MAX


def off_scale(summary: Mapping[str, Any]) -> list[str]:
    """One note per candidate whose CV loss is left out of the plot (see :func:`shown`)."""
    notes = []
    for c in summary["candidates"]:
        if c["mean"] is not None and not shown(c["mean"]):
            notes.append(
                f"weight decay {c['weight_decay']:.4g} (lr {c['lr']:.3g}) is left out of the "
                f"plot: its CV loss {c['mean']:.4g} is beyond any sensible scale"
            )
    return notes


def plot_cv_curve(summary: Mapping[str, Any]) -> bytes:
    """The CV loss with error bars against weight decay (log axis, tau_epoch on top), as
    PNG. A candidate whose loss is not :func:`shown` is left out, with a note below."""
    cands = [c for c in summary["candidates"] if shown(c["mean"])]
    fig = figure(figsize=(7.5, 4.5), dpi=110)
    ax = fig.subplots()
    lrs = sorted({c["lr"] for c in cands})
    for i, this_lr in enumerate(lrs):
        pts = sorted(
            (c for c in cands if c["lr"] == this_lr and c["weight_decay"] > 0),
            key=lambda c: c["weight_decay"],
        )
        label = f"lr {this_lr:g}" if len(lrs) > 1 else "CV loss (mean +- SE)"
        ax.errorbar(
            [c["weight_decay"] for c in pts],
            [c["mean"] for c in pts],
            yerr=[c["sem"] if shown(c["sem"]) else 0.0 for c in pts],
            fmt="o-",
            capsize=3,
            color=f"C{i}",
            label=label,
        )
        zero = [c for c in cands if c["lr"] == this_lr and c["weight_decay"] == 0]
        if zero:
            best = summary.get("best_weight_decay") == 0 and summary.get("best_lr") == this_lr
            ax.axhline(zero[0]["mean"], color="C3" if best else f"C{i}", ls="-" if best else ":",
                       lw=2 if best else 1,
                       label="best: weight decay 0" if best else "weight decay 0")  # fmt: skip
    ax.set_xscale("log")
    means = [c["mean"] for c in cands]
    spread = (max(means) - min(means)) / abs(min(means)) if means and min(means) else 1.0
    if cands and all(m > 0 for m in means) and spread > 0.05:
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis)
    elif spread <= 0.05:  # the axis zooms in on a small spread: say how small it is
        ax.ticklabel_format(axis="y", style="plain", useOffset=False)
        ax.text(0.01, 0.98, f"every candidate within {100 * spread:.2g}% of the lowest loss",
                transform=ax.transAxes, fontsize=8, va="top", color="0.3")  # fmt: skip
    ax.set_xlabel(f"weight decay ({summary['decay_scale']!r} convention)")
    ax.set_ylabel(f"held-out loss, {splits(summary['folds'], summary.get('repeats') or 1)}")
    _mark_choices(ax, summary)
    _decay_axis(ax, summary, [c["weight_decay"] for c in cands if c["weight_decay"] > 0])
    title = "weight decay barely matters here" if summary["flat"] else "CV loss"
    ax.set_title(f"{summary['task']}: {title}", fontsize=10)
    _legend_below(ax, 3, 8)
    left_out = off_scale(summary)
    if left_out:
        fig.text(0.01, 0.005, "; ".join(left_out)[:300], fontsize=6, va="bottom", wrap=True)
    return _png(fig)


#: The chosen weight decays marked on the CV plot: summary key, label, colour, line style.
_CHOICE_MARKS = (
    ("best_weight_decay", "best", "C3", "-"),
    ("one_se_weight_decay", "one-SE choice", "C2", "--"),
    ("suggested_weight_decay", "adamwkit suggest", "0.4", "-."),
)


def _mark_choices(ax: Any, summary: Mapping[str, Any]) -> None:
    """A vertical line at each chosen weight decay the summary has (best, one-SE, suggested)."""
    for key, label, color, style in _CHOICE_MARKS:
        v = summary.get(key)
        if v:
            ax.axvline(v, color=color, ls=style, lw=1.2, label=f"{label}: {v:.3g}")


def _decay_axis(ax: Any, summary: Mapping[str, Any], positive: list[float]) -> None:
    """The weight decay axis's range when no candidate has a positive decay, and its
    tau_epoch twin on top (``tau_epoch = tau_epoch_factor / weight_decay``) when one has."""
    factor = summary["tau_epoch_factor"]

    def to_tau(w: Any) -> Any:
        import numpy as np

        w = np.asarray(w, dtype=float)
        with np.errstate(over="ignore"):  # a timescale beyond float's range is infinite
            return factor / np.maximum(w, 1e-300)

    if not positive:  # zero decay alone (a probe): an axis around the suggestion, if any
        v = summary.get("suggested_weight_decay") or 1e-2
        ax.set_xlim(v / 10, v * 10)
    if factor and positive:
        top = ax.secondary_xaxis("top", functions=(to_tau, to_tau))
        top.set_xlabel("tau_epoch (epochs)")


def figure(**kwargs: Any) -> Any:
    """A matplotlib ``Figure`` of its own, outside pyplot: drawing it needs no backend, so
    the caller's backend and pyplot's figures are left as they were (no ``matplotlib.use``)."""
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def _png(fig: Any) -> bytes:
    """The figure, with a light grid, as PNG bytes."""
    for ax in fig.axes:
        ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def mean_curve(fold_curves: dict[str, list[list[float]]]) -> tuple[list[float], list[float]]:
    """The mean over folds of a candidate's learning curve, at the steps every fold reported."""
    curves = [dict((int(a), float(b)) for a, b in c) for c in fold_curves.values() if c]
    if not curves:
        return [], []
    steps = sorted(set.intersection(*(set(c) for c in curves)))
    return [float(t) for t in steps], [sum(c[t] for c in curves) / len(curves) for t in steps]


def plot_learning_curves(summary: Mapping[str, Any]) -> bytes | None:
    """Each candidate's validation loss against the step it was reported at (the mean over
    folds), coloured by weight decay, as PNG; ``None`` when no run reported a curve.
    Points that are not :func:`shown` are left out."""
    fig = learning_curves_figure(summary)
    return None if fig is None else _png(fig)


def learning_curves_figure(summary: Mapping[str, Any]) -> Any:
    """The figure of :func:`plot_learning_curves` (``None``: no curve). The y axis is
    logarithmic when the losses span ``LOG_SPAN`` or more, else linear; the steps are
    whole numbers."""
    import matplotlib
    import numpy as np
    from matplotlib.ticker import MaxNLocator

    lines = []
    for c in summary["candidates"]:
        steps, values = mean_curve(c.get("fold_curves") or {})
        kept = [(t, v) for t, v in zip(steps, values, strict=True) if shown(v)]
        if kept:
            lines.append((c, [t for t, _ in kept], [v for _, v in kept]))
    if not lines:
        return None
    positive = [c["weight_decay"] for c, _, _ in lines if c["weight_decay"] > 0]
    lo, hi = (min(positive), max(positive)) if positive else (1.0, 1.0)
    cmap = matplotlib.colormaps["viridis"]
    lrs = {c["lr"] for c, _, _ in lines}
    fig = figure(figsize=(7.5, 4.5), dpi=110)
    ax = fig.subplots()
    for c, steps, values in sorted(lines, key=lambda x: x[0]["weight_decay"]):
        wd = c["weight_decay"]
        color: str | tuple[float, float, float, float]
        if wd == 0:
            color, style = "black", "--"
        else:
            pos = 0.5 if hi == lo else (np.log(wd) - np.log(lo)) / (np.log(hi) - np.log(lo))
            color, style = cmap(0.9 * pos), "-"
        best = wd == summary.get("best_weight_decay") and c["lr"] == summary.get("best_lr")
        label = f"wd {wd:.3g}" + (f", lr {c['lr']:.3g}" if len(lrs) > 1 else "")
        ax.plot(steps, values, style, color=color, lw=2.2 if best else 1.1,
                label=label + (" (best)" if best else ""))  # fmt: skip
    every = [v for _, _, vals in lines for v in vals]
    if min(every) > 0 and max(every) >= LOG_SPAN * min(every):
        ax.set_yscale("log")  # losses falling over decades; a narrow range stays linear,
        _plain_ticks(ax.yaxis)  # where a log axis may show no labelled tick at all
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step reported (trial.report); epochs for built-in tasks")
    ax.set_ylabel("validation loss, mean over folds")
    ax.set_title(f"{summary['task']}: learning curves", fontsize=10)
    _legend_below(ax, 4, 7)
    return fig


MONITORED = ("best", "one_se", "zero")
_LABEL_COLORS = {"best": "tab:blue", "one_se": "tab:orange", "zero": "black"}


def plot_monitor(run_dir: Path, summary: Mapping[str, Any], layers: int = 4) -> bytes | None:
    """For the refits of best, one-SE and zero: each of the largest decayed layers' weight
    norm against its equilibrium norm (dashed, where the layer is scale-invariant: the
    theory holds there), and its angular update per step against the prediction (Kosson
    et al.), as PNG; ``None`` when no refit was monitored."""
    import numpy as np

    from ..monitor import load_log

    logs, titles = {}, {}
    test = summary.get("test") or {}
    for label in MONITORED:
        name = test.get(label, {}).get("monitor")
        same = label == "one_se" and test.get("best", {}).get("monitor") == name
        if same and "best" in logs:  # one refit: drawn once, named for both
            titles["best"] = "best = one_se"
            continue
        if name and (run_dir / name).exists():
            logs[label] = load_log(run_dir / name).layers()
            titles[label] = label
    if not logs:
        return None
    ref = logs.get("best") or next(iter(logs.values()))
    decayed = [j for j in range(len(ref.tensors)) if np.any(ref.decay[:, j] > 0)]
    chosen = sorted(decayed or range(len(ref.tensors)), key=lambda j: -ref.tensors[j].numel)
    names = [ref.tensors[j].name for j in chosen[:layers]]
    prefix, label_of = short_names(names)
    fig = figure(figsize=(9, 2.4 * len(names)), dpi=100)
    axes = fig.subplots(len(names), 2, squeeze=False)
    invariant = {label: log.scale_invariant() for label, log in logs.items()}
    for label, log in logs.items():
        index = {t.name: j for j, t in enumerate(log.tensors)}
        wd = summary["test"][label]["weight_decay"]
        color = _LABEL_COLORS[label]
        for row, layer in enumerate(names):
            j = index.get(layer)
            if j is None:
                continue
            steps = log.steps
            norm_ax, angle_ax = axes[row]
            norm_ax.plot(steps, log.values[:, j, 1], color=color, lw=1.2,
                         label=f"{titles[label]} (wd {wd:.3g})")  # fmt: skip
            pred = log.pred_norm[:, j]
            if np.any(np.isfinite(pred)) and invariant[label][j] is not False:
                norm_ax.plot(steps, pred, "--", color=color, lw=0.9)  # where the theory holds
            angle_ax.plot(steps, log.angle[:, j], color=color, lw=0.8, alpha=0.8)
            if np.any(log.decay[:, j] > 0):
                angle_ax.plot(steps, log.pred_angle[:, j], "--", color=color, lw=0.9)
            norm_ax.set_ylabel(label_of[layer], fontsize=8)
    for row in range(len(names)):
        for col in range(2):
            ax = axes[row][col]
            ax.set_yscale("log")
            if col == 0:  # norms span about a decade: plain numbers (angles span many)
                _plain_ticks(ax.yaxis)
            ax.tick_params(which="both", labelsize=7)
            if row == len(names) - 1:
                ax.set_xlabel("step", fontsize=8)
    axes[0][0].set_title("weight norm (dashed: equilibrium norm, scale-invariant layers)",
                         fontsize=9)  # fmt: skip
    axes[0][1].set_title("angular update, rad/step (dashed: prediction)", fontsize=9)
    if prefix:  # said once, above the plots, rather than in every row's label
        fig.suptitle(f"layers under {prefix}", fontsize=9)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.tight_layout()
    if handles:  # under the plots, where it covers no curve
        fig.legend(handles, labels, fontsize=7, loc="upper center", ncol=3, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))  # fmt: skip
    return _png(fig)


def render_html(
    summary: Mapping[str, Any],
    png: bytes,
    curves: bytes | None = None,
    monitor: bytes | None = None,
    study: str | None = None,
) -> str:
    """A self-contained page: the recommendation, the plot (embedded), the table, the
    settings; titled by the ``study`` (the run folder's name), the task below it."""
    image_html = ""
    if png:
        image = base64.b64encode(png).decode("ascii")
        image_html = f'<img alt="CV loss against weight decay" src="data:image/png;base64,{image}">'
    state = summary.get("state", "complete")
    state_html = "" if state == "complete" else f'<p class="state">State: {html.escape(state)}</p>'
    verdict = "".join(
        f"<p>{html.escape(line)}</p>" for line in str(summary["verdict"]).split("\n") if line
    )
    answer = render.to_html(render.answer(summary)) if "best_lr" in summary else ""
    return _PAGE.format(
        style=_STYLE,
        title=html.escape(study or summary["task"]),
        task=html.escape(
            summary["task"] + (f": {summary['description']}" if summary.get("description") else "")
        ),
        state_html=state_html,
        answer=answer,
        verdict=verdict,
        image_html=image_html,
        curves_html=_curves_html(curves),
        candidates=_candidates_html(summary),
        metric_name=html.escape(summary["metric_name"]),
        test_rows=_test_rows(summary),
        monitor_html=_monitor_html(summary, monitor),
        audit_html=_audit_html(summary),
        notes_html=_notes_html(summary),
        how=html.escape(
            f"device {summary.get('device', '?')}, precision {summary.get('precision', 'fp32')}, "
            f"vectorize {summary.get('vectorize', '?')}"
        ),
        settings=_settings_html(summary),
    )


def _candidates_html(summary: Mapping[str, Any]) -> str:
    """The candidates' table, the one the terminal shows (:func:`render.candidate_table`)."""
    return '<div class="wide">' + render.candidate_table(summary).html() + "</div>"


def _command_line() -> str:
    """This process's command line, with the storage URL (which may hold a password) left
    out, and any URL's user and password or ``password=`` value masked elsewhere."""
    import re
    import shlex
    import sys

    args, hide = [], False
    for arg in sys.argv:
        if hide:
            args.append("***")
        elif arg.startswith("--storage="):
            args.append("--storage=***")
        else:
            masked = re.sub(r"(password=)[^&\s]*", r"\1***", arg, flags=re.I)
            args.append(re.sub(r"(\w+://)\S*@", r"\1***@", masked))
        hide = arg == "--storage"
    return shlex.join(args)


def _settings_html(summary: Mapping[str, Any]) -> str:
    """The study's settings as a two-column table, with when it was made and by which
    version of adamwkit."""
    from .._device import resolve_device
    from .._version import __version__

    try:
        device = str(resolve_device(summary.get("device", "auto")))
    except (ValueError, RuntimeError):  # a device this process cannot see
        device = str(summary.get("device", "-"))
    seconds = summary.get("seconds")
    rows = [("created", summary.get("created", "-")),
            ("run time", f"{seconds:.1f} s" if seconds else "-"), ("device", device),
            ("adamwkit", __version__), ("command", _command_line())]  # fmt: skip
    rows += [(k, "-" if v is None else json.dumps(v) if isinstance(v, (list, dict)) else str(v))
             for k, v in (summary.get("settings") or {}).items()]  # fmt: skip
    body = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(v)}</td></tr>" for k, v in rows
    )
    return f'<table class="settings">{body}</table>'


#: The style both pages share (a column that fits 700 px, plots scaled to it, the answer).
_STYLE = """body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 60em;
       color: #222; padding: 0 1em; }
img { max-width: 100%; height: auto; }
.answer { font-size: 1.1em; background: #eef6ee; padding: 0.2em 0.8em; border-radius: 6px; }
.answer code { font-size: 1em; }
.verdict { background: #f6f8fa; padding: 0.2em 0.8em; border-radius: 6px; }"""

#: The report page; :func:`render_html` fills in the fields (each already HTML).
_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>adamwkit tune: {title}</title>
<style>
{style}
.wide {{ overflow-x: auto; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; white-space: nowrap; }}
td:last-child {{ text-align: left; }}
th {{ background: #f3f3f3; }}
tr.marked td {{ font-weight: bold; }}
p.note {{ color: #555; font-size: 0.9em; margin: 0.2em 0; }}
.settings th {{ text-align: left; }}
.settings td {{ text-align: left; white-space: normal; word-break: break-word; }}
.state {{ font-weight: bold; color: #a40000; }}
</style></head><body>
<h1>Weight decay for {title}</h1>
<p class="task">{task}</p>
{state_html}
<div class="answer">{answer}</div>
<div class="verdict">{verdict}</div>
{image_html}
{curves_html}
<h2>Candidates</h2>
{candidates}
<h2>Held-out test split</h2>
<table><tr><th>refit with</th><th>weight decay</th><th>test loss</th>
<th>{metric_name}</th></tr>{test_rows}</table>
{monitor_html}
{audit_html}
{notes_html}
<h2>Settings</h2><p>{how}</p>{settings}
</body></html>
"""


def _test_rows(summary: Mapping[str, Any]) -> str:
    """The rows of the held-out test table: one per refit."""
    e = html.escape
    return "".join(
        f"<tr><td>{e(name)}</td><td>{sig(t['weight_decay'])}</td><td>{sig(t['loss'])}</td>"
        f"<td>{sig(t.get('metric'))}</td></tr>"
        for name, t in summary.get("test", {}).items()
    )


def _audit_html(summary: Mapping[str, Any]) -> str:
    """The Optimizer audit section: what was audited, the findings (each code with its
    text and tensors), then a row per tensor, as :func:`adamwkit.render.audit_report`
    shows them; nothing when no audit was captured (a failed one is a note)."""
    from .first_audit import audit_blocks

    d = summary.get("audit")
    if not d:
        return ""
    e = html.escape
    captured = e(str(d.get("captured") or "-"))
    head = f'<h2>Optimizer audit</h2><p class="note">Audited: {captured}.</p>'
    try:
        blocks = audit_blocks(d)
    except Exception as err:  # a stored audit this version cannot lay out: say so
        why = e(f"{type(err).__name__}: {err}")
        return head + f'<p class="note">The audit could not be shown ({why}).</p>'
    lines = [b for b in blocks if isinstance(b, render.Line)]
    tables = [b for b in blocks if not isinstance(b, render.Line)]
    return head + render.to_html(lines) + '<div class="wide">' + render.to_html(tables) + "</div>"


def _notes_html(summary: Mapping[str, Any]) -> str:
    """The Notes section, or nothing when there are none."""
    items = "".join(f"<li>{html.escape(n)}</li>" for n in summary.get("notes") or ())
    return f"<h2>Notes</h2><ul>{items}</ul>" if items else ""


def _curves_html(curves: bytes | None) -> str:
    """The Learning curves section with its plot embedded, or nothing without one."""
    if curves is None:
        return ""
    data = base64.b64encode(curves).decode("ascii")
    return (
        '<h2>Learning curves</h2><img alt="validation loss against step" '
        f'src="data:image/png;base64,{data}">'
    )


def _monitor_html(summary: Mapping[str, Any], monitor: bytes | None) -> str:
    """The refits' monitor section (its plot embedded, then each refit's verdicts on its
    decayed layers), or nothing when the refits were not monitored."""
    if monitor is None:
        return ""
    e = html.escape
    data = base64.b64encode(monitor).decode("ascii")
    test = summary.get("test") or {}
    same = test.get("one_se", {}).get("monitor") == test.get("best", {}).get("monitor")
    labels = [m for m in MONITORED if not (m == "one_se" and same)]  # one refit, listed once
    items = "".join(
        f"<li><b>{e('best = one_se' if label == 'best' and same else label)}</b>, "
        f"{e(v['layer'])}: {e(v['text'])}</li>"
        for label in labels
        for v in test.get(label, {}).get("verdicts", [])
        if v["code"] != "no-decay"
    )
    return (
        "<h2>Weight norms and rotation in the refits</h2>"
        '<img alt="weight norms and angular updates against their equilibrium" '
        f'src="data:image/png;base64,{data}"><ul>{items}</ul>'
    )


def write_probe_report(run_dir: Path, result: Any) -> Path:
    """The probe's page (``report.html`` of its run folder, atomically): its value and
    range to copy, the verdict, and the zero-decay curve with the turning epoch marked."""
    fig = figure(figsize=(7.5, 4.2), dpi=110)
    ax = fig.subplots()
    epochs = [t * result.epochs / result.steps[-1] for t in result.steps]
    ax.plot(epochs, result.curve, "o-", ms=3, color="C0", label="no weight decay (mean of folds)")
    if result.turned:
        ax.axvline(result.turn, color="C3", lw=1.2, label=f"turns at epoch {result.turn:.3g}")
        ax.axvline(result.tau_epoch, color="0.4", ls="-.", lw=1.2,
                   label=f"tau_epoch {result.tau_epoch:.3g} (the suggestion)")  # fmt: skip
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss")
    if all(v > 0 for v in result.curve):
        ax.set_yscale("log")
        _plain_ticks(ax.yaxis)
    ax.set_title(f"{result.task}: the validation loss without weight decay", fontsize=10)
    _legend_below(ax, 3, 8)
    image = base64.b64encode(_png(fig)).decode("ascii")
    e = html.escape
    lr = result.lr
    code = (f"AdamW(param_groups(model, weight_decay={result.value:.4g}), lr={lr:g}, "
            f"decay_scale={result.decay_scale!r})")  # fmt: skip
    page = _PROBE_PAGE.format(
        style=_STYLE, study=e(run_dir.name), task=e(result.task), value=f"{result.value:.4g}",
        low=f"{result.low_value:.4g}", high=f"{result.high_value:.4g}", code=e(code),
        verdict=e(result.verdict()), image=image,
        rule=e({"probe": "the probe's law (tau_epoch = c x turning epoch)",
                "calibrated": "the calibrated rule (the curve did not turn)",
                "finetune": "the fine-tuning rule"}.get(result.rule, result.rule)),
    )  # fmt: skip
    return atomic_write(run_dir / "report.html", page)


#: The probe's page; :func:`write_probe_report` fills in the fields.
_PROBE_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>adamwkit probe: {study}</title>
<style>
{style}
</style></head><body>
<h1>Weight decay for {study}: the probe</h1>
<p>{task}</p>
<div class="answer"><p><b>Try</b> weight_decay={value} (80% range {low} to {high}), from
{rule}:</p><p><code>{code}</code></p></div>
<div class="verdict"><p>{verdict}</p></div>
<img alt="validation loss without weight decay, with its turning epoch"
 src="data:image/png;base64,{image}">
</body></html>
"""


def write_reports(run_dir: Path, summary: Mapping[str, Any]) -> dict[str, Path]:
    """Write summary.json, cv_curve.png, learning_curves.png (when runs reported curves),
    monitor.png (when the refits were monitored) and report.html into ``run_dir``, each
    atomically. A plot that cannot be drawn is left out with a note (in ``notes``), so a
    study can always report. ``summary`` is read, not changed: the notes are added to a
    copy, which summary.json and report.html are written from."""
    written = dict(summary)
    notes = list(written.get("notes") or [])
    written["notes"] = notes + [n for n in off_scale(written) if n not in notes]
    png = _draw("cv_curve.png", plot_cv_curve, written) or b""
    curves = _draw("learning_curves.png", plot_learning_curves, written)
    monitor = _draw("monitor.png", lambda s: plot_monitor(run_dir, s), written)
    paths = {
        "summary": atomic_write(run_dir / "summary.json", json.dumps(json_safe(written), indent=2)),
    }
    if png:
        paths["plot"] = atomic_write(run_dir / "cv_curve.png", png)
    if curves is not None:
        paths["curves"] = atomic_write(run_dir / "learning_curves.png", curves)
    if monitor is not None:
        paths["monitor"] = atomic_write(run_dir / "monitor.png", monitor)
    paths["report"] = atomic_write(
        run_dir / "report.html", render_html(written, png, curves, monitor, run_dir.name)
    )
    return paths


def _draw(
    name: str, plot: Callable[[dict[str, Any]], bytes | None], summary: dict[str, Any]
) -> bytes | None:
    """``plot(summary)``, or ``None`` with a note in ``summary`` (the copy
    :func:`write_reports` writes) when it fails."""
    try:
        return plot(summary)
    except Exception as err:  # matplotlib's limits: the report goes out without this plot
        summary["notes"].append(f"{name} could not be drawn ({type(err).__name__}: {err})")
        return None


def begin(run_dir: Path, study: str) -> Path:
    """Mark the run folder's report as not current: summary.json says ``"state":
    "running"`` and the report and plots of an earlier run are removed (atomically)."""
    path = atomic_write(run_dir / "summary.json", _state_json(study, "running", ""))
    for name in REPORT_FILES:
        _remove(run_dir / name)
    return path


def write_stopped(run_dir: Path, study: str, reason: str) -> None:
    """After Ctrl-C or an error: summary.json says ``"state": "interrupted"`` and why, and
    no report of an earlier run is left; never raises (the original error matters more).
    When even that cannot be written, summary.json is removed."""
    try:
        atomic_write(run_dir / "summary.json", _state_json(study, "interrupted", reason))
        for name in REPORT_FILES:
            _remove(run_dir / name)
    except OSError:
        (run_dir / "summary.json").unlink(missing_ok=True)


def _state_json(study: str, state: str, reason: str) -> str:
    when = time.strftime("%Y-%m-%dT%H:%M:%S")
    body: dict[str, Any] = {"state": state, "study": study, "created": when}
    if reason:
        body["reason"] = reason
    return json.dumps(body, indent=2)


def _remove(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as err:
        raise WriteFailed(err.errno, err.strerror or str(err), str(path)) from err
