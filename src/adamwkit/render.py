"""Every result of ``suggest`` and ``explain`` rendered in one place.

:func:`suggestion` and :func:`explanation` turn a result into :data:`Block` s: lines of text
with a style, and tables. :func:`plain` makes them the ``str()`` of the result;
:func:`to_rich` prints them on a ``rich`` console (the ``adamwkit`` command). Both show
the same content, so a fact added here appears in the API and the CLI alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._format import fmt

if TYPE_CHECKING:
    from .explain import Explanation
    from .suggest import Suggestion

__all__ = ["Block", "Line", "Table", "explanation", "plain", "suggestion", "to_rich"]


@dataclass(frozen=True)
class Line:
    """A line of text; ``label`` is shown in bold before it. ``style``: ``""``, ``"dim"``,
    ``"good"`` (the answer), ``"warn"``."""

    text: str
    label: str = ""
    style: str = ""


@dataclass(frozen=True)
class Table:
    """Rows under column names (``header=False``: a key/value list); row ``marked`` is
    the one the result uses."""

    title: str
    columns: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    marked: int | None = None
    header: bool = True


Block = Line | Table


def _range(sug: Suggestion) -> str:
    if sug.low is None or sug.high is None:
        return ""
    return f"; 80% range {fmt(sug.low_value)} to {fmt(sug.high_value)}"


def suggestion(sug: Suggestion) -> list[Block]:
    """The blocks of a :class:`~adamwkit.Suggestion`."""
    out: list[Block] = [
        Line(sug.setup.describe(), style="dim"),
        Line(
            f"Suggested weight decay: {fmt(sug.value)} with decay_scale={sug.decay_scale!r} "
            f"(PyTorch convention {fmt(sug.weight_decay)}, independent "
            f"{fmt(sug.weight_decay_independent)}){_range(sug)}",
            style="good",
        ),
        Line(sug.reason, label=f"Why {sug.rule}:"),
        Line(
            f"tau_iter {fmt(sug.tau_iter)} steps, tau_epoch {fmt(sug.tau_epoch)} epochs, "
            f"tau_run {fmt(sug.tau_run)} of the run; angular update at equilibrium "
            f"{fmt(sug.angular_update)} rad/step.",
            label="Timescales:",
        ),
    ]
    rows = []
    marked = None
    for i, r in enumerate(sug.rules):
        if r.name == sug.rule:
            marked = i
        if not r.ran:
            rows.append((r.name, "skipped", "", "", "", r.fitted_on))
            continue
        rows.append(
            (
                r.name,
                fmt(r.weight_decay),
                fmt(r.weight_decay_independent),
                fmt(r.tau_epoch),
                fmt(r.tau_run),
                r.fitted_on,
            )
        )
    out.append(
        Table(
            "Every rule, side by side (> the one used)",
            ("rule", "weight_decay (torch)", "independent", "tau_epoch", "tau_run", "fitted on"),
            tuple(rows),
            marked,
        )
    )
    for r in sug.rules:
        note = f"{r.note}. " if r.note else ""
        out.append(Line(f"{r.name}: {note}{r.source}", style="dim"))
    for r in sug.rules:
        if r.name != sug.rule:
            out += [Line(w, label=f"warning ({r.name}):", style="warn") for w in r.warnings]
    out += [Line(w, label="warning:", style="warn") for w in sug.warnings]
    out += [Line(n, label="note:", style="dim") for n in sug.notes]
    out.append(
        Line(
            f"AdamW(param_groups(model, weight_decay={fmt(sug.value)}), "
            f"lr={fmt(sug.setup.lr)}, decay_scale={sug.decay_scale!r}); verify it with "
            "adamwkit tune.",
            label="Use it:",
        )
    )
    return out


def explanation(ex: Explanation) -> list[Block]:
    """The blocks of an :class:`~adamwkit.Explanation`."""
    rem = ex.weights_remaining
    out: list[Block] = [
        Line(f"{ex.setup.describe()}; {ex.schedule}", style="dim"),
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
            ),
            header=False,
        ),
        Line(ex.verdict, label="Verdict:"),
    ]
    s = ex.suggestion
    if s is not None:
        where = ""
        if s.low is not None and s.high is not None:
            lo, hi = s.low, s.high
            inside = lo <= ex.weight_decay <= hi
            where = (
                f"; {fmt(ex.weight_decay)} (PyTorch convention) is "
                + ("inside" if inside else "outside")
                + f" its 80% range {fmt(lo)} to {fmt(hi)}"
            )
        out.append(
            Line(
                f"adamwkit suggest would use {fmt(s.value)} for decay_scale={s.decay_scale!r} "
                f"({s.rule}, tau_epoch {fmt(s.tau_epoch)}){where}."
            )
        )
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
            )
        )
    out += [Line(n, label="note:", style="dim") for n in ex.notes]
    return out


def plain(blocks: Sequence[Block]) -> str:
    """The blocks as plain text (tables as aligned columns)."""
    lines: list[str] = []
    for b in blocks:
        if isinstance(b, Line):
            lines.append(f"{b.label} {b.text}" if b.label else b.text)
            continue
        if b.title:
            lines.append(b.title)
        rows = [b.columns, *b.rows] if b.header else list(b.rows)
        widths = [max(len(r[i]) for r in rows) for i in range(len(b.columns))]
        for k, r in enumerate(rows):
            mark = "> " if b.marked is not None and k - int(b.header) == b.marked else "  "
            cells = [
                c.ljust(w) if i == 0 or i == len(r) - 1 else c.rjust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            ]
            lines.append((mark + "  ".join(cells)).rstrip())
    return "\n".join(lines)


_STYLES = {"dim": "dim", "good": "bold green", "warn": "yellow", "": ""}


def to_rich(blocks: Sequence[Block], console: Any) -> None:
    """Print the blocks on a ``rich`` console."""
    from rich.markup import escape
    from rich.table import Table as RichTable

    for b in blocks:
        if isinstance(b, Line):
            style = _STYLES[b.style]
            label = f"[bold]{escape(b.label)}[/bold] " if b.label else ""
            if b.style == "warn" and b.label:
                label = f"[yellow]{escape(b.label)}[/yellow] "
                style = ""
            text = escape(b.text)
            console.print(f"{label}[{style}]{text}[/{style}]" if style else f"{label}{text}")
            continue
        if b.header:
            table = RichTable(title=b.title or None, title_justify="left")
            for i, col in enumerate(b.columns):
                left = i == 0 or i == len(b.columns) - 1
                table.add_column(col, justify="left" if left else "right")
        else:
            table = RichTable(show_header=False, box=None, padding=(0, 2))
            table.add_column(style="bold")
            table.add_column()
        for k, row in enumerate(b.rows):
            cells = [escape(c) for c in row]
            if b.marked is not None:
                cells[0] = f"[bold]> {cells[0]}[/bold]" if k == b.marked else f"  {cells[0]}"
            table.add_row(*cells)
        console.print(table)
