"""adamwkit: AdamW done right, and the weight decay to use with it.

Public API (everything else is internal):

- :class:`AdamW`: drop-in for ``torch.optim.AdamW`` with ``decay_scale="lr" | "schedule"``.
- :func:`param_groups`: which tensors decay, with a printable plan.
- :func:`adamw_step`, :func:`effective_weight_decay`: the functional form, populations included.
- :mod:`adamwkit.reference`: NumPy reference of Loshchilov & Hutter's Algorithm 2.
"""

from .adamw import AdamW
from .functional import adamw_step, effective_weight_decay
from .groups import DecayPlan, ParamGroups, PlanEntry, param_groups

__version__ = "0.1.0"

__all__ = [
    "AdamW",
    "DecayPlan",
    "ParamGroups",
    "PlanEntry",
    "__version__",
    "adamw_step",
    "effective_weight_decay",
    "param_groups",
]
