"""What ``tune`` trains: an objective, ``objective(trial) -> validation loss``.

An objective is any function of one :class:`Trial` that trains a model with the trial's
weight decay and learning rate on ``trial.train_idx`` and returns its loss on
``trial.val_idx``: the user's own loop, a Hugging Face ``Trainer``
(:mod:`adamwkit.integrations.transformers`), a Lightning module
(:mod:`adamwkit.integrations.lightning`), or a built-in :class:`~adamwkit.Task` through
:class:`TaskObjective`, which can also train many trials at once as one stacked model.
Folds, candidates, the study, resumption and the report know nothing else about training.

An objective returns a float, or a mapping with the key ``"loss"`` and at most one other
number, reported beside the loss as a metric (``{"loss": 0.31, "accuracy": 0.91}``).
"""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import Tensor, nn

from .._device import autocast as _autocast
from ..functional import DecayScale
from ..tasks import Task, get_task

__all__ = [
    "NoResult",
    "Objective",
    "ObjectiveFailed",
    "Outcome",
    "TaskObjective",
    "Trial",
    "outcome_of",
    "resolve_source",
]

Objective = Callable[["Trial"], Any]


class ObjectiveFailed(RuntimeError):
    """Every run of a study failed with an error; raised from the first one (its traceback
    follows in the chain), once the study's report (state ``"failed"``) is written."""


class NoResult(ValueError):
    """The runs ended, but they give nothing to recommend: a probe whose zero-decay runs
    failed or reported no curve, a transfer whose subsets show no trend. The command line
    says so in one line with exit code 1 (2 is for bad arguments)."""


#: The most per-example validation losses one run may report (they are stored in the study).
MAX_EXAMPLE_LOSSES = 100_000


