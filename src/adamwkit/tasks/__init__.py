"""Tasks: what ``fit`` and ``tune`` train, as a dataclass a user fills in.

A :class:`Task` says how to build a fresh model, what data to train on (tensors or a torch
``Dataset``), the loss, an optional metric, labels for stratified folds, and the default
training settings. Built-in tasks: ``digits`` (an over-parameterised MLP on scikit-learn's
bundled digits) and ``charlm`` (a small character-level transformer on the docstrings of
Python's standard library). A user's task loads as ``module:attribute``.
"""

from __future__ import annotations

from collections.abc import Callable

# Task and its helpers live in .base (which the built-in tasks import); they are re-exported
# here under their long-standing names, adamwkit.tasks.Task and so on.
from .base import Data as Data
from .base import Task as Task
from .base import accuracy as accuracy
from .base import cross_entropy as cross_entropy

__all__ = ["BUILTIN_TASKS", "Task", "get_task"]


def _digits() -> Task:
    from .digits import digits_task

    return digits_task()


def _charlm() -> Task:
    from .charlm import charlm_task

    return charlm_task()


BUILTIN_TASKS: dict[str, Callable[[], Task]] = {"digits": _digits, "charlm": _charlm}


def get_task(spec: str | Task) -> Task:
    """A built-in task by name (``digits``, ``charlm``), or a user's ``module:attribute``.

    The attribute may be a :class:`Task` or a function returning one.
    """
    if isinstance(spec, Task):
        return spec
    if spec in BUILTIN_TASKS:
        return BUILTIN_TASKS[spec]()
    if ":" not in str(spec):
        known = ", ".join(BUILTIN_TASKS)
        raise ValueError(
            f"task={spec!r} is invalid: expected a built-in task ({known}) or "
            "'module:attribute' naming a Task"
        )
    from .._loading import load_object

    obj = load_object(spec, "task")
    if not isinstance(obj, Task) and callable(obj):
        try:
            obj = obj()
        except Exception as err:
            raise ValueError(
                f"task={spec!r} is invalid: calling it with no arguments failed: "
                f"{type(err).__name__}: {err}"
            ) from err
    if not isinstance(obj, Task):
        raise ValueError(
            f"task={spec!r} is invalid: expected an adamwkit.tasks.Task or a function "
            f"returning one, got {type(obj).__name__}"
        )
    return obj
