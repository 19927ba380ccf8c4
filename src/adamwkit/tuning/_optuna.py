"""Optuna's private internals that ``tune`` relies on, in one place.

Optuna has no public API for these: failing a stale trial of another worker (the storage's
``set_trial_state_values``), reading a trial by its storage id, the system attributes that
``enqueue_trial`` (``fixed_params``) and ``RetryFailedTrialCallback`` (``failed_trial``)
write, and the heartbeat that ``study.optimize`` records for the trials it runs (``tune``
claims trials with ``study.ask`` and runs them itself, so it records its own). The range of
Optuna versions these were checked against is pinned in ``pyproject.toml``
(``optuna>=5.0,<5.1``: 4.4 lacks ``RetryHeartbeatStaleTrialCallback``); a new Optuna
release is checked here first.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "Heartbeat",
    "fail_running_trial",
    "fail_stale_trials",
    "fixed_params",
    "frozen_trial",
    "heartbeat_enabled",
    "is_retry_of_failed",
    "quiet_logs",
    "record_heartbeat",
]


#: Private methods of Optuna's ``RDBStorage`` that its public functions call and that
#: :class:`~.storage.RetryingStorage` must wrap with its retries as well:
#: ``optuna.storages.fail_stale_trials`` reads ``_get_stale_trial_ids``.
PRIVATE_STORAGE_CALLS = ("_get_stale_trial_ids",)


def _storage(study: optuna.Study) -> Any:
    return study._storage


def _trial_id(trial: optuna.Trial | FrozenTrial) -> int:
    return int(trial._trial_id)


def frozen_trial(study: optuna.Study, trial: optuna.Trial) -> FrozenTrial:
    """The stored state of a trial this process asked for."""
    return _storage(study).get_trial(_trial_id(trial))


def fixed_params(trial: FrozenTrial) -> dict[str, Any] | None:
    """The params ``enqueue_trial`` fixed for this trial, or ``None``."""
    return trial.system_attrs.get("fixed_params")


def is_retry_of_failed(trial: FrozenTrial) -> bool:
    """Whether the trial was created to retry a failed one (``RetryFailedTrialCallback``)."""
    return "failed_trial" in trial.system_attrs


def fail_running_trial(study: optuna.Study, trial: FrozenTrial, attrs: dict[str, Any]) -> bool:
    """Mark another worker's RUNNING trial failed, with the user attributes ``attrs`` (its
    reason); False if it had ended already (another worker got there first)."""
    storage = _storage(study)
    try:
        for key, value in attrs.items():
            storage.set_trial_user_attr(_trial_id(trial), key, value)
        return bool(storage.set_trial_state_values(_trial_id(trial), state=TrialState.FAIL))
    except optuna.exceptions.UpdateFinishedTrialError:
        return False


def heartbeat_enabled(study: optuna.Study) -> bool:
    """Whether the study's storage records heartbeats (a database with an interval set)."""
    from optuna.storages._heartbeat import is_heartbeat_enabled

    return is_heartbeat_enabled(_storage(study))  # False for a storage without BaseHeartbeat


def fail_stale_trials(study: optuna.Study) -> None:
    """Fail (and let the storage's callback retry) the trials whose heartbeat stopped."""
    from optuna.storages import fail_stale_trials as fail

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        fail(study)


def record_heartbeat(study: optuna.Study, trial: optuna.Trial) -> None:
    """Record one heartbeat of ``trial`` now (databases; nothing for a journal file).

    Called as soon as a trial is claimed: Optuna finds stale trials only among those with a
    heartbeat, so a worker that died before its first one would leave a trial running for
    good."""
    if heartbeat_enabled(study):
        _storage(study).record_heartbeat(_trial_id(trial))


class Heartbeat:
    """Records a trial's heartbeat in a database storage every interval, in a thread, as
    ``study.optimize`` does for the trials it runs (nothing for a journal file)."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if not heartbeat_enabled(study):
            return
        storage = _storage(study)
        trial_id = _trial_id(trial)
        interval = storage.get_heartbeat_interval() or 1
        storage.record_heartbeat(trial_id)

        def beat() -> None:
            while not self._stop.wait(interval):
                with contextlib.suppress(Exception):
                    storage.record_heartbeat(trial_id)

        self._thread = threading.Thread(target=beat, daemon=True, name="adamwkit-heartbeat")
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


@contextlib.contextmanager
def quiet_logs() -> Iterator[None]:
    """Keep Optuna's own log lines (warnings in its format: a trial failed, a lock is slow)
    out of adamwkit's output while ``tune`` runs; adamwkit says what matters in its own
    words. The ``optuna`` logger's level is put back afterwards (a caller's stricter level
    is kept throughout)."""
    logger = logging.getLogger("optuna")
    before = logger.level
    logger.setLevel(max(before, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(before)
