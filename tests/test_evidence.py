"""The evidence analysis (benchmarks/evidence/analyze.py) and the constants it ships.

- On crafted studies with a known optimum, the analysis finds it (parabola refinement),
  tells a flat study from a clear one, and leave-one-family-out recovers a law the
  studies were made from.
- The shipped ``adamwkit._calibration`` equals a refit from the cached studies (all
  eleven families: ``results/`` and ``results-wide/``, with their probes).
"""

from __future__ import annotations

import importlib
import json
import math
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
EVIDENCE = ROOT / "benchmarks" / "evidence"
sys.path.insert(0, str(EVIDENCE))
analyze = importlib.import_module("analyze")


def _study(tmp: Path, family: str, cid: str, epochs: int, tau_opt: float, depth: float,
           noise: float = 0.002, n: int = 400, curvature: float = 0.05) -> None:  # fmt: skip
    """A cached study whose mean CV loss is a bowl in log2(tau) with its bottom at tau_opt;
    ``depth``: how much worse zero decay is than the bottom."""
    rng = np.random.default_rng(zlib.crc32(f"{family}/{cid}".encode()))
    difficulty = rng.normal(0.0, 0.05, 5)  # shared by every candidate on a fold
    cfg = {"n": n, "epochs": epochs, "width": 64, "batch_size": 32, "lr": 1e-3}
    cands = [
        {
            "weight_decay": 0.0,
            "tau_epoch": None,
            "state": "complete",
            "fold_losses": list(1.0 + depth + difficulty + rng.normal(0, noise, 5)),
        }
    ]
    for k in range(-8, 26):
        tau = 2.0 ** (k / 2)
        loss = 1.0 + curvature * (math.log2(tau) - math.log2(tau_opt)) ** 2
        loss = min(loss, 1.0 + depth)  # far from the optimum: as good as no decay at most
        wd = 32 / (1e-3 * tau * n)
        cands.append(
            {
                "weight_decay": float(f"{wd:.6g}"),
                "tau_epoch": tau,
                "state": "complete",
                "fold_losses": list(loss + difficulty + rng.normal(0, noise, 5)),
            }
        )
    out = {"family": family, "config": cfg, "id": cid, "seed": 0, "folds": 5, "n": n,
           "n_train": n, "params": 9000, "candidates": cands}  # fmt: skip
    (tmp / family).mkdir(parents=True, exist_ok=True)
    (tmp / family / f"{cid}-s0.json").write_text(json.dumps(out))


def test_the_optimum_is_found_between_grid_points(tmp_path):
    _study(tmp_path, "a", "x", 100, tau_opt=2.0**3.25, depth=0.5)
    (s,) = analyze.load_studies(tmp_path)
    assert not s.flat
    assert s.best_tau in (2.0**3, 2.0**3.5)
    assert s.tau_star == pytest.approx(2.0**3.25, rel=0.05)
    assert s.band[0] <= s.best_tau <= s.band[1]


def test_a_flat_study_is_told_apart(tmp_path):
    # a bowl far shallower than the folds' noise, and zero decay at its bottom
    _study(tmp_path, "a", "x", 100, tau_opt=50.0, depth=0.0, noise=0.01, curvature=1e-5)
    (s,) = analyze.load_studies(tmp_path)
    assert s.flat
    assert s.band[1] / s.band[0] > 1000  # the one-SE band spans most of the grid


def test_leave_one_family_out_recovers_the_law(tmp_path):
    # tau* = T / 4 in every family: "c * T" must predict each left-out family within 2x,
    # while sqrt(T) misses the long runs.
    for fam in ("a", "b", "c"):
        for epochs in (50, 100, 200, 400):
            _study(tmp_path, fam, f"e{epochs}", epochs, tau_opt=epochs / 4, depth=0.5)
    studies = analyze.load_studies(tmp_path)
    clear = [s for s in studies if s.located]
    assert len(clear) == 12
    law = analyze.leave_one_family_out("c * T", ["log_T=1"], clear, studies)
    assert law.share("within_2x") == 1.0
    final = analyze.fit("c * T", ["log_T=1"], clear)
    assert math.exp(final.coef["const"]) == pytest.approx(0.25, rel=0.1)
    wa = analyze.leave_one_family_out(analyze.SQRT_T, analyze.MODELS[analyze.SQRT_T], clear,
                                      studies)  # fmt: skip
    assert wa.share("within_2x") < 0.5


