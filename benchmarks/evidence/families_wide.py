"""The wider task families of the evidence (the issue's item 7): new kinds of task, each
at several data sizes and noise levels, built from data on the machine.

Every family is a :class:`families.Family` whose ``build(n, epochs, width, batch_size,
lr, noise, seed)`` returns an :class:`adamwkit.Task`; ``noise`` is the family's own
corruption level (read below). ``run_wide.py`` runs them with ``run.py``'s protocol.

- ``text-transformer``: a 1-layer transformer classifier (mean-pooled, not causal) telling
  which of four standard-library modules a 32-character window of docstring comes from;
  ``noise`` is the share of labels replaced by a random other class.
- ``digits-cnn-noisy``: a small CNN on scikit-learn's digits with Gaussian pixel noise of
  standard deviation ``noise`` (pixels scaled to [0, 1]), drawn once per dataset.
- ``digits-labelnoise``: the digits MLP with a share ``noise`` of the labels replaced by a
  random other class (the validation folds are as noisy as the training folds).
- ``friedman-mlp``: an MLP regressing scikit-learn's synthetic Friedman #1 function (10
  features, 5 of them used) with Gaussian label noise of standard deviation ``noise``
  (the clean target's is about 4.9); the target is standardised.
- ``cancer-labelnoise``: the breast-cancer MLP with a share ``noise`` of the labels
  flipped.
"""

from __future__ import annotations

import ast
import sysconfig
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from families import (
    Family,
    _classification,
    _digits,
    _mlp,
    _regression,
    _SmallCNN,
    _standardise,
    _subset,
)
from torch import Tensor, nn

from adamwkit.tasks import Task


def _flip(y: np.ndarray, share: float, classes: int, seed: int) -> np.ndarray:
    """``y`` with a share of its labels replaced by a random *other* class."""
    if share <= 0:
        return y
    rng = np.random.default_rng(seed + 777)
    y = y.copy()
    hit = rng.random(len(y)) < share
    y[hit] = (y[hit] + rng.integers(1, classes, hit.sum())) % classes
    return y


# ------------------------------------------------------------------ text-transformer

MODULES = ("argparse.py", "inspect.py", "typing.py", "_pydecimal.py")
WINDOW = 32
VOCAB = 97  # newline and printable ASCII, as charlm's


def _module_docs(name: str) -> str:
    path = Path(sysconfig.get_paths()["stdlib"]) / name
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [tree, *(n for n in ast.walk(tree) if isinstance(
        n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)))]  # fmt: skip
    docs = (ast.get_docstring(n) for n in nodes)
    return " ".join(" ".join(d.split()) for d in docs if d)


def _text_windows(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    from adamwkit.tasks.charlm import encode

    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for label, name in enumerate(MODULES):
        ids = encode(_module_docs(name)).numpy()
        starts = np.arange(0, len(ids) - WINDOW, WINDOW)  # disjoint windows
        pick = rng.choice(starts, size=min(per_class, len(starts)), replace=False)
        xs.append(np.stack([ids[s : s + WINDOW] for s in np.sort(pick)]))
        ys.append(np.full(len(pick), label))
    return np.concatenate(xs), np.concatenate(ys)


class TextClassifier(nn.Module):
    """Embeddings, one pre-norm encoder layer (not causal), mean pooling, a linear head."""

    def __init__(self, width: int, classes: int = len(MODULES)) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, width)
        self.position = nn.Embedding(WINDOW, width)
        self.block = nn.TransformerEncoderLayer(
            width, nhead=4, dim_feedforward=2 * width, dropout=0.0, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, ids: Tensor) -> Tensor:
        pos = torch.arange(ids.shape[-1], device=ids.device)
        h = self.block(self.embed(ids) + self.position(pos))
        return self.head(self.norm(h).mean(-2))


def text_transformer(n: int, epochs: int, width: int, batch_size: int, lr: float,
                     noise: float, seed: int = 0) -> Task:  # fmt: skip
    x, y = _text_windows(n // len(MODULES), seed)
    y = _flip(y, noise, len(MODULES), seed)
    inputs, targets = torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)
    task = _classification("text-transformer", x, y, lambda: TextClassifier(width), epochs,
                           batch_size, lr, f"1-layer transformer classifier (width {width}) "
                           f"on {len(y)} docstring windows of 4 modules, {noise:g} labels "
                           "flipped")  # fmt: skip
    return replace(task, data=(inputs, targets), labels=targets, warmup_steps=10)


