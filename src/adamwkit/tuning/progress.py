"""Progress bars of ``tune``, on stderr: one over candidates x folds (then over the refits),
one over the epochs of the run in hand, and one-line messages above them."""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["Progress"]


class Progress:
    """The bars of one tune call; every method does nothing when disabled."""

    def __init__(self, enabled: bool, total: int, title: str) -> None:
        self._p: Any = None
        self.enabled = enabled
        self._run_text = ""
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )
        from rich.table import Column

        whole = Column(no_wrap=True, min_width=7)  # times never cut to "0:00:…"
        self._p = RichProgress(
            TextColumn("{task.description}",
                       table_column=Column(ratio=1, no_wrap=True, overflow="ellipsis")),
            BarColumn(bar_width=16),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            TimeElapsedColumn(table_column=whole),
            TimeRemainingColumn(table_column=whole),
            console=Console(stderr=True),
            transient=False,
            expand=True,
        )  # fmt: skip
        self._p.start()
        self._all = self._p.add_task(f"{title} (candidates x folds)", total=total)
        self._run = self._p.add_task("", total=1, visible=False)

    def say(self, text: str) -> None:
        """A line above the bars (or on stderr when they are off)."""
        if self._p is not None:
            self._p.console.print(text, markup=False, highlight=False)
        elif self.enabled:
            print(text, file=sys.stderr)

    def update(self, done: int) -> None:
        if self._p is not None:
            self._p.update(self._all, completed=done)

    def phase(self, description: str, total: int) -> None:
        """Start a new main bar (the refits after the CV)."""
        if self._p is not None:
            self._p.update(self._all, completed=self._p.tasks[self._all].total)
            self._all = self._p.add_task(description, total=total)

    def run(self, description: str, epochs: int | None) -> None:
        """The run in hand: a bar over its epochs, or a line for its reports."""
        if self._p is not None:
            self._run_text = f"  {description}"
            self._p.update(self._run, description=self._run_text, total=epochs, completed=0,
                           visible=True)  # fmt: skip

    def epoch(self, epoch: int, epochs: int) -> None:
        if self._p is not None:
            self._p.update(self._run, completed=epoch, total=epochs)

    def note(self, text: str) -> None:
        """What the run in hand last reported."""
        if self._p is not None:
            self._p.update(self._run, description=f"{self._run_text} ({text})")

    def reported(self, step: int, value: float) -> None:
        """An objective's report at ``step``: the bar counts its steps while they fit the
        epochs it was given (beyond them it counts reports, with no total)."""
        if self._p is None:
            return
        task = self._p.tasks[self._run]
        if task.total is not None and 0 <= step <= task.total:
            self._p.update(self._run, completed=step)
        else:
            self._p.update(self._run, total=None, completed=task.completed + 1)
        self.note(f"step {step}: {value:.4g}")

    def close(self) -> None:
        if self._p is not None:
            self._p.update(self._run, visible=False)
            self._p.stop()
            self._p = None
