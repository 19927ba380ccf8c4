"""How the probe law does on the wider evidence (``run_wide.py``'s cache), each family
predicted by the law fitted without it.

    python benchmarks/evidence/check_wide.py

Reads ``results-wide/`` and ``probes-wide/`` with ``analyze.load_studies`` (so a study
is *located*, its tau_epoch* and one-SE band, exactly as ``analyze.py`` reads them). The
shipped law (``adamwkit._calibration.PROBE_MODEL``) is fitted as ``analyze.py`` fits it,
on the located, turned studies of all eleven families *but the study's own*, with the
nested 80% range of the other families' errors: the numbers read per epoch are
``analyze.py``'s leave-one-family-out check of the probe for these families. It predicts
from the turning epoch read three ways on the zero-decay probe's mean validation curve
over the folds: per epoch (as ``analyze.py``), within epochs (the ``fine_val_losses``
points, which only these probes cached), and on that fine curve smoothed by a running
mean over one epoch. A probe that did not turn falls back to the rule without training
(``analyze.py``'s leave-one-family-out prediction and range).
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from analyze import (  # noqa: E402
    MODELS,
    PROBE_MODELS,
    Fit,
    Study,
    fit,
    leave_one_family_out,
    load_studies,
    turned,
    unseen_residuals,
)

from adamwkit import _calibration as cal  # noqa: E402

RESULTS = HERE / "results-wide"
PROBES = HERE / "probes-wide"


def turns(path: Path) -> dict[str, float]:
    """The turning epoch per epoch, within epochs, and on the smoothed fine curve."""
    d = json.loads(path.read_text())
    per_epoch = np.mean(d["val_losses"], 0)
    fine = np.mean(d["fine_val_losses"], 0)
    k = d["fine_points_per_epoch"]
    w = max(1, round(k))
    smooth = np.convolve(fine, np.ones(w) / w, mode="valid")  # point i+w-1's window
    return {
        "epoch": float(np.nanargmin(per_epoch) + 1),
        "fine": float((np.nanargmin(fine) + 1) / k),
        "smooth": float((np.nanargmin(smooth) + w) / k),
    }


Law = tuple[Fit, float, float]  # the fit and its 80% band in log(tau* / prediction)


def laws(everyone: list[Study], families: set[str]) -> dict[str, Law]:
    """Per family, the shipped probe model fitted without it (located, turned studies of
    every other family) and its nested band, as ``analyze.probe_check`` does."""
    terms = PROBE_MODELS[cal.PROBE_MODEL]
    out = {}
    for fam in sorted(families):
        train = [s for s in everyone if s.located and turned(s) and s.family != fam]
        r = unseen_residuals(terms, cal.PROBE_MODEL, train)
        out[fam] = (fit(cal.PROBE_MODEL, terms, train), float(np.quantile(r, 0.1)),
                    float(np.quantile(r, 0.9)))  # fmt: skip
    return out


def predict(s: Study, turn: float, law: Law, fallback: dict) -> tuple[float, float, float]:
    """tau_epoch* and its 80% range from ``turn``; the rule without training's (its
    ``fallback`` row) when the probe did not turn."""
    if turn >= cal.PROBE_TURNED * s.epochs:
        return fallback["pred"], *fallback["range"]
    f, lo, hi = law
    x = f.predict_log(replace(s, turn=turn))
    return math.exp(x), math.exp(x + lo), math.exp(x + hi)


def main() -> None:
    everyone = load_studies()  # all eleven families: the fits leave one out
    clear = [s for s in everyone if s.located]
    rule = leave_one_family_out(cal.MODEL, MODELS[cal.MODEL], clear, everyone)
    fallback = {(r["family"], r["id"]): r for r in rule.rows}
    studies = load_studies(RESULTS, PROBES)
    law = laws(everyone, {s.family for s in studies})
    rows = []
    for s in studies:
        paths = [PROBES / s.family / f"{s.id}-s{seed}.json" for seed in s.seeds]
        got = [turns(p) for p in paths if p.exists()]
        if not got:
            continue
        # the geometric mean over the seeds probed, as analyze.load_studies reads them
        t = {k: float(np.exp(np.mean([np.log(g[k]) for g in got]))) for k in got[0]}
        row = {"s": s, "turns": t}
        for how, turn in t.items():
            pred, lo, hi = predict(s, turn, law[s.family], fallback[s.family, s.id])
            row[how] = {
                "turned": turn < cal.PROBE_TURNED * s.epochs,
                "ratio": s.tau_star / pred,
                "within_2x": s.located and 0.5 <= s.tau_star / pred <= 2.0,
                "range_holds": s.located and lo <= s.tau_star <= hi,
                "usable": s.band[0] <= 2 * pred and pred / 2 <= s.band[1],
            }
        rows.append(row)
    print("| family | study | located | flat | tau* | band | turn (epoch / fine / smooth)"
          " | tau* / prediction (epoch / fine / smooth) |")  # fmt: skip
    print("|---|---|---|---|---:|---|---|---|")
    for r in rows:
        s, t = r["s"], r["turns"]
        ratios = " / ".join(f"{r[h]['ratio']:.2f}" for h in t)
        print(f"| {s.family} | {s.id} | {'yes' if s.located else 'no'} | "
              f"{'yes' if s.flat else 'no'} | {s.tau_star:.3g} | {s.band[0]:.3g}-"
              f"{s.band[1]:.3g} | {t['epoch']:.3g} / {t['fine']:.3g} / {t['smooth']:.3g} | "
              f"{ratios} |")  # fmt: skip
    located = [r for r in rows if r["s"].located]
    print(f"\n{len(rows)} studies with a probe, {len(located)} located.\n")
    print("| turning point read | turned | within 2x (located) | range holds (located) "
          "| usable (all) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|")
    for how in ("epoch", "fine", "smooth"):
        n_t = sum(r[how]["turned"] for r in rows)
        w2 = sum(r[how]["within_2x"] for r in located)
        rh = sum(r[how]["range_holds"] for r in located)
        us = sum(r[how]["usable"] for r in rows)
        print(f"| {how} | {n_t}/{len(rows)} | {w2}/{len(located)} | {rh}/{len(located)} "
              f"| {us}/{len(rows)} |")  # fmt: skip

    print("\nFamily by family (turning epoch read per epoch):\n")
    print("| family | studies | located | turned | median tau* / prediction (located) "
          "| within 2x | range holds |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for fam in sorted({r["s"].family for r in rows}):
        rs = [r for r in rows if r["s"].family == fam]
        loc = [r for r in rs if r["s"].located]
        med = float(np.median([r["epoch"]["ratio"] for r in loc])) if loc else math.nan
        print(f"| {fam} | {len(rs)} | {len(loc)} | {sum(r['epoch']['turned'] for r in rs)} | "
              f"{med:.2f} | {sum(r['epoch']['within_2x'] for r in loc)} | "
              f"{sum(r['epoch']['range_holds'] for r in loc)} |")  # fmt: skip


if __name__ == "__main__":
    main()
