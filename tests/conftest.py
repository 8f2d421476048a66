"""Shared fixtures: the real `carbonrun` CLI in a subprocess with an isolated home, and the stand-ins in
tests/fakes/ that need the session (the stub libnvidia-ml, a PostgreSQL server)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import pytest

from tests.fakes import postgres
from tests.fakes.http import Server, isolate
from tests.fakes.stubnvml import StubNvml, build, compiler

ROOT = Path(__file__).resolve().parents[1]


class CLI:
    """`carbonrun` in a subprocess with its own store, config and cache directories."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CARBONRUN_")}
        self.env.update(
            HOME=str(home), XDG_CONFIG_HOME=str(home / "config"), XDG_DATA_HOME=str(home / "data"),
            XDG_CACHE_HOME=str(home / "cache"), TMPDIR=str(home / "tmp"),
            CARBONRUN_HOME=str(home / "store"),
            CARBONRUN_RAPL_ROOT=str(home / "no-powercap"), PYTHONPATH=str(ROOT), NO_COLOR="1",
        )
        self.env.pop("LD_LIBRARY_PATH", None)
        (home / "tmp").mkdir(exist_ok=True)  # last-resort files land here, never in the shared /tmp

    def argv(self, *args: str) -> List[str]:
        return [sys.executable, "-m", "carbonrun", *args]

    def __call__(self, *args: str, input: Optional[bytes] = None, timeout: float = 120, env: Optional[dict] = None,
                 cwd: Optional[Path] = None) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args), input=input, capture_output=True, timeout=timeout,
                              env={**self.env, **(env or {})}, cwd=cwd or self.home)

    def record(self, ref: str = "last", env: Optional[dict] = None) -> dict:
        p = self("report", ref, "--format", "json", env=env)
        assert p.returncode == 0, p.stderr.decode()
        return json.loads(p.stdout)


@pytest.fixture
def cli(tmp_path: Path) -> CLI:
    (tmp_path / "no-powercap").mkdir()
    return CLI(tmp_path)


@pytest.fixture(scope="session")
def stubnvml(tmp_path_factory: pytest.TempPathFactory) -> StubNvml:
    """The stub libnvidia-ml.so.1 compiled for this session; skipped (saying why) only without a C compiler."""
    if compiler() is None:
        pytest.skip("no C compiler (gcc or cc) on PATH: cannot build the stub libnvidia-ml.so.1")
    return StubNvml(build(tmp_path_factory.mktemp("stubnvml")))


@pytest.fixture
def pg_url() -> str:
    """A fresh, empty database on the session's PostgreSQL server (skipped, saying why, without one)."""
    return postgres.server().create_db()


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A loopback JSON server standing in for a live intensity API (routes in tests/fakes/http.py)."""
    isolate(monkeypatch)
    s = Server()
    yield s
    s.close()
