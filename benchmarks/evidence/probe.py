"""Probe runs: the learning curves of zero weight decay on every cached configuration.

    python benchmarks/evidence/probe.py                  # every cached study, probes cached
    python benchmarks/evidence/probe.py --families charlm --threads 2

For each configuration that ``run.py`` cached, this trains the study's zero-decay
candidate again on the same 5 folds, with the same seeds (so the same initial weights and
batch orders), as one stacked population, and keeps its per-epoch training and validation
losses. The final validation losses must equal the study's zero-decay fold losses (the
median fold within 0.1%); the probe checks that before caching. ``analyze.py`` reads the
curves to test whether a cheap run without decay tells where the optimal decay sits: the
epoch at which the validation loss stops improving.

Each probe is one JSON file in ``benchmarks/evidence/probes/<family>/``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from families import FAMILIES  # noqa: E402

RESULTS = HERE / "results"
PROBES = HERE / "probes"
FOLDS = 5


def zero_members(task, cfg: dict, seed: int) -> list:
    """The zero-decay candidate on the study's folds, one member per fold (the same
    splits, seeds and batch orders as the study's runs)."""
    import torch

    from adamwkit.train import Member
    from adamwkit.tuning.cv import Splits

    splits = Splits.make(len(task), task.label_array(), 0.0, FOLDS, seed)
    return [
        Member(0.0, cfg["lr"], torch.as_tensor(tr), torch.as_tensor(va), seed + i)
        for i, (tr, va) in enumerate(splits.folds)
    ]


def probe(study: dict) -> dict:
    """Train the zero-decay candidate of ``study`` on its folds and return its curves."""
    from adamwkit.train import fit_population

    cfg = study["config"]
    task = FAMILIES[study["family"]].build(**cfg, seed=0)
    seed = study["seed"]
    members = zero_members(task, cfg, seed)
    start = time.perf_counter()
    results: list = [None] * len(members)
    for size in sorted({len(m.train_idx) for m in members}):  # a population trains one size
        idx = [i for i, m in enumerate(members) if len(m.train_idx) == size]
        got = fit_population(task, [members[i] for i in idx], epochs=cfg["epochs"],
                             batch_size=cfg["batch_size"], decay_scale="lr")  # fmt: skip
        for i, r in zip(idx, got, strict=True):
            results[i] = r
    seconds = time.perf_counter() - start
    zero = next(c for c in study["candidates"] if c["weight_decay"] == 0.0)
    final = [r.val_losses[-1] for r in results]
    gap = None  # a zero-decay candidate the study stopped early has no final losses
    if zero["state"] == "complete" and len(zero["fold_losses"]) == len(final):
        # the median fold: stacks of other sizes round differently, and an overfitting
        # run can amplify that over thousands of steps on one fold
        pairs = zip(final, zero["fold_losses"], strict=True)
        gap = float(np.median([abs(a - b) / max(abs(b), 1e-12) for a, b in pairs]))
        if gap > 1e-3:
            raise RuntimeError(
                f"{study['family']} {study['id']}: the probe's final losses {final} differ "
                f"from the study's zero-decay fold losses {zero['fold_losses']} ({gap:.2g})"
            )
    return {
        "family": study["family"], "id": study["id"], "seed": seed, "config": cfg,
        "train_losses": [r.train_losses for r in results],
        "val_losses": [r.val_losses for r in results],
        "matches_study": gap, "seconds": round(seconds, 1),
    }  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(FAMILIES))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    for family in args.families.split(","):
        for path in sorted((RESULTS / family).glob("*.json")):
            out_path = PROBES / family / path.name
            if out_path.exists():
                continue
            out = probe(json.loads(path.read_text()))
            out_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = out_path.with_suffix(".tmp")
            tmp.write_text(json.dumps(out))
            tmp.replace(out_path)
            gap = out["matches_study"]
            check = "not checked (stopped early)" if gap is None else f"matches to {gap:.1e}"
            print(f"{family} {out['id']}: {out['seconds']} s, {check}", flush=True)


if __name__ == "__main__":
    main()
