"""The ``digits`` task: an over-parameterised MLP on a few hundred of scikit-learn's digits.

scikit-learn ships the 1,797 8x8 handwritten digits (UCI) inside the package, so nothing is
downloaded. The task keeps a stratified subset of 500 images: trained for 300 epochs a
two-hidden-layer MLP of 64 units memorises its ~320 training images per fold, and the
validation loss then depends clearly on the weight decay (too little: over-confident
predictions; too much: underfitting). The net is small enough that one run is dominated by
per-step overhead, so a sweep trains much faster stacked (``tune --vectorize``).
"""

from __future__ import annotations

import torch
from torch import nn

from .base import Task, accuracy, cross_entropy

N_EXAMPLES = 500
HIDDEN = 64


def _mlp() -> nn.Module:
    return nn.Sequential(
        nn.Linear(64, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, 10),
    )


def digits_task(n_examples: int = N_EXAMPLES, seed: int = 0) -> Task:
    """The built-in ``digits`` task (a stratified subset of ``n_examples`` images)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    if n_examples < len(y):
        keep, _ = train_test_split(
            range(len(y)), train_size=n_examples, stratify=y, random_state=seed
        )
        x, y = x[sorted(keep)], y[sorted(keep)]
    inputs = torch.tensor(x / 16.0, dtype=torch.float32)
    targets = torch.tensor(y, dtype=torch.long)
    return Task(
        name="digits",
        model=_mlp,
        data=(inputs, targets),
        loss=cross_entropy,
        labels=targets,
        metric=accuracy,
        metric_name="accuracy",
        epochs=300,
        batch_size=32,
        lr=1e-3,
        schedule="cosine",
        decay_scale="lr",
        test_fraction=0.2,
        description=f"MLP 64-{HIDDEN}-{HIDDEN}-10 on {len(targets)} of scikit-learn's digits",
    )
