"""Names every entry point shares (the Python API and the CLI import them from here).

A light module: importing it loads nothing else, so the CLI can build its parser from it.
"""

from __future__ import annotations

__all__ = [
    "CONVENTION_ALIASES",
    "CONVENTION_NAMES",
    "DECAY_SCALES",
    "LR_MAX",
    "LR_MIN",
    "MAX_CANDIDATES",
    "MAX_EXTEND",
    "MAX_REPEATS",
    "OPTIMIZER_DECAY_SCALES",
    "PRECISIONS",
    "SAMPLERS",
    "SEED_MAX",
    "VECTORIZE",
]

#: ``decay_scale`` of tasks, ``suggest`` and ``tune``: ``"lr"`` (PyTorch's convention, the
#: decay is multiplied by the step's lr) or ``"schedule"`` (the AdamW paper's, by lr_t /
#: lr_peak).
DECAY_SCALES: tuple[str, ...] = ("lr", "schedule")

#: ``decay_scale`` of the optimizer itself: the tuned conventions, plus AdamC's
#: ``"corrected"`` (per step ``wd * lr_t**2 / lr_peak``), whose value per step depends on the
#: schedule, so ``suggest`` and ``tune`` speak of it through ``convert``.
OPTIMIZER_DECAY_SCALES: tuple[str, ...] = ("lr", "schedule", "corrected")

#: Names :func:`adamwkit.convert_weight_decay` accepts for a convention, and the canonical
#: convention each means.
CONVENTION_ALIASES: dict[str, str] = {
    "torch": "torch",
    "independent": "independent",
    "timm-corrected": "timm-corrected",
    "pytorch": "torch",
    "lr": "torch",
    "optax": "torch",
    "keras": "torch",
    "schedule": "independent",
    "corrected": "timm-corrected",
    "adamc": "timm-corrected",
    "paper": "independent",
    "composer": "independent",
    "wortsman": "independent",
    "timm_corrected": "timm-corrected",
}
CONVENTION_NAMES: tuple[str, ...] = tuple(CONVENTION_ALIASES)

#: Samplers of ``adamwkit tune``.
SAMPLERS: tuple[str, ...] = ("grid", "tpe", "gp")

#: ``vectorize`` of ``adamwkit tune``.
VECTORIZE: tuple[str, ...] = ("auto", "on", "off")

#: ``precision`` of training runs.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")

#: The learning rates the timescale rules accept. Below 1e-12 an Adam update (about lr per
#: coordinate) is lost in float32 rounding of any weight; above 1e3 no Adam run trains, and
#: products such as lr * weight_decay * steps overflow float64 sooner.
LR_MIN = 1e-12
LR_MAX = 1e3

#: Seeds are NumPy and scikit-learn ``random_state`` values: 32-bit.
SEED_MAX = 2**32 - 1

#: The most candidates (weight decays x learning rates) one study may enqueue.
MAX_CANDIDATES = 1000

#: The most times ``tune`` redraws the k folds (repeated CV), and the most rounds it extends
#: a grid whose best candidate sits at its edge.
MAX_REPEATS = 20
MAX_EXTEND = 8
