"""The loop core shared by :func:`~adamwkit.fit` (one model) and
:func:`~adamwkit.train.fit_population` (many models stacked into one).

Both train K members (K = 1 for ``fit``) over the same number of steps:

- member ``i`` draws its batch order from a CPU ``torch.Generator`` seeded with
  ``seed_i + 1``, one permutation of its own training indices per epoch, so a run is the
  same on every device and a stacked member sees the batches its standalone run sees;
- the data moves to the device once per run (:class:`DeviceData`), and each epoch's batch
  orders once per epoch;
- every step's per-member losses stay on the device: a loss that is NaN or infinite is
  found at the end of the epoch, with the step it first appeared at, so a GPU is never
  stopped to ask the host about a loss;
- subnormal floats are flushed to zero for the whole run (:func:`flush_denormals`).

What differs between one model and a stack is an :class:`Engine`: how one step of
every member is computed, and how members are validated.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

import torch
from torch import Tensor

from .._constants import DECAY_SCALES
from ..functional import DecayScale
from ..tasks import Task

__all__ = [
    "DeviceData",
    "Engine",
    "History",
    "RunSettings",
    "TrainingDiverged",
    "check_index",
    "flush_denormals",
    "keeps_random_state",
    "run_epochs",
]

P = ParamSpec("P")
R = TypeVar("R")

# A subnormal float64 (2**-1060) whose product with 0.5 is a smaller subnormal: zero when
# the CPU flushes subnormals (denormals-are-zero treats the input as 0, flush-to-zero the
# result), itself halved otherwise.
_SUBNORMAL = 2.0**-1060


def _flushing_denormals() -> bool:
    """Whether subnormal floats are flushed to zero on this thread now.

    torch can set the mode (``torch.set_flush_denormal``) but not read it, so this asks the
    arithmetic: a one-element CPU product (whatever the default device) runs on the calling
    thread, whose setting it shows.
    """
    product = torch.tensor(_SUBNORMAL, dtype=torch.float64, device="cpu") * 0.5
    return bool(product.item() == 0.0)


@contextlib.contextmanager
def flush_denormals() -> Iterator[None]:
    """Flush subnormal floats to zero inside the block, and restore the caller's setting after.

    Strong weight decay drives weights towards zero, where subnormal arithmetic is tens of
    times slower on CPUs. The flag is per thread and threads inherit it when created, so
    enter this before the first parallel operation of a run (``tune`` does) for the
    intra-op worker threads to get it too. On leaving, the calling thread gets back the
    setting it had on entering (read from the arithmetic: torch has no getter), so nested
    blocks and a caller who had turned the mode on themselves keep it on.
    """
    before = _flushing_denormals()
    if not torch.set_flush_denormal(True):
        yield  # not supported on this CPU: nothing to change or restore
        return
    try:
        yield
    finally:
        torch.set_flush_denormal(before)


def keeps_random_state(fn: Callable[P, R]) -> Callable[P, R]:
    """``fn`` with torch's global random state (CPU, and each CUDA device already in use)
    given back as the caller left it: training seeds it for its initial weights and draws
    from it (dropout), and a library call should not change the caller's stream."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        cuda = torch.cuda.is_available() and torch.cuda.is_initialized()
        with torch.random.fork_rng(devices=list(range(torch.cuda.device_count())) if cuda else []):
            return fn(*args, **kwargs)

    return wrapper


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite."""


def check_index(name: str, idx: Sequence[int] | Tensor | None, n: int) -> Tensor | None:
    """``idx`` as a 1-D long CPU tensor of indices into ``n`` examples, or a ``ValueError``."""
    if idx is None:
        return None
    t = torch.as_tensor(idx, dtype=torch.long).reshape(-1).cpu()
    if t.numel() == 0:
        raise ValueError(f"{name} is empty: expected at least one example index")
    if int(t.min()) < 0 or int(t.max()) >= n:
        raise ValueError(f"{name} is invalid: expected indices in [0, {n - 1}]")
    return t


class DeviceData:
    """A task's examples on ``device``: tensors are moved once, a ``Dataset`` is read and
    collated per batch, then moved."""

    def __init__(self, task: Task, device: torch.device) -> None:
        self.task = task
        self.device = device
        self.tensors: tuple[Tensor, Tensor] | None = None
        if isinstance(task.data, tuple):
            x, y = task.data
            self.tensors = (x.to(device), y.to(device))

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Inputs and targets at ``index``: 1-D (one batch) or 2-D (a batch per member)."""
        if self.tensors is not None:
            index = index.to(self.device)
            return self.tensors[0][index], self.tensors[1][index]
        rows = index.cpu()
        if rows.dim() == 1:
            x, y = self.task.batch(rows)
        else:
            pairs = [self.task.batch(row) for row in rows]
            x = torch.stack([p[0] for p in pairs])
            y = torch.stack([p[1] for p in pairs])
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


