"""Run the evidence studies: 5-fold CV of weight decay on every configuration of every family.

    python benchmarks/evidence/run.py                       # every family, cached runs skipped
    python benchmarks/evidence/run.py --families digits-mlp --seeds 0,1 --threads 2

For each configuration (a family's centre, and each setting varied alone) and each seed,
``adamwkit.tune`` cross-validates zero and a log grid at 2^0.5 spacing in tau_epoch =
B / (lr * wd * N_train) from 1/8 epoch to 8x the epochs (PyTorch's convention, cosine
schedule to zero, no test split). Candidates of one seed share folds, initial weights and
batch orders, so their differences are paired. When the best candidate sits within one
step of the grid's edge, the grid is extended by four steps and the new candidates are
trained with the same seed (same folds and inits) before the result is cached.

Each result is one JSON file in ``benchmarks/evidence/results/<family>/``: the settings,
the grid with each candidate's fold losses, and the seconds it took. ``analyze.py`` reads
them; nothing is retrained once cached.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from families import FAMILIES, config_id, configs  # noqa: E402

RESULTS = HERE / "results"
STEP = 0.5  # log2 spacing of the grid in tau_epoch
TAU_LO, TAU_HI_X = 1 / 8, 8.0  # tau_epoch from 1/8 epoch to 8x the epochs
EXTEND = 4


def n_train(n: int, folds: int) -> int:
    return n - math.ceil(n / folds)


def tau_grid(epochs: int, lo: float = TAU_LO, hi_x: float = TAU_HI_X) -> list[float]:
    k_lo = math.floor(math.log2(lo) / STEP)
    k_hi = math.ceil(math.log2(hi_x * epochs) / STEP)
    return [2.0 ** (k * STEP) for k in range(k_lo, k_hi + 1)]


def wd_of(tau: float, cfg: dict, n_tr: int) -> float:
    return float(f"{cfg['batch_size'] / (cfg['lr'] * tau * n_tr):.6g}")


def run_grid(task, cfg: dict, grid: list[float], seed: int, threads: int, out: Path) -> dict:
    from adamwkit import tune

    name = f"s{seed}-{len(grid)}-{abs(hash(tuple(grid))) % 10**8}"
    result = tune(
        task, folds=5, grid=[0.0, *grid], test=False, progress=False, vectorize="auto",
        threads=threads, seed=seed, out=out, study=name,
    )  # fmt: skip
    return {c["weight_decay"]: c for c in result.summary["candidates"]}


def study(family: str, cfg: dict, seed: int, threads: int) -> dict:
    fam = FAMILIES[family]
    task = fam.build(**cfg, seed=0)
    n_tr = n_train(len(task), 5)
    taus = tau_grid(cfg["epochs"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        found = run_grid(task, cfg, [wd_of(t, cfg, n_tr) for t in taus], seed, threads,
                         Path(tmp))  # fmt: skip
        for _ in range(3):
            ranked = [(found[wd_of(t, cfg, n_tr)]["mean"] or math.inf, t) for t in taus]
            best = min(range(len(taus)), key=lambda i: ranked[i][0])
            if 1 <= best < len(taus) - 2 or (
                best == 0 and found[0.0]["mean"] is not None and found[0.0]["mean"] <= ranked[0][0]
            ):
                break  # fmt: skip
            if best >= len(taus) - 2:  # small decay at the edge: larger tau
                new = [taus[-1] * 2.0 ** (STEP * (i + 1)) for i in range(EXTEND)]
                taus = taus + new
            else:
                new = [taus[0] * 2.0 ** (-STEP * (i + 1)) for i in range(EXTEND)][::-1]
                taus = new + taus
            found.update(run_grid(task, cfg, [wd_of(t, cfg, n_tr) for t in new], seed,
                                  threads, Path(tmp)))  # fmt: skip
    seconds = time.perf_counter() - start
    cands = []
    for t in [math.inf, *sorted(taus)]:
        wd = 0.0 if math.isinf(t) else wd_of(t, cfg, n_tr)
        c = found[wd]
        cands.append({"weight_decay": wd, "tau_epoch": None if math.isinf(t) else t,
                      "fold_losses": c["fold_losses"], "state": c["state"]})  # fmt: skip
    return {
        "family": family, "config": cfg, "id": config_id(cfg), "seed": seed, "folds": 5,
        "n": len(task), "n_train": n_tr, "description": task.description,
        "params": sum(p.numel() for p in task.model().parameters()),
        "candidates": cands, "seconds": round(seconds, 1),
        "torch": __import__("torch").__version__,
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--seeds", default="0,1")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="run only configurations whose id has this text")
    p.add_argument("--list", action="store_true", help="list the configurations and stop")
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    seeds = [int(s) for s in args.seeds.split(",")]
    for family in args.families.split(","):
        for cfg in configs(FAMILIES[family]):
            cid = config_id(cfg)
            if args.only and args.only not in cid:
                continue
            for seed in seeds:
                path = RESULTS / family / f"{cid}-s{seed}.json"
                if args.list:
                    print(family, cid, seed, "cached" if path.exists() else "")
                    continue
                if path.exists():
                    continue
                out = study(family, cfg, seed, args.threads)
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(".tmp")
                tmp.write_text(json.dumps(out, indent=1))
                tmp.replace(path)
                best = min((c for c in out["candidates"] if c["fold_losses"]),
                           key=lambda c: sum(c["fold_losses"]))  # fmt: skip
                print(
                    f"{family} {cid} s{seed}: best tau_epoch {best['tau_epoch']} "
                    f"({len(out['candidates'])} candidates, {out['seconds']} s)",
                    flush=True,
                )


if __name__ == "__main__":
    main()
