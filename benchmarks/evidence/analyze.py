"""Read the cached evidence studies, find each optimum, fit the calibrated rule, check it.

    python benchmarks/evidence/analyze.py            # tables and plots into docs/
    python benchmarks/evidence/analyze.py --write    # also rewrite src/adamwkit/_calibration.py

Nothing is trained: the studies are the JSON files ``run.py`` cached in ``results/`` (six
families) and ``run_wide.py`` in ``results-wide/`` (five wider families), with their
zero-decay probes in ``probes/`` and ``probes-wide/`` (:data:`EVIDENCE`); every fit and
check below runs on all eleven. For each study:

- the candidates' CV statistics come from :func:`adamwkit.tuning.cv.summarize` (paired
  differences to the best on the same folds, seeds repeated as repeated CV);
- the optimum tau_epoch* is the best candidate's, refined by the vertex of a parabola
  through the mean losses of the best and its two neighbours on each side (in log tau),
  kept within one grid step of the best;
- a study is *flat* when weight decay barely matters (zero decay within two paired SEs of
  the best, ``adamwkit.tuning.cv.summarize``'s verdict); its one-SE band is the span of
  tau_epoch whose paired difference to the best is within one paired SE, and its optimum
  is *located* when that band excludes zero decay and spans at most 8x, with tau_epoch*
  at most 8x the epochs.

The calibrated rule is a least-squares fit of log tau_epoch* on the located studies. Each
candidate model is scored leave-one-family-out: fitted without a family, it predicts that
family's studies, and the range is the 10% to 90% quantiles of the residuals of the other
families' studies (an 80% band). The rule without training and the probe's law are each
the simplest candidate within :data:`CLEARLY_BETTER` of the best share within 2x
(:func:`choose`).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RESULTS = HERE / "results"
PROBES = HERE / "probes"
RESULTS_WIDE = HERE / "results-wide"
PROBES_WIDE = HERE / "probes-wide"
#: Every cached evidence source: (studies, their zero-decay probes). The six first
#: families (``run.py``, ``probe.py``) and the five wider ones (``run_wide.py``).
EVIDENCE = ((RESULTS, PROBES), (RESULTS_WIDE, PROBES_WIDE))
DOCS = ROOT / "docs"
FIGURES = DOCS / "evidence"
CALIBRATION = ROOT / "src" / "adamwkit" / "_calibration.py"
sys.path.insert(0, str(HERE))


@dataclass
class Study:
    family: str
    id: str
    config: dict
    n_train: int
    params: int
    seeds: list[int]
    taus: list[float]  # positive candidates, ascending
    means: list[float]
    diffs: list[float]  # paired difference to the best
    sems: list[float]  # its paired standard error
    zero_mean: float
    best_tau: float
    tau_star: float
    flat: bool
    band: tuple[float, float]
    states: list[str] = field(default_factory=list)
    turn: float = math.nan  # the zero-decay probe's turning epoch (probe.py), if cached
    source: str = "results"  # the cache it came from (EVIDENCE): "results" or "results-wide"

    @property
    def located(self) -> bool:
        """The optimum's place is known: the one-SE band excludes zero decay and spans at
        most 8x in tau_epoch (three octaves), and tau_epoch* is at most 8x the epochs (a
        longer timescale barely decays within the run: as good as none)."""
        lo, hi = self.band
        return (
            math.isfinite(hi)
            and math.isfinite(self.tau_star)
            and hi / lo <= 8.0
            and self.tau_star <= 8.0 * self.epochs
        )

    @property
    def epochs(self) -> float:
        return float(self.config["epochs"])

    def features(self) -> dict[str, float]:
        c = self.config
        return {
            "log_T": math.log(self.epochs),
            "log_N": math.log(self.n_train),
            "log_B": math.log(c["batch_size"]),
            "log_lr": math.log(c["lr"]),
            "log_P_per_N": math.log(self.params / self.n_train),
            "log_steps_per_epoch": math.log(self.n_train / c["batch_size"]),
            "log_turn": math.log(self.turn) if self.turn > 0 else math.nan,
            # the share of the run before the turn
            "log_turn_frac": math.log(self.turn / self.epochs) if self.turn > 0 else math.nan,
        }


def load_studies(results: Path | None = None, probes: Path = PROBES) -> list[Study]:
    """Every cached configuration, its seeds merged as repeats of the CV, with the turning
    epoch of its zero-decay probe (the geometric mean over the seeds probed). Without
    ``results``, every source of :data:`EVIDENCE` (all eleven families)."""
    if results is None:
        return [s for r, p in EVIDENCE for s in load_studies(r, p)]
    from adamwkit.tuning.cv import Candidate, summarize
    from adamwkit.tuning.probe import turning_epoch

    groups: dict[tuple[str, str], list[dict]] = {}
    for path in sorted(results.glob("*/*.json")):
        d = json.loads(path.read_text())
        groups.setdefault((d["family"], d["id"]), []).append(d)
    studies = []
    for (family, cid), runs in sorted(groups.items()):
        runs.sort(key=lambda d: d["seed"])
        folds = runs[0]["folds"]
        by_wd: dict[float, Candidate] = {}
        tau_of: dict[float, float | None] = {}
        for j, d in enumerate(runs):
            for c in d["candidates"]:
                cand = by_wd.setdefault(c["weight_decay"], Candidate(c["weight_decay"], 1.0))
                tau_of[c["weight_decay"]] = c["tau_epoch"]
                for f, v in enumerate(c["fold_losses"]):
                    if v is not None:
                        cand.fold_losses[j * folds + f] = v
                if c["state"] != "complete":
                    cand.state = c["state"]
        # a candidate missing in one seed's grid (an extension) is left out of the fit
        runs_n = folds * len(runs)
        cands = [c for c in by_wd.values() if len(c.fold_losses) == runs_n]
        s = summarize(cands, folds, len(runs))
        positive = sorted((c for c in cands if c.weight_decay > 0), key=lambda c: -c.weight_decay)
        taus = [tau_of[c.weight_decay] for c in positive]  # ascending tau
        means = [c.mean for c in positive]
        diffs = [c.paired_diff for c in positive]
        sems = [c.paired_sem if c.paired_sem is not None else 0.0 for c in positive]
        # zero decay stopped early (no better than untrained at half time) lost for sure
        zero = next((c for c in cands if c.weight_decay == 0), None)
        best = s.best
        assert best is not None
        best_tau = math.inf if best.weight_decay == 0 else tau_of[best.weight_decay]
        tau_star = _refine(taus, means, best_tau)
        inside = [t for t, dd, se in zip(taus, diffs, sems, strict=True) if dd <= se]
        if (
            zero is not None
            and zero.paired_diff is not None
            and zero.paired_diff <= (zero.paired_sem or 0)
        ):
            inside.append(math.inf)
        band = (min(inside), max(inside))
        first = runs[0]
        zero_mean = zero.mean if zero is not None and zero.mean is not None else math.nan
        seeds = [d["seed"] for d in runs]
        states = [c.state for c in positive]
        turns = []
        for seed in seeds:
            path = probes / family / f"{cid}-s{seed}.json"
            if path.exists():
                curves = np.array(json.loads(path.read_text())["val_losses"])
                turns.append(turning_epoch(curves.mean(0).tolist()))
        turn = math.exp(float(np.mean(np.log(turns)))) if turns else math.nan
        studies.append(
            Study(family, cid, first["config"], first["n_train"], first["params"], seeds, taus,
                  means, diffs, sems, zero_mean, best_tau, tau_star, s.flat, band, states, turn,
                  results.name)
        )  # fmt: skip
    return studies


def _refine(taus: list[float], means: list[float], best_tau: float) -> float:
    """:func:`adamwkit.tuning.cv.refine_optimum`; zero decay (``inf``) as it is."""
    from adamwkit.tuning.cv import refine_optimum

    return math.inf if math.isinf(best_tau) else refine_optimum(taus, means, best_tau)


# ---------------------------------------------------------------------------- models

MODELS: dict[str, list[str]] = {
    "sqrt(T), Wang & Aitchison's window middle": ["log_T=0.5", "const=0"],  # SQRT_T
    "c": [],
    "c * sqrt(T)": ["log_T=0.5"],
    "c / lr": ["log_lr=-1"],
    "c * B^b / lr": ["log_B", "log_lr=-1"],
    "c * N^d / lr": ["log_N", "log_lr=-1"],
    "c * B^b * N^d / lr": ["log_B", "log_N", "log_lr=-1"],
    "c * T^t * B^b * N^d / lr": ["log_T", "log_B", "log_N", "log_lr=-1"],
    "c * T": ["log_T=1"],
    "c * T^b": ["log_T"],
    "c * T^b * N^d": ["log_T", "log_N"],
    "c * T^b * (N/B)^d": ["log_T", "log_steps_per_epoch"],
    "c * T^b * (N/B)^d * lr^e": ["log_T", "log_steps_per_epoch", "log_lr"],
    "c * T^b * N^d * B^e * lr^f": ["log_T", "log_N", "log_B", "log_lr"],
}

SQRT_T = "sqrt(T), Wang & Aitchison's window middle"

# Rules that read a probe: one run without weight decay, its turning epoch (probe.py).
# "(turn/T)^b" asks whether the share of the run before the turn matters beyond the turn.
PROBE_MODELS: dict[str, list[str]] = {
    "c * turn": ["log_turn=1"],
    "c * turn^a": ["log_turn"],
    "c * turn^a * T^b": ["log_turn", "log_T"],
    "c * turn * (turn/T)^b": ["log_turn=1", "log_turn_frac"],
}
#: A model is chosen over a simpler one only when it is clearly better: more than this
#: share of the located studies within 2x, left out family by family. Below it, the
#: difference is a study or three of some eighty, which the choice would overfit.
CLEARLY_BETTER = 0.05


def free_parameters(terms: list[str]) -> int:
    """The coefficients a model fits: its free terms and the constant (unless set)."""
    return sum("=" not in t for t in terms) + (0 if "const=0" in terms else 1)


def choose(checks: dict[str, Check], models: dict[str, list[str]]) -> str:
    """The simplest model (fewest fitted coefficients) whose share within 2x, left out
    family by family, is within :data:`CLEARLY_BETTER` of the best; on a tie, the more
    within 2x, then the range holding more, then the first listed."""
    top = max(c.share("within_2x") for c in checks.values())
    near = [n for n in checks if checks[n].share("within_2x") >= top - CLEARLY_BETTER - 1e-9]
    order = list(checks)

    def key(n: str) -> tuple[int, float, float, int]:
        c = checks[n]
        return (free_parameters(models[n]), -round(c.share("within_2x"), 6),
                -round(c.share("range_holds"), 6), order.index(n))  # fmt: skip

    return min(near, key=key)


def probe_coef(f: Fit) -> dict[str, float]:
    """A probe model's coefficients, fitted or set, over the terms the shipped probe reads
    (``adamwkit.tuning.turning.probe_tau_epoch``: log_turn, log_T and the constant):
    log_turn_frac = log_turn - log_T is spread over the two."""
    out: dict[str, float] = {}
    for k, v in {**{k: v for k, v in f.fixed.items() if k != "const"}, **f.coef}.items():
        if k == "log_turn_frac":
            out["log_turn"] = out.get("log_turn", 0.0) + v
            out["log_T"] = out.get("log_T", 0.0) - v
        else:
            out[k] = out.get(k, 0.0) + v
    return out


#: A probe turned when its validation loss was lowest before this share of the epochs;
#: a probe that did not turn (still improving at the end) falls back to the rule without
#: training.
TURNED = 0.9


def turned(s: Study) -> bool:
    return s.turn < TURNED * s.epochs  # False when there is no probe (nan)


# Published rules, as a prediction of log tau_epoch (not fitted here).
PUBLISHED = {
    "loshchilov-hutter: 20 sqrt(B T / N)": lambda f: (
        math.log(20.0) + 0.5 * (f["log_B"] + f["log_T"] - f["log_N"])
    ),
    "torch default 0.01": lambda f: f["log_B"] - f["log_lr"] - math.log(0.01) - f["log_N"],
}


@dataclass
class Fit:
    name: str
    terms: list[str]
    coef: dict[str, float]

    @property
    def fixed(self) -> dict[str, float]:
        """Terms whose coefficient is set, not fitted ("log_lr=-1"); "const" sets the
        constant."""
        return {t.split("=")[0]: float(t.split("=")[1]) for t in self.terms if "=" in t}

    def predict_log(self, st: Study) -> float:
        f = st.features()
        if self.name in PUBLISHED:
            return PUBLISHED[self.name](f)
        out = self.coef["const"]
        for t, c in self.coef.items():
            if t != "const":
                out += c * f[t]
        for t, c in self.fixed.items():
            if t != "const":
                out += c * f[t]
        return out


def fit(name: str, terms: list[str], studies: list[Study]) -> Fit:
    if name in PUBLISHED:
        return Fit(name, terms, {})
    shell = Fit(name, terms, {})
    if "const" in shell.fixed:  # nothing to fit
        return Fit(name, terms, {"const": shell.fixed["const"]})
    y = np.array([math.log(s.tau_star) for s in studies])
    for t, c in shell.fixed.items():
        y = y - c * np.array([s.features()[t] for s in studies])
    free = [t for t in terms if "=" not in t]
    cols = [np.ones(len(studies))]
    for t in free:
        cols.append(np.array([s.features()[t] for s in studies]))
    coef, *_ = np.linalg.lstsq(np.stack(cols, 1), y, rcond=None)
    values = dict(zip(free, map(float, coef[1:]), strict=True))
    return Fit(name, terms, {"const": float(coef[0]), **values})


def residuals(f: Fit, studies: list[Study]) -> np.ndarray:
    return np.array([math.log(s.tau_star) - f.predict_log(s) for s in studies])


@dataclass
class Check:
    """Leave-one-family-out: per study, the prediction made without its family."""

    model: str
    rows: list[dict]

    def share(self, key: str, only_clear: bool = True) -> float:
        rows = [r for r in self.rows if r["clear"] or not only_clear]
        return sum(r[key] for r in rows) / max(1, len(rows))


def unseen_residuals(terms: list[str], name: str, clear: list[Study]) -> np.ndarray:
    """Residuals of predictions for families the fit has not seen: each family predicted
    by a fit on the others. Their spread is the error a new task family should expect,
    which the residuals of a fit on every family understate."""
    out = []
    for fam in sorted({s.family for s in clear}):
        train = [s for s in clear if s.family != fam]
        if len(train) < len(terms) + 3:
            continue
        f = fit(name, terms, train)
        out += [math.log(s.tau_star) - f.predict_log(s) for s in clear if s.family == fam]
    return np.array(out)


def leave_one_family_out(name: str, terms: list[str], clear: list[Study],
                         everyone: list[Study], q: float = 0.1) -> Check:  # fmt: skip
    """Each family predicted by a fit on the others, with a range from the residuals the
    other families showed when they were the unseen one (nested: the held-out family
    plays no part in its own range)."""
    rows = []
    for fam in sorted({s.family for s in everyone}):
        train = [s for s in clear if s.family != fam]
        inner = unseen_residuals(terms, name, train)
        if len(train) < len(terms) + 3 or len(inner) < 3:  # too few left: no prediction
            rows += [_judge(s, math.nan, 0.0, 0.0) for s in everyone if s.family == fam]
            continue
        f = fit(name, terms, train)
        lo, hi = np.quantile(inner, q), np.quantile(inner, 1 - q)
        for s in everyone:
            if s.family != fam:
                continue
            rows.append(_judge(s, f.predict_log(s), lo, hi))
    return Check(name, rows)


def probe_check(name: str, terms: list[str], clear: list[Study], everyone: list[Study],
                fallback: Check) -> Check:  # fmt: skip
    """Leave-one-family-out for a probe rule: studies whose probe turned are predicted
    from their turning epoch (fitted on the other families' turned studies, with their
    nested range); the rest take the rule without training's row from ``fallback``."""
    inner = leave_one_family_out(name, terms, [s for s in clear if turned(s)],
                                 [s for s in everyone if turned(s)])  # fmt: skip
    mine = {(r["family"], r["id"]): r for r in inner.rows}
    rows = []
    for r in fallback.rows:
        key = (r["family"], r["id"])
        rows.append({**mine[key], "turned": True} if key in mine else {**r, "turned": False})
    return Check(name, rows)


