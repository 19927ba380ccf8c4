"""Does ``--vectorize auto`` hold its choice? The same tune command, run several times.

The task is the plain 256-wide MLP of ``workers_load.py`` (the digits data, 64-256-256-10,
40 epochs, batch 32), which nobody tuned stacking for, or ``--task`` (``digits``: the
built-in MLP, where the two paths differ about 10x); the study is the default grid over
5 folds (10 candidates, 50 runs), refits left out. The command runs once with
``--vectorize on``, once with ``off``, then ``--repeats`` times with ``auto``, each in a
fresh process and a fresh run folder (nothing stored from before). Each row shows what
auto chose and why (its samples, any switch), its time, and its time over the faster
path's. The machine's load average (1 minute) is printed beside each row: these numbers
mean little on a machine that other work keeps busy, and say so. ``--load N`` keeps N
busy processes running through every command (on, off and each auto alike), so a run
under load can be repeated: ``--load-kind spin`` a Python loop on one core each, ``torch``
(the default) matrix products on every core, as another training job would; ``on`` is then
timed again after the auto runs, and the faster path is the mean of its two times (or
``off``'s, if that is faster).

    python benchmarks/vectorize_auto.py                 # 3 runs of auto, on and off once
    python benchmarks/vectorize_auto.py --repeats 5 --epochs 20
    python benchmarks/vectorize_auto.py --load 1        # the same beside another torch job
    python benchmarks/vectorize_auto.py --task digits   # the built-in digits task
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def run(
    out: Path, study: str, vectorize: str, epochs: int | None, task: str = "workers_load:mlp256"
) -> tuple[float, dict, float]:
    """Seconds of one ``adamwkit tune`` process, its summary's stacking record, and the
    1-minute load average when it started."""
    cmd = [sys.executable, "-m", "adamwkit.cli", "tune", task, "--vectorize",
           vectorize, "--no-test", "--quiet", "--out", str(out), "--study", study]  # fmt: skip
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=HERE, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    summary = json.loads((out / study / "summary.json").read_text())
    return seconds, summary, load


def spin() -> None:  # pragma: no cover - a load process, killed by the benchmark
    """Other work on the machine: one core kept busy until terminated."""
    while True:
        pass


def products() -> None:  # pragma: no cover - a load process, killed by the benchmark
    """Other work on the machine: torch matrix products on all its cores until terminated."""
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a)


def chose(summary: dict) -> str:
    """auto's choice in a few words: its mode, the samples' range, any switch."""
    s = summary["stacking"]
    samples = [x["ratio"] for x in s.get("samples", []) if x.get("when") == "measured"]
    spread = f"{min(samples):.2f}-{max(samples):.2f}x" if samples else "no samples"
    text = f"{s['mode']}, measured {spread}" + ("" if s.get("clear", True) else " (unclear)")
    text += f" in {s.get('seconds', 0):.1f} s"
    for check in s.get("checks", []):
        text += f"; re-checked: {check['ratio']:.2f}x"
    if s.get("switch"):
        sw = s["switch"]
        text += f"; switched {sw['from']} -> {sw['to']} at {sw['at']} ({sw['ratio']:.2f}x)"
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of auto (default 3)")
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's own")
    parser.add_argument(
        "--task",
        default="workers_load:mlp256",
        help="what tune trains (default workers_load:mlp256; e.g. digits)",
    )
    parser.add_argument(
        "--load",
        type=int,
        default=0,
        help="busy processes kept running through every command (default 0)",
    )
    parser.add_argument(
        "--load-kind",
        choices=("torch", "spin"),
        default="torch",
        help="torch: matrix products on every core (default); spin: a Python loop",
    )
    args = parser.parse_args()
    if args.repeats < 1 or args.load < 0:
        parser.error(f"--repeats must be >= 1 and --load >= 0, got {args.repeats}, {args.load}")
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores; tune {args.task}, default grid, "
          f"5 folds, --no-test" + (f"; {args.load} busy process(es) throughout ({args.load_kind})"
                                   if args.load
                                   else ""))  # fmt: skip
    spinners = [
        multiprocessing.Process(target=spin if args.load_kind == "spin" else products, daemon=True)
        for _ in range(args.load)
    ]
    for p in spinners:
        p.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            table(Path(tmp), args)
    finally:
        for p in spinners:
            p.terminate()


def table(tmp: Path, args: argparse.Namespace) -> None:
    """on and off, the auto runs (and with ``--load``, on again), as a markdown table."""
    on, _, load_on = run(tmp, "on", "on", args.epochs, args.task)
    off, _, load_off = run(tmp, "off", "off", args.epochs, args.task)
    print(f"on: {on:.1f} s (load {load_on:.2f}), off: {off:.1f} s (load {load_off:.2f}), "
          f"off / on {off / on:.2f}", flush=True)  # fmt: skip
    rows = [
        run(tmp, f"auto{i}", "auto", args.epochs, args.task) for i in range(1, args.repeats + 1)
    ]
    if args.load:
        again, _, load_again = run(tmp, "on2", "on", args.epochs, args.task)
        print(f"on again after the auto runs: {again:.1f} s (load {load_again:.2f}); "
              f"on is their mean", flush=True)  # fmt: skip
        on = (on + again) / 2
    faster = min(on, off)
    print("\n| run | auto chose | auto s | on s | off s | auto / faster | load (1 min) |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for i, (seconds, summary, load) in enumerate(rows, 1):
        print(f"| {i} | {chose(summary)} | {seconds:.1f} | {on:.1f} | {off:.1f} | "
              f"{seconds / faster:.2f} | {load:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
