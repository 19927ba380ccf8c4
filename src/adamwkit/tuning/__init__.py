"""Cross-validated weight decay search: objectives, folds, the Optuna study, the report.

- :mod:`.objective`: :class:`Trial`, objectives, and :class:`TaskObjective` (a Task as one).
- :mod:`.config`: the study's identity (``StudySpec``) and a run's settings (``TuneConfig``).
- :mod:`.cv`: test split, folds, the default grid, means, paired differences, one-SE rule.
- :mod:`.study`: storage, claiming candidates, resumption (Optuna's internals in :mod:`._optuna`).
- :mod:`.executor`: running jobs one at a time or stacked, and the measured choice between them.
- :mod:`.workers`: worker slots, CPU thread shares, worker processes.
- :mod:`.report`: summary.json, cv_curve.png, learning_curves.png, report.html.
- :mod:`.first_audit`: the audit of the optimizer of the study's first run (the report's
  "Optimizer audit").
- :mod:`.options`: the one table of tune's options (keyword, flag, default, range, scope).
- :mod:`.source`, :mod:`.planning`: what trains; the options validated into a ``TunePlan``.
- :mod:`.protocol`: the rounds (CV, extensions, refits), each worked on by every
  :mod:`.worker`; :mod:`.summary`: the typed ``TuneSummary`` (summary.json).
- :mod:`.run`: :func:`tune`, the one-call entry point: ``plan(...).run()``.
"""

from typing import Any

from .objective import ObjectiveFailed, Trial

__all__ = ["ObjectiveFailed", "Trial", "TunePlan", "TuneResult", "TuneSummary", "plan", "tune"]


def __getattr__(name: str) -> Any:
    # The study needs Optuna, scikit-learn and matplotlib: load them only when asked for.
    if name in ("tune", "TuneResult", "TunePlan", "TuneSummary", "plan"):
        from .._extras import require

        require("tune", f"adamwkit.{name}")
        from . import run

        return getattr(run, name)
    raise AttributeError(f"module 'adamwkit.tuning' has no attribute {name!r}")