def _judge(s: Study, log_pred: float, lo: float, hi: float) -> dict:
    pred = math.exp(log_pred)  # nan when there was none
    clear = s.located
    ratio = s.tau_star / pred if math.isfinite(s.tau_star) else math.inf
    band_lo, band_hi = pred * math.exp(lo), pred * math.exp(hi)
    return {
        "family": s.family, "id": s.id, "clear": clear, "tau_star": s.tau_star,
        "pred": pred, "ratio": ratio,
        "within_2x": clear and 0.5 <= ratio <= 2.0,
        "range_holds": clear and band_lo <= s.tau_star <= band_hi,
        # a flat study is served by any value in its one-SE band
        "in_band": s.band[0] <= pred * 2 and pred / 2 <= s.band[1],
        "range": (band_lo, band_hi),
    }  # fmt: skip


# ---------------------------------------------------------------------------- output


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "zero decay"
    return f"{x:.3g}"


def _finish(fig, ax, title: str, name: str) -> None:
    """One legend entry per label, the title, and the figure saved into docs/evidence/."""
    import matplotlib.pyplot as plt

    handles, labels = ax.get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))
    ax.legend(seen.values(), seen.keys(), fontsize=7)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=110)
    plt.close(fig)


def plots(studies: list[Study], final: Fit, band: tuple[float, float]) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    FIGURES.mkdir(parents=True, exist_ok=True)
    names = []
    families = sorted({s.family for s in studies})
    colors = {f: plt.cm.tab20(i) for i, f in enumerate(families)}

    fig, ax = plt.subplots(figsize=(7, 5))
    for s in studies:
        if not math.isfinite(s.tau_star):
            continue
        pred = math.exp(final.predict_log(s))
        ax.scatter(pred, s.tau_star, color=colors[s.family], marker="o" if not s.flat else "x",
                   label=s.family)  # fmt: skip
        ax.plot([pred, pred], [s.band[0], min(s.band[1], 1e5)], color=colors[s.family], lw=0.6,
                alpha=0.5)  # fmt: skip
    lim = np.array([0.3, 3e4])
    ax.plot(lim, lim, "k-", lw=1, label="prediction = optimum")
    ax.fill_between(lim, lim * math.exp(band[0]), lim * math.exp(band[1]), color="k", alpha=0.08,
                    label="80% range")  # fmt: skip
    ax.plot(lim, lim * 2, "k:", lw=0.8)
    ax.plot(lim, lim / 2, "k:", lw=0.8, label="2x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("calibrated prediction of tau_epoch (epochs)")
    ax.set_ylabel("CV optimum tau_epoch* (epochs); bar: one-SE band")
    _finish(fig, ax, "Calibrated rule against the CV optimum (x: flat studies)", "calibration.png")
    names.append("calibration.png")

    fig, ax = plt.subplots(figsize=(7, 5))
    for s in studies:
        if math.isfinite(s.tau_star):
            ax.scatter(s.epochs, s.tau_star, color=colors[s.family],
                       marker="o" if not s.flat else "x", label=s.family)  # fmt: skip
    t = np.geomspace(10, 1000)
    ax.plot(t, np.sqrt(t), "k--", lw=1, label="sqrt(T) (suggest's central value)")
    ax.plot(t, t, "k:", lw=1, label="T (the whole run)")
    ax.plot(t, 16 / 300 * t, "k-.", lw=1, label="ImageNet recipes (16 of 300)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("epochs T")
    ax.set_ylabel("CV optimum tau_epoch*")
    _finish(fig, ax, "Where the optimum sits against the run's length", "optimum_vs_epochs.png")
    names.append("optimum_vs_epochs.png")

    cols = 4
    rows = math.ceil(len(families) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.1 * rows), squeeze=False)
    for ax in axes.flat[len(families) :]:
        ax.set_visible(False)
    for ax, fam in zip(axes.flat, families, strict=False):
        for s in (s for s in studies if s.family == fam):
            d = np.array(s.means) - min(min(s.means), s.zero_mean)
            ax.plot(s.taus, d, lw=0.8, alpha=0.7)
        ax.set_xscale("log")
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.set_title(fam, fontsize=9)
        ax.set_xlabel("tau_epoch", fontsize=8)
    axes.flat[0].set_ylabel("CV loss - best")
    fig.suptitle("CV loss against tau_epoch, every configuration of each family")
    fig.tight_layout()
    fig.savefig(FIGURES / "curves.png", dpi=100)
    plt.close(fig)
    names.append("curves.png")
    return names


def plot_probe(studies: list[Study], probe: ProbeRule) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = sorted({s.family for s in studies})
    colors = {f: plt.cm.tab20(i) for i, f in enumerate(families)}
    fig, ax = plt.subplots(figsize=(7, 5))
    for s in studies:
        if math.isnan(s.turn) or not math.isfinite(s.tau_star):
            continue
        ax.scatter(s.turn, s.tau_star, color=colors[s.family], label=s.family,
                   marker="o" if turned(s) else "^", alpha=1.0 if s.located else 0.35)  # fmt: skip
        ax.plot([s.turn, s.turn], [s.band[0], min(s.band[1], 1e5)], color=colors[s.family],
                lw=0.6, alpha=0.5)  # fmt: skip
    t = np.geomspace(1, 400)
    c = probe.coef
    pred = np.exp(c["const"] + c.get("log_turn", 0.0) * np.log(t))
    if "log_T" not in c:
        ax.plot(t, pred, "k-", lw=1, label=f"probe rule: {probe.fit.name}")
        ax.fill_between(t, pred * math.exp(probe.band[0]), pred * math.exp(probe.band[1]),
                        color="k", alpha=0.08, label="80% range")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("turning epoch of the run without decay (triangle: did not turn)")
    ax.set_ylabel("CV optimum tau_epoch* (faint: not located); bar: one-SE band")
    _finish(fig, ax, "The optimum against where the run without decay turns", "probe.png")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--write", action="store_true", help="rewrite src/adamwkit/_calibration.py")
    args = p.parse_args()
    studies = load_studies()
    clear = [s for s in studies if s.located]
    print(f"{len(studies)} studies, {len(clear)} with a located optimum, "
          f"{len({s.family for s in studies})} families")  # fmt: skip
    checks = {name: leave_one_family_out(name, terms, clear, studies)
              for name, terms in MODELS.items()}  # fmt: skip
    published = {name: leave_one_family_out(name, [], clear, studies) for name in PUBLISHED}
    for name, c in {**published, **checks}.items():
        print(
            f"{name:45s} within 2x {c.share('within_2x'):.0%}  range holds "
            f"{c.share('range_holds'):.0%}  in band (all) {c.share('in_band', False):.0%}"
        )
    best_name = choose(checks, MODELS)
    probe = probe_rule(studies, checks[best_name])
    for name, c in probe.checks.items():
        print(
            f"probe {name:39s} within 2x {c.share('within_2x'):.0%}  range holds "
            f"{c.share('range_holds'):.0%}  in band (all) {c.share('in_band', False):.0%}"
        )
    print("probe chosen:", probe.fit.name, probe.coef, "band x",
          [round(math.exp(b), 3) for b in probe.band])  # fmt: skip
    # the same analysis on the six first families alone (results/), for comparison
    first = [s for s in studies if s.source == RESULTS.name]
    first_clear = [s for s in first if s.located]
    first_probe = probe_rule(first, leave_one_family_out(best_name, MODELS[best_name],
                                                         first_clear, first))  # fmt: skip
    final = fit(best_name, MODELS[best_name], clear)
    r = unseen_residuals(MODELS[best_name], best_name, clear)
    band = (float(np.quantile(r, 0.1)), float(np.quantile(r, 0.9)))
    print("chosen:", best_name, final.coef, "band x", [round(math.exp(b), 3) for b in band])
    for s in studies:
        print(
            f"{s.family:16s} {s.id:32s} tau* {_fmt(s.tau_star):>10s} band "
            f"[{_fmt(s.band[0])}, {_fmt(s.band[1])}] {'flat' if s.flat else ''} "
            f"{'located' if s.located else ''}"
        )
    plots(studies, final, band)
    plot_probe(studies, probe)
    if args.write:
        write_calibration(final, band, clear, checks[best_name], probe)
    write_docs(studies, clear, final, band, {**published, **checks}, best_name, probe, first_probe)


def probe_rule(studies: list[Study], fallback: Check) -> ProbeRule:
    """Every probe model checked leave-one-family-out (the studies whose probe did not
    turn take ``fallback``'s rows), the one :func:`choose` picks fitted on the located
    studies whose probe turned, and its 80% band from the families left out."""
    clear = [s for s in studies if s.located]
    checks = {name: probe_check(name, terms, clear, studies, fallback)
              for name, terms in PROBE_MODELS.items()}  # fmt: skip
    name = choose(checks, PROBE_MODELS)
    on_turned = [s for s in clear if turned(s)]
    f = fit(name, PROBE_MODELS[name], on_turned)
    r = unseen_residuals(PROBE_MODELS[name], name, on_turned)
    band = (float(np.quantile(r, 0.1)), float(np.quantile(r, 0.9)))
    return ProbeRule(f, band, checks[name], checks, on_turned)


@dataclass
class ProbeRule:
    """The chosen probe rule: its fit on the turned studies, its 80% band, its check
    (turned studies predicted from the probe, the rest by the rule without training),
    every probe model's check, and the studies it was fitted on."""

    fit: Fit
    band: tuple[float, float]
    check: Check
    checks: dict[str, Check]
    fitted_on: list[Study]

    @property
    def coef(self) -> dict[str, float]:
        """Every term's coefficient, fitted or set, and the constant, over the terms the
        shipped probe reads (:func:`probe_coef`)."""
        return probe_coef(self.fit)


def _counted(rows: list[dict], key: str) -> str:
    """How many of ``rows`` have ``key``, of how many, and the share."""
    k = sum(bool(r[key]) for r in rows)
    return f"{k}/{len(rows)} ({k / len(rows):.0%})" if rows else "-"


#: The issue's target for the probe, each family predicted without it: at least this share
#: of the located optima within 2x, and the 80% range holding at least this share.
TARGET_WITHIN_2X, TARGET_RANGE_HOLDS = 0.85, 0.80


def probe_section(studies: list[Study], probe: ProbeRule, chosen: str,
                  first: ProbeRule | None = None) -> list[str]:  # fmt: skip
    """The docs' section on the probe rule; ``first``: the same on the six first families
    alone."""
    c = probe.coef
    terms = [f"{v:.3f} {k}" for k, v in c.items() if k != "const"]
    formula = " + ".join([f"{c['const']:.3f}", *terms])
    n_turned = sum(turned(s) for s in studies)
    families = sorted({s.family for s in studies})
    located = [r for r in probe.check.rows if r["clear"]]
    lo, hi = (math.exp(b) for b in probe.band)
    out = [
        "",
        f"## The probe on {_number(len(families))} families",
        "",
        "`python benchmarks/evidence/probe.py` (`run_wide.py` for the wider families) trains",
        "each study's zero-decay candidate again on the same folds and seeds (its final losses",
        "equal the study's) and keeps the learning curves. The *turning epoch* is where the",
        "mean validation curve over the folds is lowest (read per epoch; the geometric mean",
        "over the seeds probed): the model starts to fit noise there. A curve lowest in the",
        f"last {1 - TURNED:.0%} of the epochs has not turned; such studies take the rule without",
        f"training ({chosen}). {n_turned} of {len(studies)} studies turned.",
        "",
        f"The law: **{probe.fit.name}**, fitted on the {len(probe.fitted_on)} located studies",
        "whose probe turned:",
        "",
        "```",
        f"log tau_epoch* = {formula}",
        f"80% range: tau_epoch* / prediction in [{lo:.3f}, {hi:.3f}]",
        "```",
        "",
    ]
    if set(c) == {"const", "log_turn"} and c["log_turn"] == 1.0:
        out += [f"that is, tau_epoch* = {math.exp(c['const']):.2f} x the turning epoch.", ""]
    out += [
        "`adamwkit tune --probe` (Python: `adamwkit.tuning.probe.probe`) runs the probe on",
        "any task or objective that reports its validation loss per epoch, at the cost of",
        "one candidate.",
        "",
        "**Why this law.** Each candidate law is fitted without one family and predicts that",
        "family's studies (those whose probe did not turn take the rule without training),",
        "with the nested range of the other families' errors. The simplest law is kept unless",
        f"another puts more than {CLEARLY_BETTER:.0%} more of the located optima within 2x: with",
        f"{_number(len(families))} families and {len(located)} located studies, a smaller",
        "gain is a study or three, and a law with more coefficients would be fitted to them.",
    ]
    top = max(probe.checks, key=lambda n: round(probe.checks[n].share("within_2x"), 6))
    if top != probe.fit.name:
        t, m = probe.checks[top], probe.check
        extra = free_parameters(PROBE_MODELS[top]) - free_parameters(PROBE_MODELS[probe.fit.name])
        out.append(
            f"{top} puts {t.share('within_2x'):.0%} within 2x against {m.share('within_2x'):.0%}"
            f", with {extra} more coefficient{'s' if extra > 1 else ''}: not clearly better."
        )
    out += [
        "",
        "| probe law | within 2x | range holds | usable (all studies) |",
        "|---|---:|---:|---:|",
    ]
    for name, chk in probe.checks.items():
        mark = "**" if name == probe.fit.name else ""
        rows = [r for r in chk.rows if r["clear"]]
        cells = [_counted(rows, "within_2x"), _counted(rows, "range_holds"),
                 _counted(chk.rows, "in_band")]  # fmt: skip
        out.append(f"| {mark}{name}{mark} | " + " | ".join(cells) + " |")
    out += [
        "",
        f"Family by family, for **{probe.fit.name}** (each family predicted without it; the",
        "studies whose probe did not turn use the rule without training; *within 2x* and",
        "*range holds* count the located studies; the last five families are the wider ones):",
        "",
        "| family | studies | located | turned | median tau* / prediction | within 2x | "
        "range holds |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = sorted(families, key=lambda f: (any(s.source != RESULTS.name for s in studies
                                                if s.family == f), f))  # fmt: skip
    weak = []
    for fam in [*order, None]:
        mine = [s for s in studies if fam is None or s.family == fam]
        rows = [r for r in probe.check.rows if (fam is None or r["family"] == fam) and r["clear"]]
        med = f"{float(np.median([r['ratio'] for r in rows])):.2f}" if rows else "-"
        name = fam or f"**all {_number(len(families))}**"
        out.append(
            f"| {name} | {len(mine)} | {sum(s.located for s in mine)} | "
            f"{sum(turned(s) for s in mine)} | {med} | {_counted(rows, 'within_2x')} | "
            f"{_counted(rows, 'range_holds')} |"
        )
        if fam is not None and rows and sum(r["within_2x"] for r in rows) < len(rows) / 2:
            weak.append((fam, mine, rows))
    w2, rh = probe.check.share("within_2x"), probe.check.share("range_holds")
    met = w2 >= TARGET_WITHIN_2X and rh >= TARGET_RANGE_HOLDS
    out += [
        "",
        f"**Against the target** (at least {TARGET_WITHIN_2X:.0%} of the located optima within 2x",
        "of the prediction made without their family, and the 80% range holding at least",
        f"{TARGET_RANGE_HOLDS:.0%}): within 2x {_counted(located, 'within_2x')}, range holds "
        f"{_counted(located, 'range_holds')}: **{'met' if met else 'not met'}**.",
    ]
    if first is not None:
        f_lo, f_hi = (math.exp(b) for b in first.band)
        fc = first.coef
        law = (f"tau_epoch* = {math.exp(fc['const']):.2f} x turn"
               if set(fc) == {"const", "log_turn"} and fc["log_turn"] == 1.0
               else first.fit.name)  # fmt: skip
        out += [
            f"On the six first families alone the same analysis gives {law}, within 2x "
            f"{first.check.share('within_2x'):.0%}",
            f"and range holds {first.check.share('range_holds'):.0%}, with the range "
            f"[{f_lo:.3f}, {f_hi:.3f}].",
        ]
    if weak:
        out += ["", "Where the law does not hold (fewer than half within 2x):", ""]
    for fam, mine, rows in weak:
        on_turn = [r for r in rows if r["turned"]]
        n_t, n_flat = sum(turned(s) for s in mine), sum(s.flat for s in mine)
        line = (f"- **{fam}**: {sum(r['within_2x'] for r in rows)} of {len(rows)} located "
                f"optima within 2x ({len(mine)} studies, {n_flat} flat; {n_t} probes "
                "turned).")  # fmt: skip
        if on_turn:
            med = float(np.median([r["ratio"] for r in on_turn]))
            side = f"{1 / med:.1f}x below" if med < 1 else f"{med:.1f}x above"
            line += (f" Where the probe turned ({len(on_turn)} located), tau* / prediction has "
                     f"median {med:.2f}: the optimum sits about {side} the law.")  # fmt: skip
        if len(on_turn) < len(rows):
            line += (f" {len(rows) - len(on_turn)} located did not turn and take the rule "
                     "without training.")  # fmt: skip
        out.append(line)
    out += [
        "",
        "The 80% range is the 10% to 90% quantiles of the law's errors on families left out of",
        f"its fit, over all {_number(len(families))}: [{lo:.3f}, {hi:.3f}], {hi / lo:.1f}x wide"
        + (f" (the six first families alone: [{math.exp(first.band[0]):.3f}, "
           f"{math.exp(first.band[1]):.3f}], {math.exp(first.band[1] - first.band[0]):.1f}x)."
           if first is not None else "."),
        "It is that wide so that it stays honest for a new kind of task: the law misses",
        "whole families rather than scattering within them, so the probe's value is a start,",
        "and the range is what to confirm over (`tune --probe --confirm`, or `tune --budget`).",
        "",
        "![probe](evidence/probe.png)",
    ]  # fmt: skip
    return out


