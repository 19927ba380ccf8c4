"""The :class:`Task` dataclass and the loss and metric the built-in tasks share.

Kept apart from :mod:`adamwkit.tasks` so that the built-in tasks (:mod:`.digits`,
:mod:`.charlm`) import it without importing the package that loads them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from .._checks import check_choice, check_range, check_whole
from .._constants import DECAY_SCALES

__all__ = ["Data", "Task", "accuracy", "cross_entropy"]

Data = tuple[Tensor, Tensor] | Dataset


@dataclass
class Task:
    """A training problem for :func:`adamwkit.fit` and :func:`adamwkit.tune`.

    - ``model``: a function returning a fresh ``nn.Module``; it is called right after
      ``torch.manual_seed(seed)``, so the same seed gives the same initial weights.
    - ``data``: ``(inputs, targets)`` tensors with the examples along dim 0, or a
      ``Dataset`` whose items are ``(input, target)`` pairs.
    - ``loss``: ``loss(outputs, targets)`` -> the mean loss of a batch (a 0-d tensor).
    - ``labels``: one class label per example, for stratified folds and test split
      (``None``: plain folds).
    - ``metric``: ``metric(outputs, targets)`` -> the batch mean of a score such as the
      accuracy (a float or a 0-d tensor), reported beside the loss; ``metric_name`` names
      it. Returning a tensor lets a stacked population score every member in one call.
    - ``epochs``, ``batch_size``, ``lr``, ``schedule`` (``constant``, ``cosine``, ``linear``,
      ``wsd``), ``warmup_steps``, ``decay_scale``: default training settings.
    - ``test_fraction``: share of the examples held out for the final test.
    - ``param_groups``: keyword arguments for :func:`adamwkit.param_groups`.
    - ``decay_toward``: ``"zero"`` (default) or ``"init"``: decay toward the weights each
      run starts from (the pretrained weights of a fine-tune: decoupled L2-SP, Xuhong et
      al., ICML 2018), as :class:`adamwkit.AdamW`'s ``decay_toward``; :func:`adamwkit.fit`
      and stacked populations (each member toward its own first weights) both use it.
    """

    name: str
    model: Callable[[], nn.Module]
    data: Data
    loss: Callable[[Tensor, Tensor], Tensor]
    labels: Tensor | Sequence[int] | None = None
    metric: Callable[[Tensor, Tensor], float | Tensor] | None = None
    metric_name: str = "metric"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 1e-3
    schedule: str = "cosine"
    warmup_steps: int = 0
    decay_scale: str = "lr"
    test_fraction: float = 0.2
    description: str = ""
    param_groups: dict[str, Any] = field(default_factory=dict)
    decay_toward: str = "zero"

    def __post_init__(self) -> None:
        from ..schedules import SCHEDULES

        if not callable(self.model):
            raise ValueError(
                f"model={self.model!r} is invalid: expected a function returning an nn.Module"
            )
        if not callable(self.loss):
            raise ValueError(f"loss={self.loss!r} is invalid: expected a function")
        n = len(self)
        if n < 2:
            raise ValueError(f"data has {n} examples: expected at least 2")
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(
                f"labels has {len(self.labels)} entries: expected one per example ({n})"
            )
        for name in ("epochs", "batch_size", "warmup_steps"):
            value = getattr(self, name)
            check_whole(name, value, 0 if name == "warmup_steps" else 1)
        check_range("lr", self.lr, 0.0, low_open=True)
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("decay_scale", self.decay_scale, DECAY_SCALES)
        check_range("test_fraction", self.test_fraction, 0.0, 1.0, high_open=True)
        from ..adamw import DECAY_TOWARD

        check_choice("decay_toward", self.decay_toward, DECAY_TOWARD)

    def __len__(self) -> int:
        if isinstance(self.data, tuple):
            x, y = self.data
            if len(x) != len(y):
                raise ValueError(
                    f"data is invalid: inputs have {len(x)} examples but targets {len(y)}"
                )
            return len(x)
        return len(self.data)  # type: ignore[arg-type]

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """The inputs and targets of the examples at ``index`` (a 1-D long tensor)."""
        if isinstance(self.data, tuple):
            x, y = self.data
            return x[index], y[index]
        from torch.utils.data import default_collate

        items = [self.data[int(i)] for i in index]
        x, y = default_collate(items)
        return x, y

    def label_array(self) -> Any:
        """The labels as a NumPy array, or ``None``."""
        if self.labels is None:
            return None
        import numpy as np

        labels = self.labels
        if isinstance(labels, Tensor):
            return labels.detach().cpu().numpy()
        return np.asarray(labels)


def accuracy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Share of examples whose highest-scoring class is the target (a 0-d tensor)."""
    return (outputs.argmax(dim=-1) == targets).float().mean()


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy over every position (works for (B, C) and (B, T, C) outputs)."""
    return torch.nn.functional.cross_entropy(
        outputs.reshape(-1, outputs.shape[-1]), targets.reshape(-1)
    )
