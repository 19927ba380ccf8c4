"""Training: one run (:func:`fit`) and many stacked runs (:func:`fit_population`) on one loop core.

- :mod:`.loop`: the loop core both share (seeded batch orders, data on the device once,
  divergence found without host synchronisation, subnormals flushed).
- :mod:`.single`: :func:`fit`, one model with :class:`adamwkit.AdamW`.
- :mod:`.population`: :func:`fit_population`, members stacked along dim 0 and stepped by
  the population form of :func:`adamwkit.adamw_step`; a fine-tune's frozen base is held
  once for every member (:class:`PopulationMemory`, :func:`population_memory`).
"""

from .loop import History, TrainingDiverged, flush_denormals, keeps_random_state
from .population import Member, MemberResult, PopulationMemory, fit_population, population_memory
from .single import FitResult, evaluate, example_losses, fit

__all__ = [
    "FitResult",
    "History",
    "Member",
    "MemberResult",
    "PopulationMemory",
    "TrainingDiverged",
    "evaluate",
    "example_losses",
    "fit",
    "fit_population",
    "flush_denormals",
    "keeps_random_state",
    "population_memory",
]