def _number(n: int) -> str:
    words = ("zero one two three four five six seven eight nine ten eleven twelve").split()
    return words[n] if n < len(words) else str(n)


#: The first line of _calibration.py's hand-written part, which --write keeps.
KEEP_CALIBRATION = "# ---- Fine-tuning"


def write_calibration(final: Fit, band: tuple[float, float], clear: list[Study],
                      check: Check, probe: ProbeRule) -> None:  # fmt: skip
    text = f'''"""The calibrated rule's constants (``benchmarks/evidence/analyze.py --write``).

Do not edit by hand: rerun the analysis. ``tests/test_evidence.py`` refits them from the
cached studies and checks they match.
"""

MODEL = {json.dumps(final.name)}
COEF = {json.dumps(final.coef, sort_keys=True)}
FIXED = {json.dumps({k: v for k, v in final.fixed.items() if k != "const"}, sort_keys=True)}
# 10% and 90% quantiles of log(tau*) - log(prediction) for families left out of the fit
BAND = ({band[0]!r}, {band[1]!r})
STUDIES = {len(clear)}
FAMILIES = {_py_list(sorted({s.family for s in clear}), "FAMILIES = ")}
EPOCHS = ({min(s.epochs for s in clear)!r}, {max(s.epochs for s in clear)!r})
EXAMPLES = ({float(min(s.n_train for s in clear))!r}, {float(max(s.n_train for s in clear))!r})
LOFO_WITHIN_2X = {check.share("within_2x"):.4f}
LOFO_RANGE_HOLDS = {check.share("range_holds"):.4f}

# The probe rule (adamwkit.tuning.probe): log tau_epoch* = sum of PROBE_COEF[t] * t over
# log_turn (the zero-decay run's turning epoch) and log_T, plus the constant; used when the
# curve turned before PROBE_TURNED of the epochs.
PROBE_MODEL = {json.dumps(probe.fit.name)}
PROBE_COEF = {json.dumps(probe.coef, sort_keys=True)}
PROBE_BAND = ({probe.band[0]!r}, {probe.band[1]!r})
PROBE_TURNED = {TURNED!r}
PROBE_STUDIES = {len(probe.fitted_on)}
PROBE_LOFO_WITHIN_2X = {probe.check.share("within_2x"):.4f}
PROBE_LOFO_RANGE_HOLDS = {probe.check.share("range_holds"):.4f}
'''
    # Blocks written by hand below the generated part (the fine-tuning constants) are kept.
    before = CALIBRATION.read_text() if CALIBRATION.exists() else ""
    at = before.find(KEEP_CALIBRATION)
    CALIBRATION.write_text(text + ("\n" + before[at:] if at >= 0 else ""))
    print("wrote", CALIBRATION)