@dataclass
class Trial:
    """One training run that ``tune`` asks an objective for.

    - ``weight_decay``, ``lr``, ``decay_scale``: the candidate (``weight_decay`` in the
      convention of ``decay_scale``: ``"lr"`` is PyTorch's, ``"schedule"`` the paper's).
    - ``fold``: the fold held out for validation, or ``None`` for a refit on every training
      example scored on the test split.
    - ``train_idx``, ``val_idx``: 1-D long tensors of indices into your examples.
    - ``seed``: the same for every candidate on a fold, so candidates differ only in what
      is tuned; seed your initialisation and batch order with it.
    - ``device`` (a ``torch.device``), ``precision`` (``"fp32"`` or ``"bf16"``), ``epochs``
      and ``batch_size`` (``None`` when not given to ``tune``).
    - ``data``: what you passed to ``tune(data=...)``; :attr:`train_data` and
      :attr:`val_data` are its ``torch.utils.data.Subset`` for this run.
    - ``single_split``: True when the study has one validation split (``folds=1`` or
      ``validation=``), where :meth:`report_example_losses` gives the standard errors
      (a Task reports them on its own).

    The first run of a study with weight decay above zero has its optimizer audited
    (:func:`adamwkit.audit`) at its first step, for the report's "Optimizer audit":
    :meth:`audit_model` (or :meth:`optimizer`, which calls it) gives the audit the
    model's tensor names.
    """

    weight_decay: float
    lr: float
    decay_scale: str
    fold: int | None
    train_idx: Tensor
    val_idx: Tensor
    seed: int
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    precision: str = "fp32"
    epochs: int | None = None
    batch_size: int | None = None
    data: Any = None
    validation: Any = None
    single_split: bool = False
    curve: list[tuple[int, float]] = field(default_factory=list, init=False, repr=False)
    _on_report: Callable[[int, float], None] | None = field(default=None, init=False, repr=False)
    _progress: Callable[[int, int], Any] | None = field(default=None, init=False, repr=False)
    monitor_log: Any = field(default=None, init=False, repr=False)
    _monitor: Any = field(default=None, init=False, repr=False)
    baseline: float | None = field(default=None, init=False, repr=False)
    example_losses: list[float] | None = field(default=None, init=False, repr=False)
    frozen_tensors: int = field(default=0, init=False, repr=False)  # seen by optimizer()
    audited_model: nn.Module | None = field(default=None, init=False, repr=False)

    @property
    def is_refit(self) -> bool:
        """True for a refit on every training example, scored on the test split."""
        return self.fold is None

    @property
    def train_data(self) -> Any:
        """``Subset(data, train_idx)`` of the ``data`` given to ``tune``."""
        return self._subset(self.train_idx)

    @property
    def val_data(self) -> Any:
        """``Subset(data, val_idx)`` of the ``data`` given to ``tune``; with
        ``tune(validation=<a dataset>)``, ``Subset(validation, val_idx)`` (a refit is scored
        on the test split of ``data``)."""
        if self.validation is not None and not self.is_refit:
            from torch.utils.data import Subset

            return Subset(self.validation, self.val_idx.tolist())
        return self._subset(self.val_idx)

    def _subset(self, idx: Tensor) -> Any:
        if self.data is None:
            raise ValueError(
                "trial.train_data needs tune(data=...): with tune(examples=N), index your "
                "own data with trial.train_idx and trial.val_idx"
            )
        from torch.utils.data import Subset

        return Subset(self.data, idx.tolist())

    def report_example_losses(self, losses: Any) -> None:
        """Record the loss of each validation example (in ``val_idx``'s order; their mean
        should be the loss you return). With one validation split (``folds=1`` or
        ``validation=``) ``tune`` then compares candidates paired over the examples, which
        gives the standard errors one split otherwise lacks. At most
        :data:`MAX_EXAMPLE_LOSSES` values (they are stored in the study)."""
        values = np.asarray(
            losses.detach().to(torch.float64).cpu() if isinstance(losses, Tensor) else losses,
            dtype=float,
        ).reshape(-1)
        if len(values) != len(self.val_idx):
            raise ValueError(
                f"losses has {len(values)} values: expected one per validation example "
                f"({len(self.val_idx)})"
            )
        if len(values) > MAX_EXAMPLE_LOSSES or not np.isfinite(values).all():
            raise ValueError(
                f"losses is invalid: expected at most {MAX_EXAMPLE_LOSSES:,} finite values "
                "(report a sample of the validation examples' losses beyond that)"
            )
        self.example_losses = [float(v) for v in values]

    def report_baseline(self, loss: float) -> None:
        """Record the validation loss a model that learned nothing gets on this run's
        validation examples: the untrained model's loss (before the first step), or that of
        predicting the training labels' mean or class frequencies. ``tune`` compares the
        candidates with it: when none beats it by a margin that matters, the verdict is
        that the model did not learn, and no weight decay is named. (A Task reports it on
        its own.)"""
        value = float(loss)
        if not math.isfinite(value):
            raise ValueError(f"loss={loss!r} is invalid: expected a finite number")
        self.baseline = value

    def report(self, value: float, step: int) -> None:
        """Record an intermediate validation loss at ``step`` (an epoch or a step count):
        the learning curve drawn in the report."""
        value, step = float(value), int(step)
        self.curve.append((step, value))
        if self._on_report is not None:
            self._on_report(step, value)

    def audit_model(self, model: nn.Module) -> None:
        """Name the model this run trains, for ``tune``'s audit of the study's first run
        (optional): the audit names each tensor of the optimizer by its name in
        ``model`` (``"0.weight"``) rather than by its place (``param_groups[0]['params'][3]``)
        and also finds trainable tensors missing from the optimizer. :meth:`optimizer`
        calls it; call it yourself when you build the optimizer, say before handing
        both to a Trainer. Nothing else is done with the model."""
        if not isinstance(model, nn.Module):
            raise ValueError(f"model={type(model).__name__} is invalid: expected a torch.nn.Module")
        self.audited_model = model

    def optimizer(
        self,
        model: nn.Module,
        *,
        decay_embeddings: bool = True,
        exclude: Sequence[Any] = (),
        multipliers: Mapping[str, float] | None = None,
        **adamw_kwargs: Any,
    ) -> torch.optim.Optimizer:
        """``AdamW(param_groups(model, weight_decay), lr=lr, decay_scale=decay_scale, ...)``.

        The keyword arguments of :func:`adamwkit.param_groups` choose which tensors decay;
        the others go to :class:`adamwkit.AdamW` (``betas``, ``eps``, ``fused``...).
        ``model`` is also the one the study's audit names tensors from
        (:meth:`audit_model`), unless one was named already.
        """
        from ..adamw import AdamW
        from ..groups import param_groups

        if self.audited_model is None:
            self.audit_model(model)

        self.frozen_tensors = sum(1 for q in model.parameters() if not q.requires_grad)
        groups = param_groups(
            model,
            self.weight_decay,
            decay_embeddings=decay_embeddings,
            exclude=exclude,
            multipliers=multipliers,
        )
        # decay_scale: one of DECAY_SCALES, checked with the study's spec
        scale = cast(DecayScale, self.decay_scale)
        opt = AdamW(groups, lr=self.lr, decay_scale=scale, **adamw_kwargs)
        opt._convention_checked = True  # a candidate of the study, in its convention
        return opt

    def monitor(
        self, optimizer: torch.optim.Optimizer, model: nn.Module | None = None, every: int = 10
    ) -> Any:
        """Record this refit's weight norms and rotation against their equilibrium
        (:class:`adamwkit.Monitor`) for tune's report; returns the Monitor, or ``None`` in a
        cross-validation run (``trial.is_refit`` is False), which is not recorded."""
        if not self.is_refit:
            return None
        from ..monitor import Monitor

        self._monitor = Monitor(optimizer, every=every, model=model)
        return self._monitor

    def close_monitor(self) -> None:
        """Detach the refit's monitor and keep its log in :attr:`monitor_log`."""
        if self._monitor is not None:
            self._monitor.close()
            self.monitor_log = self._monitor.log()
            self._monitor = None

    def autocast(self) -> Any:
        """A context for the forward pass in the trial's precision (``torch.autocast`` to
        bfloat16 for ``"bf16"``, nothing for ``"fp32"``)."""
        return _autocast(self.device, self.precision)


