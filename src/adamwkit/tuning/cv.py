r"""Folds, candidates and the statistics of a cross-validated weight decay search.

- The test split is held out first (stratified when the task has labels) and used only at
  the end; the k folds are made on the rest (``StratifiedKFold`` or ``KFold``, shuffled,
  ``random_state=seed``). Fold ``f`` trains with seed ``seed + f`` for every candidate, so
  candidates on the same fold share initial weights and batch order.
- The default candidates are a log grid at 2x spacing through the value
  :func:`adamwkit.suggest` gives, spanning its 80% range with a step to spare on each side
  (or, for a rule with no range, :math:`\tau_{\mathrm{epoch}}` from 1/4 epoch to 4x the
  epochs trained), plus zero (Bergsma et al. sweep at 2x spacing).
- A candidate's score is its mean held-out loss over the folds with the standard error
  :math:`s/\sqrt{k}`. Differences to the best are *paired*: the mean and standard error of
  the per-fold differences on the same folds and seeds. The one-standard-error rule
  (Breiman et al., *Classification and Regression Trees*, 1984) picks the largest weight
  decay whose paired difference to the best is within one paired standard error: the
  unpaired errors mostly measure how hard each fold is, which every candidate shares.
- Repeated CV (``repeats`` > 1) draws the k folds again with another shuffle; its standard
  errors use Nadeau & Bengio's correction for the overlap between runs.
- CV trains on :math:`(1 - f_{test})(k-1)/k` of the examples; the refit on the whole pool
  trains on :math:`1 - f_{test}`. tau_epoch is computed with the examples a fold trains on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..timescale import convert_weight_decay, weight_decay_from_tau_epoch

__all__ = [
    "CVSummary",
    "Candidate",
    "Splits",
    "default_grid",
    "extension",
    "holdout_split",
    "make_folds",
    "mean_and_error",
    "refine_optimum",
    "selection_allowance",
    "standard_error",
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
        cls,
        n: int,
        labels: np.ndarray | None,
        test_fraction: float,
        folds: int,
        seed: int,
        repeats: int = 1,
        val_fraction: float = 0.2,
    ) -> Splits:
        """The test split, then ``repeats`` draws of ``folds`` folds over the rest: run
        ``j * folds + i`` is fold ``i`` of draw ``j`` (draw ``j`` shuffles with
        ``seed + 7919 * j``; draw 0 is plain k-fold CV). ``folds=1``: each draw is one
        random validation split of ``val_fraction`` of the rest (repeated holdout)."""
        pool, test = holdout_split(n, labels, test_fraction, seed)
        runs = []
        for j in range(repeats):
            draw = (seed + 7919 * j) % 2**32
            if folds == 1:
                sub = None if labels is None else labels[pool]
                tr, va = holdout_split(len(pool), sub, val_fraction, draw)
                runs.append((pool[tr], pool[va]))
            else:
                runs += make_folds(pool, labels, folds, draw)
        return cls(pool, test, runs)

    @classmethod
    def fixed(cls, train: np.ndarray, val: np.ndarray) -> Splits:
        """One fixed split the user gave (``validation=``): no test split, one run."""
        return cls(np.asarray(train), np.array([], dtype=np.int64), [(train, val)])

    @property
    def n_train(self) -> int:
        """The fewest examples any fold trains on."""
        return min(len(tr) for tr, _ in self.folds)


def range_grid(low: float, high: float) -> list[float]:
    """Zero, then log-spaced values from ``low`` to ``high`` at about 2^0.5 (at least three,
    rounded to 6 significant digits): the narrow grid that confirms a predicted range."""
    n = max(3, round(2 * math.log2(high / low)) + 1)
    values = {float(f"{low * (high / low) ** (i / (n - 1)):.6g}") for i in range(n)}
    return [0.0, *sorted(values)]


def default_grid(
    *,
    lr: float,
    batch_size: int,
    n_train: int,
    epochs: float,
    decay_scale: str,
    anchor: float,
    low: float | None = None,
    high: float | None = None,
) -> list[float]:
    """Zero, then weight decays at 2x spacing through ``anchor``.

    With the suggestion's 80% range (``low``, ``high``) the grid covers it with one 2x step
    to spare on each side; without one it covers tau_epoch in [1/4, 4T]. ``anchor``,
    ``low``, ``high`` and the result are in the convention of ``decay_scale``.
    """
    to_torch = convert_weight_decay(1.0, decay_scale, "torch", lr_peak=lr)
    anchor_torch = anchor * to_torch
    if low is not None and high is not None:
        lo, hi = low * to_torch / 2.0, high * to_torch * 2.0
    else:
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
    fold_baselines: dict[int, float] = field(default_factory=dict)  # untrained loss per run
    example_losses: dict[int, list[float]] = field(default_factory=dict)  # per val example
    state: str = "complete"  # complete | pruned | failed | running | waiting
    reason: str = ""
    tau_epoch: float | None = None
    mean: float | None = None
    sem: float | None = None
    paired_diff: float | None = None
    paired_sem: float | None = None

    def metric_mean(self) -> float | None:
        """The mean of the runs' metric (``None``: no run reported one)."""
        values = [v for v in self.fold_metrics.values() if v is not None and math.isfinite(v)]
        return float(np.mean(values)) if values else None

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
            "metric": self.metric_mean(),
            "fold_curves": {
                str(f): [list(p) for p in c] for f, c in sorted(self.fold_curves.items())
            },
            "fold_baselines": [
                self.fold_baselines.get(f) for f in range(max(self.fold_baselines, default=-1) + 1)
            ],
            "paired_diff": self.paired_diff,
            "paired_sem": self.paired_sem,
            "state": self.state,
            "reason": self.reason,
        }


