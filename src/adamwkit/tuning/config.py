"""A tune run's settings as frozen dataclasses: what the study is, and how this process runs it.

- :class:`StudySpec` is the study's identity and protocol: every worker sharing a study
  must agree on all of it (the source, its data, folds, epochs, lr, the candidates, the
  seed...). It is stored in the study when it is created; a rerun or another worker with
  a different value is refused, naming the setting.
- :class:`TuneConfig` adds how this process takes part: where the study lives, the run
  folder, the device and workers, stacking, the test refits, progress bars. These may
  differ between workers.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["StudySpec", "TuneConfig"]


@dataclass(frozen=True)
class StudySpec:
    """The study's identity: settings every worker on it must share."""

    source: str
    data: str
    folds: int
    epochs: int | None
    lr: float
    batch_size: int | None
    decay_scale: str
    schedule: str | None
    seed: int
    test_fraction: float
    sampler: str
    grid: tuple[float, ...]
    lr_grid: tuple[float, ...] | None = None
    range: tuple[float, float] | None = None
    trials: int | None = None
    lr_range: tuple[float, float] | None = None
    precision: str = "fp32"
    repeats: int = 1
    prune_chance: bool = True
    pretrained: bool = False
    adapters: bool = False
    val_fraction: float | None = None
    budget: int | None = None
    #: the splits this study's runs use, in order (``None``: every fold and repeat); a
    #: budget's rounds run a candidate on one fold at a time
    runs_on: tuple[int, ...] | None = None

    def attrs(self) -> dict[str, Any]:
        """The spec as stored in the study (JSON values: tuples become lists)."""
        result: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(self)))
        return result

    def mismatch(self, stored: dict[str, Any]) -> str | None:
        """Why a study stored with ``stored`` is not this one, or ``None``."""
        if stored and "source" not in stored:
            return (
                "was made by an earlier version of adamwkit, whose studies this one cannot resume"
            )
        defaults = {f.name: f.default for f in dataclasses.fields(self)}
        for key, value in self.attrs().items():
            if key not in stored and value == defaults.get(key):
                continue  # a setting added later, at its default: the same study
            if stored.get(key) != value:
                return f"was made with {key}={stored.get(key)!r}, not {value!r}"
        return None

    @property
    def runs(self) -> int:
        """Runs per candidate: the folds, times the repeats of the CV (or ``runs_on``)."""
        return len(self.runs_on) if self.runs_on is not None else self.folds * self.repeats

    @property
    def n_candidates(self) -> int:
        """Candidates the study will try: the grid (times the lr grid), or ``trials``."""
        if self.sampler == "grid":
            return len(self.grid) * len(self.lr_grid or (self.lr,))
        return int(self.trials or 0)


@dataclass(frozen=True)
class TuneConfig:
    """How this process runs the study ``spec``: storage, run folder, device, workers.

    ``trial_timeout`` (seconds a run may take, ``None``: no limit) is this process's
    policy, not the study's identity: workers may differ, and a rerun may change it.
    ``busy_cores`` (measured when the command starts), ``stack_refusal`` (why a task's
    model cannot be stacked, known before any run) and ``max_members`` (members trained
    together within ``max_memory``) are filled in by ``tune`` before the workers start.
    """

    spec: StudySpec
    enqueue: tuple[dict[str, float], ...]
    study: str
    run_dir: Path
    storage: str | None = None
    storage_retry: float = 120.0
    prune: bool = False
    heartbeat_interval: int = 10
    test: bool = True
    progress: bool = True
    vectorize: str = "auto"
    max_memory: float | None = None
    workers: int = 1
    device: str = "auto"
    devices: tuple[int, ...] | None = None  # --gpus: worker i (or local rank i) on devices[i]
    threads: int | None = None
    extend: int = 2
    busy_cores: float = 0.0
    stack_refusal: str | None = None
    max_members: int = 128
    trial_timeout: float | None = None

    @property
    def total_runs(self) -> int:
        """Candidates x folds x repeats (a budget: the budget)."""
        if self.spec.budget is not None:
            return self.spec.budget
        return self.spec.n_candidates * self.spec.runs
