"""Repairing a study journal whose last record was torn by a crash or a full disk.

The journal (``study.journal``, Optuna's ``JournalFileBackend``) holds one operation per
line: a JSON object, compact, ending in ``\\n``. Optuna appends each operation under the
journal's lock file (``JournalFileOpenLock``, ``<journal>.lock``) with a single write and
an fsync, so a crash or a full disk can only tear the record being appended, which is the
last line.

How Optuna 5.0 reads the file (``JournalFileBackend.read_logs``): it goes line by line and
keeps the first line that lacks its newline or is not valid JSON as a pending error, which
it raises only when another line follows. So a torn last line is skipped silently and the
study opens; but the next append is written onto the end of the torn line (the two glue
into one invalid line, and that operation is lost without a word), and once anything is
appended after that, every read of the journal fails (``Expecting ',' delimiter: ...``).

The policy of :func:`repair_journal`, run before the journal is opened:

- No file, an empty file, or every line a whole record (a JSON object ending in a
  newline): nothing to do, the file is not touched.
- Only the last line is damaged (torn, missing its newline, or a torn record that a rerun
  glued a whole record onto): that line is the end of the journal that no reader ever
  applied. The file is copied byte for byte to ``<journal>.damaged-<UTC time>`` beside it,
  then truncated to the end of the last whole record. The operations dropped were never
  part of any worker's view of the study; the folds they recorded train again.
- A damaged line with more lines after it: the records that follow were written by
  workers that did not see the damaged one, so no truncation is safe.
  :class:`JournalDamaged` is raised and the file is left as it is.

A *whole record* is what Optuna can apply: a JSON object on one line, ending in a newline,
with an ``op_code`` Optuna knows and the fields that operation needs, of the right types
(:data:`_OPS`, checked against ``optuna>=5.0,<5.1``). A complete line of valid JSON that is
not such a record (``echo '{}' >> study.journal``) would stop every read with a
``KeyError``: it counts as damage like a torn line. So does a tail of several damaged
lines with no whole record after the first of them (no reader ever applied any of them).

The repair holds the journal's own lock, so no worker appends while the file is checked,
copied and truncated.

The lock is a file, ``<journal>.lock``, that exists while it is held (Optuna's
``JournalFileOpenLock``): a process killed while appending leaves it behind, and Optuna
would wait 30 s and log three lines of its own before breaking it. An append holds the
lock for milliseconds, so :func:`clear_stale_lock` removes one unchanged for
:data:`STALE_LOCK_S` at once (one warning), and refuses a lock that is not a file (a
folder of that name) with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

__all__ = [
    "STALE_LOCK_S",
    "JournalDamaged",
    "JournalLockUnusable",
    "JournalRepaired",
    "Repair",
    "StaleLockRemoved",
    "clear_stale_lock",
    "journal_lock",
    "repair_journal",
]

_STAMP = "%Y%m%dT%H%M%SZ"

#: A journal lock unchanged for this long is stale (an append holds it for milliseconds).
STALE_LOCK_S = 10


class JournalDamaged(ValueError):
    """The journal is damaged before its last line, so it cannot be repaired safely."""


class JournalRepaired(UserWarning):
    """A journal's torn last record was backed up and dropped (:meth:`Repair.message`)."""


class StaleLockRemoved(UserWarning):
    """A journal lock left behind by a stopped process was removed."""


