"""What a tune run trains: a Task or an objective, prepared the same way in every worker.

:class:`Source` holds the arguments as given (picklable, so worker processes can rebuild
it); :func:`prepare` loads the task or objective and checks its examples into a
:class:`Prepared`; :func:`fingerprint` hashes the examples so that workers with different
data cannot share a study.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .._checks import ArgumentError, check_whole
from ..tasks import Task
from . import cv
from .objective import Objective, TaskObjective, resolve_source

__all__ = ["Prepared", "Source", "fingerprint", "make_splits", "prepare", "validation_spec"]


@dataclass(frozen=True)
class Source:
    """The arguments that say what to train, as given (picklable, for worker processes)."""

    objective: Any
    examples: int | None = None
    data: Any = None
    labels: Any = None
    epochs: int | None = None
    batch_size: int | None = None
    validation: Any = None


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
    #: ``validation=`` as indices into ``data`` (one fixed split of it), or ``None``
    val_idx: np.ndarray | None = None
    #: ``validation=`` as a dataset of its own (scored on, never trained on), or ``None``
    validation: Any = None


def prepare(source: Source) -> Prepared:
    """Load the task or objective and check its examples (see :func:`tune`)."""
    task, fn, name = resolve_source(source.objective)
    if task is not None:
        for arg in ("examples", "data", "labels", "validation"):
            if getattr(source, arg) is not None:
                raise ValueError(
                    f"{arg} is invalid with task={task.name!r}: a Task brings its own data "
                    "(examples, data, labels and validation go with an objective)"
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
    val_idx, validation = _validation(source.validation, source.data, n)
    return Prepared(
        name=name,
        task=None,
        objective=fn,
        n=n,
        labels=labels,
        data=source.data,
        description=doc[0] if doc else "",
        metric_name="metric",
        val_idx=val_idx,
        validation=validation,
    )


def make_splits(
    prep: Prepared,
    *,
    test_fraction: float,
    folds: int,
    seed: int,
    repeats: int = 1,
    val_fraction: float | None = None,
) -> cv.Splits:
    """The test split and the runs' (train, validation) splits, the same in every worker:
    ``validation=`` as given (one run; the test split, if any, from the other examples);
    else k folds, or for ``folds=1`` a random validation split of ``val_fraction``."""
    if prep.val_idx is None and prep.validation is None:
        return cv.Splits.make(prep.n, prep.labels, test_fraction, folds, seed, repeats,
                              0.2 if val_fraction is None else val_fraction)  # fmt: skip
    rest = np.arange(prep.n)
    if prep.val_idx is not None:
        rest = np.setdiff1d(rest, prep.val_idx)
    labels = None if prep.labels is None else prep.labels[rest]
    pool, test = cv.holdout_split(len(rest), labels, test_fraction, seed)
    val = prep.val_idx if prep.val_idx is not None else np.arange(len(prep.validation))
    return cv.Splits(rest[pool], rest[test], [(rest[pool], val)])


def _validation(value: Any, data: Any, n: int) -> tuple[np.ndarray | None, Any]:
    """``validation=`` as (indices into the examples, ``None``) when it is a 1-D array,
    tensor or list of whole numbers, else as (``None``, a dataset of its own); text is read
    by :func:`validation_spec` first."""
    if value is None:
        return None, None
    if isinstance(value, str):
        value = validation_spec(value, n)
    indices = _as_indices(value)
    if indices is None:
        try:
            size = len(value)
        except TypeError:
            raise ArgumentError(
                f"validation={type(value).__name__} is invalid: expected indices into data "
                "or a dataset with a length",
                "validation",
            ) from None
        if size < 1:
            raise ArgumentError("validation is empty: expected at least one example", "validation")
        return None, value
    if len(indices) < 1 or len(indices) >= n:
        raise ArgumentError(
            f"validation has {len(indices)} indices: expected from 1 to {n - 1} of the "
            f"{n} examples (the rest train)",
            "validation",
        )
    if indices.min() < 0 or indices.max() >= n or len(np.unique(indices)) != len(indices):
        raise ArgumentError(
            f"validation is invalid: expected distinct indices in [0, {n - 1}]", "validation"
        )
    return np.sort(indices), None


#: ``validation="START:STOP"``: a range of example indices.
_RANGE = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def validation_spec(spec: str, n: int) -> Any:
    """``validation=`` given as text (the command line's ``--validation``): ``"START:STOP"``
    (the examples ``START`` to ``STOP - 1``), a file of indices (``.npy``, or text with
    whole numbers separated by commas or white space), or ``"module:attribute"`` naming
    indices or a dataset of its own."""
    match = _RANGE.match(spec)
    if match:
        start, stop = int(match[1]), int(match[2])
        if not 0 <= start < stop <= n:
            raise ArgumentError(
                f"validation={spec!r} is invalid: expected START:STOP with "
                f"0 <= START < STOP <= {n} (the examples)",
                "validation",
            )
        return np.arange(start, stop)
    path = Path(spec).expanduser()
    if path.is_file():
        return _indices_file(path, spec)
    if ":" in spec:
        from .._loading import load_object

        return load_object(spec, "validation")
    raise ArgumentError(
        f"validation={spec!r} is invalid: expected START:STOP, a file of indices (.npy or "
        "text) or module:attribute",
        "validation",
    )


def _indices_file(path: Path, spec: str) -> np.ndarray:
    """The whole numbers in a ``.npy`` or text file of indices."""
    try:
        if path.suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        else:
            text = path.read_text(encoding="utf-8").replace(",", " ").split()
            values = np.array([int(t) for t in text], dtype=np.int64)
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ArgumentError(
            f"validation={spec!r} is invalid: the file does not hold whole numbers ({err})",
            "validation",
        ) from None
    values = np.asarray(values).reshape(-1)
    if values.dtype.kind not in "iu":
        raise ArgumentError(
            f"validation={spec!r} is invalid: the file holds {values.dtype} values, "
            "expected whole numbers (example indices)",
            "validation",
        )
    return values.astype(np.int64)


def _as_indices(value: Any) -> np.ndarray | None:
    """``value`` as an integer index array when it is one (1-D, whole numbers), else None."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, list) and value and all(isinstance(v, (int, np.integer)) for v in value):
        value = np.asarray(value)
    if isinstance(value, np.ndarray) and value.ndim == 1 and value.dtype.kind in "iu":
        return value.astype(np.int64)
    return None


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
    if prep.val_idx is not None:
        h.update(b"validation indices" + prep.val_idx.tobytes())
    elif prep.validation is not None:
        v = prep.validation
        h.update(f"validation {type(v).__qualname__} {len(v)}".encode())
        if isinstance(v, (torch.Tensor, np.ndarray)):
            h.update(torch.as_tensor(v).detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]
