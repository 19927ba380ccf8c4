"""Run the shipped ``adamwkit.tune(..., budget=6)`` for real on the cached evidence studies.

    python benchmarks/evidence/budget_live.py                 # every study, cached skipped
    python benchmarks/evidence/budget_live.py --only digits-mlp/n250 --deadline 1700000000
    python benchmarks/evidence/budget_live.py --list          # what is cached
    python benchmarks/evidence/budget_live.py --report        # the tables, nothing trained
    python benchmarks/evidence/budget_live.py --rejudge       # judge, simulate the cached again

``budget.py`` chose the budget's strategy by simulating it on the cached full grids; this
measures the strategy as ``tune`` ships it. Each cached study (``results/``, from scratch;
``results-finetune/``, fine-tuning; ``results-wide/``, the wider families) is rebuilt from
its cache: the same task (``families.py``, ``families_wide.py``) or fine-tuning objective
(``finetune.py``), lr, epochs, batch size, convention (``decay_scale="lr"``) and seed, 5
folds, no test split, as ``run.py`` and ``finetune.py`` ran it, so the budget's runs train
on the same folds with the same initial weights and batch orders as the cached ones and
their fold losses are directly comparable. A fine-tune is run with ``pretrained=True``
(``adapters=True`` for a LoRA family), as a user fine-tuning would, and its
``decay_toward`` (``"zero"`` or ``"init"``) as ``finetune.py`` gives it.

The choice *hits* by ``docs/evidence-budget.md``'s test: the full grid's best (``summarize``
on the cached candidates x 5 folds), or within 1.5x of it in weight decay (zero only
matching zero); or the cached candidate nearest the choice in log weight decay (if within
2^0.25) has a full-grid loss within one paired SE of the best's, or within ``summarize``'s
0.1% tie margin. ``budget.py``'s loader gives the full grid's verdict. Its simulation of
the strategy the shipped budget follows, ``probe+confirm (1 fold)`` at B = 6 with fold 0
first (as ``tune`` takes it), is recorded beside the live outcome, twice: with the probe's
constant fitted without the study's family (as ``budget.py`` reports it) and with the
shipped constant (as the live run reads the curve); the report compares the live runs
with it study by study. A *looser* count also takes a choice between two neighbouring
cached candidates that both pass the standard-error test (the fine-tuning grids'
sqrt(10) steps leave values more than 2^0.25 from either), and, where ``tune`` named no
value, the finalists' lower mean.

Each study's outcome is one JSON in ``results-budget-live/<source>/<family>/`` (written
atomically; a rerun skips it): the choice, the runs spent, the seconds, the hit, every run
the budget made, the simulation's prediction, and the git commit of the calibration used.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = HERE / "results-budget-live"
BUDGET = 6
FOLDS = 5
#: The cached studies by source, in the order they are run (the wide text-transformer
#: studies cost minutes each: last).
SOURCES = ("results", "results-finetune", "results-wide")
PROBE_DIRS = {"results": "probes", "results-wide": "probes-wide"}
LAST = ("text-transformer",)
#: A choice snaps to the cached candidate nearest it when within this factor.
SNAP = 2.0**0.25
sys.path.insert(0, str(HERE))

import budget as sim  # noqa: E402

# ------------------------------------------------------------------------------ studies


def cached_studies() -> list[tuple[str, Path]]:
    """(source, path) of every cached study, in the order they are run."""
    out = []
    for src in SOURCES:
        paths = sorted((HERE / src).glob("*/*.json"))
        paths.sort(key=lambda p: p.parent.name in LAST)  # stable: the costly ones last
        out += [(src, p) for p in paths if "-quick" not in p.name]
    return out


def name_of(src: str, path: Path) -> str:
    return f"{src}/{path.parent.name}/{path.stem}"


def out_path(src: str, path: Path) -> Path:
    return OUT / src / path.parent.name / path.name


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True,
                          check=False).stdout.strip()  # fmt: skip


#: The budget's code: its last commit is recorded beside the calibration's.
BUDGET_CODE = tuple(f"src/adamwkit/tuning/{m}.py" for m in ("budget", "cv", "turning", "protocol"))


@functools.cache
def provenance() -> dict[str, Any]:
    """The commits this run used, read once, before the process's first study (the code a
    process runs is what it imported then): the repository's; the last one of the
    calibration (with whether its file differs from that commit) and of the budget's code;
    the files of ``src/`` that differ from the repository's commit."""
    from adamwkit import _calibration as cal

    path = "src/adamwkit/_calibration.py"
    return {
        "head": _git("rev-parse", "HEAD"),
        "budget_code_commit": _git("log", "-1", "--format=%H", "--", *BUDGET_CODE),
        "calibration_commit": _git("log", "-1", "--format=%H", "--", path),
        "calibration_modified": bool(_git("status", "--porcelain", "--", path)),
        "src_modified": _git("status", "--porcelain", "--", "src").splitlines(),
        "probe_coef": dict(cal.PROBE_COEF),
        "probe_turned": cal.PROBE_TURNED,
    }