def test_the_shipped_calibration_is_the_fit_of_the_cached_studies():
    from adamwkit import _calibration as cal

    studies = analyze.load_studies()
    clear = [s for s in studies if s.located]
    assert cal.STUDIES == len(clear)
    assert cal.FAMILIES == sorted({s.family for s in clear})
    terms = analyze.MODELS[cal.MODEL]
    final = analyze.fit(cal.MODEL, terms, clear)
    assert final.coef == pytest.approx(cal.COEF, rel=1e-9)
    assert {k: v for k, v in final.fixed.items() if k != "const"} == cal.FIXED
    r = analyze.unseen_residuals(terms, cal.MODEL, clear)
    assert cal.BAND == pytest.approx((np.quantile(r, 0.1), np.quantile(r, 0.9)), rel=1e-9)
    # the model shipped is the simplest within CLEARLY_BETTER of the best on left-out families
    checks = {n: analyze.leave_one_family_out(n, t, clear, studies)
              for n, t in analyze.MODELS.items()}  # fmt: skip
    assert cal.MODEL == analyze.choose(checks, analyze.MODELS)
    best = max(checks.values(), key=lambda c: round(c.share("within_2x"), 6))
    assert checks[cal.MODEL].share("within_2x") >= best.share("within_2x") - analyze.CLEARLY_BETTER
    assert cal.LOFO_WITHIN_2X == pytest.approx(checks[cal.MODEL].share("within_2x"), abs=1e-4)
    assert cal.LOFO_RANGE_HOLDS == pytest.approx(checks[cal.MODEL].share("range_holds"), abs=1e-4)


def test_a_model_needs_to_be_clearly_better_to_be_chosen():
    def check(w2: int, rh: int = 16) -> analyze.Check:
        rows = [{"clear": True, "within_2x": i < w2, "range_holds": i < rh} for i in range(20)]
        return analyze.Check("", rows)

    models = {"c": [], "c * T^b": ["log_T"], "c * T^b * N^d": ["log_T", "log_N"]}
    # one study in twenty (5%) better: not clearly better, the simplest is kept
    assert analyze.choose({"c": check(12), "c * T^b": check(13), "c * T^b * N^d": check(12)},
                          models) == "c"  # fmt: skip
    # two in twenty: clearly better; of the two near the best, the simpler
    assert analyze.choose({"c": check(11), "c * T^b": check(13), "c * T^b * N^d": check(12)},
                          models) == "c * T^b"  # fmt: skip
    assert analyze.free_parameters(analyze.MODELS[analyze.SQRT_T]) == 0
    assert analyze.free_parameters(["log_turn=1"]) == 1


def test_the_turn_fraction_is_read_in_the_terms_the_probe_knows():
    f = analyze.Fit("x", ["log_turn=1", "log_turn_frac"], {"const": 0.3, "log_turn_frac": -0.2})
    assert analyze.probe_coef(f) == pytest.approx({"const": 0.3, "log_turn": 0.8, "log_T": 0.2})


def _probe(tmp: Path, family: str, cid: str, epochs: int, turn: int) -> None:
    """A cached probe whose 5 validation curves are lowest at epoch ``turn``."""
    t = np.arange(1, epochs + 1)
    curve = 1.0 + 0.001 * (t - turn) ** 2 / epochs
    (tmp / family).mkdir(parents=True, exist_ok=True)
    out = {"family": family, "id": cid, "seed": 0, "val_losses": [list(curve + f) for f in
           (0.0, 0.1, -0.1, 0.05, 0.2)], "train_losses": []}  # fmt: skip
    (tmp / family / f"{cid}-s0.json").write_text(json.dumps(out))


