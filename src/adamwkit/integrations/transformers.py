"""Tune weight decay for a Hugging Face ``Trainer``: :func:`trainer_objective`.

Each trial builds a fresh model with ``model_init()`` (seeded with the trial's seed), a
``Trainer`` on the fold's subsets of ``train_dataset`` with :class:`adamwkit.AdamW` over
:func:`adamwkit.param_groups` (the trial's weight decay and lr; the Trainer's own
scheduler from ``args`` on top), trains it, and returns the eval loss on the held-out fold.
Every evaluation the ``args`` ask for (``eval_strategy``) is reported to the trial, which
draws the learning curve in tune's report.

Needs ``transformers`` and ``accelerate``: ``pip install 'adamwkit[transformers]'``.

Also here: ``MonitorCallback`` (weight norms against their equilibrium during the run) and
``AuditCallback`` (:func:`adamwkit.audit` of the Trainer's optimizer before the first step;
docs/audit-callbacks.md).

The ``Trainer`` picks its own device: the CPU when ``trial.device`` is the CPU, else every
GPU it can see (``nn.DataParallel`` when there are several, which multiplies the effective
batch size). On a machine with several GPUs, start one tune command per GPU with
``CUDA_VISIBLE_DEVICES`` set, rather than ``--workers``.
"""

from __future__ import annotations

import dataclasses
import inspect
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, Subset

from .._extras import MissingExtra
from ..tuning.objective import Trial
from ._audit import AuditCore as _AuditCore
from ._audit import AuditFailed, audit_callback_class
from ._monitor import MonitorCore as _MonitorCore
from ._monitor import callback_class
from ._monitor import torch_optimizer as _torch_optimizer

# AuditCallback, MonitorCallback: built by __getattr__
__all__ = ["AuditCallback", "AuditFailed", "MonitorCallback", "trainer_objective"]  # noqa: F822


def _require() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            f"trainer_objective needs transformers ({err}): pip install 'adamwkit[transformers]'"
        ) from err
    return transformers


