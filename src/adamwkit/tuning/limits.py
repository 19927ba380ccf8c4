"""A time limit on one run of an objective (``tune(trial_timeout=...)``, ``--trial-timeout``).

An objective runs in this process, so the limit interrupts it from the inside: when the
time is up, :class:`TrialTimeout` is raised in the thread that runs it, and the executor
fails that run with the reason. Two mechanisms, chosen per call:

- In the main thread on POSIX (``tune``'s own process and its worker processes), a
  ``SIGALRM`` timer (``signal.setitimer``). Python runs the handler between bytecodes, and
  a blocking system call (``time.sleep``, reading a socket, waiting on a lock) returns
  early with ``EINTR``, so both a busy Python loop and a wait are interrupted at once.
  The caller's ``SIGALRM`` handler is put back afterwards; when the caller has a timer of
  its own armed, the second mechanism is used instead, so that timer is left alone.
- Elsewhere (``tune`` called from another thread, Windows), a watchdog thread raises the
  exception in the run's thread with ``PyThreadState_SetAsyncExc``. It is seen at the next
  bytecode, so a busy Python loop stops at once, but a blocking call stops only when it
  returns.

Either way, a single call into native code that never returns to Python (one enormous
kernel, a deadlock inside a C library) is interrupted only when it returns, and an
objective that catches ``BaseException`` and carries on cannot be stopped from inside
the process. :class:`TrialTimeout` derives from ``BaseException``, like
``KeyboardInterrupt``, so an objective's ``except Exception`` does not swallow it.
"""

from __future__ import annotations

import contextlib
import ctypes
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["MAX_TRIAL_TIMEOUT_S", "TrialTimeout", "time_limit"]

#: The largest time limit accepted, in seconds (about three years; timers overflow later).
MAX_TRIAL_TIMEOUT_S = 1e8


class TrialTimeout(BaseException):
    """Raised inside a run that went past its time limit (see :func:`time_limit`)."""


@contextlib.contextmanager
def time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`TrialTimeout` in the calling thread once ``seconds`` have passed
    inside the ``with`` block (``None``: no limit)."""
    if seconds is None:
        yield
        return
    with _alarm(seconds) if _alarm_usable() else _watchdog(seconds):
        yield


def _alarm_usable() -> bool:
    """Whether a ``SIGALRM`` timer can serve: POSIX, the main thread, no timer armed."""
    if not hasattr(signal, "setitimer"):
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    return signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def _expired(signum: int, frame: FrameType | None) -> None:
    raise TrialTimeout


@contextlib.contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    previous = signal.signal(signal.SIGALRM, _expired)
    try:
        signal.setitimer(signal.ITIMER_REAL, seconds)
        yield
    finally:
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.0)
        finally:
            # A signal still pending now finds the previous handler; Python drops it
            # when that handler is the default or "ignore".
            signal.signal(signal.SIGALRM, previous)


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in the thread ``thread_id`` at its next bytecode (``None``: cancel)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), None if exc is None else ctypes.py_object(exc)
    )


@contextlib.contextmanager
def _watchdog(seconds: float) -> Iterator[None]:
    target = threading.get_ident()
    lock = threading.Lock()
    state = {"done": False, "fired": False}

    def fire() -> None:
        with lock:
            if not state["done"]:
                _set_async_exc(target, TrialTimeout)
                state["fired"] = True

    timer = threading.Timer(seconds, fire)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        with lock:
            state["done"] = True
            if state["fired"]:
                _set_async_exc(target, None)  # not delivered yet: it must not land later
