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

The repair holds the journal's own lock, so no worker appends while the file is checked,
copied and truncated.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

__all__ = ["JournalDamaged", "JournalRepaired", "Repair", "repair_journal"]

_STAMP = "%Y%m%dT%H%M%SZ"


class JournalDamaged(ValueError):
    """The journal is damaged before its last line, so it cannot be repaired safely."""


class JournalRepaired(UserWarning):
    """A journal's torn last record was backed up and dropped (:meth:`Repair.message`)."""


@dataclass(frozen=True)
class Repair:
    """What :func:`repair_journal` did to a journal whose last record was torn.

    Attributes:
        path: The journal, now ending at its last whole record.
        backup: The byte-for-byte copy of the journal as it was before the repair.
        kept: How many records the journal keeps.
        dropped_bytes: How many bytes were cut off its end.
    """

    path: Path
    backup: Path
    kept: int
    dropped_bytes: int

    @property
    def message(self) -> str:
        """One line saying what was found and done, for the user."""
        unit = "byte" if self.dropped_bytes == 1 else "bytes"
        return (
            f"{self.path.name}: its last record was torn ({self.dropped_bytes} {unit}, "
            f"from a crash or a full disk); backed up to {self.backup} and dropped it: "
            "the folds it recorded will train again"
        )


@dataclass(frozen=True)
class _Scan:
    lines: int  # lines in the file, the last one counted even without its newline
    records: int  # whole records before the first damaged line
    bad_line: int | None  # 1-based number of the first damaged line
    good_end: int  # byte offset just past the last whole record before the damage
    size: int


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
        JournalDamaged: A line other than the last is not a whole record; the file is
            left as it is.
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
        if scan.bad_line < scan.lines:
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
            path=path, backup=backup, kept=scan.records, dropped_bytes=scan.size - scan.good_end
        )


@contextmanager
def _journal_lock(path: Path) -> Iterator[None]:
    """Hold the lock Optuna's journal backend takes for each append.

    ``JournalFileOpenLock`` creates ``<journal>.lock`` exclusively and waits (backing off
    up to a second between tries) while another process holds it. A lock file left behind
    by a dead process is removed once it has not changed for its grace period (Optuna's
    default, 30 s, the same one the study's own lock uses), so the wait is bounded.
    """
    from optuna.storages.journal import JournalFileOpenLock

    lock = JournalFileOpenLock(str(path))
    lock.acquire()
    try:
        yield
    finally:
        lock.release()


def _is_record(line: bytes) -> bool:
    # What JournalFileBackend.read_logs accepts: a newline at the end, then json.loads on
    # the bytes (any ValueError: invalid JSON or undecodable bytes); and JournalStorage
    # needs an object.
    if not line.endswith(b"\n"):
        return False
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


def _scan(path: Path) -> _Scan:
    """Read the journal line by line (one line in memory at a time)."""
    lines = records = good_end = offset = 0
    bad_line: int | None = None
    with open(path, "rb") as f:
        for line in f:
            lines += 1
            if bad_line is None:
                if _is_record(line):
                    records += 1
                    good_end = offset + len(line)
                else:
                    bad_line = lines
            offset += len(line)
    return _Scan(lines=lines, records=records, bad_line=bad_line, good_end=good_end, size=offset)


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
