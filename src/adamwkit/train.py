r"""One training run, :func:`fit`: the loop every other piece reuses.

Seeded initialisation (``torch.manual_seed(seed)`` then ``task.model()``), a seeded batch
order (a ``torch.Generator`` seeded with ``seed + 1``, one permutation per epoch),
:func:`adamwkit.param_groups` + :class:`adamwkit.AdamW`, the task's learning-rate schedule
stepped once per optimizer step, then either the epoch budget or early stopping on a
validation split. Two calls with the same task, seed, indices and hyperparameters give the
same trajectory, so candidates compared on the same fold differ only in what is tuned.
Subnormal floats are flushed to zero while training (``torch.set_flush_denormal``): heavy
decay makes them common, and they slow CPU arithmetic by an order of magnitude.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import check_choice, check_range
from .adamw import AdamW
from .groups import param_groups
from .schedules import SCHEDULES, make_schedule
from .tasks import Task

__all__ = ["FitResult", "TrainingDiverged", "evaluate", "fit", "flush_denormals"]

_flush_depth = 0


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block (nested blocks share one setting).

    Strong weight decay drives weights towards zero, where subnormal arithmetic is tens of
    times slower on CPUs. The flag is per thread and threads inherit it when created, so
    enter this before the first parallel operation of a run (``tune`` does) for the
    intra-op worker threads to get it too.
    """
    global _flush_depth
    if _flush_depth == 0 and not torch.set_flush_denormal(True):
        yield  # not supported on this CPU
        return
    _flush_depth += 1
    try:
        yield
    finally:
        _flush_depth -= 1
        if _flush_depth == 0:
            torch.set_flush_denormal(False)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class FitResult:
    """What :func:`fit` returns. Losses are per epoch; ``val_*`` are empty without ``val_idx``."""

    model: nn.Module
    weight_decay: float
    lr: float
    decay_scale: str
    epochs: int
    steps: int
    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_metrics: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False
    seconds: float = 0.0

    @property
    def val_loss(self) -> float | None:
        """Validation loss at the end of training (the restored best epoch with early stopping)."""
        if not self.val_losses:
            return None
        return self.val_losses[self.best_epoch if self.best_epoch is not None else -1]

    @property
    def val_metric(self) -> float | None:
        if not self.val_metrics:
            return None
        return self.val_metrics[self.best_epoch if self.best_epoch is not None else -1]


def _index(name: str, idx: Sequence[int] | Tensor | None, n: int) -> Tensor | None:
    if idx is None:
        return None
    t = torch.as_tensor(idx, dtype=torch.long).reshape(-1)
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: expected at least one example index")
    if int(t.min()) < 0 or int(t.max()) >= n:
        raise ValueError(f"{name} is invalid: expected indices in [0, {n - 1}]")
    return t


@torch.no_grad()
def evaluate(
    model: nn.Module, task: Task, index: Sequence[int] | Tensor, batch_size: int = 512
) -> tuple[float, float | None]:
    """Mean loss (and metric) of ``model`` over the examples at ``index``, in eval mode."""
    idx = _index("index", index, len(task))
    assert idx is not None
    was_training = model.training
    model.eval()
    total, metric_total, count = 0.0, 0.0, 0
    try:
        for start in range(0, idx.numel(), batch_size):
            x, y = task.batch(idx[start : start + batch_size])
            out = model(x)
            k = len(x)
            total += float(task.loss(out, y)) * k
            if task.metric is not None:
                metric_total += float(task.metric(out, y)) * k
            count += k
    finally:
        model.train(was_training)
    return total / count, (metric_total / count if task.metric is not None else None)


