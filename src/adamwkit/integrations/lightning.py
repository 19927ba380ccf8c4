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
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, Subset

from ..tuning.objective import Trial
from ._monitor import MonitorCore as _MonitorCore
from ._monitor import callback_class
from ._monitor import torch_optimizer as _torch_optimizer

__all__ = ["MonitorCallback", "lightning_objective"]  # noqa: F822 (MonitorCallback: __getattr__)


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


def _monitor_callback() -> type:
    try:
        lightning = _require()
    except ImportError as err:
        raise ImportError(
            f"MonitorCallback needs Lightning ({err.__cause__ or err}): "
            "pip install 'adamwkit[lightning]'"
        ) from err
    return callback_class(_LightningMonitor, lightning.Callback, __name__)


def __getattr__(name: str) -> Any:
    # MonitorCallback subclasses lightning's Callback: built when first asked for, so that
    # importing this module needs no Lightning.
    if name == "MonitorCallback":
        cls = globals()[name] = _monitor_callback()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
