"""Does ``--vectorize auto`` hold its choice? The same tune command, run several times.

The task is the plain 256-wide MLP of ``workers_load.py`` (the digits data, 64-256-256-10,
40 epochs, batch 32), which nobody tuned stacking for; the study is the default grid over
5 folds (10 candidates, 50 runs), refits left out. The command runs once with
``--vectorize on``, once with ``off``, then ``--repeats`` times with ``auto``, each in a
fresh process and a fresh run folder (nothing stored from before). Each row shows what
auto chose and why (its samples, any switch), its time, and its time over the faster
path's. The machine's load average (1 minute) is printed beside each row: these numbers
mean little on a machine that other work keeps busy, and say so.

    python benchmarks/vectorize_auto.py                 # 3 runs of auto, on and off once
    python benchmarks/vectorize_auto.py --repeats 5 --epochs 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent


def run(out: Path, study: str, vectorize: str, epochs: int | None) -> tuple[float, dict, float]:
    """Seconds of one ``adamwkit tune`` process, its summary's stacking record, and the
    1-minute load average when it started."""
    cmd = [sys.executable, "-m", "adamwkit.cli", "tune", "workers_load:mlp256", "--vectorize",
           vectorize, "--no-test", "--quiet", "--out", str(out), "--study", study]  # fmt: skip
    if epochs is not None:
        cmd += ["--epochs", str(epochs)]
    load = os.getloadavg()[0]
    start = time.perf_counter()
    subprocess.run(cmd, cwd=HERE, check=True, capture_output=True)
    seconds = time.perf_counter() - start
    summary = json.loads((out / study / "summary.json").read_text())
    return seconds, summary, load


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
    parser.add_argument("--epochs", type=int, default=None, help="default: the task's 40")
    args = parser.parse_args()
    cores = len(os.sched_getaffinity(0))
    print(f"torch {torch.__version__}, {cores} cores; tune workers_load:mlp256, default grid, "
          f"5 folds, --no-test")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        on, _, load_on = run(Path(tmp), "on", "on", args.epochs)
        off, _, load_off = run(Path(tmp), "off", "off", args.epochs)
        faster = min(on, off)
        print(f"on: {on:.1f} s (load {load_on:.2f}), off: {off:.1f} s (load {load_off:.2f}), "
              f"off / on {off / on:.2f}\n")  # fmt: skip
        print("| run | auto chose | auto s | on s | off s | auto / faster | load (1 min) |")
        print("|---:|---|---:|---:|---:|---:|---:|", flush=True)
        for i in range(1, args.repeats + 1):
            seconds, summary, load = run(Path(tmp), f"auto{i}", "auto", args.epochs)
            print(f"| {i} | {chose(summary)} | {seconds:.1f} | {on:.1f} | {off:.1f} | "
                  f"{seconds / faster:.2f} | {load:.2f} |", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