def fit(
    task: Task,
    weight_decay: float,
    *,
    train_idx: Sequence[int] | Tensor | None = None,
    val_idx: Sequence[int] | Tensor | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    decay_scale: str | None = None,
    schedule: str | None = None,
    warmup_steps: int | None = None,
    seed: int = 0,
    patience: int | None = None,
    progress: bool | Callable[[int, int], Any] = False,
) -> FitResult:
    """Train a fresh ``task.model()`` with AdamW and ``weight_decay``; return the losses.

    ``weight_decay`` is in the convention of ``decay_scale`` (``"lr"``: PyTorch's,
    ``"schedule"``: the paper's). Settings left ``None`` come from the task. Training uses
    ``train_idx`` (default: every example); with ``val_idx`` the validation loss is
    measured after each epoch. ``patience`` stops when the validation loss has not improved
    for that many epochs and restores the best epoch's weights. ``progress`` shows a bar, or
    is called as ``progress(epoch, epochs)`` after each epoch.

    Raises :class:`TrainingDiverged` when the training loss becomes NaN or infinite.
    """
    wd = check_range("weight_decay", weight_decay, 0.0)
    lr_ = check_range("lr", task.lr if lr is None else lr, 0.0, low_open=True)
    n_epochs = int(check_range("epochs", task.epochs if epochs is None else epochs, 1))
    bs = int(check_range("batch_size", task.batch_size if batch_size is None else batch_size, 1))
    scale = check_choice("decay_scale", decay_scale or task.decay_scale, ("lr", "schedule"))
    sched_name = check_choice("schedule", schedule or task.schedule, SCHEDULES)
    warm = int(task.warmup_steps if warmup_steps is None else warmup_steps)
    if patience is not None:
        check_range("patience", patience, 1)
        if val_idx is None:
            raise ValueError("patience needs val_idx: early stopping watches a validation split")

    n = len(task)
    train = _index("train_idx", train_idx, n)
    train = torch.arange(n) if train is None else train
    val = _index("val_idx", val_idx, n)

    torch.manual_seed(seed)
    model = task.model()
    model.train()
    gen = torch.Generator().manual_seed(seed + 1)
    steps_per_epoch = math.ceil(train.numel() / bs)
    total_steps = n_epochs * steps_per_epoch
    opt = AdamW(
        param_groups(model, weight_decay=wd, **task.param_groups), lr=lr_, decay_scale=scale
    )
    lr_sched = make_schedule(sched_name, total_steps, min(warm, total_steps - 1)).scheduler(opt)

    result = FitResult(model, wd, lr_, scale, 0, 0)
    best_loss, best_state, since_best = math.inf, None, 0
    callback = progress if callable(progress) else (_Bar(task.name, n_epochs) if progress else None)
    flushing = flush_denormals()
    flushing.__enter__()
    start = time.perf_counter()
    try:
        for epoch in range(n_epochs):
            order = train[torch.randperm(train.numel(), generator=gen)]
            total, count = 0.0, 0
            for s in range(steps_per_epoch):
                x, y = task.batch(order[s * bs : (s + 1) * bs])
                loss = task.loss(model(x), y)
                value = loss.detach().item()
                if not math.isfinite(value):
                    raise TrainingDiverged(
                        f"the training loss became {value} at epoch {epoch + 1}, step "
                        f"{result.steps + 1} (weight_decay={wd:g}, lr={lr_:g})"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                lr_sched.step()
                result.steps += 1
                total += value * len(x)
                count += len(x)
            result.train_losses.append(total / count)
            result.epochs = epoch + 1
            if val is not None:
                vloss, vmetric = evaluate(model, task, val)
                result.val_losses.append(vloss)
                if vmetric is not None:
                    result.val_metrics.append(vmetric)
                if patience is not None:
                    if vloss < best_loss:
                        best_loss, since_best = vloss, 0
                        result.best_epoch = epoch
                        best_state = {k: v.clone() for k, v in model.state_dict().items()}
                    else:
                        since_best += 1
                        if since_best >= patience:
                            result.stopped_early = True
                            break
            if callback is not None:
                callback(epoch + 1, n_epochs)
    finally:
        flushing.__exit__(None, None, None)
        if isinstance(callback, _Bar):
            callback.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    result.seconds = time.perf_counter() - start
    return result


class _Bar:
    """A transient progress bar over epochs, on stderr."""

    def __init__(self, name: str, epochs: int) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self._progress = Progress(transient=True, console=Console(stderr=True))
        self._progress.start()
        self._task = self._progress.add_task(f"fit {name}", total=epochs)

    def __call__(self, epoch: int, epochs: int) -> None:
        self._progress.update(self._task, completed=epoch)

    def close(self) -> None:
        self._progress.stop()
