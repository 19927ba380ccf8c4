"""Sweep speed: every (weight decay, fold) run one at a time against all of them stacked.

For each case, the wide grid (zero plus 2x spacing over tau_epoch in [1/4, 4T], tune's
default when the suggestion has no range) times 5 folds is trained twice in the same
process: sequentially with ``adamwkit.fit``, and as one population with
``fit_population``. The table prints the wall time of each and the ratio sequential /
stacked (higher is better for stacking).

    python benchmarks/sweep_speed.py                                   # the digits sweep
    python benchmarks/sweep_speed.py --cases digits-mlp512 --epochs 100  # a wide MLP
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from adamwkit import fit, suggest
from adamwkit.tasks import Task, get_task
from adamwkit.train.population import Member, fit_population
from adamwkit.tuning.cv import default_grid, holdout_split, make_folds


def mlp_task(hidden: int) -> Task:
    """The digits task with another MLP width."""
    base = get_task("digits")

    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 10),
        )  # fmt: skip

    return Task(
        name=f"digits-mlp{hidden}", model=model, data=base.data, loss=base.loss,
        labels=base.labels, metric=base.metric, epochs=base.epochs,
        batch_size=base.batch_size, lr=base.lr,
    )  # fmt: skip


CASES = {
    "digits": lambda: get_task("digits"),
    "digits-mlp512": lambda: mlp_task(512),
    "digits-mlp1024": lambda: mlp_task(1024),
    "charlm": lambda: get_task("charlm"),
}


def members(task: Task, epochs: int, folds: int = 5, seed: int = 0) -> list[Member]:
    pool, _ = holdout_split(len(task), task.label_array(), task.test_fraction, seed)
    parts = make_folds(pool, task.label_array(), folds, seed)
    n_train = min(len(tr) for tr, _ in parts)
    anchor = suggest(
        lr=task.lr, batch_size=task.batch_size, dataset_size=n_train, epochs=epochs
    ).value
    grid = default_grid(lr=task.lr, batch_size=task.batch_size, n_train=n_train,
                        epochs=epochs, decay_scale="lr", anchor=anchor)  # fmt: skip
    return [
        Member(wd, task.lr, torch.as_tensor(tr[:n_train]), torch.as_tensor(va), seed + f)
        for wd in grid
        for f, (tr, va) in enumerate(parts)
    ]


def run_case(name: str, epochs: int | None, device: str) -> tuple[int, float, float]:
    task = CASES[name]()
    n_epochs = epochs or task.epochs
    ms = members(task, n_epochs)
    fit(task, 0.0, epochs=1, device=device)  # warm up the thread pool and the allocator
    start = time.perf_counter()
    for m in ms:
        fit(task, m.weight_decay, train_idx=m.train_idx, val_idx=m.val_idx, lr=m.lr,
            seed=m.seed, epochs=n_epochs, device=device)  # fmt: skip
    sequential = time.perf_counter() - start
    start = time.perf_counter()
    fit_population(task, ms, epochs=n_epochs, batch_size=task.batch_size, device=device)
    stacked = time.perf_counter() - start
    return len(ms), sequential, stacked


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="digits", help="comma-separated: " + ", ".join(CASES))
    parser.add_argument("--epochs", type=int, help="override every case's epochs")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    args = parser.parse_args()
    where = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {where}")
    print(f"{'case':<14} {'runs':>5} {'epochs':>6} {'sequential s':>13} {'stacked s':>10} "
          f"{'ratio':>6}")  # fmt: skip
    for name in args.cases.split(","):
        n, seq, stacked = run_case(name, args.epochs, args.device)
        epochs = args.epochs or CASES[name]().epochs
        print(f"{name:<14} {n:>5} {epochs:>6} {seq:>13.1f} {stacked:>10.1f} {seq / stacked:>6.2f}")


if __name__ == "__main__":
    main()
