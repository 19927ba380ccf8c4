"""Cross-validated weight decay search: objectives, folds, the Optuna study, the report.

- :mod:`.objective`: :class:`Trial`, objectives, and :class:`TaskObjective` (a Task as one).
- :mod:`.config`: the study's identity (``StudySpec``) and a run's settings (``TuneConfig``).
- :mod:`.cv`: test split, folds, the default grid, means, paired differences, one-SE rule.
- :mod:`.study`: storage, claiming candidates, resumption (Optuna's internals in :mod:`._optuna`).
- :mod:`.executor`: running jobs one at a time or stacked, and the measured choice between them.
- :mod:`.workers`: worker slots, CPU thread shares, worker processes.
- :mod:`.report`: summary.json, cv_curve.png, learning_curves.png, report.html.
- :mod:`.run`: :func:`tune`, which ties them together.
"""

from typing import Any

from .objective import ObjectiveFailed, Trial

__all__ = ["ObjectiveFailed", "Trial", "TuneResult", "tune"]


def __getattr__(name: str) -> Any:
    # The study needs Optuna, scikit-learn and matplotlib: load them only when asked for.
    if name in ("tune", "TuneResult"):
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'adamwkit.tuning' has no attribute {name!r}")
