"""tune's budget: about ``B`` training runs instead of the full grid (``budget=B``).

The strategy was chosen offline on the 157 cached evidence studies (docs/evidence-budget.md:
at B = 6 it chose within 1.5x, or one paired SE, of the full grid's optimum in 83% of them;
the full grid costs about 121 runs, the plain probe 5 runs for 61%); run as shipped on them
(docs/evidence-budget-live.md), B = 6 hit 86 of the 97 evidence studies and 128 of all 157:

1. the probe: zero decay on the first fold; its validation curve's turning epoch is read
   into a weight decay (``tau_epoch = c * turn``, :mod:`.turning`), or, when the curve did
   not turn, the model is pretrained or it reported no curve, the suggestion's value;
2. a pattern search on that fold: the value and 2x either side; while the best is an end
   and beats its neighbour, one more 2x step past it; at a local minimum, its 2^0.5
   neighbours; until it settles or the budget is spent (the evidence: keeping runs back
   for a second fold missed more often at small budgets);
3. with two runs or more left: the two best (zero included) on the next fold, and so on;
4. the choice: among those two, the lower mean over the folds they share (ties within
   0.1% of the loss go to the lesser decay, as in :func:`.cv.summarize`).

Every step is a round of its own in the store (``<study>.budget<i>``): each worker computes
the same next step from the same results, and a rerun resumes. A candidate that fails
counts as the worst.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

from . import cv
from .study import StudyStore
from .turning import probe_tau_epoch, turning_epoch

__all__ = ["MIN_BUDGET", "Step", "candidates", "for_summary", "next_step", "run", "spent"]

#: The smallest budget: the probe and a search of two more.
MIN_BUDGET = 3
SQRT2 = math.sqrt(2.0)


@dataclasses.dataclass(frozen=True)
class Step:
    """The next round: these weight decays on this split."""

    weight_decays: tuple[float, ...]
    split: int


def _round(x: float) -> float:
    return float(f"{x:.3g}")


def candidates(studies: Sequence[StudyStore]) -> dict[float, cv.Candidate]:
    """Every candidate of the rounds, merged by weight decay, its runs keyed by split."""
    out: dict[float, cv.Candidate] = {}
    for store in studies:
        runs_on = store.spec.runs_on
        for c in store.candidates():
            m = out.setdefault(c.weight_decay, cv.Candidate(c.weight_decay, c.lr))

            def where(run: int, on: tuple[int, ...] | None = runs_on) -> int:
                return run if on is None else on[run]

            for run, loss in c.fold_losses.items():
                m.fold_losses[where(run)] = loss
            for run, value in c.fold_metrics.items():
                m.fold_metrics[where(run)] = value
            for run, curve in c.fold_curves.items():
                m.fold_curves[where(run)] = curve
            for run, value in c.fold_baselines.items():
                m.fold_baselines[where(run)] = value
            if c.state in ("failed", "running", "waiting"):
                m.state, m.reason = c.state, c.reason
    return out


def spent(studies: Sequence[StudyStore]) -> int:
    """Runs the rounds recorded (a failed candidate's missing runs count as spent)."""
    return sum(store.runs_done() for store in studies)


def start(cands: dict[float, cv.Candidate], factor: float | None, epochs: int | None,
          fallback: float) -> float:  # fmt: skip
    """The search's first value: from zero decay's curve on the first fold (its turning
    epoch), else ``fallback`` (the suggestion's value)."""
    zero = cands.get(0.0)
    points = [(t, v) for t, v in (zero.fold_curves.get(0, []) if zero else []) if t > 0]
    curve = [v for _, v in points]
    if factor is None or not epochs or len(curve) < 3 or not any(map(math.isfinite, curve)):
        return _round(fallback)
    # the reported steps, in epochs (an objective may report per step), as the probe reads them
    turn = points[turning_epoch(curve) - 1][0] * epochs / points[-1][0]
    found = probe_tau_epoch(turn, epochs)
    return _round(fallback if found is None else factor / found[0])


def _loss(c: cv.Candidate | None, split: int) -> float:
    if c is None or c.state == "failed" or split not in c.fold_losses:
        return math.inf
    return c.fold_losses[split]


def _search(cands: dict[float, cv.Candidate], first: float) -> list[float]:
    """The search's next values on the first fold (``[]``: it is done)."""
    initial = [_round(first / 2), first, _round(first * 2)]
    untried = [w for w in initial if w not in cands]
    if untried:
        return untried
    tried = sorted(
        w for w, c in cands.items() if w > 0 and (0 in c.fold_losses or c.state == "failed")
    )
    best = min(tried, key=lambda w: (_loss(cands[w], 0), w))
    i = tried.index(best)
    if i == len(tried) - 1 and i > 0 and _loss(cands[best], 0) < _loss(cands[tried[i - 1]], 0):
        step = [_round(best * 2)]
    elif i == 0 and len(tried) > 1 and _loss(cands[best], 0) < _loss(cands[tried[1]], 0):
        step = [_round(best / 2)]
    else:
        step = [_round(best / SQRT2), _round(best * SQRT2)]
    return [w for w in step if w not in cands]


def finalists(cands: dict[float, cv.Candidate]) -> list[float]:
    """The two best on the first fold (zero included; ties to the lesser decay)."""
    ranked = sorted(cands, key=lambda w: (_loss(cands[w], 0), w))
    return [w for w in ranked if math.isfinite(_loss(cands[w], 0))][:2]


def next_step(
    cands: dict[float, cv.Candidate], used: int, budget: int, folds: int, first: float
) -> Step | None:
    """The next round under ``budget`` given the results so far (``None``: done)."""
    if 0.0 not in cands:
        return Step((0.0,), 0)
    search = _search(cands, first)
    room = budget - used
    if search and room > 0:
        return Step(tuple(search[:room]), 0)
    top = finalists(cands)
    if len(top) < 2 or budget - used < 2:
        return None
    for split in range(1, folds):
        missing = tuple(w for w in top if split not in cands[w].fold_losses)
        if missing and cands[top[0]].state != "failed":
            return Step(missing, split) if budget - used >= len(missing) else None
    return None


def run(
    store: StudyStore,
    work: Callable[[StudyStore], None],
    first_value: Callable[[dict[float, cv.Candidate]], float],
    say: Callable[[str], None],
) -> list[StudyStore]:
    """Every round of the budget, in order, as every worker runs them; the studies."""
    spec = store.spec
    assert spec.budget is not None
    studies = [store]
    work(store)  # the probe: zero decay on the first fold
    first = first_value(candidates(studies))
    i = 0
    while True:
        step = next_step(candidates(studies), spent(studies), spec.budget, spec.folds, first)
        if step is None:
            return studies
        i += 1
        round_spec = dataclasses.replace(spec, grid=step.weight_decays, runs_on=(step.split,))
        enqueue = tuple({"weight_decay": w} for w in step.weight_decays)
        studies.append(store.sibling(f"budget{i}", round_spec, enqueue))
        work(studies[-1])


def for_summary(studies: Sequence[StudyStore]) -> tuple[list[cv.Candidate], int]:
    """The candidates as the summary compares them, and the folds they are compared on:
    the two finalists over the splits they share (their runs re-keyed 0..m-1), the others
    ``"screened"`` with their first-fold loss."""
    cands = candidates(studies)
    top = finalists(cands)
    shared = sorted(set.intersection(*(set(cands[w].fold_losses) for w in top))) if top else [0]
    out = []
    for w, c in sorted(cands.items()):
        keep = shared if w in top else [s for s in (0,) if s in c.fold_losses]
        c.fold_losses = {i: c.fold_losses[s] for i, s in enumerate(keep)}
        c.fold_metrics = {i: c.fold_metrics[s] for i, s in enumerate(keep) if s in c.fold_metrics}
        c.fold_curves = {i: c.fold_curves[s] for i, s in enumerate(keep) if s in c.fold_curves}
        c.fold_baselines = {
            i: c.fold_baselines[s] for i, s in enumerate(keep) if s in c.fold_baselines
        }
        if w not in top and c.state == "complete":
            c.state, c.reason = "screened", "tried on one fold, under the budget"
        out.append(c)
    return out, len(shared)
