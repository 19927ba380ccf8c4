r"""One training run, :func:`fit`.

Seeded initialisation (``torch.manual_seed(seed)`` then ``task.model()``, built on the CPU
and then moved, so the same seed gives the same weights on every device), a seeded batch
order (a ``torch.Generator`` seeded with ``seed + 1``, one permutation per epoch),
:func:`adamwkit.param_groups` + :class:`adamwkit.AdamW`, the task's learning-rate schedule
stepped once per optimizer step, then either the epoch budget or early stopping on a
validation split. Two calls with the same task, seed, indices and hyperparameters give the
same trajectory, so candidates compared on the same fold differ only in what is tuned.
The loop itself is :func:`adamwkit.train.loop.run_epochs`, shared with stacked populations.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from .._checks import check_range, check_whole
from .._device import autocast, check_precision
from ..adamw import AdamW
from ..functional import DecayScale
from ..groups import param_groups
from ..monitor import Monitor, MonitorLog
from ..schedules import make_schedule
from ..tasks import Task
from .loop import (
    DeviceData,
    RunSettings,
    TrainingDiverged,
    check_index,
    keeps_random_state,
    run_epochs,
)

__all__ = ["FitResult", "evaluate", "example_losses", "fit"]


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
    monitor: MonitorLog | None = None
    initial_val_loss: float | None = None  # before the first step: the untrained baseline

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


def _model_device(model: nn.Module) -> torch.device:
    for t in model.parameters():
        return t.device
    return torch.device("cpu")


@torch.no_grad()
def _mean_loss(
    model: nn.Module,
    task: Task,
    data: DeviceData,
    idx: Tensor,
    batch_size: int,
    precision: str,
) -> tuple[float, float | None]:
    was_training = model.training
    model.eval()
    device = data.device
    total = torch.zeros((), dtype=torch.float64, device=device)
    metric_total = torch.zeros((), dtype=torch.float64, device=device)
    try:
        for start in range(0, idx.numel(), batch_size):
            x, y = data.batch(idx[start : start + batch_size])
            with autocast(device, precision):
                out = model(x)
                loss = task.loss(out, y)
            total += loss.double() * len(x)
            if task.metric is not None:
                metric_total += torch.as_tensor(task.metric(out, y), device=device).double() * len(
                    x
                )
    finally:
        model.train(was_training)
    count = idx.numel()
    metric = float(metric_total) / count if task.metric is not None else None
    return float(total) / count, metric


def evaluate(
    model: nn.Module,
    task: Task,
    index: Sequence[int] | Tensor,
    batch_size: int = 512,
    *,
    precision: str = "fp32",
) -> tuple[float, float | None]:
    """Mean loss (and metric) of ``model`` over the examples at ``index``, in eval mode, on
    the model's device."""
    idx = check_index("index", index, len(task))
    assert idx is not None
    device = _model_device(model)
    check_precision(precision, device)
    return _mean_loss(model, task, DeviceData(task, device), idx, batch_size, precision)


@torch.no_grad()
def example_losses(
    model: nn.Module,
    task: Task,
    index: Sequence[int] | Tensor,
    batch_size: int = 512,
    *,
    precision: str = "fp32",
) -> list[float]:
    r"""The loss of each example at ``index`` (in its order), in eval mode: ``task.loss``
    applied to one example at a time, :math:`\ell_i = \mathrm{loss}(f(x_i), y_i)`, so
    that their mean is :func:`evaluate`'s loss when every example weighs the same (one
    label each, or sequences of equal length). ``torch.func.vmap`` computes them a batch
    at a time; a loss it cannot batch is called example by example.

    Example::

        from adamwkit.tasks import get_task
        from adamwkit.train import example_losses, fit
        task = get_task("digits")
        model = fit(task, 0.72, epochs=2).model
        losses = example_losses(model, task, range(100))  # 100 floats
    """
    from torch.func import vmap

    idx = check_index("index", index, len(task))
    assert idx is not None
    device = _model_device(model)
    check_precision(precision, device)
    data = DeviceData(task, device)

    def one(out: Tensor, y: Tensor) -> Tensor:
        return task.loss(out.unsqueeze(0), y.unsqueeze(0))

    was_training = model.training
    model.eval()
    parts: list[Tensor] = []
    try:
        for start in range(0, idx.numel(), batch_size):
            x, y = data.batch(idx[start : start + batch_size])
            with autocast(device, precision):
                out = model(x)
            out = out.float()
            try:
                parts.append(vmap(one)(out, y).reshape(-1))
            except Exception:  # a loss torch.func cannot batch: one example at a time
                parts.append(torch.stack([one(out[i], y[i]) for i in range(len(y))]))
    finally:
        model.train(was_training)
    return torch.cat(parts).double().cpu().tolist() if parts else []