@dataclass
class Outcome:
    """What one run gave: its loss and metric, or why it failed."""

    loss: float | None = None
    metric: float | None = None
    metric_name: str | None = None  # the key the objective returned the metric under
    curve: list[tuple[int, float]] = field(default_factory=list)
    baseline: float | None = None  # the untrained loss on the run's validation examples
    example_losses: list[float] | None = None  # per validation example, when reported
    reason: str = ""
    error: BaseException | None = None
    seconds: float = 0.0
    monitor_log: Any = None  # a refit's MonitorLog
    pruned: str = ""  # why the run was stopped early; ``loss`` is then its last one

    @property
    def ok(self) -> bool:
        return not self.reason


def outcome_of(value: Any) -> Outcome:
    """An objective's return value as an :class:`Outcome` (a non-finite loss fails it)."""
    metric, name = None, None
    if isinstance(value, Mapping):
        if "loss" not in value:
            keys = ", ".join(map(repr, value)) or "none"
            return Outcome(reason=f"the objective returned a mapping without 'loss' (keys: {keys})")
        others = [(k, v) for k, v in value.items() if k != "loss" and v is not None]
        if others:
            name, metric = str(others[0][0]), float(others[0][1])
        value = value["loss"]
    try:
        loss = float(value)
    except (TypeError, ValueError):
        return Outcome(
            reason=f"the objective returned {type(value).__name__}, not a number (the "
            "validation loss)"
        )
    if not math.isfinite(loss):
        return Outcome(reason=f"the validation loss is {loss}")
    return Outcome(loss=loss, metric=metric, metric_name=name)


