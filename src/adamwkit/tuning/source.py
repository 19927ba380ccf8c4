"""What a tune run trains: a Task or an objective, prepared the same way in every worker.

:class:`Source` holds the arguments as given (picklable, so worker processes can rebuild
it); :func:`prepare` loads the task or objective and checks its examples into a
:class:`Prepared`; :func:`fingerprint` hashes the examples so that workers with different
data cannot share a study.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .._checks import ArgumentError, check_whole
from ..tasks import Task
from .objective import Objective, TaskObjective, resolve_source

__all__ = ["Prepared", "Source", "fingerprint", "prepare"]


@dataclass(frozen=True)
class Source:
    """The arguments that say what to train, as given (picklable, for worker processes)."""

    objective: Any
    examples: int | None = None
    data: Any = None
    labels: Any = None
    epochs: int | None = None
    batch_size: int | None = None


@dataclass
class Prepared:
    """What a worker trains: the objective, the examples' count and labels, a description."""

    name: str
    task: Task | None
    objective: Objective
    n: int
    labels: np.ndarray | None
    data: Any
    description: str
    metric_name: str


def prepare(source: Source) -> Prepared:
    """Load the task or objective and check its examples (see :func:`tune`)."""
    task, fn, name = resolve_source(source.objective)
    if task is not None:
        for arg in ("examples", "data", "labels"):
            if getattr(source, arg) is not None:
                raise ValueError(
                    f"{arg} is invalid with task={task.name!r}: a Task brings its own data "
                    "(examples, data and labels go with an objective)"
                )
        epochs = check_whole("epochs", task.epochs if source.epochs is None else source.epochs, 1)
        bs = check_whole(
            "batch_size", task.batch_size if source.batch_size is None else source.batch_size, 1
        )
        return Prepared(
            name=name,
            task=task,
            objective=TaskObjective(task, epochs=epochs, batch_size=bs),
            n=len(task),
            labels=task.label_array(),
            data=None,
            description=task.description,
            metric_name=task.metric_name,
        )
    assert fn is not None
    n = _examples(source.examples, source.data)
    labels = None
    if source.labels is not None:
        labels = np.asarray(
            source.labels.detach().cpu()
            if isinstance(source.labels, torch.Tensor)
            else source.labels
        )
        if labels.ndim != 1 or len(labels) != n:
            raise ValueError(
                f"labels has shape {labels.shape}: expected one label per example ({n})"
            )
    doc = (getattr(fn, "__doc__", None) or "").strip().splitlines()
    return Prepared(
        name=name,
        task=None,
        objective=fn,
        n=n,
        labels=labels,
        data=source.data,
        description=doc[0] if doc else "",
        metric_name="metric",
    )


def _examples(examples: int | None, data: Any) -> int:
    if data is not None:
        try:
            n = len(data)
        except TypeError:
            raise ValueError(
                f"data={type(data).__name__} is invalid: expected something with a length "
                "(a Dataset, a tensor, a list)"
            ) from None
        if examples is not None and check_whole("examples", examples, 2) != n:
            raise ValueError(f"examples={examples!r} is invalid: data has {n} examples")
        return n
    if examples is None:
        raise ArgumentError(
            "examples is needed with an objective: how many examples the folds split "
            "(or pass data=...)",
            "examples",
        )
    return check_whole("examples", examples, 2)


def fingerprint(prep: Prepared) -> str:
    """A hash of the examples, so workers with different data cannot share a study."""
    h = hashlib.sha256(str(prep.n).encode())
    parts: list[Any] = []
    if prep.task is not None and isinstance(prep.task.data, tuple):
        parts = list(prep.task.data)
    elif isinstance(prep.data, (torch.Tensor, np.ndarray)):
        parts = [prep.data]
    elif isinstance(prep.data, tuple) and all(isinstance(p, torch.Tensor) for p in prep.data):
        parts = list(prep.data)
    elif prep.data is not None:
        h.update(type(prep.data).__qualname__.encode())
    for part in parts:
        h.update(torch.as_tensor(part).detach().cpu().contiguous().numpy().tobytes())
    if prep.labels is not None:
        h.update(np.ascontiguousarray(prep.labels).tobytes())
    return h.hexdigest()[:16]
