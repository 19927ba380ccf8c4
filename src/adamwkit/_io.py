"""Atomic file writes (a crash leaves the old file or the new one, never half of either),
and reads that refuse what is not a regular file."""

from __future__ import annotations

import math
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO


class WriteFailed(OSError):
    """A file of adamwkit's could not be written (a full disk, a read-only file system):
    ``filename`` names it. The command line reports it in one line."""


def json_safe(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by ``None``, so ``json.dumps`` writes valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Mapping):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    return obj


def atomic_write(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as err:
        raise WriteFailed(err.errno, err.strerror or str(err), str(target)) from err
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise WriteFailed(err.errno, err.strerror or str(err), str(target)) from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISDIR, "a folder"))  # fmt: skip


class NotARegularFile(ValueError):
    """A path that is a FIFO, a device, a socket or a folder; ``kind`` says which."""

    def __init__(self, path: str | Path, kind: str) -> None:
        super().__init__(f"{path} is {kind}, not a regular file")
        self.kind = kind


def open_regular(path: str | Path) -> BinaryIO:
    """``path`` opened for reading in binary, or :class:`NotARegularFile`.

    A FIFO would block the read forever and ``/dev/zero`` would fill the memory, so the
    path is looked at first, then opened without blocking and checked again on the open
    descriptor (a file swapped in between is caught). ``OSError`` (missing, no
    permission) is left to the caller.
    """
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotARegularFile(path, _kind(mode))
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise NotARegularFile(path, _kind(mode))
    return os.fdopen(fd, "rb")


def _kind(mode: int) -> str:
    return next((what for test, what in _KINDS if test(mode)), "not a regular file")


def read_regular(path: str | Path, name: str) -> bytes:
    """The bytes of ``path`` (see :func:`open_regular`); anything wrong is a ``ValueError``
    naming the argument ``name``."""
    try:
        with open_regular(path) as f:
            return f.read()
    except NotARegularFile as err:
        raise ValueError(
            f"{name}={str(path)!r} is invalid: it is {err.kind}, not a regular file"
        ) from None
    except OSError as err:
        raise ValueError(f"{name}={str(path)!r} is invalid: {err.strerror or err}") from None
