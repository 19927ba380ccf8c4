"""Cross-validated weight decay search: folds, the Optuna study, the report.

- :mod:`.cv`: test split, folds, the default grid, means, paired differences, one-SE rule.
- :mod:`.study`: storage, claiming candidates, resumption, heartbeats.
- :mod:`.report`: summary.json, cv_curve.png, report.html.
- :mod:`.run`: :func:`tune`, which ties them together.
"""

from .run import TuneResult, tune

__all__ = ["TuneResult", "tune"]
