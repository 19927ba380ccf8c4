"""Population training: many (weight decay, lr, fold) candidates trained at once as one model.

The members' trainable tensors are stacked along a new dim 0. Frozen parameters
(``requires_grad=False``) that are the same in every member (the pretrained base of a
fine-tune: a PEFT LoRA model, adapters on plain modules, a frozen embedding) are held once
and shared by every member (``vmap`` ``in_dims=None``): memory is the base once plus k
times each member's trainable weights, gradients, Adam's moments and activations
(:class:`PopulationMemory`). A frozen parameter that differs between members is stacked
too, and so is every buffer (a model may update one in its forward, per member). A
plain MLP then runs as batched matrix products (:func:`stacked_forward`); any other model
through one ``torch.func.vmap`` of ``torch.func.functional_call``. Every member gets its
own initial weights (``torch.manual_seed(seed)`` then ``task.model()``, as :func:`fit`
does), its own batch order (a generator seeded with ``seed + 1``) over its own training
indices, and its own weight decay and lr through the population form of
:func:`adamwkit.functional.adamw_step`. Member ``i`` therefore follows the same training as
``fit(task, weight_decay_i, train_idx=..., lr=lr_i, seed=seed_i)``, up to the rounding of
batched matrix products.

Models that cannot be stacked are refused with the reason (:func:`vectorize_refusal`):
batch normalisation keeps running statistics that one call cannot update per member, and
stacking would untie tied trainable weights (tied frozen weights, such as GPT-2's embedding
and head, are shared as they are).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_range
from .._device import autocast
from ..functional import adamw_step
from ..groups import param_groups
from ..schedules import make_schedule
from ..tasks import Task, cross_entropy
from .loop import DeviceData, RunSettings, check_index, keeps_random_state, run_epochs

__all__ = [
    "Member",
    "MemberResult",
    "PopulationMemory",
    "StackedEngine",
    "StackingFailed",
    "chance_level",
    "fit_population",
    "member_bytes",
    "population_loss",
    "population_memory",
    "stacked_forward",
    "stacking_speed",
    "vectorize_refusal",
]


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
    """Per-epoch losses of one member, why it stopped if its loss became non-finite, and
    its final weights.

    ``state`` maps the names of ``task.model().state_dict()`` to this member's final
    tensors: views into the population's stacked tensors (``model.load_state_dict(state)``
    copies them; clone one to keep it without the rest). A diverged member's train loss is
    NaN from the epoch it diverged in. ``pruned`` says why a member was stopped early
    (``fit_population(prune_chance=True)``); its ``state`` is then empty.
    """

    train_losses: list[float] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_metrics: list[float] = field(default_factory=list)
    diverged: str = ""
    state: dict[str, Tensor] = field(default_factory=dict, repr=False)
    pruned: str = ""
    initial_val_loss: float | None = None  # before the first step: the untrained baseline

    @property
    def val_loss(self) -> float | None:
        return self.val_losses[-1] if self.val_losses else None

    @property
    def val_metric(self) -> float | None:
        return self.val_metrics[-1] if self.val_metrics else None


def vectorize_refusal(model: nn.Module) -> str | None:
    """Why ``model`` cannot be trained as a stacked population, or None if it can.

    Tied trainable weights are refused (stacking would give each name its own copy); tied
    frozen weights are fine: they are held once and shared by every member.
    """
    seen: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen and p.requires_grad:
            return (
                f"parameter {name!r} is the same tensor as {seen[id(p)]!r} (tied weights), "
                "which stacking would untie"
            )
        seen.setdefault(id(p), name)
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.track_running_stats:
            kind = type(module).__name__
            return (
                f"{kind} at {name!r} updates running statistics in place, which a vmapped "
                "population cannot do per member"
            )
    return None


@dataclass(frozen=True)
class PopulationMemory:
    r"""Bytes of a stacked population of ``members`` members:
    :math:`\mathrm{shared} + k \cdot \mathrm{per\_member}`.

    ``shared``: the tensors held once for every member (frozen parameters that are the
    same in every member: a fine-tune's pretrained base), each storage counted once.
    ``per_member``: what each member adds (its trainable weights, their gradients and
    Adam's two moments, a reference copy with ``decay_toward="init"``, its buffers, any
    frozen parameter that differs between members, and, in :func:`population_memory`'s
    estimate, the
    activations a batch keeps for the backward pass).
    """

    shared: int
    per_member: int
    members: int = 1

    @property
    def total(self) -> int:
        """``shared + members * per_member``."""
        return self.shared + self.members * self.per_member

    def members_within(self, budget: int) -> int:
        """How many members fit in ``budget`` bytes with the shared tensors counted once
        (at least 1)."""
        return max(1, (int(budget) - self.shared) // max(self.per_member, 1))


def _storage_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind ``tensors`` (a tied or viewed tensor counts once)."""
    seen: set[tuple[str, int]] = set()
    total = 0
    for t in tensors:
        storage = t.untyped_storage()
        key = (str(t.device), storage.data_ptr())
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def population_memory(
    task: Task, batch_size: int, model: nn.Module | None = None
) -> PopulationMemory:
    """Rough memory of a stacked population of ``task``'s model, before building one: the
    frozen parameters once (shared: assumed the same in every member, as a fine-tune's
    base is), and per member its buffers and 5 x its trainable weights (the weights, their
    gradients, Adam's two moments, and the copy made while stacking; 6 x with
    ``decay_toward="init"``, whose reference is one more copy) plus 3 x the activations of
    a batch (the forward's outputs, kept for the backward pass, and their gradients).

    ``model`` is an instance of ``task.model()`` to measure (default: a new one).
    """
    if model is None:
        with torch.random.fork_rng(devices=[]):  # the caller's random state is kept
            torch.manual_seed(0)
            model = task.model()
    trainable = [p for p in model.parameters() if p.requires_grad]
    frozen = [p for p in model.parameters() if not p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in trainable)
    activations = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal activations
        if isinstance(output, Tensor):
            activations += output.numel() * output.element_size()

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    n = min(2, len(task))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()
            model(task.batch(torch.arange(n))[0])
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    copies = 6 if getattr(task, "decay_toward", "zero") == "init" else 5
    per_member = copies * weights + 3 * batch_size * activations // n
    per_member += _storage_bytes(model.buffers())
    return PopulationMemory(_storage_bytes(frozen), per_member)


def member_bytes(task: Task, batch_size: int, model: nn.Module | None = None) -> int:
    """Rough memory one more stacked member takes: :func:`population_memory`'s
    ``per_member`` (trainable weights, gradients, Adam's two moments, the stacked copy,
    and a batch's activations); the frozen base it shares is counted once, apart.

    ``model`` is an instance of ``task.model()`` to measure (default: a new one).
    """
    return population_memory(task, batch_size, model).per_member


Batched = Callable[..., Tensor]


@contextlib.contextmanager
def batchable_kernels() -> Iterator[None]:
    """Attention as plain matrix products while members are stacked.

    The fused attention kernels (flash and memory-efficient ``scaled_dot_product_attention``,
    and ``nn.TransformerEncoderLayer``'s inference fast path) have no ``vmap`` batching
    rule: ``torch.func`` runs them member by member (on the CPU), or their backward fails
    on a stacked layout (seen on CUDA: "LSE is not correctly aligned"). The math backend
    is built from batchable operations, so the whole stack runs as one call.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel([SDPBackend.MATH]):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def _vmapped(task: Task, base: nn.Module) -> tuple[Batched, Batched]:
    """``(loss(stacked, shared, x, y), outputs(stacked, shared, x))`` over the members,
    through ``vmap`` of ``functional_call`` on ``base`` (randomness drawn per member), with
    :func:`batchable_kernels`. ``stacked`` holds the tensors with a member dim (dim 0),
    ``shared`` the tensors every member uses as they are (``in_dims=None``: no copy)."""
    from torch.func import functional_call, vmap

    def loss_of(p: dict[str, Tensor], s: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        return task.loss(functional_call(base, (p, s), (x,)), y)

    def outputs_of(p: dict[str, Tensor], s: dict[str, Tensor], x: Tensor) -> Tensor:
        return functional_call(base, (p, s), (x,))

    batched_loss = vmap(loss_of, in_dims=(0, None, 0, 0), randomness="different")
    batched_outputs = vmap(outputs_of, in_dims=(0, None, 0), randomness="different")

    def stacked_loss(*args: Any) -> Tensor:
        with batchable_kernels():
            return batched_loss(*args)

    def stacked_outputs(*args: Any) -> Tensor:
        with batchable_kernels():
            return batched_outputs(*args)

    return stacked_loss, stacked_outputs


# Parameter-free modules that act on each element alone, so one call on the stacked
# (members, batch, ...) tensor is every member's call (dropout draws its own mask per
# element, so per member too).
_ELEMENTWISE: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU,
    nn.SiLU, nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Softsign, nn.Hardtanh,
    nn.Hardswish, nn.Hardsigmoid, nn.Tanhshrink, nn.Dropout,
)  # fmt: skip

Forward = Callable[[dict[str, Tensor], Tensor], Tensor]


def stacked_forward(model: nn.Module) -> Forward | None:
    """``forward(params, x)`` for members stacked along dim 0 of ``params`` and ``x``, when
    ``model`` is an MLP: ``nn.Sequential`` (nested allowed) of ``nn.Linear``, ``nn.Flatten``
    and parameter-free elementwise modules (activations, ``nn.Dropout``). ``None`` for any
    other model, which then goes through ``torch.func.vmap``.

    A linear layer of member ``i`` is :math:`y_i = x_i W_i^\top + b_i`; over the stack that
    is one ``torch.baddbmm``. This skips the per-call work of ``vmap`` and
    ``functional_call``, which dominates a step of small models. Submodules are called on
    ``model`` itself, so its ``train()`` / ``eval()`` mode applies.
    """
    ops: list[Forward] = []

    def add(module: nn.Module, prefix: str) -> bool:
        kind = type(module)
        if kind is nn.Sequential:
            return all(add(child, f"{prefix}{name}.") for name, child in module.named_children())
        if kind is nn.Linear:
            ops.append(
                _linear(f"{prefix}weight", f"{prefix}bias" if module.bias is not None else None)
            )
            return True
        if kind is nn.Flatten:
            flat = cast(nn.Flatten, module)
            start, end = (d + 1 if d >= 0 else d for d in (flat.start_dim, flat.end_dim))
            ops.append(lambda _p, x: x.flatten(start, end))
            return True
        if kind in _ELEMENTWISE:
            ops.append(lambda _p, x: module(x))
            return True
        return False

    if not add(model, ""):
        return None

    def forward(params: dict[str, Tensor], x: Tensor) -> Tensor:
        for op in ops:
            x = op(params, x)
        return x

    return forward


def _linear(weight: str, bias: str | None) -> Forward:
    """A linear layer over the stack: a stacked weight (members, out, in) as one ``bmm``, a
    shared one (out, in), held once for every member, as one ``matmul``; a stacked bias is
    (members, out), a shared one (out,)."""

    def op(params: dict[str, Tensor], x: Tensor) -> Tensor:
        w = params[weight]
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        b = None if bias is None else params[bias]
        if w.dim() == 2:  # shared by every member
            y = torch.matmul(flat, w.t())
            if b is not None:
                y = y + (b.unsqueeze(1) if b.dim() == 2 else b)
        elif b is None:
            y = torch.bmm(flat, w.transpose(1, 2))
        elif b.dim() == 1:
            y = torch.bmm(flat, w.transpose(1, 2)) + b
        else:
            y = torch.baddbmm(b.unsqueeze(1), flat, w.transpose(1, 2))
        return y.reshape(*x.shape[:-1], w.shape[-2])

    return op


def population_loss(loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss`` of every member: ``(outputs, targets)`` stacked along dim 0 -> a vector.

    The built-in :func:`adamwkit.tasks.cross_entropy` is computed directly, with the classes
    along dim 1 when there are fewer than 16 of them (PyTorch's CPU log-softmax over a short
    last dim is several times slower than over dim 1); any other loss goes through
    ``torch.func.vmap``.
    """
    from torch.func import vmap

    if loss is not cross_entropy:
        return vmap(loss)

    def members_cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
        classes = outputs.shape[-1]
        logits = outputs.reshape(outputs.shape[0], -1, classes)
        labels = targets.reshape(targets.shape[0], -1)
        if classes < 16:
            per_example = F.cross_entropy(logits.transpose(1, 2), labels, reduction="none")
        else:
            per_example = F.cross_entropy(
                logits.reshape(-1, classes), labels.reshape(-1), reduction="none"
            ).view_as(labels)
        # as F.cross_entropy's mean: over the targets that are not ignore_index (-100)
        return per_example.sum(dim=1) / (labels != -100).sum(dim=1)

    return members_cross_entropy


def _relaid(p: Tensor, like: Tensor) -> Tensor:
    """``p`` as a fresh leaf in ``like``'s memory layout (the values unchanged).

    Gradients of batched matrix products come back transposed; holding the parameter the
    same way lets each step read them in place instead of copying them into the
    parameter's layout.
    """
    if p.stride() == like.stride() or not _dense_layout(like):
        return p
    out = torch.empty_strided(p.shape, like.stride(), dtype=p.dtype, device=p.device)
    return out.copy_(p.detach()).requires_grad_(p.requires_grad)


def _dense_layout(t: Tensor) -> bool:
    return _dense(t).is_contiguous()


def _dense(t: Tensor) -> Tensor:
    """A permuted view of ``t`` that is contiguous when ``t`` is dense (elementwise ops on
    it then touch the same elements); the member dim stays first."""
    if t.is_contiguous() or t.dim() < 3:
        return t
    stride = t.stride()
    order = sorted(range(1, t.dim()), key=lambda d: -stride[d])
    return t.permute(0, *order)


def _rows(t: Tensor, rows: Tensor) -> Tensor:
    """The members ``rows`` of ``t`` (dim 0), in ``t``'s memory layout."""
    if t.dim() < 3 or t.is_contiguous() or not _dense_layout(t):
        return t.index_select(0, rows)
    stride = t.stride()
    order = [0, *sorted(range(1, t.dim()), key=lambda d: -stride[d])]
    sub = t.permute(*order).index_select(0, rows)
    return sub.permute(*[order.index(d) for d in range(t.dim())])


def _like(g: Tensor, p: Tensor) -> Tensor:
    """``g`` in ``p``'s layout (a copy only when the layouts differ)."""
    if g.stride() == p.stride():
        return g
    return torch.empty_like(p).copy_(g)


class _Metric:
    """The task's metric for every member: one vmapped call when the metric allows it
    (it returns a tensor), else one call per member."""

    def __init__(self, metric: Callable[[Tensor, Tensor], Any] | None) -> None:
        self.metric = metric
        self.batched = metric is not None

    def __call__(self, out: Tensor, targets: Tensor) -> list[float] | None:
        if self.metric is None:
            return None
        if self.batched:
            from torch.func import vmap

            try:
                return vmap(self.metric)(out, targets).tolist()
            except Exception:  # returns a Python float, or is not vmappable: loop
                self.batched = False
        return [float(self.metric(o, t)) for o, t in zip(out, targets, strict=True)]


class StackedEngine:
    """Every member's model stacked along dim 0, stepped by the population ``adamw_step``:
    the stacked member of the loop core (:func:`adamwkit.train.loop.run_epochs`).

    ``stacked`` holds the tensors with a member dim: the trainable ones, any frozen
    parameter that differs between members, and every buffer. ``shared`` holds every other
    tensor once, under each of its names (a tied frozen weight under all of them): the
    first member's tensors, moved to the device, which every member reads and none copies.
    :meth:`memory` counts both. The module ``functional_call`` runs is a copy on the meta
    device: the factory's modules are neither moved nor changed.
    """

    def __init__(
        self,
        task: Task,
        members: Sequence[Member],
        settings: RunSettings,
        data: DeviceData | None = None,
    ) -> None:
        device, decay_scale = settings.device, settings.decay_scale
        self.task, self.members, self.device = task, members, device
        self.precision = settings.precision
        # Members are built one at a time, where the factory builds them (the CPU, usually):
        # a frozen parameter equal to the first member's is kept once (the first member's
        # tensor), so a fine-tune's base is never held k times, nor twice while building.
        # Buffers are always stacked: a model may update one in its forward (a running
        # mean), which one tensor shared by every member cannot hold per member.
        first: nn.Module | None = None
        names: list[str] = []
        values: dict[str, list[Tensor]] = {}
        differs: set[str] = set()
        for i, m in enumerate(members):
            torch.manual_seed(m.seed)
            model = task.model()
            if first is None:
                refusal = vectorize_refusal(model)
                if refusal:
                    raise ValueError(f"model is not vectorizable: {refusal}")
            tensors = {**dict(model.named_parameters()), **dict(model.named_buffers())}
            if first is None:
                first, names = model, list(tensors)
                values = {n: [t.detach()] for n, t in tensors.items()}
                param_names = {n for n, _ in model.named_parameters()}
                trainable = {n for n, t in tensors.items() if t.requires_grad}
                differs = {n for n in names if n not in param_names}  # the buffers
                continue
            for n, t in tensors.items():
                kept = values[n][0]
                if n in trainable or n in differs or not torch.equal(t.detach(), kept):
                    if n not in trainable and n not in differs:
                        differs.add(n)
                        values[n] = values[n] * i  # the members so far all had the first's
                    values[n].append(t.detach())
            del model, tensors
        assert first is not None
        stacked = {
            n: torch.stack(values[n]).to(device).requires_grad_(n in trainable)
            for n in names
            if n in trainable or n in differs
        }
        # moved as tensors, not as a module: a base the factory holds (built once, wrapped
        # with fresh adapters each call) stays where it was, for the caller's next use
        shared = {n: values[n][0].to(device) for n in names if n not in stacked}
        # every other name of a shared tensor (a tied head) points at the same tensor
        for alias, n in _aliases(first).items():
            if n not in shared:
                raise ValueError(
                    f"model is not vectorizable: {alias!r} is the same tensor as {n!r}, "
                    "which differs between members, so stacking would untie them"
                )
            shared[alias] = shared[n]
        del values
        self.stacked, self.shared = stacked, shared
        params = stacked
        self.params = stacked  # the stacked tensors (the name the loop and tests know)
        # the module functional_call runs: its structure only (every tensor is passed in),
        # a copy on the meta device, so the caller's modules are never changed
        self.base = _meta_copy(first)
        # each tensor's coefficient as a multiple of the member's value, or a fixed value
        # when an override sets one (it does not move with the base): the two plans say
        one = param_groups(first, weight_decay=1.0, **task.param_groups).plan
        two = param_groups(first, weight_decay=2.0, **task.param_groups).plan
        at_two = {e.name: e.weight_decay or 0.0 for e in two.entries}
        multiplier: dict[str, tuple[str, float]] = {}
        for e in one.entries:
            value = e.weight_decay or 0.0
            scales = math.isclose(at_two[e.name], 2.0 * value)
            multiplier[e.name] = ("x", value) if scales else ("fixed", value)
        for name in stacked:
            multiplier.setdefault(name, ("x", 0.0))
        del first

        direct = stacked_forward(self.base)
        self.member_loss = population_loss(task.loss)
        if direct is not None:  # a plain MLP: batched matrix products, no vmap
            member_loss = self.member_loss

            def batched_outputs(p: dict[str, Tensor], s: dict[str, Tensor], x: Tensor) -> Tensor:
                return direct({**s, **p}, x)

            def batched_loss(
                p: dict[str, Tensor], s: dict[str, Tensor], x: Tensor, y: Tensor
            ) -> Tensor:
                return member_loss(direct({**s, **p}, x), y)

            self.batched_loss, self.batched_outputs = batched_loss, batched_outputs
        else:
            self.batched_loss, self.batched_outputs = _vmapped(task, self.base)

        self.lrs = torch.tensor([m.lr for m in members], dtype=torch.float64)
        wds = torch.tensor([m.weight_decay for m in members], dtype=torch.float64)
        self.trainable = [n for n in names if n in params and params[n].requires_grad]
        # decay toward the weights at the first step (AdamW's decay_toward="init"), per member
        self.toward_init = getattr(task, "decay_toward", "zero") == "init"
        self.references: list[Tensor] = []
        self.groups: dict[tuple[str, float], list[int]] = {}
        for i, n in enumerate(self.trainable):
            self.groups.setdefault(multiplier[n], []).append(i)
        self.decay_of = {
            key: wds * key[1] if key[0] == "x" else torch.full_like(wds, key[1])
            for key in self.groups
        }
        self.decay_scale = decay_scale
        self.peaks = self.lrs if decay_scale == "schedule" else None
        self.exp_avgs: list[Tensor] = []
        self.exp_avg_sqs: list[Tensor] = []
        # Where torch.optim.AdamW(fused=True) keeps them: float32, on the parameter's
        # device, whatever the default dtype.
        self.steps = [
            torch.zeros((), dtype=torch.float32, device=params[n].device) for n in self.trainable
        ]
        total = settings.total_steps(int(members[0].train_idx.numel()))
        self.shape = make_schedule(settings.schedule, total, min(settings.warmup_steps, total - 1))
        self.step_count = 0
        self.data = data if data is not None else DeviceData(task, device)
        val = torch.stack([m.val_idx for m in members])
        self.val_x, self.val_y = self.data.batch(val)
        self.metric = _Metric(task.metric)
        self.alive = torch.ones(len(members), dtype=torch.bool, device=device)

    def set_training(self, mode: bool) -> None:
        self.base.train(mode)

    def train_step(self, index: Tensor) -> Tensor:
        x, y = self.data.batch(index)
        params, trainable = self.params, self.trainable
        with autocast(self.device, self.precision):
            losses = self.batched_loss(params, self.shared, x, y)
        values = losses.detach()
        self.alive &= torch.isfinite(values)
        objective = torch.where(self.alive, losses, 0.0).sum()
        grads = torch.autograd.grad(objective, [params[n] for n in trainable], allow_unused=True)
        if self.step_count == 0:  # hold each parameter in the layout its gradient comes in
            for n, g in zip(trainable, grads, strict=True):
                if g is not None:
                    params[n] = _relaid(params[n], g)
            self.exp_avgs = [torch.zeros_like(params[n]) for n in trainable]
            self.exp_avg_sqs = [torch.zeros_like(params[n]) for n in trainable]
            if self.toward_init:  # as AdamW's decay_ref: the weights at the first step
                self.references = [params[n].detach().clone() for n in trainable]
        lr_now = self.lrs * self.shape(self.step_count)
        with torch.no_grad():
            for mult, all_of_group in self.groups.items():
                # as torch.optim.AdamW: no gradient (unused this step), no step
                group = [i for i in all_of_group if grads[i] is not None]
                if not group:
                    continue
                ps = [params[trainable[i]] for i in group]
                adamw_step(
                    [_dense(p) for p in ps],
                    [_dense(_like(grads[i], p)) for i, p in zip(group, ps, strict=True)],
                    [_dense(self.exp_avgs[i]) for i in group],
                    [_dense(self.exp_avg_sqs[i]) for i in group],
                    [self.steps[i] for i in group],
                    lr=lr_now,
                    weight_decay=self.decay_of[mult],
                    decay_scale=self.decay_scale,
                    lr_peak=self.peaks,
                    references=[_dense(self.references[i]) for i in group]
                    if self.toward_init
                    else None,
                )
        self.step_count += 1
        return values

    @torch.no_grad()
    def keep(self, rows: Tensor) -> None:
        """Train only the members at positions ``rows`` from now on (the others stop): their
        weights, moments and settings are sliced out of the stack, in the same layout."""
        rows = rows.to(self.device)
        cpu_rows = rows.cpu()
        for n, t in self.params.items():  # the shared tensors stay as they are
            self.params[n] = _rows(t.detach(), rows).requires_grad_(t.requires_grad)
        self.exp_avgs = [_rows(t, rows) for t in self.exp_avgs]
        self.references = [_rows(t, rows) for t in self.references]
        self.exp_avg_sqs = [_rows(t, rows) for t in self.exp_avg_sqs]
        self.lrs = self.lrs[cpu_rows]
        self.decay_of = {m: d[cpu_rows] for m, d in self.decay_of.items()}
        if self.peaks is not None:
            self.peaks = self.peaks[cpu_rows]
        self.val_x, self.val_y = self.val_x[rows], self.val_y[rows]
        self.alive = self.alive[rows]
        self.members = [self.members[int(i)] for i in cpu_rows]

    @torch.no_grad()
    def validate(self) -> tuple[list[float], list[float] | None]:
        with autocast(self.device, self.precision):
            out = self.batched_outputs(
                self.params, self.shared, self.val_x.clone()
            )  # in-place layers
            losses = self.member_loss(out, self.val_y).tolist()
            metrics = self.metric(out, self.val_y)
        return losses, metrics

    def states(self) -> list[dict[str, Tensor]]:
        """Each member's state dict (the names of ``task.model().state_dict()``): views of
        its rows of the stacked tensors, and the shared tensors themselves (the same
        tensor in every member's dict)."""
        names = list(self.base.state_dict())
        out = []
        for i in range(len(self.members)):
            state = {}
            for n in names:
                t = self.params.get(n)
                state[n] = t[i].detach() if t is not None else self.shared[n]
            out.append(state)
        return out

    def memory(self) -> PopulationMemory:
        """The bytes this population holds for its weights and optimizer state (activations
        come on top, per member): the shared tensors once (each storage counted once), and
        per member its rows of the stacked tensors plus, for each trainable one, a gradient,
        Adam's two moments and, with ``decay_toward="init"``, the reference (counted
        whether or not the first step has allocated them yet)."""
        k = len(self.members)
        stacked = sum(t.numel() * t.element_size() for t in self.params.values())
        trainable = sum(self.params[n].numel() * self.params[n].element_size()
                        for n in self.trainable)  # fmt: skip
        state = (4 if self.toward_init else 3) * trainable
        return PopulationMemory(_storage_bytes(self.shared.values()), (stacked + state) // k, k)


def _meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters and buffers are on the meta device (its
    structure, no data): no tensor of ``model`` is copied, moved or changed."""
    import copy

    memo: dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def _aliases(model: nn.Module) -> dict[str, str]:
    """Every second name of a tied parameter or buffer -> the name ``named_parameters()`` /
    ``named_buffers()`` give it (a tied head -> its embedding)."""
    out: dict[str, str] = {}
    for named in (model.named_parameters, model.named_buffers):
        first: dict[int, str] = {}
        for name, t in named(remove_duplicate=False):
            if id(t) in first:
                out[name] = first[id(t)]
            else:
                first[id(t)] = name
    return out


class StackingFailed(Exception):
    """The model (or its loss) fails when its members are stacked under ``torch.func``."""


def stacking_speed(
    task: Task,
    members: Sequence[Member],
    settings: RunSettings,
    min_seconds: float = 0.3,
) -> tuple[float, float, list[str]]:
    """Seconds per step of one member trained alone and of ``members`` stacked, and the
    operators ``torch.func`` ran member by member (no batching rule).

    Each path takes untimed steps (first-step set-up), then timed steps until
    ``min_seconds`` have passed (at least 2, at most 20), on the same batch; a stacked first
    step slower than twice the members' sequential time ends the measurement. Raises
    :class:`StackingFailed` with the error when the stacked model fails; an error of the
    single run (the user's code) propagates.
    """
    import re
    import warnings

    from .single import single_engine

    device, batch_size = settings.device, settings.batch_size
    data = DeviceData(task, device)
    first = members[0]
    n_train = int(first.train_idx.numel())
    alone = single_engine(task, first.weight_decay, lr=first.lr, seed=first.seed,
                          n_train=n_train, settings=settings, data=data)  # fmt: skip
    single = _seconds_per_step(
        alone, first.train_idx[:batch_size].reshape(1, -1), device, min_seconds
    )
    del alone
    index = torch.stack([m.train_idx[:batch_size] for m in members])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            engine = StackedEngine(task, members, settings, data)
            # Slower than one at a time even with its set-up counted in: no need for more.
            give_up = 2.0 * len(members) * single
            stacked = _seconds_per_step(engine, index, device, min_seconds, give_up)
            if stacked <= give_up:
                engine.set_training(False)
                engine.validate()
        except Exception as err:
            raise StackingFailed(f"{type(err).__name__}: {err}".splitlines()[0]) from err
    slow = []
    for w in caught:
        found = re.search(r"batching rule for (\S+?)\.? ", str(w.message))
        if found and found.group(1) not in slow:
            slow.append(found.group(1))
    return single, stacked, slow


def _seconds_per_step(
    engine: Any,
    index: Tensor,
    device: torch.device,
    min_seconds: float,
    give_up: float = math.inf,
) -> float:
    """Seconds per training step of ``engine`` on ``index``: a first untimed step (one-time
    set-up), a second for cheap steps, then timed steps until ``min_seconds`` (at least 2,
    at most 20). A first step slower than ``give_up`` ends it there (its time is returned):
    the answer is clear without more."""
    import time

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    engine.set_training(True)
    start = time.perf_counter()
    engine.train_step(index)
    sync()
    first = time.perf_counter() - start
    if first > give_up:
        return first
    if first < min_seconds:
        engine.train_step(index)
        sync()
    start, steps = time.perf_counter(), 0
    while steps < 2 or (time.perf_counter() - start < min_seconds and steps < 20):
        engine.train_step(index)
        steps += 1
        sync()
    return (time.perf_counter() - start) / steps


def check_members(task: Task, members: Sequence[Member]) -> list[Member]:
    """The members with their indices as 1-D long CPU tensors, each value and index
    checked, and one training and one validation size among them; else a ``ValueError``."""
    if not members:
        raise ValueError("members is empty: expected at least one member")
    n = len(task)
    checked = []
    for i, m in enumerate(members):
        train = check_index(f"members[{i}].train_idx", m.train_idx, n)
        val = check_index(f"members[{i}].val_idx", m.val_idx, n)
        assert train is not None and val is not None
        checked.append(Member(
            check_range(f"members[{i}].weight_decay", m.weight_decay, 0.0),
            check_range(f"members[{i}].lr", m.lr, 0.0, low_open=True),
            train, val, m.seed,
        ))  # fmt: skip
    sizes = {int(m.train_idx.numel()) for m in checked}
    if len(sizes) != 1:
        raise ValueError(f"members have training sets of sizes {sorted(sizes)}: expected one")
    val_sizes = {int(m.val_idx.numel()) for m in checked}
    if len(val_sizes) != 1:
        raise ValueError(f"members have validation sets of sizes {sorted(val_sizes)}: expected one")
    return checked


@keeps_random_state
def fit_population(
    task: Task,
    members: Sequence[Member],
    *,
    epochs: int,
    batch_size: int,
    decay_scale: str | None = "lr",
    schedule: str | None = None,
    warmup_steps: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: Callable[[int, int], Any] | None = None,
    prune_chance: bool = False,
) -> list[MemberResult]:
    """Train every member at once; return each member's per-epoch losses and final weights.

    All members must have training sets of the same size (they then take the same number
    of steps, and the schedule is shared), and validation sets of the same size.
    ``device`` and ``precision`` are as in :func:`adamwkit.fit`. Raises ``ValueError`` for
    invalid settings or members, and for a model that cannot be vectorized (see
    :func:`vectorize_refusal`).

    ``prune_chance`` stops, at a quarter and at half of the epochs, the members still at
    the validation loss they started from while the best member with the same seed (the
    same fold) has learned (:func:`chance_level`); they leave the stack,
    so the rest trains faster. A stopped member's ``pruned`` says why, its losses end at
    that epoch and its ``state`` is empty.
    """
    settings = RunSettings.resolve(
        task, epochs=epochs, batch_size=batch_size, decay_scale=decay_scale, schedule=schedule,
        warmup_steps=warmup_steps, device=device, precision=precision,
    )  # fmt: skip
    members = check_members(task, members)
    engine = StackedEngine(task, members, settings)
    pruned = [""] * len(members)
    after_epoch = None
    engine.set_training(False)
    initial, _ = engine.validate()  # the untrained baselines: did training learn anything?
    if prune_chance and len(members) > 1:
        after_epoch = _chance_pruner(members, initial, settings.epochs, pruned)
    histories = run_epochs(
        engine,
        [m.train_idx for m in members],
        [m.seed for m in members],
        settings,
        validate=True,
        describe=lambda i: f"weight_decay={members[i].weight_decay:g}, lr={members[i].lr:g}",
        progress=progress,
        after_epoch=after_epoch,
    )
    kept = iter(engine.states())
    results = []
    for h, why, start in zip(histories, pruned, initial, strict=True):
        state = {} if why else next(kept)
        results.append(
            MemberResult(
                h.train_losses, h.val_losses, h.val_metrics, h.diverged, state, why, float(start)
            )
        )
    return results


def chance_level(
    initial: Sequence[float], current: Sequence[float], groups: Sequence[int] | None = None,
    *, tolerance: float = 0.01, progress: float = 0.2,
) -> list[bool]:  # fmt: skip
    """Which runs are still at the loss they started from while their peers learned.

    Run ``i`` is at chance level when its validation loss has not fallen below
    ``(1 - tolerance) * initial[i]`` (its untrained loss: uniform class scores, or the
    target's variance for a regression) while the best run of its group (same fold:
    ``groups[i]``) has fallen by more than ``progress`` of its own untrained loss. A
    weight decay that holds the weights near zero for half the run cannot compete with one
    that learned; training it to the end only costs time.
    """
    n = len(initial)
    if len(current) != n or (groups is not None and len(groups) != n):
        raise ValueError("initial, current and groups must have one entry per run")
    keys = list(groups) if groups is not None else [0] * n
    learned: dict[int, bool] = {}
    for i in range(n):
        gain = 1.0 - current[i] / initial[i] if initial[i] > 0 else 0.0
        if math.isfinite(gain) and gain > progress:
            learned[keys[i]] = True
    return [
        bool(learned.get(keys[i]))
        and math.isfinite(initial[i])
        and not current[i] < (1.0 - tolerance) * initial[i]
        for i in range(n)
    ]


def _chance_pruner(
    members: Sequence[Member], initial: list[float], epochs: int, pruned: list[str]
) -> Callable[[int, list[Any]], list[int]]:
    """``after_epoch`` for :func:`run_epochs`: at 1/4 and 1/2 of the epochs, the members at
    chance level (their reasons written into ``pruned``)."""
    checks = {max(1, round(epochs * q)) - 1 for q in (0.25, 0.5)} - {epochs - 1}

    def after_epoch(epoch: int, histories: list[Any]) -> list[int]:
        if epoch not in checks:
            return []
        live = [i for i in range(len(members)) if not pruned[i] and not histories[i].diverged]
        current = [histories[i].val_losses[-1] for i in live]
        at = chance_level([initial[i] for i in live], current, [members[i].seed for i in live])
        stop = []
        for i, flag, value in zip(live, at, current, strict=True):
            if flag:
                best = min(
                    histories[j].val_losses[-1] for j in live if members[j].seed == members[i].seed
                )
                pruned[i] = (
                    f"at chance level after {epoch + 1} of {epochs} epochs: validation loss "
                    f"{value:.4g}, no better than untrained ({initial[i]:.4g}), while the best "
                    f"run on its fold reached {best:.4g}"
                )
                stop.append(i)
        return stop

    return after_epoch
