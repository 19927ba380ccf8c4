"""Tune weight decay for a LightningModule: :func:`lightning_objective`.

Each trial builds a fresh module with ``module_init()`` (after
``lightning.seed_everything(trial.seed)``), gives it :class:`adamwkit.AdamW` over
:func:`adamwkit.param_groups` with the trial's weight decay and lr (its
``configure_optimizers`` is replaced for the run, with an optional scheduler), trains it
with a ``lightning.Trainer`` on the fold's subsets of ``train_dataset``, and returns the
validation loss the module logs as ``monitor`` (``self.log("val_loss", loss)`` in
``validation_step``). Each validation epoch's value is reported to the trial, which draws
the learning curve in tune's report.

Needs Lightning: ``pip install 'adamwkit[lightning]'``.

Also here: ``MonitorCallback`` (weight norms against their equilibrium during the run),
``AuditCallback`` (:func:`adamwkit.audit` of the module's optimizers before the first step)
and ``DecayCLI`` (a ``LightningCLI`` whose ``--optimizer`` gets
:func:`adamwkit.param_groups`); docs/audit-callbacks.md.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from .._extras import MissingExtra
from ..tuning.objective import Trial
from ._audit import AuditCore as _AuditCore
from ._audit import AuditFailed, audit_callback_class
from ._monitor import MonitorCore as _MonitorCore
from ._monitor import callback_class
from ._monitor import torch_optimizer as _torch_optimizer

# AuditCallback, DecayCLI, MonitorCallback: built by __getattr__
__all__ = [  # noqa: F822
    "AuditCallback",
    "AuditFailed",
    "DecayCLI",
    "MonitorCallback",
    "lightning_objective",
]


def _require() -> Any:
    try:
        import lightning
    except ImportError:
        try:
            import pytorch_lightning
        except ImportError as err:
            raise ImportError(
                f"lightning_objective needs Lightning ({err}): pip install 'adamwkit[lightning]'"
            ) from err
        return pytorch_lightning
    return lightning


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Lightning's info lines (devices found, tips) off for a trial: tune shows its own."""
    names = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning",
             "lightning_fabric")  # fmt: skip
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def lightning_objective(
    module_init: Callable[[], Any],
    train_dataset: Dataset,
    *,
    batch_size: int | None = None,
    max_epochs: int | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
    monitor: str = "val_loss",
    metric: str | None = None,
    lr_scheduler: Callable[[torch.optim.Optimizer, Trial], Any] | None = None,
    optimizer_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> Callable[[Trial], dict[str, float | None]]:
    """An objective that trains a LightningModule per trial; returns the validation loss
    (and ``metric``'s last value beside it, named as logged).

    Args:
        module_init: returns a fresh ``LightningModule`` that logs ``monitor`` in its
            ``validation_step``.
        train_dataset: every example the folds split (``tune(data=train_dataset)``).
        batch_size, max_epochs: per trial, ``tune(batch_size=, epochs=)`` when given, else
            these.
        collate_fn: for the data loaders.
        monitor: the logged validation loss the trials are compared on.
        metric: another logged value (``"val_acc"``) shown beside the loss in tune's
            tables and report (``None``: none).
        lr_scheduler: ``lr_scheduler(optimizer, trial)`` returns a scheduler stepped every
            optimizer step (``None``: a constant lr).
        optimizer_kwargs: keywords for :meth:`adamwkit.Trial.optimizer`.
        trainer_kwargs: passed to ``lightning.Trainer`` (logging, checkpoints, the progress
            bar and the model summary are off unless given here).

    Example::

        objective = lightning_objective(MyModule, dataset, batch_size=32, max_epochs=5)
        adamwkit.tune(objective, data=dataset, lr=1e-3, epochs=5, batch_size=32)
    """
    lightning = _require()
    if not callable(module_init):
        raise ValueError(
            f"module_init={module_init!r} is invalid: expected a function returning a "
            "LightningModule"
        )
    optimizer_kwargs = dict(optimizer_kwargs or {})

    def objective(trial: Trial) -> dict[str, float | None]:
        class Report(lightning.Callback):  # type: ignore[misc,name-defined]
            def on_validation_epoch_end(self, trainer: Any, _module: Any) -> None:
                value = trainer.callback_metrics.get(monitor)
                if value is not None and not trainer.sanity_checking:
                    trial.report(float(value), trainer.current_epoch + 1)

        lightning.seed_everything(trial.seed, verbose=False)
        module = module_init()
        if not isinstance(module, lightning.LightningModule):
            raise ValueError(
                f"module_init returned {type(module).__name__}: expected a LightningModule"
            )

        def configure_optimizers() -> Any:
            opt = trial.optimizer(module, **optimizer_kwargs)
            if lr_scheduler is None:
                return opt
            sched = lr_scheduler(opt, trial)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

        module.configure_optimizers = configure_optimizers
        bs = trial.batch_size or batch_size
        if bs is None:
            raise ValueError(
                "batch_size is needed: pass tune(batch_size=...) or "
                "lightning_objective(batch_size=...)"
            )
        epochs = trial.epochs or max_epochs
        if epochs is None:
            raise ValueError(
                "max_epochs is needed: pass tune(epochs=...) or lightning_objective(max_epochs=...)"
            )
        order = torch.Generator().manual_seed(trial.seed)
        train = DataLoader(Subset(train_dataset, trial.train_idx.tolist()), batch_size=bs,
                           shuffle=True, generator=order, collate_fn=collate_fn)  # fmt: skip
        val = DataLoader(Subset(train_dataset, trial.val_idx.tolist()), batch_size=bs,
                         collate_fn=collate_fn)  # fmt: skip
        cuda = trial.device.type == "cuda"
        settings: dict[str, Any] = {
            "max_epochs": epochs,
            "accelerator": "gpu" if cuda else "cpu",
            "devices": [trial.device.index or 0] if cuda else 1,
            "precision": "bf16-mixed" if trial.precision == "bf16" else "32-true",
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
            **trainer_kwargs,
        }
        settings["callbacks"] = [*settings.get("callbacks", []), Report()]
        with _quiet():
            trainer = lightning.Trainer(**settings)
            trainer.fit(module, train, val)
        value = trainer.callback_metrics.get(monitor)
        if value is None:
            raise ValueError(
                f"monitor={monitor!r} was never logged: log it in validation_step "
                f"(self.log({monitor!r}, loss)); logged: {sorted(trainer.callback_metrics)}"
            )
        out: dict[str, float | None] = {"loss": float(value)}
        if metric is not None:
            extra = trainer.callback_metrics.get(metric)
            out[metric] = None if extra is None else float(extra)
        return out

    objective.__qualname__ = objective.__name__ = "lightning_objective"
    return objective


class _LightningMonitor(_MonitorCore):
    """Records weight norms and rotation against their AdamW equilibrium during a Lightning
    run (a :class:`~adamwkit.Monitor` on the module's optimizer).

    Args:
        every: record every ``every`` optimizer steps (and the first).
        path: where the log goes at the end of training (default
            ``<trainer.default_root_dir>/monitor.jsonl``; read it with
            :func:`adamwkit.monitor.load_log` or ``adamwkit explain --run PATH``).
        per_layer: also send the recorded step's numbers per layer
            (``monitor/<layer>/norm``, ``monitor/<layer>/norm_ratio``,
            ``monitor/<layer>/angle``, ``monitor/<layer>/grad_cos``): four keys a layer.
        log_summary: after each recorded step, send five summary keys to the trainer's
            loggers (``logger.log_metrics``, at the recorded step):
            ``monitor/layers_equilibrium``, ``monitor/layers_off_equilibrium``,
            ``monitor/layers_reference``, ``monitor/norm_ratio_median``,
            ``monitor/decay_per_step`` (see
            :class:`adamwkit.integrations._monitor.MonitorCore` and docs/monitor.md).

    The layers at or off equilibrium are those whose weights are scale-invariant (measured:
    their gradient is orthogonal to them), the only ones the equilibrium holds for; the
    other decayed layers count as ``reference``.

    After training, ``log`` holds the :class:`~adamwkit.MonitorLog`, ``verdicts`` its
    :class:`~adamwkit.Verdict` list and ``saved`` the file written (on global rank 0).

    It watches ``trainer.optimizers[0]`` (the torch optimizer inside, if wrapped), found
    when training starts or, failing that, at the first batches; never found, a
    ``UserWarning`` says so at the end and nothing is saved. Lightning runs the forward and
    backward passes inside ``optimizer.step(closure)``, after the optimizer's step
    pre-hooks: the pre-step half of the record is taken in ``on_before_optimizer_step``
    instead, once the gradients exist (before gradient clipping). Steps are numbered as
    ``trainer.global_step`` numbers them (a step the gradient scaler skips counts, but is
    not recorded).

    Example::

        from adamwkit.integrations.lightning import MonitorCallback

        monitor = MonitorCallback(every=10)
        trainer = lightning.Trainer(max_steps=10_000, callbacks=[monitor])
        trainer.fit(module, train_loader)
        for v in monitor.verdicts:
            print(v.layer, v.text)
    """

    def _find(self, trainer: Any, pl_module: Any) -> None:
        if self.monitor is not None:
            return
        optimizers = getattr(trainer, "optimizers", None) or [None]
        # The step pre-hook would see the previous step's gradients (or none): the closure
        # that computes them runs inside step(). on_before_optimizer_step takes its place.
        self._attach(optimizers[0], pl_module, trainer.global_step, before_hook=False)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start()
        self._find(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        self._find(trainer, pl_module)

    def on_before_optimizer_step(self, trainer: Any, pl_module: Any, optimizer: Any) -> None:
        self._find(trainer, pl_module)
        mon = self.monitor
        if mon is not None and _torch_optimizer(optimizer) is mon.optimizer:
            mon.step = trainer.global_step  # the steps done: before_step counts this one
            mon.before_step()

    def on_train_batch_end(
        self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        mon = self.monitor
        if mon is None:
            return
        # A step the gradient scaler skipped ran no post-hook: drop its pending half.
        mon.cancel_step()
        metrics = self._latest()
        if metrics:
            for logger in trainer.loggers:
                logger.log_metrics(metrics, step=self._latest_step)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._finish(trainer.default_root_dir, trainer.is_global_zero,
                     "trainer.optimizers[0]")  # fmt: skip


# ------------------------------------------------------------------------------ AuditCallback


class _LightningAudit(_AuditCore):
    """Audits the module's optimizers when training starts (:func:`adamwkit.audit`): do they
    decay what you think? It prints the table and the findings once, writes them as JSON,
    and with ``strict=True`` stops the run before its first step on an error finding.

    Args:
        path: the JSON file to write (default ``<trainer.log_dir>/audit.json``; a folder
            that exists gets ``audit.json`` inside it). It holds ``report.to_dict()``:
            ``optimizer``, ``total_steps``, ``tensors``, ``findings``, ``notes``.
        strict: raise :class:`~adamwkit.integrations.lightning.AuditFailed` (a
            ``RuntimeError``) when a finding has severity ``"error"`` (a trainable tensor
            in no optimizer, a tensor in two groups), after printing and writing the report.
        show: print the report (on global rank 0).

    The audit sees ``trainer.optimizers`` (the torch optimizers inside the
    ``LightningOptimizer`` wrappers; several, as a GAN has, are audited together, so a
    tensor is ``not-in-optimizer`` only when none holds it), the LightningModule (its
    parameter names, the norms and biases :func:`adamwkit.param_groups` would leave out),
    the schedulers of ``trainer.lr_scheduler_configs`` that step every optimizer step
    (``interval="step"``, ``frequency=1``: a copy is stepped for the lr of every step; one
    stepped per epoch is left out, and a note in the report says so) and the run's length,
    ``trainer.estimated_stepping_batches`` when finite. It runs in ``on_train_start`` (after
    the sanity check, before the first batch) or, failing that, at the first
    ``on_train_batch_start``. Never found, a ``UserWarning`` says so at the end.

    After the start, ``report`` holds the :class:`~adamwkit.Audit` and ``saved`` the file
    written (global rank 0 only).

    Example::

        import lightning
        import torch
        from torch import nn
        from adamwkit.integrations.lightning import AuditCallback

        class Model(lightning.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))

            def training_step(self, batch, batch_idx):
                return self.net(batch[0]).pow(2).mean()

            def configure_optimizers(self):  # one group: the norm and the biases decay
                return torch.optim.AdamW(self.parameters(), weight_decay=0.1)

        data = torch.utils.data.TensorDataset(torch.randn(16, 4))
        audit = AuditCallback()  # strict=True: AuditFailed on an error finding
        trainer = lightning.Trainer(max_steps=2, logger=False, enable_checkpointing=False,
                                    callbacks=[audit])
        trainer.fit(Model(), torch.utils.data.DataLoader(data, batch_size=4))
        print(audit.report.codes())  # ['decays-norm-or-bias', 'too-short']
    """

    def _find(self, trainer: Any, pl_module: Any) -> None:
        found = [_torch_optimizer(o) for o in getattr(trainer, "optimizers", None) or []]
        optimizers = [o for o in found if o is not None]
        if not optimizers:
            return
        schedulers, notes = [], []
        for config in getattr(trainer, "lr_scheduler_configs", None) or []:
            if config.interval == "step" and config.frequency == 1:
                schedulers.append(config.scheduler)
            else:
                notes.append(
                    f"the lr scheduler {type(config.scheduler).__name__} steps every "
                    f"{config.frequency} {config.interval}(s), not every optimizer step: "
                    "its schedule is not followed"
                )
        # log_dir broadcasts from rank 0: every rank asks for it.
        log_dir = trainer.log_dir if self.path is None else None
        self._run(optimizers, pl_module, schedulers, trainer.estimated_stepping_batches,
                  log_dir, trainer.is_global_zero, notes=notes)  # fmt: skip

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        self._start()
        self._find(trainer, pl_module)

    def on_train_batch_start(
        self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int
    ) -> None:
        if self.report is None:
            self._find(trainer, pl_module)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self._never_found("trainer.optimizers")


# ----------------------------------------------------------------------------------- DecayCLI


class _DecayCLI:
    """A ``LightningCLI`` whose automatic optimizer gets :func:`adamwkit.param_groups`.

    ``LightningCLI(Model)`` run with ``--optimizer AdamW --optimizer.weight_decay 0.1``
    builds the optimizer from ``model.parameters()``: one group, so norms, biases and every
    other 1-D tensor decay. ``DecayCLI(Model)`` takes the same arguments and builds the
    optimizer's groups with ``adamwkit.param_groups(model, weight_decay=<the configured
    weight_decay>)`` instead: the configured value on the matrices and embeddings, 0 on
    norms, biases and the tensors its rules leave out (frozen tensors in no group). Every
    other configured argument (lr, betas, eps, ...) is kept in every group, the optimizer's
    class is the one configured, and an ``--lr_scheduler`` is built again on the grouped
    optimizer with its configured arguments. The plan is printed once (global rank 0) and
    kept in ``decay_plan``.

    Without ``--optimizer``, the model's own ``configure_optimizers`` runs, untouched; an
    optimizer without a ``weight_decay`` argument is left as configured, with a warning.

    It overrides :meth:`LightningCLI.configure_optimizers`, the hook Lightning calls with
    the optimizer and scheduler it built; it reads the scheduler's arguments from
    ``self.config_init`` under ``lr_scheduler`` (the key ``LightningCLI`` registers them
    under). Checked on Lightning 2.6.

    The short name ``AdamW`` given to ``--optimizer`` on the command line means
    ``torch.optim.AdamW``: with adamwkit imported, jsonargparse sees two optimizer classes
    of that name and a plain ``LightningCLI`` refuses it. In a config file, write
    ``torch.optim.AdamW`` or ``adamwkit.AdamW``.

    Example (in a script, ``DecayCLI(Model)`` reads the same flags from the command line:
    ``python train.py fit --optimizer AdamW --optimizer.weight_decay 0.1``)::

        import lightning
        import torch
        from torch import nn
        from adamwkit.integrations.lightning import DecayCLI

        class Model(lightning.LightningModule):
            def __init__(self):
                super().__init__()
                self.net = nn.Sequential(nn.Linear(4, 8), nn.LayerNorm(8), nn.Linear(8, 1))

            def training_step(self, batch, batch_idx):
                return self.net(batch[0]).pow(2).mean()

            def train_dataloader(self):
                data = torch.utils.data.TensorDataset(torch.randn(16, 4))
                return torch.utils.data.DataLoader(data, batch_size=4)

        cli = DecayCLI(Model, args=["fit", "--optimizer", "AdamW",
                                    "--optimizer.weight_decay", "0.1",
                                    "--trainer.max_steps", "2", "--trainer.logger", "false"])
        print(cli.decay_plan)  # net.0.weight and net.2.weight decay; the norm, the biases not
    """

    decay_plan: Any = None  # the DecayPlan, after the first configure_optimizers

    def parse_arguments(self, parser: Any, args: Any) -> None:
        # With adamwkit imported, jsonargparse finds two Optimizer subclasses named AdamW
        # (torch.optim.AdamW, adamwkit.AdamW) and refuses "--optimizer AdamW": on the
        # command line the short name means torch's, as it does without adamwkit.
        given = sys.argv[1:] if args is None else args
        if isinstance(given, (list, tuple)):
            fixed = _torch_adamw(list(given))
            if fixed != list(given):
                if args is None:  # parsed as LightningCLI.parse_arguments parses sys.argv
                    self.config = parser.parse_args(fixed)
                    return
                args = fixed
        super().parse_arguments(parser, args)  # type: ignore[misc]

    def configure_optimizers(
        self, lightning_module: Any, optimizer: Any, lr_scheduler: Any = None
    ) -> Any:
        # LightningCLI declares this hook static and calls it through the instance
        # (self.configure_optimizers, bound here) with the optimizer and the scheduler
        # it built from model.parameters(): regroup them once, then do as it does.
        built = self.__dict__.get("_decay_built")
        if built is not None and built[0] is optimizer:
            lr_scheduler = built[1]
        else:
            lr_scheduler = self._regroup(lightning_module, optimizer, lr_scheduler)
            self._decay_built = (optimizer, lr_scheduler)
        return super().configure_optimizers(  # type: ignore[misc]
            lightning_module, optimizer, lr_scheduler
        )

    def _regroup(self, module: Any, optimizer: Any, lr_scheduler: Any) -> Any:
        """Give ``optimizer`` the groups of ``param_groups`` in place (no step has run;
        missing keys come from its configured defaults, as ``add_param_group`` fills
        them), then build the scheduler again on it; the scheduler, or ``None``."""
        from ..groups import param_groups

        wd = optimizer.defaults.get("weight_decay")
        if wd is None:
            warnings.warn(
                f"DecayCLI left {type(optimizer).__name__} as configured: it has no "
                "weight_decay argument",
                UserWarning,
                stacklevel=3,
            )
            return lr_scheduler
        # found before the optimizer changes: a scheduler that cannot be rebuilt stops here
        init = {} if lr_scheduler is None else self._scheduler_init(lr_scheduler)
        groups = param_groups(module, weight_decay=float(wd))
        optimizer.param_groups = []
        for group in groups:
            optimizer.add_param_group(group)
        self.decay_plan = groups.plan
        if not self.__dict__.get("_decay_shown") and _rank_zero():
            self._decay_shown = True
            head = (
                f"DecayCLI: {type(optimizer).__name__}'s groups from "
                f"adamwkit.param_groups(model, weight_decay={float(wd):g})"
            )
            print(f"{head}\n{groups.plan}")
        if lr_scheduler is None:
            return None
        return type(lr_scheduler)(optimizer, **init)

    def _scheduler_init(self, scheduler: Any) -> dict[str, Any]:
        """The arguments ``scheduler`` was configured with: under ``lr_scheduler`` in this
        subcommand's part of ``config_init`` (``init_args`` with its ``class_path``)."""
        config = self.config_init  # type: ignore[attr-defined]
        config = config.get(str(self.subcommand), config)  # type: ignore[attr-defined]
        init = config.get("lr_scheduler")
        path = f"{type(scheduler).__module__}.{type(scheduler).__qualname__}"
        if init is not None and "class_path" in init:
            args = init.get("init_args") if init.get("class_path") == path else None
        else:
            args = init  # registered as one class: its arguments alone
        if args is None:
            raise ValueError(
                f"DecayCLI could not find the arguments of the lr scheduler "
                f"{type(scheduler).__name__} under 'lr_scheduler' in the configuration, "
                "which it needs to build it again on the grouped optimizer: register the "
                "automatic scheduler under that key, or build the optimizer and scheduler in "
                "the module's configure_optimizers with adamwkit.param_groups"
            )
        return dict(args.as_dict() if hasattr(args, "as_dict") else args)


def _torch_adamw(args: list[Any]) -> list[Any]:
    """``args`` with the short name ``AdamW`` given to ``--optimizer`` spelled
    ``torch.optim.AdamW``."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == "--optimizer=AdamW":
            out[i] = "--optimizer=torch.optim.AdamW"
        elif arg == "AdamW" and i > 0 and out[i - 1] == "--optimizer":
            out[i] = "torch.optim.AdamW"
    return out


def _rank_zero() -> bool:
    try:
        from lightning.pytorch.utilities import rank_zero_only
    except ImportError:
        from pytorch_lightning.utilities import rank_zero_only
    return getattr(rank_zero_only, "rank", 0) == 0


def _lightning(name: str) -> Any:
    try:
        return _require()
    except ImportError as err:
        raise MissingExtra(
            f"{name} needs Lightning ({err.__cause__ or err}): pip install 'adamwkit[lightning]'"
        ) from err


def _monitor_callback() -> type:
    return callback_class(_LightningMonitor, _lightning("MonitorCallback").Callback, __name__)


def _audit_callback() -> type:
    base = _lightning("AuditCallback").Callback
    return audit_callback_class(_LightningAudit, base, __name__)


def _decay_cli() -> type:
    import importlib

    lightning = _lightning("DecayCLI")
    name = "lightning.pytorch.cli" if lightning.__name__ == "lightning" else "pytorch_lightning.cli"
    try:
        base = importlib.import_module(name).LightningCLI
    except ImportError as err:
        raise MissingExtra(
            f"DecayCLI needs LightningCLI ({err}): pip install 'lightning[pytorch-extra]' "
            "(jsonargparse)"
        ) from err
    cls = type("DecayCLI", (_DecayCLI, base),
               {"__module__": __name__, "__doc__": _DecayCLI.__doc__})  # fmt: skip
    cls.__qualname__ = "DecayCLI"
    return cls


_LAZY = {"MonitorCallback": _monitor_callback, "AuditCallback": _audit_callback,
         "DecayCLI": _decay_cli}  # fmt: skip


def __getattr__(name: str) -> Any:
    # MonitorCallback, AuditCallback and DecayCLI subclass Lightning's classes: built when
    # first asked for, so that importing this module needs no Lightning.
    if name in _LAZY:
        cls = globals()[name] = _LAZY[name]()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