def trainer_objective(
    model_init: Callable[[], torch.nn.Module],
    args: Any,
    train_dataset: Dataset,
    *,
    data_collator: Any = None,
    compute_metrics: Callable[[Any], dict[str, float]] | None = None,
    metric: str | None = None,
    callbacks: Sequence[Any] = (),
    optimizer_kwargs: dict[str, Any] | None = None,
    **trainer_kwargs: Any,
) -> Callable[[Trial], dict[str, float | None]]:
    """An objective that trains a Hugging Face ``Trainer`` per trial; returns the eval loss.

    Args:
        model_init: returns a fresh model (called after ``transformers.set_seed(trial.seed)``).
        args: ``TrainingArguments``; per trial, ``learning_rate``, ``weight_decay``, ``seed``
            come from the trial, and ``num_train_epochs`` and
            ``per_device_train_batch_size`` from ``tune(epochs=, batch_size=)`` when given.
            Checkpoints and logging integrations are off (``save_strategy="no"``,
            ``report_to="none"``), the Trainer's own printing and progress bar too (tune
            shows its own), and the output goes to a temporary folder.
        train_dataset: every example the folds split (``tune(data=train_dataset)``);
            trial ``i`` trains on ``Subset(train_dataset, trial.train_idx)``.
        data_collator, compute_metrics, callbacks, and other keywords: passed to ``Trainer``.
        metric: a key of the final evaluation (``"eval_accuracy"``) reported beside the loss.
        optimizer_kwargs: keywords for :meth:`adamwkit.Trial.optimizer` (``betas``, ``exclude``...).

    Example::

        objective = trainer_objective(lambda: GPT2LMHeadModel(config), args, dataset)
        adamwkit.tune(objective, data=dataset, lr=args.learning_rate, epochs=3, batch_size=8)
    """
    transformers = _require()
    if not callable(model_init):
        raise ValueError(
            f"model_init={model_init!r} is invalid: expected a function returning a model"
        )
    if not isinstance(args, transformers.TrainingArguments):
        raise ValueError(
            f"args={type(args).__name__} is invalid: expected transformers.TrainingArguments"
        )
    optimizer_kwargs = dict(optimizer_kwargs or {})

    def objective(trial: Trial) -> dict[str, float | None]:
        from transformers import Trainer, TrainerCallback, set_seed
        from transformers.trainer_callback import PrinterCallback, ProgressCallback

        class Report(TrainerCallback):  # type: ignore[misc]
            def on_evaluate(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
                metrics = kw.get("metrics") or {}
                if "eval_loss" in metrics:
                    trial.report(metrics["eval_loss"], state.global_step)

        set_seed(trial.seed)
        model = model_init().to(trial.device)
        overrides: dict[str, Any] = {
            "learning_rate": trial.lr,
            "weight_decay": trial.weight_decay,
            "seed": trial.seed,
            "save_strategy": "no",
            "report_to": "none",
            "use_cpu": trial.device.type == "cpu",
            "bf16": trial.precision == "bf16" or args.bf16,
        }
        if trial.epochs is not None:
            overrides["num_train_epochs"] = trial.epochs
        if trial.batch_size is not None:
            overrides["per_device_train_batch_size"] = trial.batch_size
        with tempfile.TemporaryDirectory(prefix="adamwkit-trainer-") as out:
            run_args = dataclasses.replace(args, output_dir=out, **overrides)
            trainer = Trainer(
                model=model,
                args=run_args,
                train_dataset=Subset(train_dataset, trial.train_idx.tolist()),
                eval_dataset=Subset(train_dataset, trial.val_idx.tolist()),
                data_collator=data_collator,
                compute_metrics=compute_metrics,
                callbacks=[*callbacks, Report()],
                optimizers=(trial.optimizer(model, **optimizer_kwargs), None),
                **trainer_kwargs,
            )
            for printer in (PrinterCallback, ProgressCallback):  # tune shows its own bars
                trainer.remove_callback(printer)
            trainer.train()
            last = trainer.state.log_history
            evaluated = [
                e for e in last if "eval_loss" in e and e.get("step") == trainer.state.global_step
            ]
            metrics = evaluated[-1] if evaluated else trainer.evaluate()
        return {"loss": float(metrics["eval_loss"]),
                **({metric: metrics.get(metric)} if metric else {})}  # fmt: skip

    objective.__qualname__ = objective.__name__ = "trainer_objective"
    return objective


# ---------------------------------------------------------------------------- MonitorCallback


class _TrainerMonitor(_MonitorCore):
    """Records weight norms and rotation against their AdamW equilibrium during a Hugging
    Face ``Trainer`` run (a :class:`~adamwkit.Monitor` on the Trainer's optimizer).

    Args:
        every: record every ``every`` optimizer steps (and the first).
        path: where the log goes at the end of training (default
            ``<args.output_dir>/monitor.jsonl``; read it with :func:`adamwkit.monitor.load_log`
            or ``adamwkit explain --run PATH``).
        per_layer: also add the last record's numbers per layer
            (``monitor/<layer>/norm``, ``monitor/<layer>/norm_ratio``,
            ``monitor/<layer>/angle``, ``monitor/<layer>/grad_cos``): four keys a layer.
        log_summary: at each log event with a new record, add five summary keys to the
            Trainer's logs (``monitor/layers_equilibrium``,
            ``monitor/layers_off_equilibrium``, ``monitor/layers_reference``,
            ``monitor/norm_ratio_median``, ``monitor/decay_per_step``; see
            :class:`adamwkit.integrations._monitor.MonitorCore` and docs/monitor.md).

    The keys go to ``trainer.state.log_history`` and to every ``report_to`` logger. The
    layers at or off equilibrium are those whose weights are scale-invariant (measured: their
    gradient is orthogonal to them), the only ones the equilibrium holds for; the other
    decayed layers count as ``reference``.

    After training, ``log`` holds the :class:`~adamwkit.MonitorLog`, ``verdicts`` its
    :class:`~adamwkit.Verdict` list and ``saved`` the file written (on the main process).

    The hooks go on the torch optimizer that runs the update: the Trainer's optimizer, or
    the one accelerate's ``AcceleratedOptimizer`` wraps. It is looked for at the start of
    training and, if created later, at each step; never found, a ``UserWarning`` says so
    at the end and nothing is saved. So that the loggers of ``report_to`` (called before
    the callbacks given to the Trainer) see its numbers, the callback moves itself first
    in the Trainer's list of callbacks when training starts.

    Example::

        from adamwkit.integrations.transformers import MonitorCallback

        trainer = Trainer(..., callbacks=[MonitorCallback(every=10)])

        monitor = MonitorCallback(every=10)  # keep a reference to read the results
        trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=[monitor])
        trainer.train()
        for v in monitor.verdicts:
            print(v.layer, v.text)
    """

    def _find(self, state: Any, kwargs: dict[str, Any]) -> None:
        if self.monitor is None:
            self._attach(kwargs.get("optimizer"), kwargs.get("model"), state.global_step)

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start()
        self._go_first()
        self._find(state, kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._find(state, kwargs)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._find(state, kwargs)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        if logs is None:
            return
        metrics = self._latest()
        if not metrics:
            return
        # Trainer.log appends a copy of the logs to log_history before this event.
        history = state.log_history
        if (
            history
            and history[-1].get("step") == state.global_step
            and logs.keys() <= history[-1].keys()
        ):
            history[-1].update(metrics)
        logs.update(metrics)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._finish(args.output_dir, state.is_world_process_zero,
                     "the Trainer's optimizer in the callbacks' optimizer argument")  # fmt: skip

    def _go_first(self) -> None:
        """Move this callback to the front of the Trainer's callback list, so that the
        loggers (put before the user's callbacks) get the keys it adds in ``on_log``.
        Callbacks are not given the Trainer: the list is found on the CallbackHandler that
        called this event. Moving an item backward in a list being iterated neither skips
        nor repeats any item of the iteration."""
        from transformers.trainer_callback import CallbackHandler

        frame = inspect.currentframe()
        try:
            for _ in range(4):
                frame = frame.f_back if frame is not None else None
                if frame is None:
                    return
                handler = frame.f_locals.get("self")
                if isinstance(handler, CallbackHandler):
                    callbacks = handler.callbacks
                    if any(c is self for c in callbacks) and callbacks[0] is not self:
                        callbacks.remove(self)
                        callbacks.insert(0, self)
                    return
        finally:
            del frame


# ------------------------------------------------------------------------------ AuditCallback


class _TrainerAudit(_AuditCore):
    """Audits the Trainer's optimizer when training starts (:func:`adamwkit.audit`): does
    it decay what you think? It prints the table and the findings once, writes them as
    JSON, and with ``strict=True`` stops the run before its first step on an error finding.

    Args:
        path: the JSON file to write (default ``<args.output_dir>/audit.json``; a folder
            that exists gets ``audit.json`` inside it). It holds ``report.to_dict()``:
            ``optimizer``, ``total_steps``, ``tensors``, ``findings``, ``notes``.
        strict: raise :class:`~adamwkit.integrations.transformers.AuditFailed` (a
            ``RuntimeError``) when a finding has severity ``"error"`` (a trainable tensor
            in no group, a tensor in two groups), after printing and writing the report.
        show: print the report (on the main process).

    The audit sees the torch optimizer the Trainer built (inside accelerate's
    ``AcceleratedOptimizer``), the model (its parameter names, the norms and biases
    :func:`adamwkit.param_groups` would leave out), the Trainer's lr scheduler (a copy is
    stepped for the lr of every step), the run's length (``state.max_steps``) and
    ``args.weight_decay`` when above 0 (matrices left in a group with weight_decay 0 are
    then reported). The Trainer creates its optimizer and scheduler in ``train()`` before
    ``on_train_begin``, where the audit runs; an optimizer made later is audited at the
    first ``on_step_begin``, still before the first step. Never found, a ``UserWarning``
    says so at the end.

    After ``on_train_begin``, ``report`` holds the :class:`~adamwkit.Audit` and ``saved``
    the file written (main process only).

    Example::

        import torch
        import transformers
        from adamwkit.integrations.transformers import AuditCallback

        config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50,
                                         n_positions=16)
        model = transformers.GPT2LMHeadModel(config)
        data = [{"input_ids": ids, "labels": ids}
                for ids in torch.randint(0, 50, (8, 8)).tolist()]
        args = transformers.TrainingArguments("out", max_steps=2, weight_decay=0.1,
                                              report_to=[], use_cpu=True)
        audit = AuditCallback(strict=True)  # AuditFailed on an error finding
        trainer = transformers.Trainer(model=model, args=args, train_dataset=data,
                                       callbacks=[audit])
        trainer.train()  # prints the audit before the first step; writes out/audit.json
        print(audit.report.codes())  # ['too-short']: 2 steps, far below 1 / (lr * wd)
    """

    def _find(self, args: Any, state: Any, kwargs: dict[str, Any]) -> None:
        optimizer = _torch_optimizer(kwargs.get("optimizer"))
        if optimizer is None:
            return
        scheduler = kwargs.get("lr_scheduler")
        wd = float(args.weight_decay or 0.0)
        self._run([optimizer], kwargs.get("model"), [] if scheduler is None else [scheduler],
                  state.max_steps, args.output_dir, state.is_world_process_zero,
                  weight_decay=wd if wd > 0 else None)  # fmt: skip

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._start()
        self._find(args, state, kwargs)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.report is None:
            self._find(args, state, kwargs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self._never_found("the Trainer's optimizer in the callbacks' optimizer argument")


def _trainer_callback(name: str) -> Any:
    try:
        import transformers
    except ImportError as err:
        raise MissingExtra(
            f"{name} needs transformers ({err}): pip install 'adamwkit[transformers]'"
        ) from err
    return transformers.TrainerCallback


def _monitor_callback() -> type:
    return callback_class(_TrainerMonitor, _trainer_callback("MonitorCallback"), __name__)


def _audit_callback() -> type:
    return audit_callback_class(_TrainerAudit, _trainer_callback("AuditCallback"), __name__)


_LAZY = {"MonitorCallback": _monitor_callback, "AuditCallback": _audit_callback}


def __getattr__(name: str) -> Any:
    # MonitorCallback and AuditCallback subclass transformers.TrainerCallback: built when
    # first asked for, so that importing this module needs no transformers.
    if name in _LAZY:
        cls = globals()[name] = _LAZY[name]()
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