class _SingleEngine:
    """One model, its :class:`AdamW` and its scheduler: a member of the loop core."""

    def __init__(
        self,
        task: Task,
        model: nn.Module,
        opt: AdamW,
        scheduler: Any,
        data: DeviceData,
        val: Tensor | None,
        precision: str,
    ) -> None:
        self.task, self.model, self.opt, self.scheduler = task, model, opt, scheduler
        self.data, self.val, self.precision = data, val, precision

    def keep(self, rows: Tensor) -> None:
        raise NotImplementedError("one model: there are no members to drop")

    def set_training(self, mode: bool) -> None:
        self.model.train(mode)

    def train_step(self, index: Tensor) -> Tensor:
        x, y = self.data.batch(index[0])
        with autocast(self.data.device, self.precision):
            loss = self.task.loss(self.model(x), y)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.scheduler.step()
        return loss.detach().reshape(1)

    def validate(self) -> tuple[list[float], list[float] | None]:
        assert self.val is not None
        loss, metric = _mean_loss(self.model, self.task, self.data, self.val, 512, self.precision)
        return [loss], (None if metric is None else [metric])


def build_run(
    task: Task,
    weight_decay: float,
    *,
    lr: float,
    seed: int,
    decay_scale: DecayScale,
    device: torch.device,
) -> tuple[nn.Module, AdamW]:
    """What :func:`fit` trains: ``torch.manual_seed(seed)`` then ``task.model()`` on
    ``device`` (in training mode), and its :class:`AdamW` over :func:`param_groups` with the
    task's rules. ``tune`` audits a stacked population's members with it."""
    torch.manual_seed(seed)
    model = task.model().to(device)
    model.train()
    opt = AdamW(
        param_groups(model, weight_decay=weight_decay, **task.param_groups),
        lr=lr,
        decay_scale=decay_scale,
        decay_toward=task.decay_toward,
    )
    opt._convention_checked = True  # a value the caller chose in its convention on purpose
    return model, opt


def single_engine(
    task: Task,
    weight_decay: float,
    *,
    lr: float,
    seed: int,
    n_train: int,
    settings: RunSettings,
    data: DeviceData | None = None,
    val: Tensor | None = None,
) -> _SingleEngine:
    """The engine :func:`fit` trains with: a seeded ``task.model()`` on the device, its
    :class:`AdamW` over :func:`param_groups`, and the schedule as a ``LambdaLR`` over a run
    of ``n_train`` examples."""
    model, opt = build_run(task, weight_decay, lr=lr, seed=seed,
                           decay_scale=settings.decay_scale, device=settings.device)  # fmt: skip
    total = settings.total_steps(n_train)
    shape = make_schedule(settings.schedule, total, min(settings.warmup_steps, total - 1))
    data = data if data is not None else DeviceData(task, settings.device)
    return _SingleEngine(task, model, opt, shape.scheduler(opt), data, val, settings.precision)


