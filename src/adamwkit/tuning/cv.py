r"""Folds, candidates and the statistics of a cross-validated weight decay search.

- The test split is held out first (stratified when the task has labels) and used only at
  the end; the k folds are made on the rest (``StratifiedKFold`` or ``KFold``, shuffled,
  ``random_state=seed``). Fold ``f`` trains with seed ``seed + f`` for every candidate, so
  candidates on the same fold share initial weights and batch order.
- The default candidates are a log grid at 2x spacing through the value
  :func:`adamwkit.suggest` gives, spanning :math:`\tau_{\mathrm{epoch}}` from 1/4 epoch to
  4x the epochs trained, plus zero (Bergsma et al. sweep at 2x spacing; Wang & Aitchison's
  window is [1, T] epochs).
- A candidate's score is its mean held-out loss over the folds with the standard error
  :math:`s/\sqrt{k}`. Differences to the best are *paired*: the mean and standard error of
  the per-fold differences on the same folds and seeds. The one-standard-error rule picks
  the largest weight decay whose mean is within one standard error of the best (Breiman
  et al., *Classification and Regression Trees*, 1984).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from ..timescale import convert_weight_decay, weight_decay_from_tau_epoch

__all__ = [
    "CVSummary",
    "Candidate",
    "Splits",
    "default_grid",
    "holdout_split",
    "make_folds",
    "summarize",
]


def holdout_split(
    n: int, labels: np.ndarray | None, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training pool and of the held-out test split."""
    idx = np.arange(n)
    if test_fraction == 0:
        return idx, np.array([], dtype=np.int64)
    from sklearn.model_selection import train_test_split

    stratify = labels if _stratifiable(labels, max(2, round(1 / test_fraction))) else None
    pool, test = train_test_split(
        idx, test_size=test_fraction, stratify=stratify, random_state=seed
    )
    return pool, test


def _stratifiable(labels: np.ndarray | None, k: int) -> bool:
    if labels is None:
        return False
    _, counts = np.unique(labels, return_counts=True)
    return bool(counts.min() >= k) and len(counts) > 1


