"""Tune the LoRA adapters' weight decay on the fine-tuning benchmark (``task.py``), stacked
against one run at a time, measured in the same process.

    .venv/bin/python benchmarks/lora/bench.py --threads 2

The same study both ways: 6 weight decays x 3 folds (18 runs) of ``stdlib_lora()``, no
test refit. Prints a markdown table: each path's seconds, seconds per run, the speed-up of
stacking and the largest gap between the two paths' CV losses (they train the same runs);
then the seconds per training step of one run alone and of k runs stacked (the
measurement ``--vectorize auto`` makes), k = 1, 6, 18.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import task as bench_task

import adamwkit

GRID = (0.0, 0.01, 0.03, 0.1, 0.3, 1.0)


def run(vectorize: str, out: str, device: str, threads: int) -> tuple[float, adamwkit.TuneResult]:
    start = time.perf_counter()
    result = adamwkit.tune(bench_task.stdlib_lora(), grid=list(GRID), folds=3, out=out,
                           vectorize=vectorize, test=False, progress=False, extend=0,
                           study=f"bench-{vectorize}", device=device,
                           threads=threads)  # fmt: skip
    return time.perf_counter() - start, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    warnings.simplefilter("ignore")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as out:
        seconds = {}
        results = {}
        for vectorize in ("off", "on"):
            seconds[vectorize], results[vectorize] = run(vectorize, out, a.device, a.threads)
    losses = {v: {c["weight_decay"]: c["mean"] for c in r.summary["candidates"]}
              for v, r in results.items()}  # fmt: skip
    gap = max(abs(losses["on"][w] - losses["off"][w]) / abs(losses["off"][w]) for w in GRID)
    runs = len(GRID) * 3
    memory = results["on"].summary.get("stacking") or {}
    where = (
        torch.cuda.get_device_name() if a.device != "cpu" and torch.cuda.is_available() else "CPU"
    )
    print(f"torch {torch.__version__}, {where}, {a.threads} threads, load average {load:.2f} "
          "at start")  # fmt: skip
    print("| path | runs | seconds | s / run | speed-up | best weight decay |")
    print("|---|---:|---:|---:|---:|---:|")
    for v, label in (("off", "one at a time"), ("on", "stacked")):
        best = results[v].summary["best_weight_decay"]
        print(f"| {label} | {runs} | {seconds[v]:.1f} | {seconds[v] / runs:.2f} | "
              f"{seconds['off'] / seconds[v]:.2f}x | {best:g} |")  # fmt: skip
    print(f"largest relative gap between the two paths' CV losses: {gap:.1e}")
    if memory:
        print(f"stacking: {memory}")
    per_step(results["on"].summary["device"])


def per_step(device: str) -> None:
    from adamwkit.train import Member
    from adamwkit.train.loop import RunSettings
    from adamwkit.train.population import population_memory, stacking_speed

    t = bench_task.stdlib_lora()
    train, val = torch.arange(320), torch.arange(320, 400)
    settings = RunSettings(t.epochs, t.batch_size, "lr", t.schedule, 0, torch.device(device),
                           "fp32")  # fmt: skip
    memory = population_memory(t, t.batch_size)
    print(f"memory: frozen base {memory.shared / 1e6:.2f} MB once, "
          f"{memory.per_member / 1e6:.2f} MB per member (activations included)")  # fmt: skip
    print("| members k | one alone, ms / step | k stacked, ms / step | stacked / (k x alone) |")
    print("|---:|---:|---:|---:|")
    for k in (1, 6, 18):
        members = [Member(0.01 * i, t.lr, train, val, i) for i in range(k)]
        alone, stacked, _ = stacking_speed(t, members, settings, min_seconds=1.0)
        print(f"| {k} | {alone * 1e3:.1f} | {stacked * 1e3:.1f} | {stacked / (k * alone):.2f} |")


if __name__ == "__main__":
    main()