@keeps_random_state
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
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: bool | Callable[[int, int], Any] = False,
    monitor: int | None = None,
    on_start: Callable[[nn.Module, torch.optim.Optimizer], Any] | None = None,
) -> FitResult:
    """Train a fresh ``task.model()`` with AdamW and ``weight_decay``; return the losses.

    ``weight_decay`` is in the convention of ``decay_scale`` (``"lr"``: PyTorch's,
    ``"schedule"``: the paper's). Settings left ``None`` come from the task. Training uses
    ``train_idx`` (default: every example); with ``val_idx`` the validation loss is
    measured after each epoch. ``patience`` stops when the validation loss has not improved
    for that many epochs and restores the best epoch's weights. ``device`` is ``"cpu"``,
    ``"cuda"``, ``"cuda:i"`` or ``"auto"``; ``precision="bf16"`` runs the forward pass under
    bfloat16 autocast. ``progress`` shows a bar, or is called as ``progress(epoch, epochs)``
    after each epoch. ``monitor=k`` records the weight norms and rotation every ``k`` steps
    against their equilibrium (:class:`adamwkit.Monitor`) into ``result.monitor``.
    ``on_start(model, optimizer)`` is called once both are built, before the first step
    (``tune`` hands the model to its audit of the first run there).

    Raises :class:`TrainingDiverged` when the training loss becomes NaN or infinite.

    Example::

        from adamwkit import fit
        from adamwkit.tasks import get_task
        result = fit(get_task("digits"), 0.72, epochs=5, val_idx=range(400, 500))
        print(result.val_losses)
    """
    wd = check_range("weight_decay", weight_decay, 0.0)
    lr_ = check_range("lr", task.lr if lr is None else lr, 0.0, low_open=True)
    settings = RunSettings.resolve(
        task, epochs=epochs, batch_size=batch_size, decay_scale=decay_scale, schedule=schedule,
        warmup_steps=warmup_steps, device=device, precision=precision,
    )  # fmt: skip
    if patience is not None:
        check_range("patience", patience, 1)
        if val_idx is None:
            raise ValueError("patience needs val_idx: early stopping watches a validation split")

    n = len(task)
    train = check_index("train_idx", train_idx, n)
    train = torch.arange(n) if train is None else train
    val = check_index("val_idx", val_idx, n)

    engine = single_engine(task, wd, lr=lr_, seed=seed, n_train=train.numel(), settings=settings,
                           val=val)  # fmt: skip
    model = engine.model
    if on_start is not None:
        on_start(model, engine.opt)
    watch = None
    if monitor is not None:
        watch = Monitor(engine.opt, every=check_whole("monitor", monitor, 1), model=model)

    result = FitResult(model, wd, lr_, settings.decay_scale, 0, 0)
    best: dict[str, Any] = {"loss": math.inf, "state": None, "since": 0}

    def after_epoch(epoch: int, histories: list[Any]) -> bool:
        if patience is None:
            return False
        loss = histories[0].val_losses[-1]
        if loss < best["loss"]:
            best.update(
                loss=loss, since=0, state={k: v.clone() for k, v in model.state_dict().items()}
            )
            result.best_epoch = epoch
            return False
        best["since"] += 1
        result.stopped_early = best["since"] >= patience
        return result.stopped_early

    if val is not None:  # the untrained model's loss: did training learn anything?
        engine.set_training(False)
        (result.initial_val_loss,), _ = engine.validate()
    n_epochs = settings.epochs
    callback = progress if callable(progress) else (_Bar(task.name, n_epochs) if progress else None)
    start = time.perf_counter()
    try:
        (history,) = run_epochs(
            engine,
            [train],
            [seed],
            settings,
            validate=val is not None,
            describe=lambda _i: f"weight_decay={wd:g}, lr={lr_:g}",
            progress=callback,
            after_epoch=after_epoch,
        )
    finally:
        if isinstance(callback, _Bar):
            callback.close()
        if watch is not None:
            watch.close()
            result.monitor = watch.log()
    if history.diverged:
        raise TrainingDiverged(history.diverged)
    if best["state"] is not None:
        model.load_state_dict(best["state"])
    result.train_losses, result.val_losses = history.train_losses, history.val_losses
    result.val_metrics = history.val_metrics
    result.epochs, result.steps = len(history.train_losses), history.steps
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
