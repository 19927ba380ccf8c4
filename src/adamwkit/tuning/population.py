"""Population training: many (weight decay, lr, fold) candidates trained at once as one model.

The members' modules are stacked along a new dim 0 (``torch.func.stack_module_state``) and
run through one ``torch.func.vmap`` of ``torch.func.functional_call``; every member gets its
own initial weights (``torch.manual_seed(seed)`` then ``task.model()``, as :func:`fit`
does), its own batch order (a generator seeded with ``seed + 1``) over its own training
indices, and its own weight decay and lr through the population form of
:func:`adamwkit.functional.adamw_step`. Member ``i`` therefore follows the same training as
``fit(task, weight_decay_i, train_idx=..., lr=lr_i, seed=seed_i)``, up to the rounding of
batched matrix products.

Models that cannot be stacked this way are refused with the reason: batch normalisation
keeps running statistics that one vmapped call cannot update per member.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from ..functional import adamw_step
from ..groups import param_groups
from ..schedules import make_schedule
from ..tasks import Task
from ..train import flush_denormals

__all__ = ["Member", "MemberResult", "fit_population", "member_bytes", "vectorize_refusal"]


@dataclass(frozen=True)
class Member:
    """One candidate on one fold: what a standalone :func:`fit` call would get."""

    weight_decay: float
    lr: float
    train_idx: Tensor
    val_idx: Tensor
    seed: int


@dataclass
class MemberResult:
    """Per-epoch losses of one member, and why it stopped if its loss became non-finite."""

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_metrics: list[float] = field(default_factory=list)
    diverged: str = ""

    @property
    def val_loss(self) -> float | None:
        return self.val_losses[-1] if self.val_losses else None

    @property
    def val_metric(self) -> float | None:
        return self.val_metrics[-1] if self.val_metrics else None


def vectorize_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained as a vmapped population, or None if it can."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            kind = type(module).__name__
            return (
                f"{kind} at {name!r} updates running statistics in place, which a vmapped "
                "population cannot do per member"
            )
    return None


def member_bytes(task: Task, batch_size: int) -> int:
    """Rough memory of one member: weights, gradients and Adam's two moments (plus the
    stacked copy), and the activations of a batch kept for the backward pass."""
    torch.manual_seed(0)
    model = task.model()
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    activations = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, Tensor):
            activations += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    n = min(2, len(task))
    try:
        with torch.no_grad():
            model.eval()
            model(task.batch(torch.arange(n))[0])
    finally:
        for h in hooks:
            h.remove()
    return 5 * weights + 3 * batch_size * activations // n


def fit_population(
    task: Task,
    members: Sequence[Member],
    *,
    epochs: int,
    batch_size: int,
    decay_scale: str = "lr",
    schedule: str | None = None,
    warmup_steps: int | None = None,
    progress: Callable[[int, int], Any] | None = None,
) -> list[MemberResult]:
    """Train every member at once; return each member's per-epoch losses.

    All members must have training sets of the same size (they then take the same number
    of steps, and the schedule is shared). Raises ``ValueError`` for a model that cannot be
    vectorized (see :func:`vectorize_refusal`).
    """
    from torch.func import functional_call, stack_module_state, vmap

    if not members:
        raise ValueError("members is empty: expected at least one member")
    sizes = {int(m.train_idx.numel()) for m in members}
    if len(sizes) != 1:
        raise ValueError(f"members have training sets of sizes {sorted(sizes)}: expected one")
    n_train = sizes.pop()
    models = []
    for m in members:
        torch.manual_seed(m.seed)
        models.append(task.model())
    refusal = vectorize_refusal(models[0])
    if refusal:
        raise ValueError(f"model is not vectorizable: {refusal}")
    params, buffers = stack_module_state(models)
    base = copy.deepcopy(models[0]).to("meta")
    names = list(params)
    plan = param_groups(models[0], weight_decay=1.0, **task.param_groups).plan
    multiplier = {e.name: (e.weight_decay or 0.0) for e in plan.entries}
    for name in names:
        multiplier.setdefault(name, 0.0)
    del models

    def loss_of(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return task.loss(functional_call(base, (p, b), (x,)), y)

    def outputs_of(p: dict[str, Tensor], b: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, b), (x,))

    batched_loss = vmap(loss_of, randomness="different")
    batched_outputs = vmap(outputs_of, randomness="different")

    lrs = torch.tensor([m.lr for m in members], dtype=torch.float64)
    wds = torch.tensor([m.weight_decay for m in members], dtype=torch.float64)
    exp_avgs = {n: torch.zeros_like(p) for n, p in params.items()}
    exp_avg_sqs = {n: torch.zeros_like(p) for n, p in params.items()}
    steps = {n: torch.tensor(0.0) for n in names}
    groups: dict[float, list[str]] = {}
    for n in names:
        if params[n].requires_grad:
            groups.setdefault(multiplier[n], []).append(n)

    steps_per_epoch = math.ceil(n_train / batch_size)
    total = epochs * steps_per_epoch
    warm = int(task.warmup_steps if warmup_steps is None else warmup_steps)
    shape = make_schedule(schedule or task.schedule, total, min(warm, total - 1))
    gens = [torch.Generator().manual_seed(m.seed + 1) for m in members]
    tensors = task.data if isinstance(task.data, tuple) else None
    val_x = torch.stack([task.batch(m.val_idx)[0] for m in members])
    val_y = [task.batch(m.val_idx)[1] for m in members]
    results = [MemberResult() for _ in members]
    alive = torch.ones(len(members), dtype=torch.bool)
    step = 0
    flushing = flush_denormals()  # as fit does
    flushing.__enter__()
    try:
        for _epoch in range(epochs):
            orders = torch.stack(
                [
                    m.train_idx[torch.randperm(n_train, generator=g)]
                    for m, g in zip(members, gens, strict=True)
                ]
            )
            totals = torch.zeros(len(members), dtype=torch.float64)
            for s in range(steps_per_epoch):
                idx = orders[:, s * batch_size : (s + 1) * batch_size]
                if tensors is not None:  # one gather for every member
                    x, y = tensors[0][idx], tensors[1][idx]
                else:
                    batches = [task.batch(row) for row in idx]
                    x = torch.stack([b[0] for b in batches])
                    y = torch.stack([b[1] for b in batches])
                base.train()
                losses = batched_loss(params, buffers, x, y)
                values = losses.detach().to(torch.float64)
                bad = alive & ~torch.isfinite(values)
                for i in torch.nonzero(bad).flatten().tolist():
                    results[i].diverged = (
                        f"the training loss became {values[i].item()} at epoch {_epoch + 1}, "
                        f"step {step + 1} (weight_decay={members[i].weight_decay:g}, "
                        f"lr={members[i].lr:g})"
                    )
                alive &= ~bad
                for p in params.values():
                    p.grad = None
                torch.where(alive, losses, torch.zeros_like(losses)).sum().backward()
                multiplier_t = shape(step)
                lr_now = lrs * multiplier_t
                for mult, group in groups.items():
                    ps = [params[n] for n in group]
                    with torch.no_grad():
                        adamw_step(
                            ps,
                            [p.grad if p.grad is not None else torch.zeros_like(p) for p in ps],
                            [exp_avgs[n] for n in group],
                            [exp_avg_sqs[n] for n in group],
                            [steps[n] for n in group],
                            lr=lr_now,
                            weight_decay=wds * mult,
                            decay_scale=decay_scale,
                            lr_peak=lrs if decay_scale == "schedule" else None,
                        )
                step += 1
                totals += torch.where(alive, values, torch.zeros_like(values)) * x.shape[1]
            with torch.no_grad():
                base.eval()
                out = batched_outputs(params, buffers, val_x)
                for i, yv in enumerate(val_y):
                    r = results[i]
                    r.train_losses.append(float(totals[i]) / n_train)
                    r.val_losses.append(float(task.loss(out[i], yv)))
                    if task.metric is not None:
                        r.val_metrics.append(float(task.metric(out[i], yv)))
            if progress is not None:
                progress(_epoch + 1, epochs)
    finally:
        flushing.__exit__(None, None, None)
    return results
