"""Tune the weight decay of a LightningModule: a small MLP on scikit-learn's digits.

``lightning_objective`` gives the module adamwkit's AdamW with the trial's weight decay
(its ``configure_optimizers`` is replaced for the run), trains it with a Lightning
``Trainer`` on the fold, and returns the ``val_loss`` the module logs.

    python examples/lightning_module.py
    adamwkit tune examples.lightning_module:objective --examples 500 --lr 3e-3 \\
        --batch-size 32 --epochs 5 --grid 0,0.1,1
"""

from __future__ import annotations

import argparse

import lightning as L
import torch
import torch.nn.functional as F
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import TensorDataset

import adamwkit
from adamwkit.integrations.lightning import lightning_objective


class DigitsMLP(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _i: int) -> None:
        x, y = batch
        logits = self.net(x)
        self.log("val_loss", F.cross_entropy(logits, y))
        self.log("val_acc", (logits.argmax(dim=1) == y).float().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:  # replaced while tuning
        return adamwkit.AdamW(adamwkit.param_groups(self, 0.01), lr=1e-3)


def load_data(n: int = 500) -> TensorDataset:
    x, y = load_digits(return_X_y=True)
    return TensorDataset(torch.tensor(x[:n] / 16.0, dtype=torch.float32), torch.tensor(y[:n]))


DATA = load_data()
objective = lightning_objective(DigitsMLP, DATA, batch_size=32, max_epochs=5, metric="val_acc")


def main(argv: list[str] | None = None) -> adamwkit.TuneResult:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="adamwkit-runs")
    p.add_argument("--folds", type=int, default=3)
    a = p.parse_args(argv)
    result = adamwkit.tune(
        objective, data=DATA, labels=DATA.tensors[1], lr=3e-3, batch_size=32, epochs=5,
        folds=a.folds, grid=[0.0, 0.1, 1.0], out=a.out, study="lightning-module",
    )  # fmt: skip
    print(result.summary["verdict"])
    return result


if __name__ == "__main__":
    main()