# ------------------------------------------------------------------ the others


def digits_cnn_noisy(n: int, epochs: int, width: int, batch_size: int, lr: float,
                     noise: float, seed: int = 0) -> Task:  # fmt: skip
    x, y = _digits(n, seed)
    x = x + noise * np.random.default_rng(seed + 555).standard_normal(x.shape)
    return _classification("digits-cnn-noisy", x, y, lambda: _SmallCNN(width), epochs,
                           batch_size, lr, f"CNN (2 conv of {width} channels) on {len(y)} "
                           f"digits with pixel noise {noise:g}")  # fmt: skip


def digits_labelnoise(n: int, epochs: int, width: int, batch_size: int, lr: float,
                      noise: float, seed: int = 0) -> Task:  # fmt: skip
    x, y = _digits(n, seed)
    y = _flip(y, noise, 10, seed)
    return _classification("digits-labelnoise", x, y, _mlp(64, width, 10), epochs,
                           batch_size, lr, f"MLP 64-{width}-{width}-10 on {len(y)} digits, "
                           f"{noise:g} labels flipped")  # fmt: skip


def friedman_mlp(n: int, epochs: int, width: int, batch_size: int, lr: float,
                 noise: float, seed: int = 0) -> Task:  # fmt: skip
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=n, n_features=10, noise=noise, random_state=seed + 99)
    x = (x - 0.5) / np.sqrt(1 / 12)
    y = (y - y.mean()) / y.std()
    return _regression("friedman-mlp", x, y, _mlp(10, width, 1), epochs, batch_size, lr,
                       f"MLP 10-{width}-{width}-1 regressing Friedman #1 ({n} samples, "
                       f"noise {noise:g})")  # fmt: skip


def cancer_labelnoise(n: int, epochs: int, width: int, batch_size: int, lr: float,
                      noise: float, seed: int = 0) -> Task:  # fmt: skip
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x, y = _subset(_standardise(x), y, n, seed, True)
    y = _flip(y, noise, 2, seed)
    return _classification("cancer-labelnoise", x, y, _mlp(30, width, 2), epochs,
                           batch_size, lr, f"MLP 30-{width}-{width}-2 on {len(y)} "
                           f"breast-cancer cases, {noise:g} labels flipped")  # fmt: skip


WIDE: dict[str, Family] = {
    f.name: f
    for f in [
        Family(
            "text-transformer",
            text_transformer,
            dict(n=400, epochs=20, width=32, batch_size=16, lr=3e-3, noise=0.0),
            dict(n=(200,), noise=(0.2,), epochs=(10,)),
            "a 1-layer transformer classifying docstring windows by module",
        ),
        Family(
            "digits-cnn-noisy",
            digits_cnn_noisy,
            dict(n=300, epochs=60, width=8, batch_size=32, lr=3e-3, noise=0.3),
            dict(n=(150, 600), noise=(0.6,), epochs=(120,), lr=(1e-3,)),
            "a small CNN on digits images with pixel noise",
        ),
        Family(
            "digits-labelnoise",
            digits_labelnoise,
            dict(n=500, epochs=100, width=64, batch_size=32, lr=1e-3, noise=0.15),
            dict(n=(250, 1000), noise=(0.35,), epochs=(50,), lr=(3e-3,), batch_size=(64,)),
            "the digits MLP with labels flipped at random",
        ),
        Family(
            "friedman-mlp",
            friedman_mlp,
            dict(n=400, epochs=100, width=64, batch_size=32, lr=1e-3, noise=1.0),
            dict(n=(100, 200, 800), noise=(0.3, 3.0), epochs=(50,), lr=(3e-3,), batch_size=(16,)),
            "an MLP regressing Friedman #1 at several label-noise levels",
        ),
        Family(
            "cancer-labelnoise",
            cancer_labelnoise,
            dict(n=569, epochs=100, width=64, batch_size=32, lr=1e-3, noise=0.1),
            dict(n=(142, 284), noise=(0.3,), epochs=(50,), lr=(3e-3,)),
            "the breast-cancer MLP with labels flipped at random",
        ),
    ]
}


def config_id(config: dict[str, Any]) -> str:
    return "n{n}-e{epochs}-w{width}-b{batch_size}-lr{lr:g}-noise{noise:g}".format(**config)
