"""Workers on one machine: their index, their share of the CPU cores, and starting them.

- Each worker holds a *slot*, an exclusive lock on ``workers/slot-<i>.lock`` in the run
  folder (the kernel drops it when the process dies). Its index ``i`` picks its GPU
  (``i mod count`` on a machine with several) and the number of held slots is how many
  workers share this machine's cores, however they were started: by ``--workers N`` or as
  separate commands.
- Before each batch of claims a worker sets its torch threads to its share of the cores
  that other programs left free (:func:`adamwkit._device.cpu_share`), and says so when the
  number changes. PyTorch's intra-op threads wait for each other in every parallel region,
  so more threads than free cores stalls each region behind a descheduled thread.
- The ``workers/`` folder must be a writable folder: :func:`check_folder` says so in one
  line (:class:`FolderUnusable`) before any work, naming it and what to do.
- ``--workers N`` starts N-1 more processes (``multiprocessing`` with ``spawn``, which is
  safe with CUDA and with threads already running) that work on the same study.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import torch

from .._device import cpu_share

__all__ = ["FolderUnusable", "Slot", "busy_cores", "check_folder", "live_slots", "start_processes"]

MAX_SLOTS = 1024
FOLDER = "workers"


class FolderUnusable(OSError):
    """A folder of the run that adamwkit cannot use (not a folder, not writable); its
    message is one line naming the folder and what to do."""

    def __init__(self, folder: Path, err: OSError) -> None:
        if folder.exists() and not folder.is_dir():
            what = "is a file, not a folder: move it away (or remove it)"
        else:
            what = (
                f"cannot be written ({err.strerror or err}): make it a writable folder "
                "(or remove it)"
            )
        super().__init__(
            err.errno or errno.EIO,
            f"{folder} holds the workers' lock files but {what}, then run the same command again",
            str(folder),
        )

    def __str__(self) -> str:
        return str(self.strerror)


def check_folder(run_dir: Path) -> Path:
    """The run's ``workers/`` folder, made when missing; :class:`FolderUnusable` when it is
    not a folder this process can write in."""
    folder = run_dir / FOLDER
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _try_write(folder)
    except OSError as err:
        raise FolderUnusable(folder, err) from None
    return folder


def _try_write(folder: Path) -> None:
    """Create and remove a file in ``folder`` (``OSError`` when that is refused)."""
    with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
        pass


@contextlib.contextmanager
def usable(folder: Path) -> Iterator[None]:
    """Turn an ``OSError`` met while using ``folder`` into :class:`FolderUnusable`."""
    try:
        yield
    except FolderUnusable:
        raise
    except OSError as err:
        raise FolderUnusable(folder, err) from None


class Slot:
    """This process's worker index on this machine (the lowest free slot lock)."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir / FOLDER
        self._file: IO[str] | None = None
        with usable(self.dir):
            self._claim()

    def _claim(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        for i in range(MAX_SLOTS):
            f = open(self.dir / f"slot-{i}.lock", "a")  # held for life
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.close()
                continue
            self.index, self._file = i, f
            return
        raise RuntimeError(f"no free worker slot among {MAX_SLOTS} in {self.dir}")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def live_slots(run_dir: Path) -> int:
    """How many workers hold a slot in ``run_dir`` now."""
    count = 0
    for path in (run_dir / FOLDER).glob("slot-*.lock"):
        try:
            with open(path) as f:
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    count += 1
                else:
                    fcntl.flock(f, fcntl.LOCK_UN)
        except OSError:
            continue
    return count


def _cpu_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def busy_cores(seconds: float = 0.25) -> float:
    """Cores kept busy by other programs, measured over ``seconds`` (0 where unknown)."""
    before, own_before = _cpu_jiffies(), os.times()
    if before is None:
        return 0.0
    time.sleep(seconds)
    after, own_after = _cpu_jiffies(), os.times()
    assert after is not None
    busy, total = after[0] - before[0], after[1] - before[1]
    if total <= 0:
        return 0.0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    wall = own_after.elapsed - own_before.elapsed
    own = (own_after.user + own_after.system) - (own_before.user + own_before.system)
    share = busy / total * (cores or 1) - (own / wall if wall > 0 else 0.0)
    return max(0.0, share)


class ThreadShare:
    """Keeps torch's intra-op threads at this worker's share of the free cores."""

    def __init__(
        self,
        run_dir: Path,
        busy: float,
        say: Callable[[str], None],
        fixed: int | None = None,
    ) -> None:
        self.run_dir, self.busy, self.say, self.fixed = run_dir, busy, say, fixed
        self.before = torch.get_num_threads()
        self.current = 0

    def update(self) -> None:
        """Set this worker's threads (``fixed``, or its share) and say when they change."""
        if self.fixed is not None:
            if self.current != self.fixed:
                torch.set_num_threads(self.fixed)
                self.say(f"{self.fixed} torch thread{'s' if self.fixed > 1 else ''} for this "
                         "worker (threads)")  # fmt: skip
                self.current = self.fixed
            return
        workers = max(1, live_slots(self.run_dir))
        share = cpu_share(workers, self.busy)
        if share != self.current:
            torch.set_num_threads(share)
            cores = (
                len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
            )
            busy = f", {self.busy:.1f} busy with other programs" if self.busy >= 0.5 else ""
            self.say(
                f"{share} torch thread{'s' if share > 1 else ''} for this worker "
                f"({workers} worker{'s' if workers > 1 else ''} on this machine's {cores} "
                f"cores{busy})"
            )
            self.current = share

    def restore(self) -> None:
        torch.set_num_threads(self.before)


def start_processes(n: int, target: Callable[..., Any], args: tuple[Any, ...]) -> list[Any]:
    """Start ``n`` processes running ``target(*args)`` (``spawn``: a fresh interpreter)."""
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    procs = []
    for _ in range(n):
        p = ctx.Process(target=target, args=args, daemon=False)
        p.start()
        procs.append(p)
    return procs


def stop_processes(procs: list[Any], timeout: float = 10.0) -> None:
    """Terminate processes still running (an interrupted or failed main worker)."""
    for p in procs:
        if p.is_alive():
            with contextlib.suppress(Exception):
                p.terminate()
    for p in procs:
        p.join(timeout)