@dataclass
class CVSummary:
    """The verdict of a search.

    - ``learned``: whether the best clearly beats the untrained baseline the runs
      reported (by more than :data:`LEARNED_FRACTION` of it and two paired SEs; ``None``:
      no baseline, cannot tell). When ``False`` the model did not learn on these folds:
      there is no ``best`` and no edge, since weight decay cannot be judged.
    - ``best``: the complete candidate with the lowest mean loss; candidates within
      :data:`PRACTICAL_FRACTION` of that loss (paired) tie, and a tie goes to the least
      weight decay.
    - ``one_se``: the largest weight decay (at the best's lr) whose paired difference to
      the best is within one paired standard error of that difference.
    - ``flat``: weight decay barely matters: zero decay is within two paired standard
      errors of the best, plus what the best of the m contenders (positive candidates
      within two paired SEs of it) gains by chance (:func:`selection_allowance`), and some
      positive weight decay is within two (when zero was tried and finished); without
      zero, no candidate is worse than the best by more than two paired standard errors
      and none was pruned. One borderline candidate elsewhere on the curve does not change
      it.
    - ``hurts_from``: the smallest weight decay above the best that is worse than the best
      by more than two paired standard errors and by more than the margin that matters
      (:data:`PRACTICAL_FRACTION` of the loss); ``None``: none is.
    - ``edge``: ``"high"`` when the best is the largest positive weight decay tried at its
      lr, ``"low"`` when it is the smallest, or when zero is the best and the smallest
      positive one is worse by more than two paired SEs; else ``None``: the optimum may
      lie outside.
    - ``repeats``: how many times the k folds were redrawn (repeated CV).
    """

    candidates: list[Candidate]
    best: Candidate | None
    one_se: Candidate | None
    flat: bool
    folds: int
    repeats: int = 1
    zero: Candidate | None = None
    hurts_from: float | None = None
    edge: str | None = None
    learned: bool | None = None
    baseline: float | None = None  # the untrained loss, mean over the runs
    examples: int = 0  # one run each: the validation examples the SEs are over (0: none)
    lowest: Candidate | None = None  # the lowest mean loss (the best, unless a tie or no learning)

    @property
    def runs(self) -> int:
        """Runs per candidate: folds x repeats."""
        return self.folds * self.repeats


def standard_error(x: np.ndarray, folds: int, repeats: int = 1, val_fraction: float = 0.2) -> float:
    r"""Standard error of the mean of ``x``, per-run values of k-fold CV repeated r times.

    With one repetition it is :math:`s/\sqrt{k}`. Repeated CV reuses the same examples, so
    its runs are correlated and :math:`s/\sqrt{kr}` would be too small; the corrected
    resampled variance of Nadeau & Bengio (Machine Learning 52, 2003), with
    :math:`n_{test}/n_{train} = 1/(k-1)`, gives :math:`s\sqrt{1/(kr) + 1/(k-1)}`.
    """
    if len(x) < 2:
        return math.nan
    s = float(x.std(ddof=1))
    if repeats <= 1:
        return s / math.sqrt(len(x))
    # n_val / n_train: 1/(k-1) for k folds; for repeated holdout (folds=1), f/(1-f)
    ratio = val_fraction / (1.0 - val_fraction) if folds == 1 else 1.0 / (folds - 1)
    return s * math.sqrt(1.0 / len(x) + ratio)


