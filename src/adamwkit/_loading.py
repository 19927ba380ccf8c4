"""Load a user's object named ``module:attribute`` (``mypkg.tasks:cifar_task``)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any


def load_object(spec: str, argument: str = "spec") -> Any:
    """Import ``module`` and return ``module.attribute`` (dots walk nested attributes).

    The current directory is searched first, as ``python -m`` does. Raises ``ValueError``
    naming ``argument`` and what failed: the form, a module that does not exist, or the
    attribute. An error raised while the module imports is a bug in it, and keeps its
    traceback.
    """
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"{argument}={spec!r} is invalid: expected 'module:attribute', "
            "e.g. 'mypkg.tasks:my_task'"
        )
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        missing = err.name or ""
        if not (module_name == missing or module_name.startswith(missing + ".")):
            raise  # the module exists and imports something missing: the user's to see
        raise ValueError(
            f"{argument}={spec!r} is invalid: importing {module_name!r} failed: "
            f"{type(err).__name__}: {err}"
        ) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(
                f"{argument}={spec!r} is invalid: {module_name!r} has no attribute {attr!r}"
            ) from None
    return obj
