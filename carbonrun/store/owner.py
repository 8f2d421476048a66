"""Who is writing a run: host:pid:start-time, so a reused PID is never taken for a live writer.

Used by the stores (a `running` record whose owner is gone reads `incomplete`) and by the sweep's
state file (is the sweep that changed the power limits still alive?).
"""
from __future__ import annotations

import os
from typing import Optional


def _start_time(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return "?"


def owner_token(pid: Optional[int] = None) -> str:
    """host:pid:start-time of `pid` (this process by default)."""
    pid = os.getpid() if pid is None else pid
    return f"{os.uname().nodename}:{pid}:{_start_time(pid)}"


def owner_alive(owner: Optional[str]) -> bool:
    """Is the process named by an owner token still running? Another host's owner is trusted."""
    if not owner or owner.count(":") < 2:
        return False
    host, pid, _start = owner.rsplit(":", 2)
    if host != os.uname().nodename:
        return True  # cannot tell from here; trust the record
    return pid.isdigit() and owner_token(int(pid)) == owner
