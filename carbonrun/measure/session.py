"""Run one command under measurement: spawn, forward signals, wait for the exit (the tick, attribution
and checkpoint schedule is measure/loop.py's, shared with carbonrun.track).

The loop sleeps in sigtimedwait() on SIGCHLD plus the forwarded signals, with the time to the next
tick as its timeout. So the child's exit wakes it at once (no polling latency), signals arrive with
their siginfo (to tell a terminal's Ctrl-C, which already reached the child, from a `kill` sent to
carbonrun alone), and no Python signal handler runs between ticks.
"""
from __future__ import annotations

import os
import signal
import time
from typing import Callable, Optional, Sequence

from carbonrun.accounting.energy import Accountant
from carbonrun.collectors.base import ATTRIBUTION_STEP_S, Meter
from carbonrun.collectors.process import ProcessTree, spawn_in_cgroup
from carbonrun.measure.loop import Loop, Outcome

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGUSR2)
INTERRUPTING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))
WAITED = frozenset(FORWARDED + (signal.SIGCHLD,))
ATTRIBUTION_STEP = ATTRIBUTION_STEP_S  # the old name; the period is collectors.base's
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


class Session(Loop):
    """Drives the measuring loop for one child process: spawn, sleep in sigtimedwait, reap."""

    def __init__(self, meters: Sequence[Meter], accountant: Accountant, interval: float,
                 proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(meters, accountant, interval, proc_root, clock, wall)
        self.pid = 0
        self._root_cpu = 0.0  # the child's own and reaped descendants' CPU, from wait4

    def run(self, argv: Sequence[str], env: Optional[dict] = None) -> Outcome:
        """Spawn argv and measure it until it exits. Call block_signals() before this."""
        become_subreaper()
        self.begin()
        # A job cgroup where allowed: the tree's CPU in one read (collectors/process.py:JobCgroup)
        self.pid, cgroup = spawn_in_cgroup(lambda: spawn(argv, env), self.proc_root)
        self.tree = ProcessTree(self.pid, self.proc_root, orphans_of=os.getpid(), cgroup=cgroup)
        self._loop()
        return self._finish()

    def _loop(self) -> None:
        while True:
            info = signal.sigtimedwait(WAITED, self.wait_s())
            if info is not None and self._on_signal(info):
                return
            self.advance(self.clock())

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
        self.tree.finish(self._root_cpu)
        o = self.end()
        if o.signalled == signal.SIGINT:
            o.interrupted = True
        return o