def _py_list(items: list[str], prefix: str) -> str:
    """``items`` as a Python list literal laid out as ``ruff format`` would after
    ``prefix``: on one line when it fits in 100 characters, else one item a line."""
    one = json.dumps(items)
    if len(prefix) + len(one) <= 100:
        return one
    return "[\n" + "".join(f"    {json.dumps(i)},\n" for i in items) + "]"


KEEP = "<!-- everything below this line is kept when analyze.py rewrites the page -->"


def write_docs(studies: list[Study], clear: list[Study], final: Fit, band: tuple[float, float],
               checks: dict[str, Check], chosen: str, probe: ProbeRule,
               first: ProbeRule | None = None) -> None:  # fmt: skip
    from families import FAMILIES
    from families_wide import WIDE

    path = DOCS / "evidence.md"
    kept = ""
    if path.exists() and KEEP in path.read_text():
        kept = path.read_text().split(KEEP, 1)[1]
    lofo = {r["id"] + r["family"]: r for r in checks[chosen].rows}
    wa = {r["id"] + r["family"]: r for r in checks[SQRT_T].rows}
    parts = [f"{final.coef['const']:.3f}"] if final.coef.get("const") else []
    parts += [f"{v:.3f} {k}" for k, v in final.coef.items() if k != "const"]
    parts += [f"{c:g} {t}" for t, c in final.fixed.items() if t != "const"]
    formula = " + ".join(parts) or "0"
    out = [
        "# Evidence: where the optimal weight decay sits",
        "",
        "Generated by `python benchmarks/evidence/analyze.py` from the studies that",
        "`python benchmarks/evidence/run.py` cached in `benchmarks/evidence/results/` (six",
        "families, one seed) and `run_wide.py` in `results-wide/` (five wider families, most",
        "configurations with two seeds, merged as repeats of the CV); one JSON file per",
        "configuration and seed; rerunning the analysis retrains nothing.",
        "",
        "**Protocol.** Each configuration is cross-validated by `adamwkit tune`: 5 folds, no",
        'test split, torch AdamW (`decay_scale="lr"`), cosine schedule to zero, zero decay plus',
        "a log grid at 2^0.5 spacing in tau_epoch = B / (lr * wd * N) from 1/8 epoch to 8x the",
        "epochs, extended by four steps when the best sits at an edge. N is the examples a",
        "fold trains on. Candidates share folds, initial weights and batch orders, so their",
        "differences are paired. The optimum tau_epoch* is the best candidate's, refined by a",
        "parabola through its neighbours; a study is *flat* when zero decay is within two",
        "paired standard errors of the best, plus what picking the best of its contenders",
        "gains by chance (weight decay barely matters there); its one-SE band spans the",
        "candidates within one paired SE of the best, and its optimum is *located* when",
        "that band excludes zero decay and spans at most 8x, and tau_epoch* is at most 8x",
        "the epochs (a longer timescale barely decays within the run).",
        "",
        "## Task families",
        "",
        "The last five are the wider families (`benchmarks/evidence/WIDE.md`); their `noise`",
        "is each family's corruption level.",
        "",
        "| family | what | centre | configurations | optimum located | decay barely matters |",
        "|---|---|---|---:|---:|---:|",
    ]
    for name, fam in {**FAMILIES, **WIDE}.items():
        mine = [s for s in studies if s.family == name]
        if not mine:
            continue
        centre = ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in fam.base.items())  # fmt: skip
        n_loc, n_flat = sum(s.located for s in mine), sum(s.flat for s in mine)
        out.append(f"| {name} | {fam.description} | {centre} | {len(mine)} | {n_loc} | "
                   f"{n_flat} |")  # fmt: skip
    out += [
        "",
        "## The calibrated rule",
        "",
        f"Chosen by leave-one-family-out accuracy among the models below: **{chosen}**,",
        f"judged on the {len(clear)} studies with a located optimum "
        f"({len({s.family for s in clear})} families):",
        "",
        "```",
        f"log tau_epoch* = {formula}",
        f"80% range: tau_epoch* / prediction in [{math.exp(band[0]):.3f}, {math.exp(band[1]):.3f}]",
        "```",
        "",
        "(log_T: epochs; log_N: examples trained on; log_B: batch size; log_lr: peak lr;",
        "log_steps_per_epoch: N/B; natural logs.) `adamwkit suggest` uses it for multi-epoch",
        "training, with the range, and `tune`'s default grid spans the range.",
        "",
        "## Leave one family out",
        "",
        "Each model is fitted without one family and predicts that family's studies; the",
        "range is the 10% to 90% quantiles of the errors the other families showed when",
        "they, in turn, were left out (the held-out family plays no part in its own",
        "range), so it is the range a new kind of task should expect. *Within",
        "2x* and *range holds* count the studies with a located optimum; *usable* counts every",
        "study whose prediction lands within 2x of its one-SE band (a flat study is served by",
        "any value in its band).",
        "",
        "| model | within 2x | range holds | usable (all studies) |",
        "|---|---:|---:|---:|",
    ]
    for name, c in checks.items():
        mark = "**" if name == chosen else ""
        out.append(f"| {mark}{name}{mark} | {c.share('within_2x'):.0%} | "
                   f"{c.share('range_holds'):.0%} | {c.share('in_band', False):.0%} |")  # fmt: skip
    out += [
        "",
        f"Family by family, for **{chosen}** (each family predicted without it):",
        "",
        "| family | located studies | median tau* / prediction | within 2x | range holds |",
        "|---|---:|---:|---:|---:|",
    ]
    for fam in sorted({s.family for s in studies}):
        rows = [r for r in checks[chosen].rows if r["family"] == fam and r["clear"]]
        if not rows:
            out.append(f"| {fam} | 0 | - | - | - |")
            continue
        med = float(np.median([r["ratio"] for r in rows]))
        w2 = sum(r["within_2x"] for r in rows) / len(rows)
        rh = sum(r["range_holds"] for r in rows) / len(rows)
        out.append(f"| {fam} | {len(rows)} | {med:.2f} | {w2:.0%} | {rh:.0%} |")
    out += probe_section(studies, probe, chosen, first)
    out += [
        "",
        "![calibration](evidence/calibration.png)",
        "",
        "![optimum against epochs](evidence/optimum_vs_epochs.png)",
        "",
        "![curves](evidence/curves.png)",
        "",
        "## Every study",
        "",
        "tau values in epochs. *pred* is the calibrated prediction made without the study's",
        "family; *ratio* is tau* / pred (within 2x: 0.5 to 2); *sqrt(T) ratio* is tau* /",
        "sqrt(T), Wang & Aitchison's window middle; *turn* is the zero-decay probe's",
        "turning epoch ((no): it did not turn), *probe ratio* tau* / the probe rule's",
        "prediction made without the study's family.",
        "",
        "| family | configuration | N | params | tau* | one-SE band | flat | pred | ratio | "
        "sqrt(T) ratio | turn | probe ratio |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    pr = {r["id"] + r["family"]: r for r in probe.check.rows}
    for s in studies:
        r, w, q = lofo[s.id + s.family], wa[s.id + s.family], pr[s.id + s.family]
        turn = "-" if math.isnan(s.turn) else f"{s.turn:.3g}" + ("" if turned(s) else " (no)")
        out.append(
            f"| {s.family} | {s.id} | {s.n_train} | {s.params:,} | {_fmt(s.tau_star)} | "
            f"{_fmt(s.band[0])} to {_fmt(s.band[1])} | {'flat' if s.flat else ''} | "
            f"{r['pred']:.3g} | {r['ratio']:.2f} | {w['ratio']:.2f} | {turn} | "
            f"{q['ratio']:.2f} |"
        )
    out += ["", KEEP]
    path.write_text("\n".join(out) + (kept if kept else "\n"))
    print("wrote", path)


if __name__ == "__main__":
    main()
