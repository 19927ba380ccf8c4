"""Every result of adamwkit rendered in one place, as blocks.

Each result gives its :data:`Block` s (lines of text with a style, and tables) once, from a
function here: :func:`suggestion`, :func:`explanation`, :func:`tune_summary` (and
:func:`no_result`, the one line of a run with nothing to recommend),
:func:`probe_result`, :func:`transfer_result`, :func:`checkpoint_report` (``adamwkit
inspect``) and :func:`monitor_log` (``adamwkit explain --run``). :func:`plain` makes them
the ``str()`` of the result; :func:`to_rich` prints them on a ``rich`` console (the
``adamwkit`` command). Both show the same content, so a fact added here appears in the
API and the CLI alike.

This module is a leaf: it imports the standard library, :mod:`adamwkit._format` and (in
:func:`to_rich`) ``rich``, and reads the results by their attributes, so the result
classes import it and it never imports them. Text that comes from a file (a checkpoint's
tensor names, a monitor log) is made safe for a terminal by the ``printable`` function the
caller passes (:func:`adamwkit._safe_load.printable`).
"""

from __future__ import annotations

import dataclasses
import math
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._format import fmt, plus_minus, sig, splits

if TYPE_CHECKING:
    from .explain import Explanation, RunExplanation
    from .suggest import Suggestion
    from .tuning.probe import ProbeResult
    from .tuning.transfer import TransferResult

__all__ = [
    "Block",
    "Line",
    "Rename",
    "Table",
    "answer",
    "audit_report",
    "candidate_table",
    "checkpoint_report",
    "explanation",
    "monitor_log",
    "no_result",
    "plain",
    "probe_result",
    "suggestion",
    "to_html",
    "to_rich",
    "transfer_result",
    "tune_summary",
]

#: Maps the argument names in a run's messages (notes, a candidate's reason) to how the
#: reader names them: the command line passes one that writes ``trial_timeout`` as
#: ``--trial-timeout``.
Rename = Callable[[str], str]


def _same(text: str) -> str:
    return text


@dataclass(frozen=True)
class Line:
    """A line of text; ``label`` is shown in bold before it. ``style``: ``""``, ``"dim"``,
    ``"good"`` (the answer), ``"warn"``, ``"alert"`` (an answer to read with care)."""

    text: str
    label: str = ""
    style: str = ""


