"""The job's share: CPU time of its whole process tree against the machine's busy CPU time.

A process's `utime+stime+cutime+cstime` (in /proc/PID/stat) covers itself and every descendant it
has reaped. Summing that over the live tree therefore counts a child that started and exited between
two refreshes exactly once: its time moves from its own line into its parent's `cutime` when it is
reaped. Orphans reaped by carbonrun (a child subreaper) are added by the session from wait4's rusage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, FrozenSet, List, Optional, Tuple

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@dataclass(frozen=True)
class TreeSample:
    job_cpu_s: float  # cumulative CPU seconds of the job's tree (never decreases)
    busy_cpu_s: float  # cumulative busy CPU seconds of the whole machine
    rss_bytes: int  # resident memory of the live tree now
    pids: FrozenSet[int]


def read_busy_cpu_s(proc_root: str = "/proc") -> float:
    """Machine-wide busy CPU seconds: user+nice+system+irq+softirq (steal is not ours, idle isn't busy)."""
    with open(f"{proc_root}/stat", "rb") as f:
        fields = f.readline().split()
    user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in fields[1:8])
    return (user + nice + system + irq + softirq) / _CLK_TCK


def _parse_stat(data: bytes) -> Tuple[int, float, int]:
    """(ppid, cpu seconds incl. reaped children, rss bytes) from /proc/PID/stat."""
    rest = data[data.rindex(b")") + 2 :].split()
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return int(rest[1]), ticks / _CLK_TCK, int(rest[21]) * _PAGE


class ProcessTree:
    """Tracks one root PID and its descendants through /proc (root injectable for tests)."""

    def __init__(self, root_pid: int, proc_root: str = "/proc") -> None:
        self.root_pid = root_pid
        self.proc = proc_root
        self._children_files = os.path.exists(f"{proc_root}/{root_pid}/task/{root_pid}/children")
        self._job_cpu = 0.0
        self._reaped_extra = 0.0
        self.peak_rss = 0
        self.busy0 = read_busy_cpu_s(proc_root)

    def add_reaped(self, cpu_s: float) -> None:
        """CPU time of an orphan carbonrun reaped itself (it left the tree with its time)."""
        self._reaped_extra += cpu_s

    def finish(self, root_rusage_cpu_s: float) -> None:
        """The kernel's final word for the root and everything it reaped (from wait4)."""
        self._job_cpu = max(self._job_cpu, root_rusage_cpu_s + self._reaped_extra)

    def sample(self) -> TreeSample:
        total, rss, pids = 0.0, 0, set()
        for pid in self._walk():
            try:
                with open(f"{self.proc}/{pid}/stat", "rb") as f:
                    _, cpu, prss = _parse_stat(f.read())
            except (OSError, ValueError, IndexError):
                continue  # exited between listing and reading; its time is in its parent now
            total += cpu
            rss += prss
            pids.add(pid)
        self._job_cpu = max(self._job_cpu, total + self._reaped_extra)
        self.peak_rss = max(self.peak_rss, rss)
        return TreeSample(self._job_cpu, read_busy_cpu_s(self.proc) - self.busy0, rss, frozenset(pids))

    @property
    def job_cpu_s(self) -> float:
        return self._job_cpu

    def _walk(self) -> List[int]:
        if not self._children_files:
            return self._walk_by_scan()
        out, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(self._children(pid))
        return out

    def _children(self, pid: int) -> List[int]:
        """Children of every thread of pid (a child belongs to the thread that forked it)."""
        kids: List[int] = []
        try:
            tids = os.listdir(f"{self.proc}/{pid}/task")
        except OSError:
            return kids
        for tid in tids:
            try:
                with open(f"{self.proc}/{pid}/task/{tid}/children", "rb") as f:
                    kids.extend(int(x) for x in f.read().split())
            except OSError:
                pass
        return kids

    def _walk_by_scan(self) -> List[int]:
        """Fallback without CONFIG_PROC_CHILDREN: one pass over /proc, parent links."""
        parent: Dict[int, int] = {}
        for name in os.listdir(self.proc):
            if name.isdigit():
                try:
                    with open(f"{self.proc}/{name}/stat", "rb") as f:
                        parent[int(name)] = _parse_stat(f.read())[0]
                except (OSError, ValueError, IndexError):
                    pass
        kids: Dict[int, List[int]] = {}
        for pid, ppid in parent.items():
            kids.setdefault(ppid, []).append(pid)
        out, todo = [], [self.root_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(kids.get(pid, ()))
        return out


def cpu_threads() -> int:
    return os.cpu_count() or 1


def total_memory_bytes(proc_root: str = "/proc") -> Optional[int]:
    try:
        with open(f"{proc_root}/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
