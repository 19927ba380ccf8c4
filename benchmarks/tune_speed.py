"""Whole ``tune`` runs: one run at a time (``--vectorize off``) against stacked (``on``) and
the measured choice (``auto``), in the same process.

``auto`` times a few steps of both paths before the first batch and keeps the faster; its
row includes that measurement. Refits are left out (``test=False``) so that the columns
time the cross-validation alone.

    python benchmarks/tune_speed.py --cases mlp256-ln                  # auto within 10%?
    python benchmarks/tune_speed.py --device cuda --cases digits,charlm --epochs 30,2
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from adamwkit import tune
from adamwkit.tasks import Task, get_task


def mlp256_ln() -> Task:
    """The digits data with a 256-wide MLP with LayerNorm (stacked through torch.func)."""
    base = get_task("digits")

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, 256), nn.LayerNorm(256), nn.ReLU(),
            nn.Linear(256, 256), nn.LayerNorm(256), nn.ReLU(), nn.Linear(256, 10),
        )  # fmt: skip

    return Task(
        name="mlp256-ln", model=model, data=base.data, loss=base.loss, labels=base.labels,
        metric=base.metric, epochs=base.epochs, batch_size=32, lr=base.lr,
    )  # fmt: skip


CASES = {
    "digits": lambda: get_task("digits"),
    "charlm": lambda: get_task("charlm"),
    "mlp256-ln": mlp256_ln,
}


def run(task: Task, mode: str, epochs: int, device: str, out: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    result = tune(task, epochs=epochs, vectorize=mode, device=device, test=False,
                  progress=False, out=out, study=f"{task.name}-{mode}")  # fmt: skip
    seconds = time.perf_counter() - start
    return seconds, result.summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="mlp256-ln", help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--epochs", default="100", help="epochs per case, comma-separated")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--modes", default="off,on,auto")
    args = parser.parse_args()
    names = args.cases.split(",")
    epochs = [int(e) for e in args.epochs.split(",")]
    epochs += [epochs[-1]] * (len(names) - len(epochs))
    modes = args.modes.split(",")
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {where}, {torch.get_num_threads()} threads at start")
    extra = []
    if {"off", "on"} <= set(modes):
        extra.append("off / on")
        if "auto" in modes:
            extra.append("auto / faster")
    cols = ["case", "device", "runs", "epochs", *(f"{m} s" for m in modes), *extra, "auto chose"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for name, n_epochs in zip(names, epochs, strict=True):
            task = CASES[name]()
            times: dict[str, float] = {}
            runs, decision = 0, ""
            for mode in modes:
                try:
                    seconds, summary = run(task, mode, n_epochs, args.device, Path(tmp))
                except Exception as err:  # a mode that fails is a row entry, not the end
                    times[mode] = float("nan")
                    if mode == "auto":
                        decision = f"failed: {type(err).__name__}"
                    continue
                times[mode] = seconds
                runs = len(summary["candidates"]) * summary["folds"]
                if mode == "auto":
                    decision = summary["vectorize"]
            cells = [name, args.device, str(runs), str(n_epochs)]
            cells += [f"{times[m]:.1f}" for m in modes]
            if "off / on" in extra:
                cells.append(f"{times['off'] / times['on']:.2f}")
            if "auto / faster" in extra:
                cells.append(f"{times['auto'] / min(times['off'], times['on']):.2f}")
            cells.append(decision)
            print("| " + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