def test_the_probe_rule_recovers_a_law_in_the_turning_epoch(tmp_path):
    # tau* = 2 * turn in every family, with turns unrelated to T: the probe rule predicts
    # each left-out family within 2x; a probe that never turned falls back to the rule.
    results, probes = tmp_path / "results", tmp_path / "probes"
    families = (("a", (3, 4, 9, 20, 50)), ("b", (6, 8, 12, 30, 60)), ("c", (5, 7, 15, 40, 70)))
    for fam, turns in families:
        for turn in turns:
            _study(results, fam, f"t{turn}", 200, tau_opt=2.0 * turn, depth=0.5)
            _probe(probes, fam, f"t{turn}", 200, turn)
    _study(results, "c", "late", 100, tau_opt=10.0, depth=0.5)
    _probe(probes, "c", "late", 100, 95)  # lowest in the last 10%: did not turn
    studies = analyze.load_studies(results, probes)
    turns = {s.id: s.turn for s in studies if s.family == "a"}
    assert turns == pytest.approx({"t3": 3, "t4": 4, "t9": 9, "t20": 20, "t50": 50})
    fallback = analyze.leave_one_family_out(analyze.SQRT_T, analyze.MODELS[analyze.SQRT_T],
                                            [s for s in studies if s.located], studies)  # fmt: skip
    clear = [s for s in studies if s.located]
    check = analyze.probe_check("c * turn", ["log_turn=1"], clear, studies, fallback)
    rows = {r["id"]: r for r in check.rows}
    assert rows["late"]["turned"] is False
    assert rows["late"]["pred"] == pytest.approx(10.0)  # sqrt(100) from the fallback
    turned = [r for r in check.rows if r["turned"]]
    assert len(turned) == 15
    assert all(r["within_2x"] for r in turned)
    assert all(r["ratio"] == pytest.approx(1.0, rel=0.15) for r in turned)


def test_the_shipped_probe_rule_is_the_fit_of_the_cached_probes():
    from adamwkit import _calibration as cal

    studies = analyze.load_studies()
    clear = [s for s in studies if s.located]
    on_turned = [s for s in clear if analyze.turned(s)]
    assert cal.PROBE_TURNED == analyze.TURNED
    assert cal.PROBE_STUDIES == len(on_turned)
    terms = analyze.PROBE_MODELS[cal.PROBE_MODEL]
    f = analyze.fit(cal.PROBE_MODEL, terms, on_turned)
    coef = analyze.probe_coef(f)
    assert set(coef) <= {"const", "log_turn", "log_T"}  # what the shipped probe reads
    assert coef == pytest.approx(cal.PROBE_COEF, rel=1e-9)
    r = analyze.unseen_residuals(terms, cal.PROBE_MODEL, on_turned)
    assert cal.PROBE_BAND == pytest.approx((np.quantile(r, 0.1), np.quantile(r, 0.9)), rel=1e-9)
    fallback = analyze.leave_one_family_out(cal.MODEL, analyze.MODELS[cal.MODEL], clear, studies)
    checks = {n: analyze.probe_check(n, t, clear, studies, fallback)
              for n, t in analyze.PROBE_MODELS.items()}  # fmt: skip
    assert cal.PROBE_MODEL == analyze.choose(checks, analyze.PROBE_MODELS)
    mine = checks[cal.PROBE_MODEL]
    assert cal.PROBE_LOFO_WITHIN_2X == pytest.approx(mine.share("within_2x"), abs=1e-4)
    assert cal.PROBE_LOFO_RANGE_HOLDS == pytest.approx(
        checks[cal.PROBE_MODEL].share("range_holds"), abs=1e-4
    )
