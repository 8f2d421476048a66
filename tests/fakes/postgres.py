"""A throwaway PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory.

The server listens on a free loopback port and on a unix socket inside that directory, trusts local
connections, and is stopped at exit. PostgreSQL refuses to run as root, so as root every server
command runs as the `postgres` user (else `nobody`) through runuser or su, in a directory it owns.
One server serves the whole test session; each test gets its own database.
"""
from __future__ import annotations

import atexit
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import List, Optional

import pytest

SUPERUSER = "carbonrun"


def bindir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/N/bin with initdb (Debian), else the one on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb else None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_user() -> Optional[str]:
    """None when we are not root; else an unprivileged account that exists."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither a postgres nor a nobody user exists")


def _as(user: Optional[str], argv: List[str]) -> List[str]:
    if user is None:
        return argv
    if shutil.which("runuser"):
        return ["runuser", "-u", user, "--", *argv]
    return ["su", "-s", "/bin/sh", user, "-c", shlex.join(argv)]


class Server:
    """One running cluster; `create_db()` gives each test a fresh database URL."""

    def __init__(self, port: Optional[int] = None) -> None:
        bins = bindir()
        if bins is None:
            raise RuntimeError("no PostgreSQL server binaries (initdb) found: apt-get install postgresql")
        self.bin, self.user, self.port = bins, _run_user(), port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="carbonrun-pg-"))
        self.data, self.sock = self.root / "data", self.root / "sock"
        self.sock.mkdir()
        if self.user:
            pw = pwd.getpwnam(self.user)
            for p in (self.root, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        self.running = False
        try:
            self._sh("initdb", "-D", str(self.data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-sync")
            opts = f"-p {self.port} -h 127.0.0.1 -k {self.sock} -c fsync=off -c full_page_writes=off"
            self._sh("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-t", "60", "-o", opts,
                     "start")
            self.running = True
        except BaseException:
            self.stop()
            raise

    def _sh(self, tool: str, *args: str) -> None:
        p = subprocess.run(_as(self.user, [str(self.bin / tool), *args]), capture_output=True, timeout=120,
                           cwd=self.root)
        if p.returncode != 0:
            log = (self.root / "log").read_text(errors="replace")[-2000:] if (self.root / "log").exists() else ""
            raise RuntimeError(f"{tool} failed ({p.returncode}): {(p.stderr or p.stdout).decode(errors='replace')}"
                               f"{log}")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{db}"

    def create_db(self) -> str:
        import psycopg

        name = "t_" + uuid.uuid4().hex[:16]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        if self.running:
            try:
                self._sh("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


_session: dict = {}


def server() -> Server:
    """The session's server, started on first use; the test is skipped, saying why, if it cannot start."""
    if "error" in _session:
        pytest.skip(_session["error"])
    if "server" not in _session:
        try:
            import psycopg  # noqa: F401
        except ImportError:
            _session["error"] = "psycopg is not installed (pip install -e '.[test]')"
            pytest.skip(_session["error"])
        try:
            _session["server"] = Server()
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            _session["error"] = f"cannot start a PostgreSQL server: {e}"
            pytest.skip(_session["error"])
        atexit.register(_session["server"].stop)
    return _session["server"]