def selection_allowance(m: int) -> float:
    """How many paired standard errors the best of ``m`` equally good candidates beats
    another by chance alone: the expected maximum of ``m`` standard normals (Blom's
    approximation) over sqrt(2), the paired difference having twice a mean's variance.

    Without it, zero decay on a curve that is pure noise would sit about two paired SEs
    above the luckiest of thirty candidates, and half of the flat curves would be called
    clear.
    """
    if m < 2:
        return 0.0
    from statistics import NormalDist

    return max(0.0, NormalDist().inv_cdf((m - 0.375) / (m + 0.25)) / math.sqrt(2.0))


def _finite(x: float | None) -> float:
    """``x``, with ``None`` and NaN (a single run's standard error) as 0; an infinity, from
    differences of losses too large to subtract, is kept (infinitely worse)."""
    return 0.0 if x is None or math.isnan(x) else x


# Losses beyond this magnitude are scaled down before their mean and spread are taken, so
# that neither the sum nor the squares overflow (a run may return 1e308 as its loss).
_SCALE_ABOVE = 1e100


def mean_and_error(
    x: np.ndarray, folds: int, repeats: int = 1, val_fraction: float = 0.2
) -> tuple[float, float]:
    """The mean of ``x`` and its :func:`standard_error`, computed without overflow for any
    finite values (they are scaled down by the largest magnitude when it is huge)."""
    scale = float(np.max(np.abs(x))) if len(x) else 0.0
    if not scale > _SCALE_ABOVE:
        return float(x.mean()), standard_error(x, folds, repeats, val_fraction)
    y = x / scale
    return float(y.mean()) * scale, standard_error(y, folds, repeats, val_fraction) * scale


def _paired(
    a: np.ndarray, b: np.ndarray, folds: int, repeats: int, val_fraction: float = 0.2
) -> tuple[float, float]:
    """Mean and standard error of ``a - b`` run by run, without overflow in the difference."""
    scale = float(max(np.max(np.abs(a)), np.max(np.abs(b))))
    if not scale > _SCALE_ABOVE:
        return mean_and_error(a - b, folds, repeats, val_fraction)
    with np.errstate(over="ignore"):  # a difference beyond float's range is infinite
        mean, sem = mean_and_error(a / scale - b / scale, folds, repeats, val_fraction)
        return mean * scale, sem * scale


#: A difference in mean loss smaller than this fraction of the best's loss does not
#: matter: it makes no candidate worse than the best ("hurts", the grid's edge), and
#: candidates closer than it to the lowest mean tie. (Differences of 1e-7 of a loss near
#: chance, or 2e-6 nats of a language model's, were called "hurts" without it.)
PRACTICAL_FRACTION = 1e-3
#: A model learned when its best candidate's loss is below its untrained baseline by
#: more than this fraction of the baseline (and by two paired standard errors): the same
#: 1% as a stacked run's chance-level check (``train.population.chance_level``).
LEARNED_FRACTION = 0.01


def summarize(
    candidates: Sequence[Candidate], folds: int, repeats: int = 1, val_fraction: float = 0.2
) -> CVSummary:
    """Means, standard errors, whether the model learned, paired differences to the best,
    the one-SE choice, flatness, and whether the best sits at the grid's edge (see
    :class:`CVSummary`).

    Only candidates with every run (``state == "complete"``) compete; pruned ones keep the
    mean of the runs they made. Differences are paired: candidates share folds, initial
    weights and batch orders, so the per-fold differences remove the folds' difficulty,
    which dominates the unpaired standard errors.
    """
    cands = list(candidates)
    runs = folds * repeats
    for c in cands:
        if c.fold_losses:
            c.mean, c.sem = mean_and_error(c.losses(), folds, repeats, val_fraction)
    complete = [c for c in cands if c.state == "complete" and len(c.fold_losses) == runs]
    if not complete:
        return CVSummary(cands, None, None, False, folds, repeats)
    lowest = min(complete, key=lambda c: (c.mean, c.weight_decay))
    learned, baseline = _learned(complete, lowest, folds, repeats, val_fraction)
    if learned is False:  # nothing to judge weight decay by: no best, no edge
        _pair_with(cands, lowest, folds, repeats, val_fraction)
        return CVSummary(cands, None, None, False, folds, repeats, learned=False,
                         baseline=baseline, lowest=lowest)  # fmt: skip
    margin = PRACTICAL_FRACTION * abs(float(lowest.mean or 0.0))
    _pair_with(cands, lowest, folds, repeats, val_fraction)
    # Ties (within the margin that matters) go to the least decay: it does as well.
    best = min(
        (c for c in complete if c.lr == lowest.lr and _finite(c.paired_diff) <= margin),
        key=lambda c: c.weight_decay,
    )
    if best is not lowest:
        _pair_with(cands, best, folds, repeats, val_fraction)
    examples = _example_errors(cands, best) if runs == 1 else 0
    out = _verdict(cands, complete, best, margin, folds, repeats, learned)
    out.baseline, out.lowest, out.examples = baseline, lowest, examples
    return out