@dataclass(frozen=True)
class Table:
    """Rows under column names (``header=False``: a key/value list); row ``marked`` is
    the one the result uses. ``align``: one letter per column, ``"l"`` or ``"r"``
    (``None``: the first and last columns left, the others right). ``drop`` names the
    columns that may be left out, first first, when the rows are wider than the screen
    (:meth:`fit`); ``notes`` are lines under the table (the long reasons its cells point
    to as ``[1]``, ``[2]``...)."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    marked: int | None = None
    header: bool = True
    align: str | None = None
    drop: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    shorten: str | None = None

    def left(self, i: int) -> bool:
        """Whether column ``i`` is aligned left."""
        if self.align is not None:
            return self.align[i] == "l"
        return i == 0 or i == len(self.columns) - 1

    def width(self) -> int:
        """The characters a row takes (two spaces between columns, two before the first)."""
        rows = [self.columns, *self.rows] if self.header else list(self.rows)
        widths = [max((len(r[i]) for r in rows), default=0) for i in range(len(self.columns))]
        return 2 + sum(widths) + 2 * (len(widths) - 1)

    def without(self, column: str) -> Table:
        """The table without ``column`` (as it is, less the wish to drop it, when it has
        no such column)."""
        if column not in self.columns:
            return dataclasses.replace(self, drop=tuple(d for d in self.drop if d != column))
        i = self.columns.index(column)
        keep = [j for j in range(len(self.columns)) if j != i]
        return Table(
            self.title,
            tuple(self.columns[j] for j in keep),
            tuple(tuple(r[j] for j in keep) for r in self.rows),
            self.marked,
            self.header,
            None if self.align is None else "".join(self.align[j] for j in keep),
            tuple(d for d in self.drop if d != column),
            self.notes,
            None if self.shorten == column else self.shorten,
        )

    def fit(self, width: int | None) -> Table:
        """The table with the columns of ``drop`` left out, in order, until a row fits in
        ``width`` characters (``None``: as it is). A table that still does not fit keeps
        its other columns: its rows then wrap."""
        out = self
        while width is not None and out.width() > width and out.drop:
            out = out.without(out.drop[0])
        if width is None or out.width() <= width or out.shorten not in out.columns:
            return out
        i = out.columns.index(out.shorten)  # names cut in the middle: ``bert.enc…Norm.weight``
        longest = max(len(r[i]) for r in out.rows)
        keep = max(16, longest - (out.width() - width))
        rows = tuple((*r[:i], _middle(r[i], keep), *r[i + 1 :]) for r in out.rows)
        return dataclasses.replace(out, rows=rows)

    def lines(self) -> list[tuple[str, str]]:
        """The table as aligned text: ``(line, kind)`` with kind ``"title"``,
        ``"header"``, ``"row"``, ``"marked"`` or ``"note"``."""
        out: list[tuple[str, str]] = [(self.title, "title")] if self.title else []
        rows = [self.columns, *self.rows] if self.header else list(self.rows)
        widths = [max(len(r[i]) for r in rows) for i in range(len(self.columns))]
        for k, r in enumerate(rows):
            row = k - int(self.header)
            kind = "header" if row < 0 else ("marked" if row == self.marked else "row")
            mark = "> " if kind == "marked" else "  "
            cells = [
                c.ljust(w) if self.left(i) else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            out.append(((mark + "  ".join(cells)).rstrip(), kind))
        out += [(note, "note") for note in self.notes]
        return out

    def html(self) -> str:
        """The table as HTML: a header cell for every column, the marked row in bold, and
        the columns ``align`` puts on the left, other than the last, aligned left."""
        from html import escape

        # a left column before the last says so: the report right-aligns all but the last
        last = len(self.columns) - 1
        left = [' style="text-align:left"' if self.align and self.align[i] == "l" and i < last
                else "" for i in range(len(self.columns))]  # fmt: skip
        head = (
            "".join(f"<th{left[i]}>{escape(c)}</th>" for i, c in enumerate(self.columns))
            if self.header
            else ""
        )
        marked = ' class="marked"'
        body = "".join(
            f"<tr{marked if k == self.marked else ''}>"
            + "".join(f"<td{left[i]}>{escape(c)}</td>" for i, c in enumerate(r))
            + "</tr>"
            for k, r in enumerate(self.rows)
        )
        notes = "".join(f'<p class="note">{escape(n)}</p>' for n in self.notes)
        return f"<table><tr>{head}</tr>{body}</table>{notes}"


Block = Line | Table


def _middle(text: str, size: int) -> str:
    """``text`` in at most ``size`` characters, cut in the middle with an ellipsis."""
    if len(text) <= size:
        return text
    head = (size - 1) // 2
    return text[:head] + "…" + text[len(text) - (size - 1 - head) :]


def _range(sug: Suggestion) -> str:
    if sug.low is None or sug.high is None:
        return ""
    what = "fine-tuning range" if sug.rule == "finetune" else "80% range"
    return f"; {what} {fmt(sug.low_value)} to {fmt(sug.high_value)}"


def _decay(d: float | None) -> str:
    """A total decay D as a table cell: how much decay alone takes off the weights."""
    if d is None:
        return "-"
    return f"{100 * -math.expm1(-d):.3g}% (D {fmt(d)})"


def _run_decay(sug: Suggestion) -> Line | None:
    """The total decay of the value and of its range ends, and what D is taken at."""
    if sug.decays_by is None:
        return None
    text = f"{fmt(sug.value)} decays the weights by {sug.decays_by} over the run"
    lo, hi = sug.low_decays_by, sug.high_decays_by
    if lo is not None and hi is not None:
        text += f"; the range ends {fmt(sug.low_value)} by {lo} and {fmt(sug.high_value)} by {hi}"
    steps = sug.setup.total_steps or 0
    text += (
        f". D = sum over steps of lr_t * wd, taken at the peak lr {fmt(sug.setup.lr)} for all "
        f"{steps:,.0f} steps (the schedule is not known: a decaying one lowers D by its mean "
        "multiplier, about 0.5 for cosine or linear decay to zero)"
    )
    if sug.setup.finetune:
        text += f"; a fine-tune is never proposed a value outside the bound {sug.bound_text}"
    return Line(text + ".", label="Decay over the run:")


RULE_COLUMNS = ("rule", "assumes", "weight_decay (torch)", "independent",
                "decays the weights by", "tau_epoch")  # fmt: skip


def _rule_row(r: Any) -> tuple[str, ...]:
    if not r.ran:
        return (r.name, r.assumes, "skipped", "", "", "")
    decay = _decay(r.total_decay) + (": blocked" if r.blocked else "")
    return (r.name, r.assumes, fmt(r.weight_decay), fmt(r.weight_decay_independent), decay,
            fmt(r.tau_epoch))  # fmt: skip


def _use_it(sug: Suggestion) -> Line:
    if not sug.usable:
        return Line(
            f"{fmt(sug.value)} assumes training {sug.regime_label} and would "
            f"decay a pretrained model's weights by more than the fine-tune bound D <= "
            f"{fmt(sug.d_max_finetune)}; pass --pretrained (pretrained=True) for the "
            "fine-tuning value, or check the regime.",
            label="No copy-paste line:",
            style="alert",
        )
    return Line(
        f"AdamW(param_groups(model, weight_decay={fmt(sug.value)}), "
        f"lr={fmt(sug.setup.lr)}, decay_scale={sug.decay_scale!r}); verify it with "
        "adamwkit tune.",
        label="Use it:",
    )


def suggestion(sug: Suggestion) -> list[Block]:
    """The blocks of a :class:`~adamwkit.Suggestion`: each value with the regime it
    assumes and how much decay alone takes off the weights over the run; no "Use it" line
    for a value flagged unusable (``sug.usable``)."""
    out: list[Block] = [
        Line(sug.setup.describe(), style="dim"),
        Line(sug.regime_label, label="Regime:"),
        Line(
            f"Suggested weight decay: {fmt(sug.value)} with decay_scale={sug.decay_scale!r} "
            f"(PyTorch convention {fmt(sug.weight_decay)}, independent "
            f"{fmt(sug.weight_decay_independent)}){_range(sug)}; assumes {sug.regime_label}",
            style="good" if sug.usable else "alert",
        ),
    ]
    run_decay = _run_decay(sug)
    if run_decay is not None:
        out.append(run_decay)
    out += [
        Line(sug.reason, label=f"Why {sug.rule}:"),
        Line(
            f"tau_iter {fmt(sug.tau_iter)} steps, tau_epoch {fmt(sug.tau_epoch)} epochs, "
            f"tau_run {fmt(sug.tau_run)} of the run; angular update at equilibrium "
            f"{fmt(sug.angular_update)} rad/step.",
            label="Timescales:",
        ),
    ]
    marked = next((i for i, r in enumerate(sug.rules) if r.name == sug.rule), None)
    out.append(
        Table(
            "Every rule, side by side (> the one used; decays: what decay alone takes off the "
            "weights over the run at the peak lr)",
            RULE_COLUMNS,
            tuple(_rule_row(r) for r in sug.rules),
            marked,
            align="llrrrr",
            drop=("independent", "assumes", "tau_epoch"),
        )
    )
    for r in sug.rules:
        note = f"{r.note}. " if r.note else ""
        out.append(Line(f"{r.name}: {note}fitted on {r.fitted_on}. {r.source}", style="dim"))
    for r in sug.rules:
        if r.name == sug.rule:
            continue
        if r.blocked:
            out.append(Line(r.blocked, label=f"blocked ({r.name}):", style="warn"))
        else:
            out += [Line(w, label=f"warning ({r.name}):", style="warn") for w in r.warnings]
    out += [Line(w, label="warning:", style="warn") for w in sug.warnings]
    out += [Line(n, label="note:", style="dim") for n in sug.notes]
    out.append(_use_it(sug))
    return out


def _suggested(ex: Explanation) -> Line | None:
    """What suggest would use, with the regime it assumes, its total decay and range."""
    s = ex.suggestion
    if s is None:
        return None
    decay = f"; decays the weights by {s.decays_by} at the peak lr" if s.decays_by else ""
    where = ""
    if s.low is not None and s.high is not None:
        lo, hi = s.low, s.high
        inside = lo <= ex.weight_decay <= hi
        what = "fine-tuning range" if s.rule == "finetune" else "80% range"
        where = (
            f"; {fmt(ex.weight_decay)} (PyTorch convention) is "
            + ("inside" if inside else "outside")
            + f" its {what} {fmt(lo)} to {fmt(hi)}"
        )
        if s.low_decays_by and s.high_decays_by:
            where += f" (which decay the weights by {s.low_decays_by} and {s.high_decays_by})"
    caution = "" if s.usable else " (not to copy: see the note on fine-tunes)"
    return Line(
        f"adamwkit suggest would use {fmt(s.value)} for decay_scale={s.decay_scale!r} "
        f"({s.rule}, assumes {s.regime_label}, tau_epoch {fmt(s.tau_epoch)}{decay}){caution}"
        f"{where}."
    )


def explanation(ex: Explanation) -> list[Block]:
    """The blocks of an :class:`~adamwkit.Explanation`: the value's timescales, the regime
    it is read in, and how much decay alone takes off the weights over the run (at the
    schedule's mean lr when given, else the peak lr), and the same for what suggest would use."""
    rem = ex.weights_remaining
    decay = "-" if ex.decays_by is None else f"{ex.decays_by}, at {ex.lr_basis}"
    out: list[Block] = [
        Line(f"{ex.setup.describe()}; {ex.schedule}", style="dim"),
        Line(ex.regime_label, label="Regime:"),
        Table(
            "",
            ("", ""),
            (
                ("weight_decay (torch)", fmt(ex.weight_decay)),
                ("weight_decay (independent)", fmt(ex.weight_decay_independent)),
                ("tau_iter", f"{fmt(ex.tau_iter)} steps"),
                ("tau_epoch", f"{fmt(ex.tau_epoch)} epochs"),
                ("tau_run", f"{fmt(ex.tau_run)} of the run"),
                ("equilibrium RMS weight", fmt(ex.equilibrium_rms)),
                ("angular update", f"{fmt(ex.angular_update)} rad/step"),
                ("initial weights left", "-" if rem is None else f"{100 * rem:.3g}%"),
                ("decays the weights by", decay),
            ),
            header=False,
        ),
        Line(ex.verdict, label="Verdict:"),
    ]
    suggested = _suggested(ex)
    if suggested is not None:
        out.append(suggested)
    if ex.layers:
        out.append(
            Table(
                "Decayed tensors against their equilibrium norm (Kosson et al.)",
                ("tensor", "elements", "weight_decay", "norm now", "equilibrium norm"),
                tuple(
                    (
                        layer.name,
                        f"{layer.numel:,}",
                        fmt(layer.weight_decay),
                        fmt(layer.norm),
                        fmt(layer.equilibrium_norm),
                    )
                    for layer in ex.layers
                ),
                drop=("elements", "weight_decay"),
            )
        )
    out += [Line(n, label="note:", style="dim") for n in ex.notes]
    return out


# ---------------------------------------------------------------------------- tune


def _metric_mean(c: Mapping[str, Any]) -> float | None:
    if c.get("metric") is not None:
        return float(c["metric"])
    values = [v for v in c.get("fold_metrics") or () if v is not None and v == v]
    return sum(values) / len(values) if values else None


def _choice(c: Mapping[str, Any], s: Mapping[str, Any]) -> str:
    """``"best"``, ``"one-SE"`` or both for the chosen candidates, else ``""``."""
    if c["lr"] != s["best_lr"]:
        return ""
    marks = [m for m, key in (("best", "best_weight_decay"), ("one-SE", "one_se_weight_decay"))
             if c["weight_decay"] == s[key]]  # fmt: skip
    return ", ".join(marks)


#: The columns of the candidates' table left out first when it is wider than the screen.
TUNE_DROP = ("tau_epoch", "lr", "metric")


def candidate_table(summary: Mapping[str, Any], rename: Rename | None = None) -> Table:
    """The candidates of a tune summary, a row each: weight decay, lr (when several were
    tried), tau_epoch, the held-out loss and its paired difference to the best (each with
    its standard error), the mean of the objective's metric (named as it named it), and a
    state that says best, one-SE, or why a candidate stopped (its reason as a numbered
    note under the table). Columns in :data:`TUNE_DROP` give way, in that order, on a
    narrow screen. The terminal and the HTML report both show this table."""
    r = rename or _same
    s = summary
    cands = s["candidates"]
    several_lrs = len({c["lr"] for c in cands}) > 1
    metric = s.get("metric_name") or "metric"
    has_metric = any(_metric_mean(c) is not None for c in cands)
    one = s["folds"] * (s.get("repeats") or 1) == 1
    notes: list[str] = []
    rows = []
    for c in cands:
        choice = _choice(c, s)
        state = "" if c["state"] == "complete" else c["state"]
        if c.get("reason"):
            text = f"{c['state']}: {r(c['reason'])}"
            if text not in notes:
                notes.append(text)
            state += f" [{notes.index(text) + 1}]"
        best = choice.startswith("best")
        diff = "" if best else plus_minus(c["paired_diff"], c["paired_sem"], 3, signed=True)
        row = [sig(c["weight_decay"])]
        row += [sig(c["lr"], 3)] if several_lrs else []
        row += [sig(c["tau_epoch"], 3), plus_minus(c["mean"], c["sem"]), diff]
        row += [sig(_metric_mean(c))] if has_metric else []
        row.append(", ".join(x for x in (choice, state) if x))
        rows.append(tuple(row))
    columns = ["weight_decay", *(["lr"] if several_lrs else []), "tau_epoch",
               "val loss ± SE" if one else "CV loss ± SE", "vs best ± SE",
               *([metric] if has_metric else []), "state"]  # fmt: skip
    drop = tuple(metric if d == "metric" else d for d in TUNE_DROP)
    epochs = f", {s['epochs']} epochs" if s.get("epochs") else ""
    return Table(
        f"{s['task']}: {splits(s['folds'], s.get('repeats') or 1)}{epochs}",
        tuple(columns),
        tuple(rows),
        align="r" * (len(columns) - 1) + "l",
        drop=tuple(d for d in drop if d in columns),
        notes=tuple(f"[{i}] {n}" for i, n in enumerate(notes, start=1)),
    )


def answer(summary: Mapping[str, Any]) -> list[Line]:
    """The answer of a tune summary, to copy: the weight decay in the run's convention with
    its lr and the ``AdamW(param_groups(...))`` line, then the one-SE alternative and the
    test metric beside it; nothing when no weight decay is named."""
    s = summary
    best = s.get("best_weight_decay")
    if best is None or s.get("learned") is False:
        return []
    lr, scale = s.get("best_lr") or s["lr"], s["decay_scale"]
    convention = "PyTorch's convention" if scale == "lr" else "the AdamW paper's convention"
    out = [
        Line(
            f"weight_decay={sig(best)} ({convention}) with lr={sig(lr)}:",
            label="Use",
            style="alert" if s.get("flat") else "good",
        ),
        Line(
            f"    AdamW(param_groups(model, weight_decay={sig(best)}), lr={sig(lr)}, "
            f"decay_scale={scale!r})",
            style="good",
        ),
    ]
    extra = []
    one_se = s.get("one_se_weight_decay")
    if one_se is not None and one_se != best:
        extra.append(f"one-SE alternative {sig(one_se)} (more decay, within one SE)")
    test = s.get("test") or {}
    metric = s.get("metric_name") or "metric"
    t_best, t_zero = test.get("best", {}), test.get("zero", {})
    if t_best.get("metric") is not None:
        zero = f" (zero decay: {sig(t_zero['metric'])})" if t_zero.get("metric") is not None else ""
        extra.append(f"test {metric} {sig(t_best['metric'])}{zero}")
    elif t_best.get("loss") is not None:
        zero = f" (zero decay: {sig(t_zero['loss'])})" if t_zero.get("loss") is not None else ""
        extra.append(f"test loss {sig(t_best['loss'])}{zero}")
    if extra:
        out.append(Line("    " + "; ".join(extra), style="dim"))
    n = sum(1 for c in s.get("candidates", ()) if c.get("state") in ("complete", "pruned"))
    how = splits(s["folds"], s.get("repeats") or 1)
    why = f"the lowest held-out loss of {n} candidates ({how})"
    if s.get("flat"):
        why += ", but weight decay barely matters here"
    out.append(Line(f"    why: {why}", style="dim"))
    return out


def tune_summary(
    summary: Mapping[str, Any],
    paths: Mapping[str, Any] | None = None,
    rename: Rename | None = None,
) -> list[Block]:
    """The blocks of a :func:`adamwkit.tune` summary (``TuneResult.summary``, or
    summary.json read back): every candidate (:func:`candidate_table`), the verdict a line
    per fact, the notes, where the report is, and last the answer to copy
    (:func:`answer`)."""
    r = rename or _same
    s = summary
    out: list[Block] = [candidate_table(s, r)]
    style = "alert" if s["flat"] or s.get("learned") is False else ""
    out += [Line(r(line), style=style) for line in str(s["verdict"]).split("\n") if line]
    out += [Line(r(note), label="note:", style="dim") for note in s.get("notes") or ()]
    out.append(Line(f"vectorize: {s['vectorize']}", style="dim"))
    if paths:
        out.append(Line(f"Report: {paths['report']}  (summary: {paths['summary']})"))
    return out + answer(s)


def no_result(summary: Mapping[str, Any], report: Any, rename: Rename | None = None) -> str:
    """Why a tune summary names no weight decay, in one line: the model did not learn, or
    no candidate finished every fold."""
    r = rename or _same
    if summary.get("learned") is False:
        first = str(summary.get("verdict", "")).split(": ")[0]
        return f"{first[0].lower()}{first[1:]}; weight decay cannot be judged (report: {report})"
    states: dict[str, int] = {}
    for c in summary["candidates"]:
        states[c["state"]] = states.get(c["state"], 0) + 1
    counts = ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
    reasons = sorted({c["reason"] for c in summary["candidates"] if c.get("reason")})
    why = f" (first reason: {r(reasons[0])})" if reasons else ""
    return (
        f"no candidate finished every fold: {counts or 'no candidates'}{why}; nothing to "
        f"recommend (report: {report})"
    )


def probe_result(result: ProbeResult, rename: Rename | None = None) -> list[Block]:
    """The blocks of a :class:`~adamwkit.tuning.probe.ProbeResult`: its verdict, where
    the probe is, and the confirming tune's blocks when there was one."""
    out: list[Block] = [Line(result.verdict(), style="good")]
    if result.run_dir is not None:
        out.append(Line(f"Probe: {result.run_dir}"))
    c = result.confirm
    if c is not None:
        out += tune_summary(c.summary, c.paths, rename)
    return out


def transfer_result(result: TransferResult) -> list[Block]:
    """The blocks of a :class:`~adamwkit.tuning.transfer.TransferResult`: each subset's
    optimum, the extrapolation's verdict, and where the plot is."""
    rows = tuple(
        (
            f"{p.fraction:g}",
            f"{p.n_train:,}",
            fmt(p.tau_star),
            f"{fmt(p.band[0])} to {fmt(p.band[1])}",
            f"{p.best_weight_decay:.4g}",
        )
        for p in result.points
    )
    out: list[Block] = [
        Table(
            "Cross-validated subsets",
            ("fraction", "N (fold)", "tau_epoch*", "one-SE band", "best weight_decay"),
            rows,
            align="rrrrr",
        ),
        Line(result.verdict(), style="good"),
    ]
    paths = result.paths
    if "plot" in paths and "summary" in paths:
        out.append(Line(f"Plot: {paths['plot']}  (summary: {paths['summary']})"))
    return out


# ---------------------------------------------------------------------------- files read


Printable = Callable[[str, int], str]


def _tensor_row(r: Any, dtypes: bool, eq: bool, shown: Printable) -> tuple[str, ...]:
    """One tensor of a checkpoint report as a table row."""
    cells = [shown(r.name, 120), "x".join(map(str, r.shape)) or "scalar"]
    cells += [r.dtype] if dtypes else []
    cells += [fmt(r.norm), fmt(r.rms), "yes" if r.decays else shown(f"no: {r.rule}", 120)]
    if eq:
        ratio = r.norm_ratio
        cells += [
            fmt(r.equilibrium_norm) if r.equilibrium_norm else "-",
            f"{ratio:.2f}" if ratio is not None else "-",
        ]
    return tuple(cells)


def _optimizer_table(groups: Sequence[Mapping[str, Any]], shown: Printable) -> Table:
    """A checkpoint's optimizer groups."""
    rows = tuple(
        (
            str(g["group"]),
            str(g["params"]),
            "-" if g["lr"] is None else fmt(g["lr"]),
            "-" if g["weight_decay"] is None else fmt(g["weight_decay"]),
            shown(g["decay_scale"], 120),
            "-" if g["step"] is None else str(g["step"]),
            g["convention"],
        )
        for g in groups
    )
    columns = ("group", "params", "lr", "weight_decay", "decay_scale", "step", "saved by")
    return Table("Optimizer groups", columns, rows, align="lllllll",
                 drop=("saved by", "decay_scale", "step"))  # fmt: skip


def checkpoint_report(
    info: Mapping[str, Any], printable: Printable, *, show_all: bool = False
) -> list[Block]:
    """The blocks of :func:`adamwkit.checkpoint.inspect_checkpoint`'s report: the file,
    its tensors (the first 40 unless ``show_all``), the optimizer's groups, the run's
    counters and the notes. ``printable(text, limit)`` makes the file's strings safe for a
    terminal."""
    rows = info["tensors"]
    share = 100.0 * info["decayed_parameters"] / max(1, info["parameters"])
    out: list[Block] = [
        Line(
            f"({info['format']}): {len(rows)} tensors, {info['parameters']:,} parameters; "
            f"{info['decayed_parameters']:,} ({share:.1f}%) would decay under param_groups "
            "(by name and ndim)",
            label=printable(info["path"], 500),
        )
    ]
    eq = info["lr"] is not None
    dtypes = sorted({r.dtype for r in rows})
    several = len(dtypes) > 1
    columns = ("tensor", "shape", *(("dtype",) if several else ()), "norm", "RMS", "decays")
    columns += ("eq. norm", "norm/eq") if eq else ()
    shown_rows = rows if show_all else rows[:40]
    out.append(
        Table(
            "" if several or not dtypes else f"dtype {dtypes[0]}",
            columns,
            tuple(_tensor_row(r, several, eq, printable) for r in shown_rows),
            align="ll" + ("l" if several else "") + "rrl" + ("rr" if eq else ""),
            drop=("norm/eq", "eq. norm", "RMS", "dtype", "shape"),
            shorten="tensor",
        )
    )
    if len(shown_rows) < len(rows):
        more = len(rows) - len(shown_rows)
        out.append(Line(f"{more} more tensors: --all shows them", style="dim"))
    if info["optimizer"] is not None:
        out.append(_optimizer_table(info["optimizer"], printable))
    if info["extra"]:
        out.append(Line("Run: " + ", ".join(f"{k} {v}" for k, v in info["extra"].items())))
    out += [Line(f"note: {printable(n, 500)}", style="dim") for n in info["notes"]]
    if eq:
        out.append(
            Line(
                "norm / eq. far above 1: the decay had not yet pulled the matrix to its "
                "equilibrium (Kosson et al., arXiv:2305.17212); near 1: in equilibrium",
                style="dim",
            )
        )
    return out


MONITOR_COLUMNS = ("layer", "step", "norm", "equilibrium norm", "ratio", "angle rad/step",
                   "predicted angle", "scale-invariant")  # fmt: skip


def monitor_log(run: RunExplanation, printable: Printable) -> list[Block]:
    """The blocks of a monitored run (:func:`adamwkit.explain.explain_run`): each layer's
    last numbers against Kosson et al.'s equilibrium, and the verdicts. ``printable(text,
    limit)`` makes the log's strings safe for a terminal."""
    out: list[Block] = [
        Line(
            f"{printable(run.run, 200)}: {printable(run.optimizer, 200)}, {run.steps:,} steps, "
            f"recorded every {run.every}",
            style="dim",
        )
    ]
    keys = ("norm", "pred_norm", "norm_ratio", "angle", "pred_angle")
    applies = {True: "yes", False: "no: reference", None: "unknown"}

    def row(r: Mapping[str, Any]) -> tuple[str, ...]:
        step = "-" if r.get("step") is None else f"{r['step']:,}"
        values = ("-" if r.get(k) is None else fmt(r[k]) for k in keys)
        invariant = applies.get(r.get("scale_invariant"), "unknown")
        return (printable(r["layer"], 200), step, *values, invariant)

    out.append(
        Table(
            "Each layer where its verdict judges it (its last record at 10% of the peak lr or "
            "more), against Kosson et al.'s equilibrium, which holds for scale-invariant "
            "weights (a normalisation follows them)",
            MONITOR_COLUMNS,
            tuple(row(r) for r in run.layers),
            align="lrrrrrrl",
            drop=("predicted angle", "angle rad/step", "equilibrium norm", "step"),
            shorten="layer",
        )
    )
    for v in run.verdicts:
        if v["code"] != "no-decay":
            out.append(Line(printable(v["text"], 5000), label=f"{printable(v['layer'], 200)}:"))
    quiet = [v["layer"] for v in run.verdicts if v["code"] == "no-decay"]
    if quiet:
        out.append(Line(f"not decayed: {printable(', '.join(quiet), 200)}", style="dim"))
    return out


def _audit_row(r: Any, prefix: str) -> tuple[str, ...]:
    shape = "x".join(map(str, r.shape)) or "scalar"
    lost = "-" if r.lost_from is None else f"{r.lost_from:,}"
    return (r.name[len(prefix):], shape, r.dtype, str(r.group), r.decay_kind,
            fmt(r.weight_decay), fmt(r.per_step), fmt(r.tau_iter), fmt(r.over_run),
            fmt(r.norm), fmt(r.equilibrium_norm), lost, _short_rule(r.rule))  # fmt: skip


def _short_rule(rule: str) -> str:
    """``"no decay: norm layer (LayerNorm)"`` -> ``"no: LayerNorm"``; ``"decay"`` stays."""
    if not rule.startswith("no decay: "):
        return rule
    why = rule.removeprefix("no decay: ")
    if why.startswith("norm layer (") and why.endswith(")"):
        why = why.removeprefix("norm layer (")[:-1]
    return f"no: {why}"


def _common_prefix(names: Sequence[str]) -> str:
    """The dotted prefix every name shares (``"transformer."``), or ``""``."""
    parts = [n.split(".")[:-1] for n in names]
    if len(parts) < 2:
        return ""
    shared = []
    for pieces in zip(*parts, strict=False):
        if len(set(pieces)) != 1:
            break
        shared.append(pieces[0])
    while shared and all(n.split(".")[len(shared)].isdigit() for n in names):
        shared.pop()  # keep a layer's container with its index: "h.0.attn", not "0.attn"
    return "".join(f"{p}." for p in shared)


def audit_report(a: Any) -> list[Block]:
    """The blocks of an :class:`adamwkit.audit.Audit`: a row per tensor, then each finding
    (its severity, code, tensors and what to do), then what the audit could not follow.
    A prefix every tensor's name shares is said once, in the title."""
    prefix = _common_prefix([r.name for r in a.rows])
    steps = f", {a.total_steps:,} steps" if a.total_steps else ""
    under = f", names under {prefix}" if prefix else ""
    out: list[Block] = [
        Table(
            f"{a.optimizer}: {len(a.rows)} tensors{steps}{under}",
            AUDIT_COLUMNS,
            tuple(_audit_row(r, prefix) for r in a.rows),
            align="llllrrrrrrrrl",
            drop=(
                "dtype",
                "group",
                "shape",
                "weight_decay",
                "lost from",
                "norm",
                "eq. norm",
                "tau (steps)",
                "per step",
            ),
            shorten="tensor",
        )
    ]
    serious = [f for f in a.findings if f.severity != "info"]
    if not serious:
        out.append(Line("no mistake found: the optimizer decays what param_groups would",
                        style="good"))  # fmt: skip
    for f in a.findings:
        names = [t[len(prefix) :] if t.startswith(prefix) else t for t in f.tensors]
        more = f" and {len(names) - 5} more" if len(names) > 5 else ""
        style = {"error": "alert", "warning": "warn"}.get(f.severity, "dim")
        text = f"{f.text} ({', '.join(names[:5])}{more})"
        out.append(Line(text, label=f"{f.severity} [{f.code}]:", style=style))
    out += [Line(n, label="note:", style="dim") for n in a.notes]
    return out


#: The audit table's columns: per step and over the run are the decoupled decay's share
#: (over the run: the total decay D); tau the timescale 1/(lr wd) in steps; eq. norm the
#: norm a scale-invariant tensor settles at; lost from the step from which a bf16/fp16
#: tensor's decay rounds away.
AUDIT_COLUMNS = ("tensor", "shape", "dtype", "group", "decay", "weight_decay", "per step",
                 "tau (steps)", "over the run", "norm", "eq. norm", "lost from",
                 "param_groups")  # fmt: skip


def plain(blocks: Sequence[Block], width: int | None = None) -> str:
    """The blocks as plain text (tables as aligned columns, fitted to ``width``)."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Line):
            lines.append(f"{b.label} {b.text}" if b.label else b.text)
            continue
        lines += [line for line, _ in b.fit(width).lines()]
    return "\n".join(lines)


def to_html(blocks: Sequence[Block]) -> str:
    """The blocks as an HTML fragment (a notebook's ``_repr_html_``): a paragraph per line,
    each table with a header cell per column."""
    from html import escape

    out = []
    for b in blocks:
        if isinstance(b, Line):
            label = f"<b>{escape(b.label)}</b> " if b.label else ""
            text = escape(b.text)
            text = f"<code>{text.strip()}</code>" if b.text.startswith("    ") else text
            out.append(f"<p>{label}{text}</p>")
        else:
            title = f"<p><b>{escape(b.title)}</b></p>" if b.title else ""
            out.append(title + b.html())
    return "<div>" + "".join(out) + "</div>"


_STYLES = {"dim": "dim", "good": "bold green", "warn": "yellow", "alert": "bold yellow", "": ""}


_TABLE_STYLES = {"title": "bold", "header": "bold", "marked": "bold green", "row": "",
                 "note": "dim"}  # fmt: skip


def to_rich(blocks: Sequence[Block], console: Any) -> None:
    """Print the blocks on a ``rich`` console. Every string goes in as ``rich.text.Text``,
    never as markup: a name read from a file (``[red]x[/red]``, ``:fire:``) shows as
    written, neither styled nor turned into an emoji. A table is fitted to the console's
    width (:meth:`Table.fit`) and printed a row per line, on a terminal or piped; an
    indented line wraps under its indent."""
    from rich.text import Text

    for b in blocks:
        if isinstance(b, Line):
            style = _STYLES[b.style]
            parts: list[tuple[str, str]] = []
            if b.label:
                parts.append((f"{b.label} ", "yellow" if b.style == "warn" else "bold"))
                style = "" if b.style == "warn" else style
            indent = len(b.text) - len(b.text.lstrip(" "))
            if indent and not b.label and "\n" not in b.text:  # wraps under its indent
                text = textwrap.fill(b.text, width=max(console.width, indent + 20),
                                     subsequent_indent=" " * indent, break_on_hyphens=False,
                                     break_long_words=False)  # fmt: skip
                console.print(Text(text, style=style), soft_wrap=True)
                continue
            parts.append((b.text, style))
            console.print(Text.assemble(*parts))
            continue
        for line, kind in b.fit(console.width).lines():
            # titles and notes wrap at words; a row stays one line when it fits
            console.print(Text(line, style=_TABLE_STYLES[kind]),
                          soft_wrap=kind not in ("title", "note"))  # fmt: skip