# ------------------------------------------------------------------------- the live run


def _tune_task(d: dict, src: str, tmp: str) -> Any:
    """A from-scratch study (``run.study``): the family's task, the study's seed."""
    from adamwkit import tune

    if src == "results":
        from families import FAMILIES
    else:
        from families_wide import WIDE as FAMILIES
    task = FAMILIES[d["family"]].build(**d["config"], seed=0)
    return tune(task, folds=FOLDS, test=False, progress=False, vectorize="auto", threads=1,
                seed=d["seed"], out=tmp, study="live", budget=BUDGET)  # fmt: skip


def _tune_finetune(d: dict, tmp: str) -> Any:
    """A fine-tuning study (``finetune.run_study``): the pretrained weights, the objective
    decaying toward ``d["kind"]``, seed 0; ``pretrained`` (and ``adapters``) said."""
    import finetune as ft

    from adamwkit import tune

    family, cfg, kind = ft.FAMILIES[d["family"]], d["config"], d["kind"]
    state = ft.pretrained_state(family)
    x, y = family.finetune_data(cfg["n"])
    objective = ft.make_objective(family, cfg, kind, x, y, state, {})
    return tune(
        objective, examples=len(x), labels=y if family.classify else None, folds=FOLDS,
        lr=cfg["lr"], epochs=cfg["epochs"], batch_size=cfg["batch_size"], decay_scale="lr",
        test_fraction=0.0, test=False, progress=False, threads=1, seed=0, out=tmp,
        study="live", budget=BUDGET, pretrained=True, adapters=bool(family.adapter_rank),
    )  # fmt: skip