class JournalLockUnusable(RuntimeError):
    """The journal's lock path is taken by something that is not a lock file."""


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_journal` did to a journal whose last record was torn.

    Attributes:
        path: The journal, now ending at its last whole record.
        backup: The byte-for-byte copy of the journal as it was before the repair.
        kept: How many records the journal keeps.
        dropped_bytes: How many bytes were cut off its end.
        dropped_lines: How many lines were cut off (the last one counted without its
            newline).
        foreign: Whether the first line dropped was whole JSON but not an Optuna record
            (written by another program), rather than torn.
    """

    path: Path
    backup: Path
    kept: int
    dropped_bytes: int
    dropped_lines: int = 1
    foreign: bool = False

    @property
    def message(self) -> str:
        """One line saying what was found and done, for the user."""
        unit = "byte" if self.dropped_bytes == 1 else "bytes"
        size = f"{self.dropped_bytes} {unit}"
        done = f"backed up to {self.backup} and dropped"
        if self.dropped_lines > 1:
            return (
                f"{self.path.name}: its last {self.dropped_lines} lines are not whole Optuna "
                f"records ({size}: a crash, a full disk or another program); {done} them: "
                "the folds they recorded will train again"
            )
        if self.foreign:
            return (
                f"{self.path.name}: its last line is not an Optuna journal record ({size} "
                f"written by something else); {done} it"
            )
        return (
            f"{self.path.name}: its last record was torn ({size}, from a crash or a full "
            f"disk); {done} it: the folds it recorded will train again"
        )


@dataclass(frozen=True)
class _Scan:
    lines: int  # lines in the file, the last one counted even without its newline
    records: int  # whole records before the first damaged line
    bad_line: int | None  # 1-based number of the first damaged line
    good_end: int  # byte offset just past the last whole record before the damage
    size: int
    foreign: bool = False  # the first damaged line is whole JSON, not an Optuna record
    record_after: bool = False  # a whole record follows the first damaged line


def repair_journal(path: Path, *, now: datetime | None = None) -> Repair | None:
    """Make a journal whose last record was torn readable again, before it is opened.

    Args:
        path: The journal file (``study.journal``).
        now: The time stamped on the backup's name (default: the current time), in UTC.

    Returns:
        ``None`` when there is no file or every line is a whole record (the file is not
        touched); else a :class:`Repair` once the journal is backed up and truncated to
        its last whole record.

    Raises:
        JournalDamaged: A line that is not a whole record has a whole record after it;
            the file is left as it is.
        OSError: The backup could not be written (a full disk, say); the journal is left
            as it is and no partial backup remains.
    """
    path = Path(path)
    if not path.exists():
        return None
    with _journal_lock(path):
        scan = _scan(path)
        if scan.bad_line is None:
            return None
        if scan.record_after:
            raise JournalDamaged(
                f"journal={path} is damaged at line {scan.bad_line} of {scan.lines} "
                "(not a whole record): restore it from a backup, or move it away to start "
                "the study again"
            )
        backup = _backup(path, now or datetime.now(timezone.utc))
        with open(path, "r+b") as f:
            f.truncate(scan.good_end)
            f.flush()
            os.fsync(f.fileno())
        return Repair(
            path=path,
            backup=backup,
            kept=scan.records,
            dropped_bytes=scan.size - scan.good_end,
            dropped_lines=scan.lines - scan.bad_line + 1,
            foreign=scan.foreign,
        )


def journal_lock(path: Path) -> Any:
    """The lock Optuna's journal backend takes for each append (``JournalFileOpenLock``,
    ``<journal>.lock``), breaking a lock left behind after :data:`STALE_LOCK_S` unchanged
    (Optuna's default waits 30 s)."""
    from optuna.storages.journal import JournalFileOpenLock

    return JournalFileOpenLock(str(path), grace_period=STALE_LOCK_S)


@contextmanager
def _journal_lock(path: Path) -> Iterator[None]:
    """Hold the journal's lock (:func:`journal_lock`) while the file is checked and
    repaired; another process holding it is waited for."""
    lock = journal_lock(path)
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def clear_stale_lock(
    path: Path, *, stale_s: float = STALE_LOCK_S, clock: Callable[[], float] = time.time
) -> str | None:
    """Remove the journal's lock file when a stopped process left it behind.

    A lock held by a live process is released within milliseconds: this waits while the
    lock file is younger than ``stale_s`` (by its modification time) and returns once it
    is gone. One unchanged for ``stale_s`` is removed (renamed away first, as Optuna
    releases its locks, so two processes cannot both remove a fresh one).

    Returns:
        ``None`` when there was no stale lock, else one line saying what was removed.

    Raises:
        JournalLockUnusable: ``<journal>.lock`` is a folder (or anything but a file).
    """
    lock = Path(f"{path}.lock")
    while True:
        try:
            info = os.lstat(lock)
        except FileNotFoundError:
            return None
        if not (stat.S_ISREG(info.st_mode) or stat.S_ISLNK(info.st_mode)):
            raise JournalLockUnusable(
                f"{lock} is in the way of the journal's lock file (it is "
                f"{'a folder' if stat.S_ISDIR(info.st_mode) else 'not a file'}): move it "
                "away (or remove it), then run the same command again"
            )
        age = clock() - info.st_mtime
        if age >= stale_s:
            break
        time.sleep(min(0.05, stale_s - age))
    try:
        os.rename(lock, f"{lock}.stale-{uuid.uuid4().hex}")
    except FileNotFoundError:
        return None  # released (or broken by another process) meanwhile
    for left in lock.parent.glob(f"{lock.name}.stale-*"):
        left.unlink(missing_ok=True)
    return (
        f"{lock.name}: a lock left behind by a stopped process (unchanged for "
        f"{_duration(age)}); removed it"
    )


def _duration(seconds: float) -> str:
    """``12 s``, ``5 min``, ``3 h``: how long, as people say it."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"


def _int(v: Any) -> bool:
    return type(v) is int


def _text(v: Any) -> bool:
    return isinstance(v, str)


def _number(v: Any) -> bool:
    return type(v) in (int, float)


def _map(v: Any) -> bool:
    return isinstance(v, dict)


def _one_attr(v: Any) -> bool:
    return isinstance(v, dict) and len(v) == 1


def _list(v: Any) -> bool:
    return isinstance(v, list)


def _text_or_none(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _list_or_none(v: Any) -> bool:
    return v is None or isinstance(v, list)


# The fields each Optuna journal operation needs (optuna>=5.0,<5.1,
# JournalStorageReplayResult), and what each must be to be applied without an error.
_OPS: dict[int, dict[str, Callable[[Any], bool]]] = {
    0: {"study_name": _text, "directions": _list},  # CREATE_STUDY
    1: {"study_id": _int},  # DELETE_STUDY
    2: {"study_id": _int, "user_attr": _one_attr},  # SET_STUDY_USER_ATTR
    3: {"study_id": _int, "system_attr": _one_attr},  # SET_STUDY_SYSTEM_ATTR
    4: {"study_id": _int, "datetime_start": _text_or_none},  # CREATE_TRIAL
    5: {  # SET_TRIAL_PARAM
        "trial_id": _int,
        "param_name": _text,
        "param_value_internal": _number,
        "distribution": _text,
    },
    6: {"trial_id": _int, "state": _int, "values": _list_or_none},  # SET_TRIAL_STATE_VALUES
    7: {"trial_id": _int, "step": _int, "intermediate_value": _number},  # ..._INTERMEDIATE_VALUE
    8: {"trial_id": _int, "user_attr": _one_attr},  # SET_TRIAL_USER_ATTR
    9: {"trial_id": _int, "system_attr": _one_attr},  # SET_TRIAL_SYSTEM_ATTR
    10: {},  # DISCARD_TRIALS (skipped by Optuna)
}
# Fields an operation may leave out, checked when present.
_OPTIONAL: dict[int, dict[str, Callable[[Any], bool]]] = {
    4: {
        "distributions": _map,
        "params": _map,
        "user_attrs": _map,
        "system_attrs": _map,
        "intermediate_values": _map,
        "datetime_complete": _text_or_none,
    },
}


def _is_op(obj: Any) -> bool:
    """Whether a JSON value is an Optuna journal operation Optuna can apply."""
    if not isinstance(obj, dict) or not isinstance(obj.get("worker_id"), str):
        return False
    op = obj.get("op_code")
    if not _int(op) or op not in _OPS:
        return False
    needed = all(key in obj and ok(obj[key]) for key, ok in _OPS[op].items())
    optional = _OPTIONAL.get(op, {})
    return needed and all(ok(obj[key]) for key, ok in optional.items() if key in obj)


def _parse(line: bytes) -> tuple[bool, bool]:
    """``(whole, json)``: whether the line is a whole record, and whether it is at least
    one complete line of JSON (a foreign record, when not whole)."""
    # What JournalFileBackend.read_logs accepts: a newline at the end, then json.loads on
    # the bytes (any ValueError: invalid JSON or undecodable bytes); then what
    # JournalStorage needs to apply it.
    if not line.endswith(b"\n"):
        return False, False
    try:
        obj = json.loads(line)
    except ValueError:
        return False, False
    return _is_op(obj), True


def _scan(path: Path) -> _Scan:
    """Read the journal line by line (one line in memory at a time)."""
    lines = records = good_end = offset = 0
    bad_line: int | None = None
    foreign = record_after = False
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            whole, parsed = _parse(line)
            if bad_line is None:
                if whole:
                    records += 1
                    good_end = offset + len(line)
                else:
                    bad_line, foreign = lines, parsed
            elif whole:
                record_after = True
            offset += len(line)
    return _Scan(lines=lines, records=records, bad_line=bad_line, good_end=good_end,
                 size=offset, foreign=foreign, record_after=record_after)  # fmt: skip


def _backup(path: Path, now: datetime) -> Path:
    """Copy the journal to a new ``<name>.damaged-<UTC time>[-n]`` beside it, fsynced."""
    base = f"{path.name}.damaged-{now.astimezone(timezone.utc).strftime(_STAMP)}"
    n = 0
    while True:
        backup = path.with_name(base if n == 0 else f"{base}-{n}")
        try:
            dst = open(backup, "xb")  # never overwrites an earlier backup
        except FileExistsError:
            n += 1
            continue
        break
    try:
        with dst, open(path, "rb") as src:
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        _fsync_dir(path.parent)
    except OSError as err:
        backup.unlink(missing_ok=True)
        raise OSError(
            err.errno,
            f"journal={path} has a torn last record, but backing it up to {backup} failed "
            f"({err.strerror or err}): free some disk space and run again",
        ) from err
    return backup


def _fsync_dir(folder: Path) -> None:
    """Make a new file's name durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
