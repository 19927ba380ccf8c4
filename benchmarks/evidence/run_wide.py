"""Run the wider evidence: ``run.py``'s studies and ``probe.py``'s zero-decay probes on the
families of ``families_wide.py``, with the probes' validation loss read within epochs.

    python benchmarks/evidence/run_wide.py                  # every family, cached skipped
    python benchmarks/evidence/run_wide.py --families friedman-mlp --only noise3 --list

The protocol is ``run.py``'s, by import: 5 folds, no test split, torch AdamW
(``decay_scale="lr"``), cosine to zero, zero decay plus the 2^0.5 grid in tau_epoch from
1/8 epoch to 8x the epochs, extended by four steps when the best sits at an edge. Each
study is cached as it finishes in ``results-wide/<family>/``, and its probe (zero decay
trained again on the same folds, seeds and batch orders, as ``probe.py`` does) in
``probes-wide/<family>/``: ``val_losses`` per epoch as ``probe.py`` writes them (so
``analyze.load_studies`` reads the directory as it is), and ``fine_val_losses``, the
validation loss every ``fine_every`` steps (``fine_points_per_epoch`` points an epoch,
the last at the epoch's end), for reading the turning point within epochs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run  # noqa: E402
from families import configs  # noqa: E402
from families_wide import WIDE, config_id  # noqa: E402
from probe import zero_members  # noqa: E402

RESULTS = HERE / "results-wide"
PROBES = HERE / "probes-wide"
FOLDS = 5
FINE_POINTS = 4  # validation points per epoch in a probe, at most

# run.study looks a family up in its module's FAMILIES and names it by config_id
run.FAMILIES = {**run.FAMILIES, **WIDE}
run.config_id = config_id


def _fine_fit(task, members, cfg: dict, every: int):
    """``fit_population`` with the validation loss also read every ``every`` steps."""
    from adamwkit.train import population as pop
    from adamwkit.train.loop import run_epochs

    fine: list[list[float]] = []

    class Engine(pop.StackedEngine):
        fine_count = 0

        def train_step(self, index):
            out = super().train_step(index)
            self.fine_count += 1
            if self.fine_count % every == 0:
                self.set_training(False)
                fine.append(list(self.validate()[0]))
                self.set_training(True)
            return out

    settings = pop.RunSettings.resolve(
        task, epochs=cfg["epochs"], batch_size=cfg["batch_size"], decay_scale="lr",
        schedule=None, warmup_steps=None, device="cpu", precision="fp32",
    )  # fmt: skip
    members = pop.check_members(task, members)
    engine = Engine(task, members, settings)
    engine.set_training(False)
    engine.validate()
    histories = run_epochs(engine, [m.train_idx for m in members], [m.seed for m in members],
                           settings, validate=True, describe=str)  # fmt: skip
    return histories, np.array(fine).T.tolist()


def probe(study: dict) -> dict:
    """``probe.probe`` with the validation loss read ``FINE_POINTS`` times an epoch."""
    cfg = study["config"]
    task = WIDE[study["family"]].build(**cfg, seed=0)
    seed = study["seed"]
    members = zero_members(task, cfg, seed)
    start = time.perf_counter()
    hist: list = [None] * len(members)
    fine: list = [None] * len(members)
    sizes = sorted({len(m.train_idx) for m in members})
    steps = math.ceil(min(sizes) / cfg["batch_size"])  # the same for every size here
    every = max(1, steps // FINE_POINTS)
    for size in sizes:  # a population trains one size
        idx = [i for i, m in enumerate(members) if len(m.train_idx) == size]
        assert math.ceil(size / cfg["batch_size"]) == steps
        got, curves = _fine_fit(task, [members[i] for i in idx], cfg, every)
        for j, i in enumerate(idx):
            hist[i], fine[i] = got[j], curves[j]
    seconds = time.perf_counter() - start
    zero = next(c for c in study["candidates"] if c["weight_decay"] == 0.0)
    final = [h.val_losses[-1] for h in hist]
    gap = None
    if zero["state"] == "complete" and len(zero["fold_losses"]) == len(final):
        pairs = zip(final, zero["fold_losses"], strict=True)
        gap = float(np.median([abs(a - b) / max(abs(b), 1e-12) for a, b in pairs]))
        if gap > 1e-3:
            raise RuntimeError(f"{study['id']}: probe {final} != study {zero['fold_losses']}")
    return {
        "family": study["family"], "id": study["id"], "seed": seed, "config": cfg,
        "train_losses": [h.train_losses for h in hist],
        "val_losses": [h.val_losses for h in hist],
        "fine_every": every, "steps_per_epoch": steps,
        "fine_points_per_epoch": steps / every, "fine_val_losses": fine,
        "matches_study": gap, "seconds": round(seconds, 1),
    }  # fmt: skip


def _write(path: Path, out: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(path)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--families", default=",".join(WIDE))
    p.add_argument("--seeds", default="0")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", default=None, help="run only configurations whose id has this text")
    p.add_argument("--list", action="store_true", help="list the configurations and stop")
    p.add_argument(
        "--deadline", type=float, default=None, help="start nothing after this unix time"
    )
    args = p.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    # breadth first: every family's centre, then each family's next configuration, ...
    todo = [(f, i, c) for f in args.families.split(",") for i, c in enumerate(configs(WIDE[f]))]
    todo.sort(key=lambda t: t[1])
    for family, _, cfg in todo:
        cid = config_id(cfg)
        if args.only and args.only not in cid:
            continue
        for seed in [int(s) for s in args.seeds.split(",")]:
            path = RESULTS / family / f"{cid}-s{seed}.json"
            ppath = PROBES / family / f"{cid}-s{seed}.json"
            if args.list:
                print(family, cid, seed, "cached" if path.exists() else "",
                      "probed" if ppath.exists() else "")  # fmt: skip
                continue
            if args.deadline and time.time() > args.deadline:
                return
            if not path.exists():
                out = run.study(family, cfg, seed, args.threads)
                _write(path, out)
                best = min((c for c in out["candidates"] if c["fold_losses"]),
                           key=lambda c: sum(c["fold_losses"]))  # fmt: skip
                print(f"{family} {cid} s{seed}: best tau_epoch {best['tau_epoch']} "
                      f"({len(out['candidates'])} candidates, {out['seconds']} s)",
                      flush=True)  # fmt: skip
            if not ppath.exists():
                pr = probe(json.loads(path.read_text()))
                _write(ppath, pr)
                gap = pr["matches_study"]
                check = "not checked" if gap is None else f"matches to {gap:.1e}"
                print(f"  probe: {pr['seconds']} s, {check}", flush=True)


if __name__ == "__main__":
    main()
