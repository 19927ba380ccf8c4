"""Optional dependencies: a missing one is one line that names the pip command."""

from __future__ import annotations

import importlib.util

__all__ = ["MissingExtra", "require"]

#: The modules each extra of ``pip install 'adamwkit[extra]'`` brings, by import name.
EXTRAS: dict[str, tuple[str, ...]] = {
    "tune": ("optuna", "sklearn", "matplotlib"),
}
_PACKAGES = {"sklearn": "scikit-learn"}


class MissingExtra(ImportError):
    """An optional dependency adamwkit needs for what was asked is not installed."""


def require(extra: str, what: str) -> None:
    """Raise :class:`MissingExtra` when a module of ``extra`` cannot be imported; the
    message says what needs it and the pip command that installs it."""
    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        names = ", ".join(_PACKAGES.get(m, m) for m in missing)
        raise MissingExtra(
            f"{what} needs {names}, which {'is' if len(missing) == 1 else 'are'} not "
            f"installed: pip install 'adamwkit[{extra}]'"
        )
