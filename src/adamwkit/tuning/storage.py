"""Storage that survives faults: a database through an outage, a journal file on a full disk.

- :class:`RetryingStorage` is Optuna's ``RDBStorage`` whose calls, when the database is
  unreachable (a restart, a network drop, a failover), are retried with exponential backoff
  for up to ``retry_s`` seconds (default :data:`STORAGE_RETRY_S`). A fold that finishes
  during an outage waits in memory, in the call that records it, until the database is
  back. Past the bound, :class:`StorageUnavailable` says so in one line that names the
  storage without its password. Errors that are not an outage (a constraint, bad data)
  are not retried.
- :class:`_JournalFile` is Optuna's ``JournalFileBackend`` whose failed appends (a full
  disk, a file-size limit, a read-only file system) raise
  :class:`adamwkit._io.WriteFailed` naming the file. A record torn by such a failure is
  dropped by :func:`adamwkit.tuning.journal.repair_journal` when the study is next opened.

Optuna's storage classes are public; which of their methods to wrap is read from
``BaseStorage`` (checked against ``optuna>=5.0,<5.1``, pinned in ``pyproject.toml``).
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from optuna.storages import BaseStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend

from .._io import WriteFailed
from ._optuna import PRIVATE_STORAGE_CALLS

__all__ = ["STORAGE_RETRY_S", "RetryingStorage", "StorageUnavailable", "is_outage"]

#: How long storage calls are retried through a database outage, in seconds.
STORAGE_RETRY_S = 120.0
_FIRST_WAIT_S = 0.5
_MAX_WAIT_S = 10.0
_log = logging.getLogger("adamwkit")


class StorageUnavailable(RuntimeError):
    """The study's database stayed unreachable longer than the retry bound."""


def is_outage(err: BaseException) -> bool:
    """Whether ``err`` (or what caused it) says the database could not be reached, rather
    than that it refused the data."""
    from sqlalchemy import exc

    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, (exc.OperationalError, exc.InterfaceError, exc.DisconnectionError)):
            return True
        if isinstance(e, exc.DBAPIError) and e.connection_invalidated:
            return True
        if (
            type(e).__name__ in ("OperationalError", "InterfaceError")
            and "psycopg" in type(e).__module__
        ):
            return True
        e = e.__cause__ or e.__context__
    return False


_local = threading.local()


def _retrying(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def call(self: RetryingStorage, *args: Any, **kwargs: Any) -> Any:
        if getattr(_local, "inside", False):  # one retry loop per outer call
            return method(self, *args, **kwargs)
        _local.inside = True
        try:
            return self._with_retry(name, lambda: method(self, *args, **kwargs))
        finally:
            _local.inside = False

    return call


class RetryingStorage(RDBStorage):
    """``optuna.storages.RDBStorage`` that rides out database outages.

    ``shown`` is the URL as messages may print it (its password redacted); ``retry_s`` the
    bound on retrying one call. The heartbeat is not retried: its thread tries again at the
    next beat.
    """

    def __init__(self, url: Any, *, shown: str, retry_s: float = STORAGE_RETRY_S, **kw: Any):
        self._shown = shown
        self._retry_s = float(retry_s)
        super().__init__(url, **kw)

    def _with_retry(self, name: str, fn: Callable[[], Any]) -> Any:
        deadline = time.monotonic() + self._retry_s
        wait = _FIRST_WAIT_S
        warned = False
        while True:
            try:
                return fn()
            except Exception as err:
                if not is_outage(err):
                    raise
                left = deadline - time.monotonic()
                if left <= 0:
                    raise StorageUnavailable(
                        f"storage {self._shown} has been unreachable for "
                        f"{self._retry_s:g} s ({_cause(err)}): results not yet recorded are "
                        "lost; run the same command again when it is back to resume"
                    ) from None
                if not warned:
                    _log.warning(
                        "storage %s is unreachable (%s); retrying for up to %g s",
                        self._shown,
                        _cause(err),
                        self._retry_s,
                    )
                    warned = True
                time.sleep(min(wait, left))
                wait = min(wait * 2, _MAX_WAIT_S)


def _cause(err: BaseException) -> str:
    """The first line of the deepest cause (the driver's own words), without URLs."""
    e: BaseException = err
    while e.__cause__ is not None:
        e = e.__cause__
    orig = getattr(e, "orig", None) or e
    lines = str(orig).strip().splitlines()
    text = lines[0] if lines else type(orig).__name__
    return text.split(" (Background on this error")[0][:200]


_SKIP = {"record_heartbeat", "remove_session", "get_heartbeat_interval"}
for _name in sorted(set(dir(BaseStorage)) | set(PRIVATE_STORAGE_CALLS)):
    if _name.startswith("__") or _name in _SKIP:
        continue
    _attr = getattr(RDBStorage, _name, None)
    if callable(_attr) and not isinstance(_attr, type):
        setattr(RetryingStorage, _name, _retrying(_name, _attr))


class _JournalFile(JournalFileBackend):
    """``JournalFileBackend`` whose failed appends name the journal file."""

    def __init__(self, file_path: str, lock_obj: Any = None) -> None:
        self.path = file_path
        super().__init__(file_path, lock_obj=lock_obj)

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        try:
            super().append_logs(logs)
        except OSError as err:
            raise WriteFailed(err.errno, err.strerror or str(err), self.path) from err
