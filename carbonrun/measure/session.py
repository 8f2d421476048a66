"""Run one command under measurement: spawn, tick, attribute, forward signals, wait for the exit.

The loop sleeps in sigtimedwait() on SIGCHLD plus the forwarded signals, with the time to the next
tick as its timeout. So the child's exit wakes it at once (no polling latency), signals arrive with
their siginfo (to tell a terminal's Ctrl-C, which already reached the child, from a `kill` sent to
carbonrun alone), and no Python signal handler runs between ticks.
"""
from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from carbonrun.collectors.base import Meter
from carbonrun.collectors.process import ProcessTree
from carbonrun.accounting.energy import Accountant, Attributor

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
INTERRUPTING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))
WAITED = frozenset(FORWARDED + (signal.SIGCHLD,))
ATTRIBUTION_STEP = 0.2  # process-tree refresh period (5 Hz): cheap however fast energy is sampled
SI_KERNEL = 0x80  # si_code of signals the kernel generated (the terminal's Ctrl-C, a hangup)


class LaunchError(Exception):
    """The command could not be started; exit_code is 127 (not found) or 126 (not executable)."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def block_signals() -> None:
    """Block the waited signals in this thread (and every thread started after): call first thing."""
    signal.pthread_sigmask(signal.SIG_BLOCK, WAITED)


def spawn(argv: Sequence[str], env: Optional[dict] = None) -> int:
    """Start the command with no shell, an empty signal mask and default dispositions."""
    try:
        return os.posix_spawnp(argv[0], list(argv), os.environ if env is None else env,
                               setsigmask=(), setsigdef=WAITED)
    except FileNotFoundError:
        raise LaunchError(f"command not found: {argv[0]}", 127) from None
    except PermissionError:
        raise LaunchError(f"permission denied: {argv[0]}", 126) from None
    except OSError as e:
        raise LaunchError(f"cannot execute {argv[0]}: {e.strerror}", 126) from None


def become_subreaper() -> None:
    """Orphans of the job come back to us (not init), so their CPU time is not lost."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


@dataclass(eq=False)
class Outcome:
    """What the session measured; record.py turns it into the run record."""

    started_wall: float
    ended_wall: float = 0.0
    duration_s: float = 0.0
    exit_code: Optional[int] = None
    signalled: Optional[int] = None
    interrupted: bool = False
    samples: int = 0
    job_cpu_s: float = 0.0
    busy_cpu_s: float = 0.0
    peak_rss: int = 0
    notes: List[str] = field(default_factory=list)


class Session:
    """Drives the tick loop for one child process. Clocks are injectable for tests."""

    def __init__(self, meters: Sequence[Meter], accountant: Accountant, interval: float,
                 proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.meters = list(meters)
        self.acct = accountant
        self.interval = interval
        self.proc_root = proc_root
        self.clock, self.wall = clock, wall
        self.on_draw: Optional[Callable[["Session"], None]] = None  # live table, <= 4 Hz
        self.on_checkpoint: Optional[Callable[["Session"], None]] = None  # store, every few seconds
        self.checkpoint_every = 5.0
        self.draw_every = 0.25
        self.pid = 0
        self.tree: Optional[ProcessTree] = None
        self.t0 = 0.0
        self.now = 0.0
        self._readings = [0.0] * len(self.meters)
        self.attributor = Attributor()
        self._root_cpu = 0.0  # the child's own and reaped descendants' CPU, from wait4
        self.outcome = Outcome(started_wall=wall())

    def run(self, argv: Sequence[str], env: Optional[dict] = None) -> Outcome:
        """Spawn argv and measure it until it exits. Call block_signals() before this."""
        become_subreaper()
        self.t0 = self.clock()
        self.outcome.started_wall = self.wall()
        for i, m in enumerate(self.meters):  # opening reads, so the first tick has a base
            self._readings[i] = m.read(self.t0)
        self.acct.baseline(self._readings)
        self.pid = spawn(argv, env)
        self.tree = ProcessTree(self.pid, self.proc_root, orphans_of=os.getpid())
        self._loop()
        return self._finish()

    @property
    def elapsed(self) -> float:
        return self.now - self.t0

    def _loop(self) -> None:
        interval = self.interval
        next_tick = self.t0 + interval
        next_step = self.t0 + ATTRIBUTION_STEP
        next_draw = self.t0 + self.draw_every
        next_ckpt = self.t0 + self.checkpoint_every
        while True:
            info = signal.sigtimedwait(WAITED, max(0.0, next_tick - self.clock()))
            if info is not None and self._on_signal(info):
                return
            now = self.clock()
            if now < next_tick:
                continue
            self._tick(now)
            next_tick += interval
            if next_tick <= now:
                next_tick = now + interval
            if now >= next_step:
                self._step()
                next_step += ATTRIBUTION_STEP
                if next_step <= now:
                    next_step = now + ATTRIBUTION_STEP
                if self.on_draw and now >= next_draw:
                    self.on_draw(self)
                    next_draw = now + self.draw_every
                if self.on_checkpoint and now >= next_ckpt:
                    self.on_checkpoint(self)
                    next_ckpt = now + self.checkpoint_every

    def _tick(self, now: float) -> None:
        self.now = now
        readings = self._readings
        for i, m in enumerate(self.meters):
            readings[i] = m.read(now)
        self.outcome.samples += 1

    def _step(self) -> None:
        """Attribute the energy since the last step by the job's share of busy CPU time."""
        assert self.tree is not None
        s = self.tree.sample()
        self.outcome.job_cpu_s, self.outcome.busy_cpu_s = s.job_cpu_s, s.busy_cpu_s
        job = self.attributor.view(s.job_cpu_s, s.busy_cpu_s, s.pids, s.rss_bytes)
        self.acct.step(self.now - self.t0, self.wall(), self._readings, job)

    def _on_signal(self, info) -> bool:
        """Handle one signal; True when the child has exited."""
        if info.si_signo == signal.SIGCHLD:
            return self._reap()
        if info.si_signo in INTERRUPTING:
            self.outcome.interrupted = True
        if info.si_code != SI_KERNEL:  # a terminal's signal already reached the child's group
            try:
                os.kill(self.pid, info.si_signo)
            except ProcessLookupError:
                pass
        return False

    def _reap(self) -> bool:
        """Reap every exited child; orphans (we are their subreaper) add their CPU time."""
        done = False
        while True:
            try:
                pid, status, ru = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return done
            if pid == 0:
                return done
            cpu = ru.ru_utime + ru.ru_stime
            if pid == self.pid:
                code = os.waitstatus_to_exitcode(status)
                self.outcome.exit_code = 128 - code if code < 0 else code
                self.outcome.signalled = -code if code < 0 else None
                self._root_cpu = cpu
                done = True
            elif self.tree is not None:
                self.tree.add_reaped(cpu)

    def _finish(self) -> Outcome:
        assert self.tree is not None
        now = self.clock()
        self._tick(now)
        self.tree.finish(self._root_cpu)
        self._step()
        self.tree.close()
        o = self.outcome
        o.ended_wall = self.wall()
        o.duration_s = now - self.t0
        o.peak_rss = self.tree.peak_rss
        for m in self.meters:
            o.notes.extend(m.notes)
        if o.signalled == signal.SIGINT:
            o.interrupted = True
        return o