def _example_errors(cands: Sequence[Candidate], best: Candidate) -> int:
    """With one run per candidate, the standard errors over its validation examples:
    each candidate's, and its paired difference's to ``best`` (the same examples, loss by
    loss). Returns how many examples (0: not every candidate reported them)."""
    ref = best.example_losses.get(0)
    mine = [c for c in cands if c.fold_losses and 0 in c.example_losses]
    if ref is None or len(mine) < sum(1 for c in cands if c.fold_losses):
        return 0
    theirs = np.asarray(ref)
    for c in mine:
        x = np.asarray(c.example_losses[0])
        if len(x) != len(theirs) or len(x) < 2:
            return 0
        c.sem = float(x.std(ddof=1)) / math.sqrt(len(x))
        if c is not best:
            c.paired_sem = float((x - theirs).std(ddof=1)) / math.sqrt(len(x))
    return len(theirs)


def _pair_with(
    cands: Sequence[Candidate], best: Candidate, folds: int, repeats: int, val_fraction: float
) -> None:
    """Every candidate's paired difference to ``best`` over the runs both made."""
    for c in cands:
        common = sorted(set(c.fold_losses) & set(best.fold_losses))
        if not common:
            continue
        mine = np.array([c.fold_losses[f] for f in common])
        theirs = np.array([best.fold_losses[f] for f in common])
        c.paired_diff, c.paired_sem = _paired(mine, theirs, folds, repeats, val_fraction)


def _learned(
    complete: list[Candidate], lowest: Candidate, folds: int, repeats: int, val_fraction: float
) -> tuple[bool | None, float | None]:
    """Whether the best candidate clearly beats the untrained baseline: on average by more
    than :data:`LEARNED_FRACTION` of it and two paired standard errors, or on every run
    by more than that fraction of the run's baseline.

    Without a baseline, ``False`` only when every candidate has the same loss on every run
    and no reported learning curve fell (a constant: nothing was learned), else ``None``
    (cannot tell; identical losses with falling curves mean the decay had no effect).
    Also returns the baseline's mean over the runs (``None`` without one)."""
    baselines: dict[int, list[float]] = {}
    for c in complete:
        for run, value in c.fold_baselines.items():
            baselines.setdefault(run, []).append(value)
    common = sorted(set(baselines) & set(lowest.fold_losses))
    if not common:
        same = len(complete) > 1 and len({tuple(c.losses()) for c in complete}) == 1
        return (False if same and not any(_curve_fell(c) for c in complete) else None), None
    base = np.array([float(np.mean(baselines[r])) for r in common])
    best = np.array([lowest.fold_losses[r] for r in common])
    gain, sem = _paired(base, best, folds, repeats, val_fraction)
    needed = max(LEARNED_FRACTION * abs(float(base.mean())), 2.0 * _finite(sem))
    # every run clearly below its own baseline is learning too, however the gains vary
    # between runs (with two runs, two paired SEs is the gap between their gains)
    every = bool(np.all(base - best > LEARNED_FRACTION * np.abs(base)))
    return bool(gain > needed or every), float(base.mean())


def _curve_fell(c: Candidate) -> bool:
    """Whether a reported learning curve fell from its first point by more than
    :data:`LEARNED_FRACTION` (training changed the loss, whatever the weight decay did)."""
    for curve in c.fold_curves.values():
        if len(curve) >= 2:
            first, low = curve[0][1], min(v for _, v in curve)
            if first - low > LEARNED_FRACTION * abs(first):
                return True
    return False


