"""The CV statistics on crafted fold losses: the paired one-SE rule, the flat verdict, the
grid's edge and its extension, repeated CV, and the chance-level pruning rule.

Each expected value is worked by hand from the fold losses (NumPy for the means and
standard deviations), never read back from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from adamwkit.train.population import chance_level
from adamwkit.tuning.cv import (
    Candidate,
    Splits,
    extension,
    standard_error,
    summarize,
)

FOLD_DIFFICULTY = [0.2, 0.5, 0.9, 1.4, 2.0]  # shared by every candidate on a fold


def cand(wd: float, offsets, lr: float = 1e-3, state: str = "complete") -> Candidate:
    losses = {f: FOLD_DIFFICULTY[f] + o for f, o in enumerate(offsets)}
    return Candidate(wd, lr, losses, state=state)


def test_paired_one_se_ignores_fold_difficulty():
    """The case from the field: a candidate well inside the best's unpaired SE (the folds'
    difficulty dominates it) but worse on every fold by 6 paired SEs is not chosen."""
    best = cand(0.1, [0.00, 0.00, 0.00, 0.00, 0.00])
    close = cand(0.2, [0.01, -0.01, 0.02, 0.00, 0.005])  # 0.005 +- 0.0052: within one SE
    worse = cand(0.4, [0.036, 0.040, 0.031, 0.045, 0.037])  # 0.0378 +- 0.0023
    s = summarize([cand(0.0, [0.3] * 5), best, close, worse], folds=5)
    assert s.best is best
    d = np.array([0.036, 0.040, 0.031, 0.045, 0.037])
    assert worse.paired_diff == pytest.approx(d.mean())
    assert worse.paired_sem == pytest.approx(d.std(ddof=1) / math.sqrt(5))
    # the old, unpaired rule would take it: its mean is within the best's SE
    assert worse.mean <= best.mean + best.sem
    assert s.one_se is close


def test_one_se_takes_the_largest_within_one_paired_se():
    best = cand(0.1, [0.0] * 5)
    a = cand(0.2, [0.02, -0.02, 0.01, -0.01, 0.005])  # diff 0.001 +- 0.007
    b = cand(0.4, [0.03, -0.02, 0.02, 0.01, -0.01])  # diff 0.006 +- 0.0093: within
    c = cand(0.8, [0.05, 0.04, 0.06, 0.05, 0.05])  # 0.05 +- 0.003: out
    s = summarize([best, a, b, c], folds=5)
    d = np.array([0.03, -0.02, 0.02, 0.01, -0.01])
    assert d.mean() <= d.std(ddof=1) / math.sqrt(5)
    assert s.one_se is b


def test_flat_when_zero_is_within_two_paired_ses_despite_one_borderline_candidate():
    """Zero decay indistinguishable from the best: weight decay barely matters, even though
    one other candidate is 2.1 paired SEs worse (which flipped the old verdict)."""
    best = cand(0.1, [0.0] * 5)
    zero = cand(0.0, [0.01, -0.005, 0.012, 0.0, 0.003])
    d_z = np.array([0.01, -0.005, 0.012, 0.0, 0.003])
    assert d_z.mean() <= 2 * d_z.std(ddof=1) / math.sqrt(5)
    offs = np.array([0.02, 0.002, 0.015, -0.003, 0.012])
    border = cand(0.2, list(offs))
    z = offs.mean() / (offs.std(ddof=1) / math.sqrt(5))
    assert 2.0 < z < 2.5
    s = summarize([zero, best, border], folds=5)
    assert s.flat
    assert s.zero is zero
    assert s.hurts_from == 0.2  # the borderline one is worse: decay hurts from there up


def test_not_flat_when_zero_is_clearly_worse():
    best = cand(0.1, [0.0] * 5)
    zero = cand(0.0, [0.05, 0.06, 0.04, 0.05, 0.07])
    s = summarize([zero, best, cand(0.2, [0.002, -0.001, 0.0, 0.001, -0.001])], folds=5)
    assert not s.flat
    assert s.hurts_from is None  # 0.2 is within noise of the best: it does not hurt


def test_flat_without_zero_needs_every_candidate_within_two_ses():
    a = cand(0.1, [0.0] * 5)
    b = cand(0.2, [0.01, -0.01, 0.0, 0.005, -0.005])
    assert summarize([a, b], folds=5).flat
    c = cand(0.4, [0.05, 0.06, 0.04, 0.05, 0.07])
    assert not summarize([a, b, c], folds=5).flat
    pruned = cand(0.8, [1.0], state="pruned")
    assert not summarize([a, b, pruned], folds=5).flat


@pytest.mark.parametrize(
    ("best_wd", "edge", "expected"),
    [
        (0.8, "high", [1.6, 3.2]),  # the grid's 2x spacing, continued upward
        (0.1, "low", [0.025, 0.05]),  # and downward
        (0.2, None, []),
    ],
)
def test_edge_and_its_extension(best_wd, edge, expected):
    wds = [0.0, 0.1, 0.2, 0.4, 0.8]
    cands = [cand(w, [0.0 if w == best_wd else 0.05 + 0.01 * f for f in range(5)]) for w in wds]
    s = summarize(cands, folds=5)
    assert s.best.weight_decay == best_wd
    assert s.edge == edge
    assert extension(s) == pytest.approx(expected)


def test_extension_keeps_a_finer_spacing():
    wds = [0.0, 1.0, 2.0**0.5, 2.0]
    cands = [cand(w, [0.0 if w == 2.0 else 0.05] * 5) for w in wds]
    s = summarize(cands, folds=5)
    assert s.edge == "high"
    assert extension(s, points=3) == pytest.approx([2 * 2**0.5, 4.0, 4 * 2**0.5], rel=1e-5)


def test_zero_best_is_an_edge_only_when_the_smallest_decay_hurts():
    near = cand(0.1, [0.002, -0.001, 0.0, 0.001, -0.001])
    cands = [cand(0.0, [0.0] * 5), near, cand(0.2, [0.05] * 5)]
    s = summarize(cands, folds=5)
    assert s.best.weight_decay == 0.0 and s.edge is None and extension(s) == []
    hurts = cand(0.1, [0.03, 0.02, 0.04, 0.03, 0.05])
    s = summarize([cand(0.0, [0.0] * 5), hurts, cand(0.2, [0.05] * 5)], folds=5)
    assert s.edge == "low"
    assert extension(s) == pytest.approx([0.025, 0.05])  # the grid's 2x, continued down


def test_repeated_cv_standard_error_is_nadeau_bengio():
    x = np.array([0.1, 0.3, 0.2, 0.25, 0.15, 0.22, 0.18, 0.3, 0.12, 0.2])  # 5 folds x 2
    s = x.std(ddof=1)
    assert standard_error(x, folds=5, repeats=2) == pytest.approx(s * math.sqrt(1 / 10 + 1 / 4))
    assert standard_error(x[:5], folds=5) == pytest.approx(x[:5].std(ddof=1) / math.sqrt(5))
    # a summary of 10 runs with repeats=2 needs all 10 to count a candidate complete
    a = Candidate(0.1, 1e-3, {f: 1.0 for f in range(10)})
    b = Candidate(0.2, 1e-3, {f: 1.0 + x[f] for f in range(10)})
    summ = summarize([a, b], folds=5, repeats=2)
    assert summ.best is a and summ.runs == 10
    assert b.paired_sem == pytest.approx(s * math.sqrt(1 / 10 + 1 / 4))
    assert summarize([a, Candidate(0.3, 1e-3, {0: 0.1})], folds=5, repeats=2).best is a


def test_repeated_splits_redraw_the_folds():
    labels = np.repeat(np.arange(4), 25)
    s = Splits.make(100, labels, 0.2, 5, seed=3, repeats=2)
    assert len(s.folds) == 10
    one = Splits.make(100, labels, 0.2, 5, seed=3)
    for (a, b), (c, d) in zip(s.folds[:5], one.folds, strict=True):
        assert (a == c).all() and (b == d).all()  # draw 0 is plain k-fold CV
    for j in (0, 1):
        vals = np.concatenate([v for _, v in s.folds[5 * j : 5 * j + 5]])
        assert sorted(vals) == sorted(s.pool)  # each draw covers the pool once
    assert any(not np.array_equal(s.folds[i][1], s.folds[5 + i][1]) for i in range(5))


def test_chance_level_rule():
    initial = [2.30, 2.31, 2.30, 2.29, 2.30, 2.30]
    current = [0.40, 2.29, 2.30, 1.90, 2.31, 2.30]
    groups = [0, 0, 0, 0, 1, 1]
    # fold 0 learned (0.40 is far below 2.30): the runs still within 1% of their start stop;
    # fold 1 learned nothing anywhere, so nothing there is judged.
    assert chance_level(initial, current, groups) == [False, True, True, False, False, False]
    # a regression target: the untrained loss is about the target's variance
    assert chance_level([1.0, 1.0], [0.3, 0.995]) == [False, True]
    assert chance_level([1.0, 1.0], [0.3, 0.98]) == [False, False]
    with pytest.raises(ValueError, match="one entry per run"):
        chance_level([1.0], [1.0, 2.0])


def test_zero_best_and_every_decay_worse_is_not_flat():
    zero = cand(0.0, [0.0] * 5)
    hurt = cand(0.1, [0.05, 0.06, 0.04, 0.05, 0.07])
    s = summarize([zero, hurt], folds=5)
    assert s.best is zero and not s.flat and s.hurts_from == 0.1
    same = cand(0.05, [0.002, -0.001, 0.0, 0.001, -0.001])
    assert summarize([zero, same, hurt], folds=5).flat


def test_pure_noise_is_flat_despite_the_winners_curse():
    """30 candidates equal but for fold noise: the best is just the luckiest, and zero sits
    about two paired SEs above it. The allowance for picking the best of many keeps the
    verdict flat on most such curves; the plain two-SE rule would not."""
    rng = np.random.default_rng(7)
    flat_new = flat_plain = 0
    for _ in range(200):
        wds = [0.0, *np.geomspace(1e-3, 10, 30)]
        cands = [cand(w, list(rng.normal(0, 0.01, 5))) for w in wds]
        s = summarize(cands, folds=5)
        flat_new += s.flat
        z = s.zero.paired_diff / s.zero.paired_sem if s.zero is not s.best else 0.0
        flat_plain += z <= 2.0
    assert flat_new / 200 >= 0.85
    assert flat_plain / 200 <= 0.75


def test_selection_allowance_grows_with_the_candidates():
    from statistics import NormalDist

    from adamwkit.tuning.cv import selection_allowance

    # the expected maximum of m standard normals, by simulation, over sqrt(2)
    rng = np.random.default_rng(0)
    for m in (2, 10, 30):
        sim = rng.standard_normal((20000, m)).max(axis=1).mean() / math.sqrt(2)
        assert selection_allowance(m) == pytest.approx(sim, abs=0.03)
    assert selection_allowance(1) == 0.0
    assert NormalDist().inv_cdf(0.5) == 0.0


def test_a_failed_smallest_candidate_is_no_edge():
    failed = Candidate(0.05, 1e-3, {}, state="failed")
    s = summarize([cand(0.0, [0.0] * 5), failed, cand(0.2, [0.05] * 5)], folds=5)
    assert s.best.weight_decay == 0.0 and s.edge is None
