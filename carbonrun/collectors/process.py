"""The job's share: CPU time of its whole process tree against the machine's busy CPU time.

A process's `utime+stime+cutime+cstime` (in /proc/PID/stat) covers itself and every descendant it
has reaped. Summing that over the live tree therefore counts a child that started and exited between
two refreshes exactly once: its time moves from its own line into its parent's `cutime` when it is
reaped. Orphans reaped by carbonrun (a child subreaper) are added by the session from wait4's rusage.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, FrozenSet, List, NamedTuple, Optional, Tuple

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


class TreeSample(NamedTuple):
    job_cpu_s: float  # cumulative CPU seconds of the job's tree (never decreases)
    busy_cpu_s: float  # cumulative busy CPU seconds of the whole machine
    rss_bytes: int  # resident memory of the live tree now
    pids: FrozenSet[int]


class BusyClock:
    """Machine-wide busy CPU seconds (user+nice+system+irq+softirq; steal is not ours, idle isn't
    busy) from /proc/stat, kept open and re-read with pread: it is read on every tick."""

    def __init__(self, proc_root: str = "/proc") -> None:
        self._fd = os.open(f"{proc_root}/stat", os.O_RDONLY)

    def read(self) -> float:
        line = os.pread(self._fd, 256, 0).split(b"\n", 1)[0].split()
        user, nice, system, _idle, _iowait, irq, softirq = (int(x) for x in line[1:8])
        return (user + nice + system + irq + softirq) / _CLK_TCK

    def close(self) -> None:
        os.close(self._fd)


class JobCgroup:
    """A cgroup v2 of the job's own: the whole tree's CPU time in one read, however many processes.

    As `systemd-run --scope` does, the job gets a cgroup with no controllers and so no limits: the
    only thing the command can observe is the path in /proc/self/cgroup. It is made only for a tree
    big enough for the /proc walk to cost (ProcessTree's `cgroup_from`): the first move into a
    cgroup waits on the kernel (about 10 ms on a VM), which a short job should not pay. Where
    cgroup v2 is not mounted or not writable (most non-root users, read-only containers), `create`
    returns None and the /proc walk serves alone. CARBONRUN_CGROUP=off turns it off.
    """

    def __init__(self, path: str, home: str) -> None:
        self.path, self.home = path, home
        self._fd = os.open(f"{path}/cpu.stat", os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def create(cls, proc_root: str = "/proc") -> Optional["JobCgroup"]:
        if os.environ.get("CARBONRUN_CGROUP", "").lower() in ("off", "0", "no"):
            return None
        try:
            mount = _cgroup2_mount(proc_root)
            with open(f"{proc_root}/self/cgroup", "rb") as f:
                own = next(line[3:].strip().decode() for line in f if line.startswith(b"0::"))
            home = mount + own.rstrip("/")
            _remove_stale(home)
            path = f"{home}/carbonrun-{os.getpid()}"
            os.mkdir(path, 0o755)
        except (OSError, StopIteration, UnicodeDecodeError):
            return None
        try:
            return cls(path, home)
        except OSError:
            _rmdir(path)
            return None

    def adopt(self, pids: Iterable[int]) -> bool:
        """Move these processes in (their children are born here from then on); False if refused."""
        moved = [_move(pid, self.path) for pid in pids]
        return any(moved)

    def cpu_s(self) -> float:
        """CPU seconds of every process since it came in, exited ones included."""
        return int(os.pread(self._fd, 64, 0).split(None, 2)[1]) / 1e6

    def pids(self) -> List[int]:
        try:
            with open(f"{self.path}/cgroup.procs", "rb") as f:
                return [int(x) for x in f.read().split()]
        except (OSError, ValueError):
            return []

    def close(self) -> None:
        """Hand any process still here (a daemon the job left) back home, then remove the cgroup."""
        os.close(self._fd)
        for pid in self.pids():
            _move(pid, self.home)
        _rmdir(self.path)


def _cgroup2_mount(proc_root: str) -> str:
    with open(f"{proc_root}/self/mountinfo", "rb") as f:
        for line in f:
            left, _, right = line.partition(b" - ")
            if right.split(b" ", 1)[0] == b"cgroup2":
                return left.split()[4].decode()
    raise OSError("no cgroup2 mount")


def _move(pid: int, path: str) -> bool:
    try:
        fd = os.open(f"{path}/cgroup.procs", os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, str(pid).encode())
        finally:
            os.close(fd)
        return True
    except OSError:
        return False


def _remove_stale(home: str) -> None:
    """Remove the empty job cgroups of carbonruns that died without closing theirs (SIGKILL)."""
    for name in os.listdir(home):
        if name.startswith("carbonrun-") and name[10:].isdigit():
            try:
                os.kill(int(name[10:]), 0)
            except ProcessLookupError:
                _rmdir(f"{home}/{name}")  # fails, and stays, while a process of that job lives on
            except OSError:
                pass


def _rmdir(path: str) -> None:
    try:
        os.rmdir(path)
    except OSError:
        pass


def _parse_stat(data: bytes) -> Tuple[int, float, int, int]:
    """(ppid, cpu seconds incl. reaped children, rss bytes, threads) from /proc/PID/stat."""
    rest = data[data.rindex(b")") + 2 :].split()
    ticks = int(rest[11]) + int(rest[12]) + int(rest[13]) + int(rest[14])
    return int(rest[1]), ticks / _CLK_TCK, int(rest[21]) * _PAGE, int(rest[17])


class ProcessTree:
    """Tracks one root PID and its descendants through /proc (root injectable for tests).

    Each known process's stat file stays open and is re-read with pread (a dead process's read
    fails, and its time is already in its parent's cutime). New children are looked for every
    `discover_every` samples: a child that lives less than that is still counted, through its
    parent's cutime once reaped, and a longer-lived one is found with all its time so far.

    With `use_cgroup`, a tree that reaches `cgroup_from` processes moves into a JobCgroup: from then
    on its CPU time is one read of cpu.stat (added to what the walk had counted), so the cost stays
    flat however large the tree grows; RSS and PIDs are then gathered every `discover_every` samples.
    """

    def __init__(self, root_pid: int, proc_root: str = "/proc", discover_every: int = 5,
                 orphans_of: Optional[int] = None, use_cgroup: bool = False, cgroup_from: int = 16) -> None:
        self.root_pid = root_pid
        self.cgroup: Optional[JobCgroup] = None  # once the tree moved into one
        self._cgroup_from = cgroup_from if use_cgroup else 0
        self._cpu_before_cgroup = 0.0
        self.orphans_of = orphans_of  # the subreaper (carbonrun): its other children are the job's orphans
        self.proc = proc_root
        self._children_files = os.path.exists(f"{proc_root}/{root_pid}/task/{root_pid}/children")
        self._job_cpu = 0.0
        self._reaped_extra = 0.0
        self.peak_rss = 0
        self._busy = BusyClock(proc_root)
        self.busy0 = self._busy.read()
        self._fds: Dict[int, int] = {}
        self._threads: Dict[int, int] = {}
        self._every = max(1, discover_every)
        self._count = 0
        self._rss, self._pids = 0, frozenset((root_pid,))
        self._statm: Dict[int, int] = {}
        self._closed = False

    def add_reaped(self, cpu_s: float) -> None:
        """CPU time of an orphan carbonrun reaped itself (it left the tree with its time)."""
        self._reaped_extra += cpu_s

    def finish(self, root_rusage_cpu_s: float) -> None:
        """The kernel's final word for the root and everything it reaped (from wait4)."""
        self._job_cpu = max(self._job_cpu, root_rusage_cpu_s + self._reaped_extra)

    def sample(self) -> TreeSample:
        if self.cgroup is not None:
            return self._sample_cgroup()
        if self._count % self._every == 0:
            self._discover()
        self._count += 1
        total, rss = 0.0, 0
        for pid, fd in list(self._fds.items()):
            try:
                _, cpu, prss, threads = _parse_stat(os.pread(fd, 1024, 0))
            except (OSError, ValueError, IndexError):
                self._forget(pid)  # exited: its time is in its parent's cutime now
                continue
            total += cpu
            rss += prss
            self._threads[pid] = threads
        self._job_cpu = max(self._job_cpu, total + self._reaped_extra)
        self.peak_rss = max(self.peak_rss, rss)
        self._rss, self._pids = rss, frozenset(self._fds)
        if self._cgroup_from and len(self._fds) >= self._cgroup_from:
            self._move_to_cgroup()
        return TreeSample(self._job_cpu, self._busy.read() - self.busy0, rss, self._pids)

    def _move_to_cgroup(self) -> None:
        """Move the tree into a job cgroup (once); its CPU so far stays counted from the walk."""
        self._cgroup_from = 0  # one try, whatever happens
        cg = JobCgroup.create(self.proc)
        if cg is None:
            return
        if not cg.adopt(self._walk()):
            cg.close()
            return
        cg.adopt(self._walk())  # children forked while their parents moved
        self._cpu_before_cgroup = self._job_cpu
        self.cgroup = cg
        for pid in list(self._fds):
            self._forget(pid)

    def _sample_cgroup(self) -> TreeSample:
        """CPU from one read; RSS and PIDs (slower to gather) only every `discover_every` samples."""
        assert self.cgroup is not None
        if self._count % self._every == 0:
            self._rss = self._rss_of(self.cgroup.pids())
        self._count += 1
        self._job_cpu = max(self._job_cpu, self._cpu_before_cgroup + self.cgroup.cpu_s())
        return TreeSample(self._job_cpu, self._busy.read() - self.busy0, self._rss, self._pids)

    def _rss_of(self, pids: List[int]) -> int:
        """Resident bytes of these processes; each statm file stays open (pread is 6x cheaper than open)."""
        rss, live = 0, set(pids)
        for pid in [p for p in self._statm if p not in live]:
            os.close(self._statm.pop(pid))
        for pid in pids:
            fd = self._statm.get(pid)
            try:
                if fd is None:
                    fd = self._statm[pid] = os.open(f"{self.proc}/{pid}/statm", os.O_RDONLY | os.O_CLOEXEC)
                rss += int(os.pread(fd, 128, 0).split()[1]) * _PAGE
            except (OSError, ValueError, IndexError):
                live.discard(pid)
        self._pids = frozenset(live)
        self.peak_rss = max(self.peak_rss, rss)
        return rss

    def close(self) -> None:
        """Close every file and hand the job cgroup back; a second call does nothing."""
        if self._closed:
            return
        self._closed = True
        for pid in list(self._fds):
            self._forget(pid)
        self._busy.close()
        for fd in self._statm.values():
            os.close(fd)
        self._statm.clear()
        if self.cgroup is not None:
            self.cgroup.close()

    @property
    def job_cpu_s(self) -> float:
        return self._job_cpu

    def _forget(self, pid: int) -> None:
        os.close(self._fds.pop(pid))
        self._threads.pop(pid, None)

    def _discover(self) -> None:
        """Open the stat file of every process now in the tree; drop those no longer in it."""
        live = set(self._walk())
        for pid in list(self._fds):
            if pid not in live:
                self._forget(pid)
        for pid in live - self._fds.keys():
            try:
                self._fds[pid] = os.open(f"{self.proc}/{pid}/stat", os.O_RDONLY)
            except OSError:
                pass

    def _walk(self) -> List[int]:
        if not self._children_files:
            return self._walk_by_scan()
        out, todo = [], [self.root_pid]
        if self.orphans_of is not None:
            todo += [p for p in self._children(self.orphans_of) if p != self.root_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(self._children(pid))
        return out

    def _children(self, pid: int) -> List[int]:
        """Children of every thread of pid (a child belongs to the thread that forked it)."""
        if self._threads.get(pid) == 1:
            tids: List[str] = [str(pid)]
        else:
            try:
                tids = os.listdir(f"{self.proc}/{pid}/task")
            except OSError:
                return []
        kids: List[int] = []
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
        if self.orphans_of is not None:
            todo += [p for p in kids.get(self.orphans_of, ()) if p != self.root_pid]
        while todo:
            pid = todo.pop()
            out.append(pid)
            todo.extend(kids.get(pid, ()))
        return out


def total_memory_bytes(proc_root: str = "/proc") -> Optional[int]:
    try:
        with open(f"{proc_root}/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
