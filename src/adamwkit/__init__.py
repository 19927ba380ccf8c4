"""adamwkit: AdamW done right, and the weight decay to use with it.

Public API (everything else is internal):

- :class:`AdamW`: drop-in for ``torch.optim.AdamW`` with ``decay_scale="lr" | "schedule" |
  "corrected"``, cautious decay and decay toward the initial weights.
- :func:`param_groups`: which tensors decay, with a printable plan.
- :func:`adamw_step`, :func:`effective_weight_decay`: the functional form, populations included.
- :func:`fit`, :class:`Task`: one training run of a task; :func:`tune`: k-fold cross-validated
  weight decay search in an Optuna study, with a report, for a Task or any training loop
  written as an objective of one :class:`Trial`.
- :func:`suggest`, :func:`explain`: a weight decay from the timescale rules, with no training.
- :class:`Monitor`: weight norms and rotation against their equilibrium, in any training loop.
- :func:`load_weights`, :func:`read_checkpoint`, :func:`inspect_checkpoint`: what a checkpoint
  holds, and loading what fits (``adamwkit inspect PATH``).
- :mod:`adamwkit.timescale`: tau_iter / tau_epoch / tau_run and conversions between conventions.
- :mod:`adamwkit.schedules`: warmup + cosine / linear / WSD / constant, as PyTorch schedulers,
  and :class:`~adamwkit.schedules.WeightDecayScheduler` for weight decay.
- :mod:`adamwkit.reference`: NumPy reference of Loshchilov & Hutter's Algorithm 2.
"""

from ._version import __version__
from .adamw import AdamW
from .audit import Audit, audit
from .checkpoint import LoadReport, inspect_checkpoint, load_weights, read_checkpoint
from .explain import Explanation, explain
from .functional import adamw_step, effective_weight_decay
from .groups import DecayPlan, ParamGroups, PlanEntry, param_groups
from .monitor import Monitor, MonitorLog, Verdict, load_log
from .suggest import Suggestion, suggest
from .tasks import Task
from .timescale import convert_weight_decay
from .train import FitResult, fit
from .tuning.objective import ObjectiveFailed, Trial


def __getattr__(name: str) -> object:
    # tune pulls in Optuna, scikit-learn and matplotlib: load it only when asked for.
    if name in ("tune", "TuneResult"):
        from . import tuning

        return getattr(tuning, name)
    raise AttributeError(f"module 'adamwkit' has no attribute {name!r}")


__all__ = [
    "AdamW",
    "Audit",
    "DecayPlan",
    "Explanation",
    "FitResult",
    "LoadReport",
    "Monitor",
    "MonitorLog",
    "ObjectiveFailed",
    "ParamGroups",
    "PlanEntry",
    "Suggestion",
    "Task",
    "Trial",
    "TuneResult",
    "Verdict",
    "__version__",
    "adamw_step",
    "audit",
    "convert_weight_decay",
    "effective_weight_decay",
    "explain",
    "fit",
    "inspect_checkpoint",
    "load_log",
    "load_weights",
    "param_groups",
    "read_checkpoint",
    "suggest",
    "tune",
]