def _verdict(
    cands: list[Candidate],
    complete: list[Candidate],
    best: Candidate,
    margin: float,
    folds: int,
    repeats: int,
    learned: bool | None,
) -> CVSummary:
    """The one-SE choice, flatness, "hurts from" and the grid's edge, given the best."""
    same_lr = [c for c in complete if c.lr == best.lr]
    one_se = max(
        (c for c in same_lr if _finite(c.paired_diff) <= _finite(c.paired_sem)),
        key=lambda c: c.weight_decay,
    )

    def worse(c: Candidate) -> bool:  # by more than noise, and by a margin that matters
        diff = _finite(c.paired_diff)
        return c is not best and diff > max(2.0 * _finite(c.paired_sem), margin)

    zero = next((c for c in same_lr if c.weight_decay == 0.0), None)
    if zero is not None:
        # the contenders: positive candidates the best could have beaten by chance
        contenders = sum(1 for c in same_lr if c.weight_decay > 0 and not worse(c))
        allowance = (2.0 + selection_allowance(contenders)) * _finite(zero.paired_sem)
        zero_close = zero is best or _finite(zero.paired_diff) <= max(allowance, margin)
        flat = zero_close and any(c.weight_decay > 0 and not worse(c) for c in same_lr)
    else:
        pruned = any(c.state == "pruned" for c in cands)
        flat = not pruned and len(complete) > 1 and not any(worse(c) for c in complete)
    above = sorted(
        (c for c in cands if c.lr == best.lr and c.weight_decay > best.weight_decay),
        key=lambda c: c.weight_decay,
    )
    hurts_from = next(
        (c.weight_decay for c in above if c.state == "pruned" or (c in complete and worse(c))),
        None,
    )
    return CVSummary(cands, best, one_se, flat, folds, repeats, zero, hurts_from,
                     _edge(cands, same_lr, best, worse), learned)  # fmt: skip


def _edge(
    cands: list[Candidate], same_lr: list[Candidate], best: Candidate, worse: Any
) -> str | None:
    """``"high"``/``"low"`` when the optimum may lie past the grid's edge, else ``None``."""
    positive = sorted({c.weight_decay for c in cands if c.lr == best.lr and c.weight_decay > 0})
    if best.weight_decay > 0 and len(positive) > 1:
        if best.weight_decay == positive[-1]:
            return "high"
        if best.weight_decay == positive[0]:
            return "low"
    elif best.weight_decay == 0 and positive:
        # zero wins, but the smallest decay tried already hurts: a smaller one may win
        smallest = next((c for c in same_lr if c.weight_decay == positive[0]), None)
        if smallest is not None and worse(smallest):  # (a failed one says nothing)
            return "low"
    return None


def extension(summary: CVSummary, points: int = 2) -> list[float]:
    """Weight decays that continue the grid past the edge the best sits on (``[]`` if none).

    They continue the spacing of the grid's two outermost positive values on that side
    (2x when there is only one), ``points`` of them, rounded to 6 significant digits.
    """
    best = summary.best
    if best is None or summary.edge is None:
        return []
    positive = sorted(
        {c.weight_decay for c in summary.candidates if c.lr == best.lr and c.weight_decay > 0}
    )
    if summary.edge == "high":
        ratio = positive[-1] / positive[-2] if len(positive) > 1 else 2.0
        values = [positive[-1] * ratio ** (i + 1) for i in range(points)]
    else:
        ratio = positive[1] / positive[0] if len(positive) > 1 else 2.0
        values = [positive[0] / ratio ** (i + 1) for i in range(points)]
    return sorted(float(f"{v:.6g}") for v in values)


def refine_optimum(taus: Sequence[float], means: Sequence[float], best: float) -> float:
    """The optimum between grid points: the vertex of a parabola in log tau through the best
    candidate's mean loss and up to two neighbours on each side, kept within one grid step
    of the best (``taus`` ascending, positive; ``best`` one of them).

    The loss is smooth in log tau near its minimum, so the vertex locates the optimum
    more finely than the grid's spacing; a parabola opening downward, or fewer than three
    points, gives the best as it is.
    """
    i = list(taus).index(best)
    lo, hi = max(0, i - 2), min(len(taus), i + 3)
    if hi - lo < 3:
        return best
    x = np.log2(np.asarray(taus[lo:hi], dtype=float))
    y = np.asarray(means[lo:hi], dtype=float)
    a, b, _ = np.polyfit(x, y, 2)
    if a <= 0:
        return best
    step = float(np.median(np.diff(np.log2(np.asarray(taus, dtype=float)))))
    v = float(np.clip(-b / (2 * a), math.log2(best) - step, math.log2(best) + step))
    return float(2.0**v)