def _takes_one_argument(fn: Callable[..., Any]) -> bool:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return False
    required = [
        p
        for p in sig.parameters.values()
        if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
    ]
    return len(required) == 1


def _name_of(fn: Any) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}:{qual}"


def resolve_source(source: Any) -> tuple[Task | None, Objective | None, str]:
    """``(task, objective, name)`` from what ``tune`` was given: a built-in task's name, a
    ``module:attribute`` (a Task, a function returning one, or an objective: a callable of
    one argument), a :class:`Task`, or an objective.
    """
    obj: Any = source
    if isinstance(source, str):
        if ":" in source:
            from .._loading import load_object

            obj = load_object(source, "objective")
        else:
            task = get_task(source)
            return task, None, task.name
    if isinstance(obj, Task):
        return obj, None, obj.name
    if not callable(obj):
        raise ValueError(
            f"objective={source!r} is invalid: expected a Task, a built-in task name, "
            "'module:attribute', or a function objective(trial) -> validation loss"
        )
    if _takes_one_argument(obj):
        return None, obj, source if isinstance(source, str) else _name_of(obj)
    made = obj()  # a function returning a Task: an error in it is the user's, with its traceback
    if not isinstance(made, Task):
        raise ValueError(
            f"objective={source!r} is invalid: called with no arguments it returned "
            f"{type(made).__name__}, not a Task; an objective takes one argument (the trial)"
        )
    return made, None, made.name


