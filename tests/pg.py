"""A throwaway PostgreSQL server on loopback for the multi-worker tests.

PostgreSQL refuses to run as root, so under root the server runs as ``nobody``. Outside CI
the tests skip when PostgreSQL is not installed; in CI (``CI=true``) they fail instead.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def _bindir() -> Path | None:
    found = shutil.which("initdb") or shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: A role that must log in with a password (scram-sha-256), to test credentials; the
#: password holds '@', ':', '/', '#' and '?', which a URL typed as is must carry intact.
SECRET_ROLE = "secret_user"
SECRET_PASSWORD = "p@ss:w/0#rd?7x"


class Postgres:
    """A running throwaway server: its URL, and stop/start to make an outage."""

    def __init__(self, bindir: Path, base: Path, prefix: list[str], port: int) -> None:
        self.bindir, self.base, self.prefix, self.port = bindir, base, prefix, port
        self.data = base / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{port}/postgres"

    def _ctl(self, *args: str, check: bool = True) -> None:
        subprocess.run([*self.prefix, str(self.bindir / "pg_ctl"), "-D", str(self.data), *args],
                       check=check, capture_output=True, cwd=self.base, timeout=120)  # fmt: skip

    def start(self) -> None:
        options = f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl("-l", str(self.base / "log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        """Stop at once, as a crash or a pulled cable would (no clean shutdown)."""
        self._ctl("-m", "immediate", "-w", "stop", check=False)

    def secret_url(self, password: str | None = SECRET_PASSWORD) -> str:
        """The URL of the password role, with ``password`` as typed (no escaping)."""
        auth = SECRET_ROLE if password is None else f"{SECRET_ROLE}:{password}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/postgres"


@contextmanager
def postgres() -> Iterator[Postgres]:
    """Start a server (trust for ``postgres``, a password for :data:`SECRET_ROLE`)."""
    bindir = _bindir()
    if bindir is None:
        message = "PostgreSQL is not installed (initdb not found); .ci/run installs it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    base = Path(tempfile.mkdtemp(prefix="adamwkit-pg-", dir="/tmp"))
    base.chmod(0o755)
    prefix: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(base, "nobody", "nogroup")
        prefix = ["runuser", "-u", "nobody", "--"]
    data = base / "data"
    subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, capture_output=True, cwd=base,
                   timeout=120)  # fmt: skip
    hba = data / "pg_hba.conf"
    rule = f"host all {SECRET_ROLE} 127.0.0.1/32 scram-sha-256\n"
    subprocess.run([*prefix, "sh", "-c", f"printf '{rule}' | cat - {hba} > {hba}.new && "
                    f"mv {hba}.new {hba}"], check=True, capture_output=True)  # fmt: skip
    server = Postgres(bindir, base, prefix, _free_port())
    server.start()
    try:
        import psycopg

        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute(f"CREATE ROLE {SECRET_ROLE} LOGIN SUPERUSER PASSWORD '{SECRET_PASSWORD}'")
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """The URL of a throwaway server (see :func:`postgres`)."""
    with postgres() as server:
        yield server.url
