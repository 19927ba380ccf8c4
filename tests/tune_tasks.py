"""Small tasks for the tune tests, loadable as ``tune_tasks:tiny`` from the tests folder.

``model()`` appends a line to the file named by ``ADAMWKIT_TEST_FIT_LOG`` (when set), so a
test can count the trainings a process started; ``ADAMWKIT_TEST_SLOW`` (seconds) makes
every forward pass sleep, so a test can kill a worker mid-trial; ``ADAMWKIT_TEST_FAIL_LOSS``
makes the loss raise on any batch of more than two examples.
"""

from __future__ import annotations

import os
import time

import torch
from torch import nn

from adamwkit.tasks import Task, accuracy, cross_entropy


class _Slow(nn.Module):
    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            time.sleep(self.delay)
        return x


def _model() -> nn.Module:
    log = os.environ.get("ADAMWKIT_TEST_FIT_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{os.getpid()}\n")
    layers: list[nn.Module] = [nn.Linear(8, 32), nn.Tanh(), nn.Linear(32, 3)]
    delay = float(os.environ.get("ADAMWKIT_TEST_SLOW", "0"))
    if delay:
        layers.insert(0, _Slow(delay))
    return nn.Sequential(*layers)


def _failing_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    if targets.shape[0] > 2:  # a real batch (tune's model probe uses two examples)
        raise RuntimeError("loss failed")
    return cross_entropy(outputs, targets)


def tiny() -> Task:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(120, 8, generator=g)
    w = torch.randn(8, 3, generator=g)
    y = (x @ w + 0.5 * torch.randn(120, 3, generator=g)).argmax(dim=1)
    return Task(
        name="tiny",
        model=_model,
        data=(x, y),
        loss=_failing_loss if os.environ.get("ADAMWKIT_TEST_FAIL_LOSS") else cross_entropy,
        labels=y,
        metric=accuracy,
        metric_name="accuracy",
        epochs=3,
        batch_size=16,
        lr=1e-2,
        schedule="cosine",
        test_fraction=0.2,
    )
