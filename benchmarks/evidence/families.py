"""The task families of the evidence studies, each built from data on the machine.

Every family is a function ``build(n, epochs, width, batch_size, lr, seed)`` returning an
:class:`adamwkit.Task`; its ``BASE`` settings are the centre of the study, and ``VARY``
lists the values each setting takes while the others stay at the centre. Nothing is
downloaded: the data ship inside scikit-learn or are generated here, and the text of the
character model is the standard library's docstrings.

- ``digits-mlp``: the built-in task's MLP on scikit-learn's 8x8 digits (10 classes).
- ``digits-cnn``: a small convolutional net on the same images.
- ``cancer-mlp``: an MLP on scikit-learn's breast-cancer data (30 features, 2 classes).
- ``diabetes-mlp``: an MLP regressing scikit-learn's diabetes progression (mean squared
  error on the standardised target).
- ``teacher-student``: an MLP learning a random two-layer tanh teacher from noisy samples.
- ``charlm``: the built-in character transformer, narrower, on fewer windows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from adamwkit.tasks import Task, accuracy, cross_entropy


@dataclass(frozen=True)
class Family:
    name: str
    build: Callable[..., Task]
    base: dict[str, Any]
    vary: dict[str, tuple[Any, ...]]
    description: str


def _subset(x: np.ndarray, y: np.ndarray, n: int, seed: int, stratify: bool) -> tuple:
    if n >= len(y):
        return x, y
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(
        np.arange(len(y)), train_size=n, stratify=y if stratify else None, random_state=seed
    )
    keep = np.sort(keep)
    return x[keep], y[keep]


def _mlp(d_in: int, width: int, d_out: int) -> Callable[[], nn.Module]:
    def model() -> nn.Module:
        return nn.Sequential(
            nn.Linear(d_in, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
            nn.Linear(width, d_out),
        )  # fmt: skip

    return model


def _mse(outputs: Tensor, targets: Tensor) -> Tensor:
    return torch.nn.functional.mse_loss(outputs.squeeze(-1), targets)


def _classification(name: str, x: np.ndarray, y: np.ndarray, model: Callable[[], nn.Module],
                    epochs: int, batch_size: int, lr: float, what: str) -> Task:  # fmt: skip
    inputs = torch.tensor(x, dtype=torch.float32)
    targets = torch.tensor(y, dtype=torch.long)
    return Task(
        name=name, model=model, data=(inputs, targets), loss=cross_entropy, labels=targets,
        metric=accuracy, metric_name="accuracy", epochs=epochs, batch_size=batch_size, lr=lr,
        schedule="cosine", decay_scale="lr", test_fraction=0.0, description=what,
    )  # fmt: skip


def _regression(name: str, x: np.ndarray, y: np.ndarray, model: Callable[[], nn.Module],
                epochs: int, batch_size: int, lr: float, what: str) -> Task:  # fmt: skip
    return Task(
        name=name, model=model, data=(torch.tensor(x, dtype=torch.float32),
                                      torch.tensor(y, dtype=torch.float32)),
        loss=_mse, epochs=epochs, batch_size=batch_size, lr=lr, schedule="cosine",
        decay_scale="lr", test_fraction=0.0, description=what,
    )  # fmt: skip


def _standardise(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(0)) / (x.std(0) + 1e-12)


def _digits(n: int, seed: int) -> tuple:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return _subset(x / 16.0, y, n, seed, True)


def digits_mlp(n: int, epochs: int, width: int, batch_size: int, lr: float, seed: int = 0) -> Task:
    x, y = _digits(n, seed)
    return _classification("digits-mlp", x, y, _mlp(64, width, 10), epochs, batch_size, lr,
                           f"MLP 64-{width}-{width}-10 on {len(y)} digits")  # fmt: skip


class _SmallCNN(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.head = nn.Linear(width * 4 * 4, 10)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv1(x.view(-1, 1, 8, 8)))
        h = torch.nn.functional.max_pool2d(torch.relu(self.conv2(h)), 2)
        return self.head(h.flatten(1))


def digits_cnn(n: int, epochs: int, width: int, batch_size: int, lr: float, seed: int = 0) -> Task:
    x, y = _digits(n, seed)
    return _classification("digits-cnn", x, y, lambda: _SmallCNN(width), epochs, batch_size,
                           lr, f"CNN (2 conv of {width} channels) on {len(y)} digits")  # fmt: skip


def cancer_mlp(n: int, epochs: int, width: int, batch_size: int, lr: float, seed: int = 0) -> Task:
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = _subset(_standardise(x), y, n, seed, True)
    return _classification("cancer-mlp", x, y, _mlp(30, width, 2), epochs, batch_size, lr,
                           f"MLP 30-{width}-{width}-2 on {len(y)} breast-cancer cases")  # fmt: skip


def diabetes_mlp(n: int, epochs: int, width: int, batch_size: int, lr: float,
                 seed: int = 0) -> Task:  # fmt: skip
    from sklearn.datasets import load_diabetes

    x, y = load_diabetes(return_X_y=True)
    x, y = _subset(_standardise(x), (y - y.mean()) / y.std(), n, seed, False)
    return _regression("diabetes-mlp", x, y, _mlp(10, width, 1), epochs, batch_size, lr,
                       f"MLP 10-{width}-{width}-1 regressing {len(y)} diabetes cases")  # fmt: skip


def teacher_student(n: int, epochs: int, width: int, batch_size: int, lr: float,
                    seed: int = 0) -> Task:  # fmt: skip
    g = torch.Generator().manual_seed(1234)
    d, hidden = 16, 8
    w1 = torch.randn(d, hidden, generator=g) / d**0.5
    w2 = torch.randn(hidden, generator=g) / hidden**0.5
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    clean = torch.tanh(2.0 * x @ w1) @ w2
    noise = torch.randn(n, generator=torch.Generator().manual_seed(seed + 1))
    y = (clean - clean.mean()) / clean.std() + 0.5 * noise
    return _regression("teacher-student", x.numpy(), y.numpy(), _mlp(d, width, 1), epochs,
                       batch_size, lr, f"MLP {d}-{width}-{width}-1 learning a tanh teacher "
                       f"(8 units) from {n} noisy samples")  # fmt: skip


def charlm(n: int, epochs: int, width: int, batch_size: int, lr: float, seed: int = 0) -> Task:
    from adamwkit.tasks.charlm import CharTransformer, charlm_task

    base = charlm_task(n)
    return Task(
        name="charlm", model=lambda: CharTransformer(width=width, layers=1),
        data=base.data, loss=cross_entropy, epochs=epochs, batch_size=batch_size, lr=lr,
        schedule="cosine", warmup_steps=10, decay_scale="lr", test_fraction=0.0,
        description=f"1-layer character transformer (width {width}) on {len(base)} windows",
    )  # fmt: skip


FAMILIES: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "digits-mlp",
            digits_mlp,
            dict(n=500, epochs=300, width=64, batch_size=32, lr=1e-3),
            dict(
                n=(250, 1000, 1797),
                epochs=(75, 150, 600),
                width=(32, 256),
                batch_size=(16, 128),
                lr=(3e-4, 3e-3),
            ),
            "the built-in task's MLP on scikit-learn's digits",
        ),
        Family(
            "digits-cnn",
            digits_cnn,
            dict(n=500, epochs=100, width=16, batch_size=32, lr=1e-3),
            dict(n=(250, 1000), epochs=(50, 200), width=(8, 32), batch_size=(64,), lr=(3e-3,)),
            "a small CNN on the digits images",
        ),
        Family(
            "cancer-mlp",
            cancer_mlp,
            dict(n=569, epochs=200, width=64, batch_size=32, lr=1e-3),
            dict(
                n=(142, 284),
                epochs=(50, 100, 400),
                width=(16, 256),
                batch_size=(16, 64),
                lr=(3e-4, 3e-3),
            ),
            "an MLP on scikit-learn's breast-cancer data",
        ),
        Family(
            "diabetes-mlp",
            diabetes_mlp,
            dict(n=442, epochs=200, width=64, batch_size=32, lr=1e-3),
            dict(
                n=(110, 221),
                epochs=(50, 100, 400),
                width=(16, 256),
                batch_size=(16, 64),
                lr=(3e-4, 3e-3),
            ),
            "an MLP regressing scikit-learn's diabetes data",
        ),
        Family(
            "teacher-student",
            teacher_student,
            dict(n=512, epochs=200, width=128, batch_size=32, lr=1e-3),
            dict(
                n=(128, 256, 1024, 2048),
                epochs=(50, 100, 400),
                width=(32, 512),
                batch_size=(16, 64),
                lr=(3e-4, 3e-3),
            ),
            "a random tanh teacher learned by an MLP student",
        ),
        Family(
            "charlm",
            charlm,
            dict(n=240, epochs=30, width=32, batch_size=16, lr=3e-3),
            dict(n=(120, 480), epochs=(15, 60)),
            "a 1-layer character transformer on standard-library docstrings",
        ),
    ]
}


def configs(family: Family) -> list[dict[str, Any]]:
    """The centre, then each setting varied alone (duplicates of the centre dropped)."""
    out = [dict(family.base)]
    for key, values in family.vary.items():
        for v in values:
            if v != family.base[key]:
                out.append({**family.base, key: v})
    return out


def config_id(config: dict[str, Any]) -> str:
    return "n{n}-e{epochs}-w{width}-b{batch_size}-lr{lr:g}".format(**config)
