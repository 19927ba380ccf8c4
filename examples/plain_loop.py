"""Tune the weight decay of your own PyTorch training loop.

Write one run of your loop as a function of an ``adamwkit.Trial``: build the model (seeded
with ``trial.seed``), take the optimizer from ``trial.optimizer(model)`` (AdamW with the
trial's weight decay on the tensors that should decay), train on ``trial.train_idx``,
report the validation loss as you go, and return it on ``trial.val_idx``.

    python examples/plain_loop.py                       # tune from Python
    adamwkit tune examples.plain_loop:objective --examples 500 --lr 3e-3 \\
        --batch-size 32 --epochs 10                     # or from the command line
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn

import adamwkit


def load_data(n: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = load_digits(return_X_y=True)
    return torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n])


X, Y = load_data()


def objective(trial: adamwkit.Trial) -> float:
    """A 64-wide MLP on scikit-learn's digits, in a plain PyTorch loop."""
    torch.manual_seed(trial.seed)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10)).to(trial.device)
    opt = trial.optimizer(model)
    x, y = X.to(trial.device), Y.to(trial.device)
    train, val = trial.train_idx.to(trial.device), trial.val_idx.to(trial.device)
    order = torch.Generator().manual_seed(trial.seed)
    epochs, batch_size = trial.epochs or 10, trial.batch_size or 32
    val_loss = float("nan")
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train), generator=order).to(trial.device)
        for batch in train[perm].split(batch_size):
            with trial.autocast():
                loss = F.cross_entropy(model(x[batch]), y[batch])
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad(), trial.autocast():
            val_loss = F.cross_entropy(model(x[val]), y[val]).item()
        trial.report(val_loss, epoch + 1)  # the learning curve in the report
    return val_loss


def main(argv: list[str] | None = None) -> adamwkit.TuneResult:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="adamwkit-runs")
    p.add_argument("--folds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=10)
    a = p.parse_args(argv)
    result = adamwkit.tune(
        objective, examples=len(X), labels=Y, lr=3e-3, batch_size=32, epochs=a.epochs,
        folds=a.folds, grid=[0.0, 0.1, 1.0, 10.0], out=a.out, study="plain-loop",
    )  # fmt: skip
    print(result.summary["verdict"])
    return result


if __name__ == "__main__":
    main()
