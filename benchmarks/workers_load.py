"""tune with another program busy on one core: the workers' thread shares against fixed threads.

On a machine with C cores, a spinning process takes one. ``tune`` then measures the cores
left free and gives each worker its share as torch threads. The rows compare, for the same
sweep (one run at a time: ``--vectorize off``):

- idle, 1 worker: the reference time;
- busy, 1 worker and 2 workers, threads chosen by tune;
- busy, 1 worker with threads fixed at the core count (``--threads``), as before the
  shares: every parallel region waits for the descheduled thread.

    python benchmarks/workers_load.py                 # on an otherwise idle machine
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from adamwkit.tasks import Task, get_task

HERE = Path(__file__).parent


def mlp256() -> Task:
    """The digits data with a 256-wide MLP (two hidden layers), trained one run at a time."""
    base = get_task("digits")

    def model() -> nn.Module:
        return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 10))  # fmt: skip

    return Task(name="mlp256", model=model, data=base.data, loss=base.loss, labels=base.labels,
                epochs=40, batch_size=32, lr=base.lr)  # fmt: skip


def run(out: Path, study: str, workers: int, threads: int | None, limit: float) -> float:
    cmd = [sys.executable, "-m", "adamwkit.cli", "tune", "workers_load:mlp256", "--vectorize",
           "off", "--grid", "0,0.01,0.1,1,10", "--folds", "4", "--no-test", "--quiet",
           "--out", str(out), "--study", study, "--workers", str(workers)]  # fmt: skip
    if threads is not None:
        cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    try:
        subprocess.run(cmd, cwd=HERE, check=True, capture_output=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return float("inf")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=600, help="seconds before a row gives up")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores; sweep: 5 candidates x 4 folds, 40 epochs")
    print("| machine | workers | torch threads | seconds | vs idle |")
    print("|---|---:|---|---:|---:|", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        idle = run(Path(tmp), "idle", 1, None, args.limit)
        print(f"| idle | 1 | tune's share | {idle:.1f} | 1.00 |", flush=True)
        spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        try:
            time.sleep(1.0)
            rows = [(1, None, "tune's share"), (2, None, "tune's share"),
                    (1, cores, f"{cores} (--threads)")]  # fmt: skip
            for workers, threads, label in rows:
                seconds = run(Path(tmp), f"busy-{workers}-{threads}", workers, threads, args.limit)
                shown = f"> {args.limit:.0f}" if seconds == float("inf") else f"{seconds:.1f}"
                ratio = "-" if seconds == float("inf") else f"{seconds / idle:.2f}"
                print(f"| one core busy | {workers} | {label} | {shown} | {ratio} |", flush=True)
        finally:
            spinner.kill()


if __name__ == "__main__":
    main()