@dataclass(frozen=True)
class RunSettings:
    """What every member of a run shares: its length, batches, schedule and device."""

    epochs: int
    batch_size: int
    decay_scale: DecayScale
    schedule: str
    warmup_steps: int
    device: torch.device
    precision: str = "fp32"

    def total_steps(self, n_train: int) -> int:
        """Optimizer steps of a run over ``n_train`` examples."""
        return self.epochs * math.ceil(n_train / self.batch_size)

    @classmethod
    def resolve(
        cls,
        task: Task,
        *,
        epochs: int | None,
        batch_size: int | None,
        decay_scale: str | None,
        schedule: str | None,
        warmup_steps: int | None,
        device: str | torch.device,
        precision: str,
    ) -> RunSettings:
        """The settings given, the task's where ``None``, each validated (one ``ValueError``
        line naming the argument and the accepted range)."""
        from .._checks import check_choice, check_whole
        from .._device import check_precision, resolve_device
        from ..schedules import SCHEDULES

        where = resolve_device(device)
        return cls(
            epochs=check_whole("epochs", task.epochs if epochs is None else epochs, 1),
            batch_size=check_whole(
                "batch_size", task.batch_size if batch_size is None else batch_size, 1
            ),
            decay_scale=check_choice("decay_scale", decay_scale or task.decay_scale, DECAY_SCALES),
            schedule=check_choice("schedule", schedule or task.schedule, SCHEDULES),
            warmup_steps=check_whole(
                "warmup_steps", task.warmup_steps if warmup_steps is None else warmup_steps
            ),
            device=where,
            precision=check_precision(precision, where),
        )


class Engine(Protocol):
    """One step of every member, and their validation."""

    data: DeviceData

    def train_step(self, index: Tensor) -> Tensor:
        """Train on the examples at ``index`` (members x batch); return each member's
        batch loss, detached, on the device (no host synchronisation)."""
        ...

    def validate(self) -> tuple[list[float], list[float] | None]:
        """Each member's validation loss, and metric (or ``None``)."""
        ...

    def set_training(self, mode: bool) -> None: ...

    def keep(self, rows: Tensor) -> None:
        """Go on with the members at positions ``rows`` only (a stacked engine)."""
        ...


@dataclass
class History:
    """One member's per-epoch losses, and why it stopped if its loss became non-finite."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_metrics: list[float] = field(default_factory=list)
    diverged: str = ""
    steps: int = 0


def run_epochs(
    engine: Engine,
    train_sets: Sequence[Tensor],
    seeds: Sequence[int],
    settings: RunSettings,
    *,
    validate: bool,
    describe: Callable[[int], str],
    progress: Callable[[int, int], Any] | None = None,
    after_epoch: Callable[[int, list[History]], bool | Collection[int]] | None = None,
) -> list[History]:
    """Train every member for ``epochs`` epochs; return their histories.

    ``train_sets[i]`` holds member ``i``'s training indices (all the same size),
    ``describe(i)`` names its settings in a divergence message. ``after_epoch(epoch,
    histories)`` may return True to stop early, or the indices of members to stop (the
    engine then drops them with ``engine.keep(rows)``; their histories end there). A member
    whose training loss became non-finite keeps NaN train losses from that epoch on;
    training stops once every member has diverged. The batch orders move to the device
    once per epoch (they stay on the CPU for a ``Dataset``, which is read on the host).
    """
    epochs, batch_size, device = settings.epochs, settings.batch_size, settings.device
    index_device = device if engine.data.tensors is not None else torch.device("cpu")
    k = len(train_sets)
    n_train = int(train_sets[0].numel())
    steps_per_epoch = math.ceil(n_train / batch_size)
    gens = [torch.Generator().manual_seed(seed + 1) for seed in seeds]
    histories = [History() for _ in range(k)]
    alive = [True] * k
    active = list(range(k))  # the members still trained, in the engine's order
    sizes = torch.tensor(
        [min(batch_size, n_train - s * batch_size) for s in range(steps_per_epoch)],
        dtype=torch.float64,
        device=device,
    )
    step = 0
    with flush_denormals():
        for epoch in range(epochs):
            orders = torch.stack(
                [train_sets[i][torch.randperm(n_train, generator=gens[i])] for i in active]
            ).to(index_device)
            per_step = torch.empty(steps_per_epoch, len(active), dtype=torch.float64, device=device)
            engine.set_training(True)
            for s in range(steps_per_epoch):
                index = orders[:, s * batch_size : (s + 1) * batch_size]
                per_step[s] = engine.train_step(index)
            step += steps_per_epoch
            finite = torch.isfinite(per_step)
            sums = (per_step * sizes[:, None]).sum(0)
            if not bool(finite.all()):
                for j, i in enumerate(active):
                    bad = torch.nonzero(~finite[:, j]).flatten()
                    if bad.numel() and alive[i]:
                        at = int(bad[0])
                        alive[i] = False
                        histories[i].diverged = (
                            f"the training loss became {float(per_step[at, j])} at epoch "
                            f"{epoch + 1}, step {step - steps_per_epoch + at + 1} ({describe(i)})"
                        )
            totals = (sums / n_train).tolist()
            for j, i in enumerate(active):
                histories[i].train_losses.append(totals[j] if alive[i] else math.nan)
                histories[i].steps = step
            if not any(alive[i] for i in active):
                break
            if validate:
                engine.set_training(False)
                losses, metrics = engine.validate()
                for j, i in enumerate(active):
                    histories[i].val_losses.append(losses[j])
                    if metrics is not None:
                        histories[i].val_metrics.append(metrics[j])
            if progress is not None:
                progress(epoch + 1, epochs)
            if after_epoch is None:
                continue
            verdict = after_epoch(epoch, histories)
            if verdict is True:
                break
            if verdict is not False and verdict:
                stop = set(verdict)
                rows = [j for j, i in enumerate(active) if i not in stop]
                if not rows:
                    break
                if len(rows) < len(active):
                    engine.keep(torch.tensor(rows, dtype=torch.long, device=device))
                    active = [active[j] for j in rows]
    return histories