class TaskObjective:
    """A :class:`Task` as an objective: :func:`adamwkit.fit` on the trial's split, the
    per-epoch validation loss as the learning curve; :meth:`population` trains many trials
    at once as one stacked model (:func:`adamwkit.train.fit_population`)."""

    def __init__(self, task: Task, *, epochs: int, batch_size: int) -> None:
        self.task, self.epochs, self.batch_size = task, epochs, batch_size
        self.__name__ = task.name

    def __call__(self, trial: Trial) -> dict[str, float | None]:
        from ..train import fit

        result = fit(
            self.task,
            trial.weight_decay,
            train_idx=trial.train_idx,
            val_idx=trial.val_idx,
            lr=trial.lr,
            epochs=self.epochs,
            batch_size=self.batch_size,
            decay_scale=trial.decay_scale,
            seed=trial.seed,
            device=trial.device,
            precision=trial.precision,
            progress=trial._progress or False,
            monitor=self.monitor_every(trial) if trial.is_refit else None,
            on_start=lambda model, _optimizer: trial.audit_model(model),
        )
        trial.monitor_log = result.monitor
        if result.initial_val_loss is not None and math.isfinite(result.initial_val_loss):
            trial.report_baseline(result.initial_val_loss)
        self.report_examples(trial, result.model)
        for epoch, loss in enumerate(result.val_losses, start=1):
            trial.report(loss, epoch)
        return {"loss": result.val_loss, self.task.metric_name: result.val_metric}

    def report_examples(self, trial: Trial, model: nn.Module) -> None:
        """With one validation split, each validation example's loss under ``model``
        (:func:`adamwkit.train.example_losses`): the standard errors of that split."""
        if not trial.single_split or trial.is_refit or len(trial.val_idx) > MAX_EXAMPLE_LOSSES:
            return
        from ..train import example_losses

        losses = example_losses(model, self.task, trial.val_idx, precision=trial.precision)
        if all(math.isfinite(v) for v in losses):
            trial.report_example_losses(losses)

    def monitor_every(self, trial: Trial) -> int:
        """Record about 200 points of a refit: every steps / 200 steps."""
        n = len(trial.train_idx)
        steps = self.epochs * -(-n // self.batch_size)
        return max(1, steps // 200)

    def stacking_check(self) -> tuple[str | None, int, int]:
        """Why this task's model cannot be stacked (batch norm, tied trainable weights) or
        ``None``, the memory one stacked member needs (bytes) and the memory its members
        share (the frozen base, held once); one model is built to see."""
        from ..train.population import population_memory, vectorize_refusal

        with torch.random.fork_rng(devices=[]):  # the caller's random state is kept
            torch.manual_seed(0)
            model = self.task.model()
        why = vectorize_refusal(model)
        if why:
            return why, 0, 0
        memory = population_memory(self.task, self.batch_size, model)
        return None, memory.per_member, memory.shared

    def standalone(self, trial: Trial) -> tuple[nn.Module, torch.optim.Optimizer, int]:
        """The model and :class:`adamwkit.AdamW` that :func:`adamwkit.fit` builds for
        ``trial`` (the same seed, weights, groups, weight decay and lr), on the CPU, with the
        caller's random state kept; and the run's optimizer steps. A stacked population
        has no optimizer of its own: each member is stepped with these groups and values,
        so this is what its audit reads."""
        from ..train.single import build_run

        scale = cast(DecayScale, trial.decay_scale)  # checked with the study's spec
        with torch.random.fork_rng(devices=[]):
            model, opt = build_run(self.task, trial.weight_decay, lr=trial.lr, seed=trial.seed,
                                   decay_scale=scale, device=torch.device("cpu"))  # fmt: skip
        steps = self.epochs * -(-len(trial.train_idx) // self.batch_size)
        return model, opt, steps

    def members(self, trials: Sequence[Trial]) -> list[Any]:
        from ..train import Member

        return [Member(t.weight_decay, t.lr, t.train_idx, t.val_idx, t.seed) for t in trials]

    def measure(self, trials: Sequence[Trial]) -> tuple[float, float, list[str]]:
        """Seconds per step of one trial alone and of ``trials`` stacked, and the operators
        run member by member (:func:`adamwkit.train.population.stacking_speed`)."""
        from ..train.loop import RunSettings
        from ..train.population import stacking_speed

        first = trials[0]
        scale = cast(DecayScale, first.decay_scale)  # checked with the study's spec
        settings = RunSettings(self.epochs, self.batch_size, scale,
                               self.task.schedule, self.task.warmup_steps, first.device,
                               first.precision)  # fmt: skip
        return stacking_speed(self.task, self.members(trials), settings)

    def population(
        self,
        trials: Sequence[Trial],
        progress: Callable[[int, int], Any] | None = None,
        prune_chance: bool = False,
    ) -> list[Outcome]:
        """Train ``trials`` as one stacked model; one :class:`Outcome` per trial
        (``prune_chance``: see :func:`adamwkit.train.fit_population`)."""
        from ..train import fit_population

        first = trials[0]
        members = self.members(trials)
        start = time.perf_counter()
        results = fit_population(
            self.task,
            members,
            epochs=self.epochs,
            batch_size=self.batch_size,
            decay_scale=first.decay_scale,
            device=first.device,
            precision=first.precision,
            progress=progress,
            prune_chance=prune_chance,
        )
        seconds = (time.perf_counter() - start) / len(trials)
        out = []
        for trial, r in zip(trials, results, strict=True):
            curve = [(e + 1, v) for e, v in enumerate(r.val_losses)]
            if r.diverged:
                out.append(Outcome(reason=r.diverged, curve=curve, seconds=seconds))
                continue
            o = outcome_of({"loss": r.val_loss, self.task.metric_name: r.val_metric})
            o.curve, o.seconds, o.pruned = curve, seconds, r.pruned
            if r.initial_val_loss is not None and math.isfinite(r.initial_val_loss):
                o.baseline = r.initial_val_loss
            if trial.single_split and r.state and not r.pruned:
                self.report_examples(trial, self.member_model(r.state, first.device))
                o.example_losses = trial.example_losses
            out.append(o)
        return out

    def member_model(self, state: Mapping[str, Tensor], device: torch.device) -> nn.Module:
        """A fresh ``task.model()`` on ``device`` holding a stacked member's weights."""
        with torch.random.fork_rng(devices=[]):  # the caller's random state is kept
            model = self.task.model()
        model.load_state_dict(dict(state))
        return model.to(device)