def make_folds(
    pool: np.ndarray, labels: np.ndarray | None, folds: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` (train, validation) index pairs over ``pool`` (indices into the dataset)."""
    if folds < 2:
        raise ValueError(f"folds={folds!r} is invalid: expected a whole number >= 2")
    if folds > len(pool):
        raise ValueError(
            f"folds={folds!r} is invalid: expected at most {len(pool)} (the examples left "
            "after the test split)"
        )
    from sklearn.model_selection import KFold, StratifiedKFold

    pool_labels = None if labels is None else labels[pool]
    if _stratifiable(pool_labels, folds):
        splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
        parts = splitter.split(pool, pool_labels)
    else:
        parts = KFold(folds, shuffle=True, random_state=seed).split(pool)
    return [(pool[a], pool[b]) for a, b in parts]


@dataclass(frozen=True)
class Splits:
    """The held-out test split and the k folds over the rest (indices into the examples)."""

    pool: np.ndarray
    test: np.ndarray
    folds: list[tuple[np.ndarray, np.ndarray]]

    @classmethod
    def make(
        cls, n: int, labels: np.ndarray | None, test_fraction: float, folds: int, seed: int
    ) -> Splits:
        pool, test = holdout_split(n, labels, test_fraction, seed)
        return cls(pool, test, make_folds(pool, labels, folds, seed))

    @property
    def n_train(self) -> int:
        """The fewest examples any fold trains on."""
        return min(len(tr) for tr, _ in self.folds)


def default_grid(
    *,
    lr: float,
    batch_size: int,
    n_train: int,
    epochs: float,
    decay_scale: str,
    anchor: float,
) -> list[float]:
    """Zero, then weight decays at 2x spacing through ``anchor`` covering tau_epoch in [1/4, 4T].

    ``anchor`` (the suggestion) and the result are in the convention of ``decay_scale``.
    """
    to_torch = convert_weight_decay(1.0, decay_scale, "torch", lr_peak=lr)
    anchor_torch = anchor * to_torch
    hi = weight_decay_from_tau_epoch(0.25, lr, batch_size, n_train)
    lo = weight_decay_from_tau_epoch(4.0 * epochs, lr, batch_size, n_train)
    k_lo = math.floor(math.log2(lo / anchor_torch) + 1e-9)
    k_hi = math.ceil(math.log2(hi / anchor_torch) - 1e-9)
    values = [anchor_torch * 2.0**k / to_torch for k in range(k_lo, k_hi + 1)]
    return [0.0, *(float(f"{v:.6g}") for v in values)]


@dataclass
class Candidate:
    """One candidate's fold results, gathered from every trial that evaluated it."""

    weight_decay: float
    lr: float
    fold_losses: dict[int, float] = field(default_factory=dict)
    fold_metrics: dict[int, float] = field(default_factory=dict)
    fold_curves: dict[int, list[tuple[int, float]]] = field(default_factory=dict)
    state: str = "complete"  # complete | pruned | failed | running | waiting
    reason: str = ""
    tau_epoch: float | None = None
    mean: float | None = None
    sem: float | None = None
    paired_diff: float | None = None
    paired_sem: float | None = None

    def losses(self) -> np.ndarray:
        return np.array([self.fold_losses[f] for f in sorted(self.fold_losses)], dtype=float)

    def to_dict(self) -> dict[str, object]:
        return {
            "weight_decay": self.weight_decay,
            "lr": self.lr,
            "tau_epoch": self.tau_epoch,
            "mean": self.mean,
            "sem": self.sem,
            "fold_losses": [
                self.fold_losses.get(f) for f in range(max(self.fold_losses, default=-1) + 1)
            ],
            "fold_metrics": [
                self.fold_metrics.get(f) for f in range(max(self.fold_metrics, default=-1) + 1)
            ],
            "fold_curves": {
                str(f): [list(p) for p in c] for f, c in sorted(self.fold_curves.items())
            },
            "paired_diff": self.paired_diff,
            "paired_sem": self.paired_sem,
            "state": self.state,
            "reason": self.reason,
        }


@dataclass
class CVSummary:
    """The verdict of a search: best, one-SE choice, and whether the curve is flat."""

    candidates: list[Candidate]
    best: Candidate | None
    one_se: Candidate | None
    flat: bool
    folds: int


def _sem(x: np.ndarray) -> float:
    return float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else math.nan


def summarize(candidates: Sequence[Candidate], folds: int) -> CVSummary:
    """Means, standard errors, paired differences to the best, the one-SE choice, flatness.

    Only candidates with every fold (``state == "complete"``) compete; pruned ones keep the
    mean of the folds they ran. The curve is *flat* when no complete candidate is worse than
    the best by more than two paired standard errors and none was pruned (a pruned candidate
    was significantly worse).
    """
    cands = list(candidates)
    for c in cands:
        if c.fold_losses:
            x = c.losses()
            c.mean, c.sem = float(x.mean()), _sem(x)
    complete = [c for c in cands if c.state == "complete" and len(c.fold_losses) == folds]
    if not complete:
        return CVSummary(cands, None, None, False, folds)
    best = min(complete, key=lambda c: (c.mean, -c.weight_decay))
    for c in cands:
        common = sorted(set(c.fold_losses) & set(best.fold_losses))
        if not common:
            continue
        d = np.array([c.fold_losses[f] - best.fold_losses[f] for f in common])
        c.paired_diff, c.paired_sem = float(d.mean()), _sem(d)
    assert best.mean is not None
    threshold = best.mean + (best.sem if best.sem is not None and math.isfinite(best.sem) else 0)
    same_lr = [c for c in complete if c.lr == best.lr]
    one_se = max(
        (c for c in same_lr if c.mean is not None and c.mean <= threshold),
        key=lambda c: c.weight_decay,
    )
    pruned = any(c.state == "pruned" for c in cands)
    flat = not pruned and all(
        c is best
        or c.paired_diff is None
        or c.paired_diff
        <= 2.0 * (c.paired_sem if c.paired_sem and math.isfinite(c.paired_sem) else 0.0)
        for c in complete
    )
    return CVSummary(cands, best, one_se, flat and len(complete) > 1, folds)