def live(src: str, d: dict) -> dict[str, Any]:
    """``tune(..., budget=6)`` on the study: the choice, the runs, the seconds (or the
    error and its traceback)."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            if src == "results-finetune":
                result = _tune_finetune(d, tmp)
            else:
                result = _tune_task(d, src, tmp)
        except Exception as e:  # recorded: a finding, not fixed here
            return {"error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc(),
                    "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
        s = result.summary
    runs = []
    for c in s["candidates"]:
        runs.append({"weight_decay": c["weight_decay"], "fold_losses": c["fold_losses"],
                     "fold_baselines": c["fold_baselines"], "state": c["state"],
                     "mean": c["mean"]})  # fmt: skip
    zero = next((c for c in s["candidates"] if c["weight_decay"] == 0.0), None)
    curve = zero["fold_curves"].get("0") if zero else None  # [step, loss] points, fold 0
    return {
        "chosen": s["best_weight_decay"],
        "spent_runs": s["spent_runs"],
        "budget": s["budget"],
        "seconds": round(time.perf_counter() - start, 1),
        "state": s["state"],
        "learned": s["learned"],
        "baseline": s["baseline"],
        "verdict": s["verdict"],
        "notes": list(s["notes"]),
        "runs": runs,
        "zero_curve": curve,
    }


def unnamed(out: dict) -> float | None:
    """When ``tune`` named no weight decay: what the budget's finalists would have given,
    the lower mean over the folds they share (ties within 0.1% to the lesser decay)."""
    from adamwkit.tuning.cv import PRACTICAL_FRACTION

    done = [r for r in out.get("runs", []) if r["state"] == "complete" and r["mean"] is not None]
    if out.get("chosen") is not None or not done:
        return None
    low = min(r["mean"] for r in done)
    return min(r["weight_decay"] for r in done if r["mean"] <= low + PRACTICAL_FRACTION * abs(low))


def consistency(d: dict, out: dict) -> float | None:
    """The largest relative gap between a live run and the cached run of the same weight
    decay on the same fold, over the candidates the cached grid completed (a pruned one's
    loss is from the epoch it was stopped at); ``None``: none shared."""
    cached = {c["weight_decay"]: c["fold_losses"] for c in d["candidates"]
              if c["state"] == "complete"}  # fmt: skip
    gaps = []
    for r in out.get("runs", []):
        got = cached.get(r["weight_decay"])
        if got is None:
            continue
        for f, v in enumerate(r["fold_losses"]):
            if v is not None and f < len(got) and got[f] is not None:
                gaps.append(abs(v - got[f]) / max(abs(got[f]), 1e-12))
    return max(gaps) if gaps else None


# ------------------------------------------------------------------ the full grid's verdict

_STUDIES: dict[str, sim.Study] = {}


def _fingerprint(family: str, wds: list[float], losses: list[float]) -> tuple:
    return family, tuple(sorted(wds)), tuple(sorted(round(v, 9) for v in losses))


def grid_studies() -> dict[str, sim.Study]:
    """``budget.load``'s studies (the full grid's verdict), by :func:`name_of`, matched to
    their files by content (family, candidates, fold losses). When ``budget.load`` does
    not read ``results-wide/``, it is read again with its directories pointed there."""
    if _STUDIES:
        return _STUDIES
    consts = sim.probe_constants()
    loaded = sim.load(consts)
    if not any(p.parent.name == s.family for s in loaded
               for p in (HERE / "results-wide").glob("*/*.json")):  # fmt: skip
        saved = sim.RESULTS, sim.FINETUNE, sim.PROBES
        try:
            sim.RESULTS, sim.PROBES = HERE / "results-wide", HERE / "probes-wide"
            sim.FINETUNE = HERE / "no-such-directory"
            loaded += sim.load(consts)
        finally:
            sim.RESULTS, sim.FINETUNE, sim.PROBES = saved
    by_print = {}
    for s in loaded:
        key = _fingerprint(s.family, list(s.wds), list(s.losses[~s.imputed]))
        assert key not in by_print, s.name
        by_print[key] = s
    for src, path in cached_studies():
        d = json.loads(path.read_text())
        wds = [c["weight_decay"] for c in d["candidates"]]
        losses = [v for c in d["candidates"] for v in c["fold_losses"] if v is not None]
        _STUDIES[name_of(src, path)] = by_print[_fingerprint(d["family"], wds, losses)]
    return _STUDIES


def _near(s: sim.Study, i: int) -> bool:
    """Candidate ``i``'s full-grid loss is within one paired SE of the best's or within
    the 0.1% tie margin (``budget.load``'s test without the 1.5x part)."""
    from adamwkit.tuning.cv import PRACTICAL_FRACTION

    complete = not bool(s.imputed[i].any())
    return complete and bool(s.diffs[i] <= 1.0 or s.excess[i] <= PRACTICAL_FRACTION)


def _same(a: float, b: float) -> bool:
    return a == b or (a > 0 and b > 0 and max(a, b) <= 1.5 * min(a, b))


def check_hits(s: sim.Study) -> None:
    """:func:`_near` and :func:`_same` give back ``budget.load``'s hits on the grid."""
    best = s.wds[s.best]
    for i, w in enumerate(s.wds):
        assert bool(s.hits[i]) == (_same(w, best) or _near(s, i)), (s.name, w)


def _between_near(s: sim.Study, wd: float) -> bool:
    """Whether ``wd`` lies between two neighbouring positive cached candidates (or on one)
    that both pass :func:`_near`: a looser reading of the test on a coarse grid (the
    fine-tuning studies' sqrt(10) steps leave values more than 2^0.25 from any candidate)."""
    pos = [i for i in range(len(s.wds)) if s.wds[i] > 0]
    lo = [i for i in pos if s.wds[i] <= wd]
    hi = [i for i in pos if s.wds[i] >= wd]
    if wd <= 0 or not lo or not hi:
        return False
    below, above = max(lo, key=lambda i: s.wds[i]), min(hi, key=lambda i: s.wds[i])
    return _near(s, below) and _near(s, above)


def judge(s: sim.Study, wd: float | None) -> dict[str, Any]:
    """Whether a choice of ``wd`` hits the full grid's answer, and how (``between_near``:
    the looser reading of :func:`_between_near`, not counted in ``hit``)."""
    best = float(s.wds[s.best])
    if wd is None:
        return {"hit": False, "how": "no choice", "nearest": None, "between_near": False}
    if wd == 0:
        j, close = 0, True
    else:
        j = s.snap(wd)
        close = abs(math.log(s.wds[j] / wd)) <= math.log(SNAP) + 1e-9
    how = "miss"
    if _same(wd, best):
        how = "best" if wd == best else "within 1.5x"
    elif close and _near(s, j):
        how = "within one paired SE" if s.diffs[j] <= 1.0 else "within 0.1%"
    return {
        "hit": how != "miss",
        "how": how,
        "nearest": float(s.wds[j]) if close else None,
        "nearest_paired_ses": float(s.diffs[j]) if close else None,
        "nearest_excess": float(s.excess[j]) if close else None,
        "between_near": how != "miss" or _between_near(s, wd),
    }


#: ``budget.py``'s strategy that the shipped budget follows, simulated beside the live run:
#: with the probe's constant fitted without the study's family (as budget.py reports it),
#: and with the shipped constant (the one the live run used); and the shipped search itself
#: run on the cached grid (:func:`replay`).
SIMULATED = {
    "confirm": "probe+confirm (1 fold)",
    "shipped_c": "probe+confirm (1 fold), shipped c",
    "replay": "shipped search on the cached grid",
}
STRATEGY = "probe+confirm (1 fold)"


def shipped_c() -> float:
    """The shipped probe's constant c of tau_epoch = c * turn."""
    from adamwkit import _calibration as cal

    coef = cal.PROBE_COEF
    assert set(coef) == {"const", "log_turn"} and coef["log_turn"] == 1.0, coef
    return math.exp(coef["const"])


def replay(s: sim.Study, fold: int = 0) -> dict[str, Any]:
    """The shipped search (:func:`adamwkit.tuning.budget.next_step`) run on the cached grid:
    each value it asks for reads the fold loss of the cached candidate nearest it (zero:
    zero), from the probe's value with the shipped constant (the fine-tuning rule's for a
    fine-tune) taken from ``fold``'s cached curve; its choice as the summary makes it (the
    finalists' lower mean over the folds they share, ties within 0.1% to the lesser
    decay), snapped to the grid."""
    from adamwkit.tuning import budget as shipped
    from adamwkit.tuning.cv import PRACTICAL_FRACTION, Candidate

    order = [(fold + f) % FOLDS for f in range(FOLDS)]
    s = replace(sim.rotate(s, fold), probe_c=shipped_c())
    first = shipped._round(sim.probe_wd(s, [0]))

    def idx(w: float) -> int:
        return 0 if w == 0 else s.snap(w)

    cands: dict[float, Candidate] = {}
    ran: list[list[float]] = []
    while (step := shipped.next_step(cands, len(ran), BUDGET, FOLDS, first)) is not None:
        for w in step.weight_decays:
            c = cands.setdefault(w, Candidate(w, 1.0))
            c.fold_losses[step.split] = float(s.losses[idx(w), step.split])
            ran.append([float(s.wds[idx(w)]), order[step.split]])
    top = shipped.finalists(cands)
    shared = sorted(set.intersection(*(set(cands[w].fold_losses) for w in top)))
    means = {w: float(np.mean([cands[w].fold_losses[f] for f in shared])) for w in top}
    low = min(means.values())
    chosen = idx(min(w for w in top if means[w] <= low + PRACTICAL_FRACTION * abs(low)))
    return {"chosen": float(s.wds[chosen]), "hit": bool(s.hits[chosen]), "runs": len(ran),
            "order": ran, "probe_value": first}  # fmt: skip


def simulated(s: sim.Study) -> dict[str, Any]:
    """``budget.py``'s prediction at the same budget, fold 0 first (as ``tune`` takes it):
    the choice, whether it hits, the runs in the order made (weight decay, fold), and the
    hit rate over the 5 first folds; with each constant of :data:`SIMULATED`; and
    :func:`replay`, the shipped search on the cached grid."""
    strategy = sim.STRATEGIES[STRATEGY][0]
    out: dict[str, Any] = {"probe_c": s.probe_c, "shipped_c": shipped_c()}
    for key, name in SIMULATED.items():
        if key == "replay":
            share = float(np.mean([replay(s, k)["hit"] for k in range(FOLDS)]))
            out[key] = {"strategy": name, **replay(s), "hit_share_5_starts": share}
            continue
        study_ = s if key == "confirm" else replace(s, probe_c=shipped_c())
        run = sim.Sim(study_, BUDGET)
        chosen = strategy(run)
        starts = sim.simulate([study_], strategy, BUDGET)
        first = None if s.finetune or s.curves is None else sim.probe_wd(study_, [0])
        out[key] = {
            "strategy": name,
            "chosen": float(s.wds[chosen]),
            "hit": bool(s.hits[chosen]),
            "runs": len(run.ran),
            "order": [[float(s.wds[i]), f] for i, f in run.ran],
            "probe_value": first,
            "hit_share_5_starts": sum(o.hit for o in starts) / len(starts),
        }
    return out


def agreement(r: dict, key: str = "shipped_c") -> dict[str, Any]:
    """How the live run compares with the simulation ``key``: the same hit outcome; the
    same choice (zero and zero, or the cached candidate nearest the live value is the
    simulation's); the same values on fold 0 (each live value's nearest cached candidate)
    and the same number of runs."""
    s = grid_studies()[r["study"]]
    p = r["simulation"][key]
    live = r.get("chosen")

    def snap(w: float) -> float:
        return 0.0 if w == 0 else float(s.wds[s.snap(w)])

    fold0 = sorted({snap(x["weight_decay"]) for x in r.get("runs", [])
                    if x["fold_losses"] and x["fold_losses"][0] is not None})  # fmt: skip
    sim0 = sorted({w for w, f in p["order"] if f == 0})
    return {
        "same_hit": r["judged"]["hit"] == p["hit"],
        "same_choice": live is not None and snap(live) == p["chosen"],
        "same_fold0": fold0 == sim0,
        "same_runs": r.get("spent_runs") == p["runs"],
        "live_fold0": fold0,
        "sim_fold0": sim0,
    }


# ---------------------------------------------------------------------------- the study


def study(src: str, path: Path) -> dict[str, Any]:
    d = json.loads(path.read_text())
    s = grid_studies()[name_of(src, path)]
    check_hits(s)
    prov = provenance()
    out = live(src, d)
    best = float(s.wds[s.best])
    return {
        "study": name_of(src, path),
        "source": src,
        "family": d["family"],
        "id": d["id"],
        "kind": d.get("kind"),
        "seed": d.get("seed", 0),
        "finetune": src == "results-finetune",
        "config": d["config"],
        **out,
        "over_budget": out.get("spent_runs", 0) > BUDGET,
        "grid": {
            "best": best,
            "flat": bool(s.flat),
            "candidates": len(s.wds),
            "runs": int((~s.imputed).sum()),
        },
        "judged": judge(s, out.get("chosen")),
        "unnamed": unnamed(out),
        "judged_unnamed": judge(s, unnamed(out)) if unnamed(out) is not None else None,
        "matches_cache": consistency(d, out),
        "simulation": simulated(s),
        **prov,
        "torch": __import__("torch").__version__,
    }


def _write(path: Path, out: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    tmp.replace(path)


# ---------------------------------------------------------------------------- the table


GROUPS = (
    ("overall", lambda r: True),
    ("from scratch", lambda r: not r["finetune"]),
    ("  first six families (results/)", lambda r: r["source"] == "results"),
    ("  wider families (results-wide/)", lambda r: r["source"] == "results-wide"),
    ("fine-tuning", lambda r: r["finetune"]),
    ("evidence studies of docs/evidence-budget.md", lambda r: r["source"] != "results-wide"),
)


def load_outcomes() -> list[dict]:
    order = {name_of(src, p): i for i, (src, p) in enumerate(cached_studies())}
    rows = [json.loads(p.read_text()) for p in sorted(OUT.glob("*/*/*.json"))]
    return sorted(rows, key=lambda r: order.get(r["study"], len(order)))


def _hits(rows: list[dict], key: str | None = None) -> str:
    n = len(rows)
    k = sum(r["judged"]["hit"] if key is None else r["simulation"][key]["hit"] for r in rows)
    return f"{k} ({k / n:.0%})"


def _loose(r: dict) -> bool:
    """A hit by the looser reading: a choice between two cached candidates that both pass
    the standard-error test, or, where ``tune`` named none, the finalists' lower mean."""
    unnamed = r.get("judged_unnamed") or {}
    return bool(r["judged"]["between_near"] or unnamed.get("between_near"))


def _row(label: str, rows: list[dict], starts: bool = False) -> str:
    ok = [r for r in rows if "error" not in r]
    spent = float(np.mean([r["spent_runs"] for r in ok])) if ok else math.nan
    most = max((r["spent_runs"] for r in ok), default=0)
    secs = float(np.mean([r["seconds"] for r in rows]))
    none = [r for r in rows if "error" not in r and r["chosen"] is None]
    loose = sum(_loose(r) for r in rows)
    cells = [str(len(rows)), _hits(rows), str(len(none)), f"{loose} ({loose / len(rows):.0%})",
             f"{spent:.1f}", str(most), f"{secs:.1f}",
             *(_hits(rows, key) for key in SIMULATED)]  # fmt: skip
    if starts:
        cells += [
            f"{np.mean([r['simulation'][key]['hit_share_5_starts'] for r in rows]):.0%}"
            for key in SIMULATED
        ]
    return f"| {label} | " + " | ".join(cells) + " |"


def _head(starts: bool) -> list[str]:
    sims = [f"simulated {name}" for name in SIMULATED.values()]
    if starts:
        sims += [f"simulated {name}, 5 first folds" for name in SIMULATED.values()]
    cols = [
        "n",
        "live hits",
        "no choice",
        "looser hits",
        "mean spent runs",
        "most spent",
        "mean seconds",
        *sims,
    ]
    return ["| studies | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]


def table(rows: list[dict]) -> list[str]:
    """Per family, then the totals."""
    out = _head(False)
    for src in SOURCES:
        fams = sorted({r["family"] for r in rows if r["source"] == src})
        for fam in fams:
            sel = [r for r in rows if r["source"] == src and r["family"] == fam]
            out.append(_row(f"{fam}{' (fine-tuning)' if src == 'results-finetune' else ''}", sel))
    out += ["", *_head(True)]
    for label, keep in GROUPS:
        sel = [r for r in rows if keep(r)]
        if sel:
            name = label.strip() if label.startswith(" ") else f"**{label}**"
            out.append(_row(name, sel, starts=True))
    return out


def _g(v: float | None) -> str:
    return "-" if v is None else "0" if v == 0 else f"{v:.3g}"


def details(rows: list[dict]) -> list[str]:
    """Every study: the live choice and the simulations' (fold 0 first)."""
    sims = " | ".join(f"simulated {n}" for n in SIMULATED.values())
    out = [f"| study | live choice | spent | s | full grid's best | live hit | {sims} |",
           "|---|---:|---:|---:|---:|---|" + "---|" * len(SIMULATED)]  # fmt: skip
    for r in rows:
        live = "error" if "error" in r else _g(r["chosen"])
        if r.get("unnamed") is not None:
            live = f"none ({_g(r['unnamed'])}: {r['judged_unnamed']['how']})"
        cells = [
            f"{_g(r['simulation'][k]['chosen'])} ({'hit' if r['simulation'][k]['hit'] else 'miss'})"
            for k in SIMULATED
        ]
        out.append(
            f"| {r['study'].split('/', 1)[1]} | {live} | {r.get('spent_runs', '-')} "
            f"| {r['seconds']:.0f} | {_g(r['grid']['best'])} | {r['judged']['how']} | "
            + " | ".join(cells)
            + " |"
        )
    return out


def misses(rows: list[dict]) -> list[str]:
    """The misses, worst first: by the paired SEs of the cached candidate nearest the
    choice (a choice far from every candidate, or none named, last)."""

    def worst(r: dict) -> float:
        j = r["judged"]
        return -(j.get("nearest_paired_ses") or -1.0)

    out = ["| study | choice | full grid's best | ratio | nearest candidate: loss over the best "
           "| paired SEs | looser hit |", "|---|---:|---:|---:|---:|---:|---|"]  # fmt: skip
    for r in sorted((r for r in rows if not r["judged"]["hit"]), key=worst):
        j, best, w = r["judged"], r["grid"]["best"], r.get("chosen")
        ratio = "-" if not w or not best else f"{max(w, best) / min(w, best):.2g}x"
        excess = j.get("nearest_excess")
        out.append(
            f"| {r['study'].split('/', 1)[1]} | {'none' if w is None else _g(w)} | {_g(best)} "
            f"| {ratio} | {'-' if excess is None else f'+{100 * excess:.2g}%'} "
            f"| {_g(j.get('nearest_paired_ses'))} | {'yes' if _loose(r) else 'no'} |"
        )
    return out


def agreements(rows: list[dict]) -> list[str]:
    """The live runs against the simulation, by group (:func:`agreement`), then every study
    where the two differ in hit or in choice."""
    cols = ["n", "same hit or miss", "same choice", "same values on the first fold", "same runs",
            "both hit", "live only", "simulation only", "both miss"]  # fmt: skip
    out = ["| simulation | studies | " + " | ".join(cols) + " |", "|---|---|" + "---:|" * len(cols)]
    for key, name in SIMULATED.items():
        for label, keep in GROUPS:
            sel = [r for r in rows if keep(r) and "error" not in r]
            if not sel:
                continue
            a = [agreement(r, key) for r in sel]
            live = [r["judged"]["hit"] for r in sel]
            simh = [r["simulation"][key]["hit"] for r in sel]
            pairs = list(zip(live, simh, strict=True))
            cells = [len(sel), sum(x["same_hit"] for x in a), sum(x["same_choice"] for x in a),
                     sum(x["same_fold0"] for x in a), sum(x["same_runs"] for x in a),
                     sum(x and y for x, y in pairs), sum(x and not y for x, y in pairs),
                     sum(y and not x for x, y in pairs),
                     sum(not x and not y for x, y in pairs)]  # fmt: skip
            out.append(f"| {name} | {label.strip()} | " + " | ".join(map(str, cells)) + " |")
    out += ["", "| study | live: first-fold values (snapped) -> choice "
            "| simulated (shipped c): first-fold values -> choice | live | simulated |",
            "|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        if "error" in r:
            continue
        a, p = agreement(r), r["simulation"]["shipped_c"]
        if a["same_hit"] and a["same_choice"]:
            continue
        out.append(
            f"| {r['study'].split('/', 1)[1]} | {', '.join(map(_g, a['live_fold0']))} -> "
            f"{'none' if r['chosen'] is None else _g(r['chosen'])} ({r['spent_runs']} runs) | "
            f"{', '.join(map(_g, a['sim_fold0']))} -> {_g(p['chosen'])} ({p['runs']} runs) | "
            f"{r['judged']['how']} | {'hit' if p['hit'] else 'miss'} |"
        )
    return out


def one_fold(rows: list[dict]) -> list[str]:
    """What a budget spent on the first fold alone can reach: the full grid's best on fold
    0 (every cached candidate, ties within 0.1% to the lesser decay), judged by the same
    test; and the live misses it misses too (fold 0 ranks the candidates otherwise than
    the 5 folds do)."""
    from adamwkit.tuning.cv import PRACTICAL_FRACTION

    def hit(r: dict) -> bool:
        s = grid_studies()[r["study"]]
        loss = np.where(s.imputed[:, 0], np.inf, s.losses[:, 0])
        low = float(loss.min())
        i = min(j for j in range(len(loss)) if loss[j] <= low + PRACTICAL_FRACTION * abs(low))
        return bool(s.hits[i])

    out = ["| studies | n | live hits | the full grid on the first fold alone | live misses | "
           "of them also missed by it |",
           "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
    for label, keep in GROUPS:
        sel = [r for r in rows if keep(r)]
        if not sel:
            continue
        missed = [r for r in sel if not r["judged"]["hit"]]
        out.append(f"| {label.strip()} | {len(sel)} | {_hits(sel)} | "
                   f"{sum(map(hit, sel))} ({sum(map(hit, sel)) / len(sel):.0%}) | {len(missed)} "
                   f"| {sum(not hit(r) for r in missed)} |")  # fmt: skip
    return out


def near_pairs(rows: list[dict]) -> str:
    """How much a fold's loss moves with a small change of weight decay: the live runs
    within 1% in weight decay of a cached candidate, against its loss on the same fold."""
    gaps = []
    for r in rows:
        s = grid_studies()[r["study"]]
        for x in r.get("runs", []):
            w, losses = x["weight_decay"], x["fold_losses"]
            if w == 0 or not losses or losses[0] is None:
                continue
            i = s.snap(w)
            if abs(math.log(s.wds[i] / w)) < 0.01 and not s.imputed[i, 0]:
                gaps.append(abs(losses[0] / s.losses[i, 0] - 1.0))
    if not gaps:
        return "no live run within 1% of a cached candidate"
    return (f"{len(gaps)} live runs within 1% in weight decay of a cached candidate (not zero): "
            f"their first-fold loss differs from the candidate's by a median "
            f"{100 * np.median(gaps):.2g}%, 90% of them under "
            f"{100 * np.percentile(gaps, 90):.2g}%, at most {100 * max(gaps):.2g}%")  # fmt: skip


def rejudge() -> None:
    """Judge every cached outcome again against the full grid, simulate it again, and
    compare its runs with the cached ones again; the runs and the choice are kept."""
    for path in sorted(OUT.glob("*/*/*.json")):
        r = json.loads(path.read_text())
        s = grid_studies()[r["study"]]
        r["simulation"] = simulated(s)
        r["judged"] = judge(s, r.get("chosen"))
        r["judged_unnamed"] = judge(s, r["unnamed"]) if r.get("unnamed") is not None else None
        r["matches_cache"] = consistency(json.loads((HERE / f"{r['study']}.json").read_text()), r)
        _write(path, r)


def report() -> None:
    rows = load_outcomes()
    if not rows:
        print("nothing cached")
        return
    print("\n".join(table(rows)))
    print()
    errors = [r for r in rows if "error" in r]
    over = [r for r in rows if r["over_budget"]]
    gaps = [r["matches_cache"] for r in rows if r.get("matches_cache") is not None]
    print(
        f"total seconds {sum(r['seconds'] for r in rows):.0f}; errors {len(errors)}; "
        f"over budget {len(over)}; largest gap to the cached runs "
        f"{max(gaps, default=math.nan):.2g} (median {np.median(gaps) if gaps else math.nan:.2g})"
    )
    commits = sorted({(r["calibration_commit"][:7], r["calibration_modified"]) for r in rows})
    print("calibration commits:", commits)
    print()
    print("\n".join(misses(rows)))
    print()
    print("\n".join(agreements(rows)))
    print()
    print(near_pairs(rows))
    print()
    print("\n".join(one_fold(rows)))
    print()
    print("\n".join(details(rows)))


# ------------------------------------------------------------------------------ main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", default=None, help="run only studies whose name has this text")
    p.add_argument("--skip", default="", help="comma-separated families not to run")
    p.add_argument("--list", action="store_true", help="list the studies and stop")
    p.add_argument("--report", action="store_true", help="print the table, train nothing")
    p.add_argument("--rejudge", action="store_true",
                   help="judge the cached outcomes again, train nothing")  # fmt: skip
    p.add_argument("--deadline", type=float, default=None,
                   help="start no study after this unix time")  # fmt: skip
    args = p.parse_args()
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    if args.rejudge:
        rejudge()
    if args.report or args.rejudge:
        report()
        return
    skip = {f for f in args.skip.split(",") if f}
    for src, path in cached_studies():
        name = name_of(src, path)
        if (args.only and args.only not in name) or path.parent.name in skip:
            continue
        target = out_path(src, path)
        if args.list:
            print(name, "cached" if target.exists() else "")
            continue
        if target.exists():
            continue
        if args.deadline and time.time() > args.deadline:
            print("deadline passed: stopping", flush=True)
            break
        out = study(src, path)
        _write(target, out)
        what = out.get("error") or (
            f"chose {_g(out['chosen'])} (grid best {_g(out['grid']['best'])}), "
            f"{out['judged']['how']}, {out['spent_runs']} runs"
        )
        p = out["simulation"]["shipped_c"]
        print(f"{name}: {what}, {out['seconds']} s; simulated {_g(p['chosen'])} "
              f"({'hit' if p['hit'] else 'miss'}); cache gap {_g(out['matches_cache'])}",
              flush=True)  # fmt: skip
    if not args.list:
        report()


if __name__ == "__main__":
    main()
