"""Run one command under measurement: spawn, forward signals, wait for the exit (the tick, attribution
and checkpoint schedule is measure/loop.py's, shared with carbonrun.track).

The loop sleeps in sigtimedwait() on SIGCHLD plus the forwarded signals, with the time to the next
tick as its timeout. So the child's exit wakes it at once (no polling latency), signals arrive with
their siginfo (to tell a terminal's Ctrl-C, which already reached the child, from a `kill` sent to
carbonrun alone), and no Python signal handler runs between ticks.
"""
from __future__ import annotations

import ctypes
import os
import signal
import time
from typing import Callable, Mapping, Optional, Sequence

from carbonrun.accounting.energy import Accountant
from carbonrun.collectors.base import ATTRIBUTION_STEP_S, Meter
from carbonrun.collectors.process import ProcessTree
from carbonrun.measure.loop import Hook, Loop, Outcome
from carbonrun.measure.spawn import (SI_KERNEL, SI_USER, TERMINATING, LaunchError, Waiter, block_signals, caller,
                                     spawn)

__all__ = ["Session", "Outcome", "LaunchError", "block_signals", "caller", "spawn", "become_subreaper",
           "run_unmeasured", "wait_for", "forward"]
FORWARDED = tuple(sorted(TERMINATING))  # every signal that would end carbonrun reaches the command instead
INTERRUPTING = frozenset((signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT))
WAITED = frozenset(TERMINATING | {signal.SIGCHLD})  # before the caller's ignored ones are left out
ATTRIBUTION_STEP = ATTRIBUTION_STEP_S  # the old name; the period is collectors.base's
HOOKS = {"on_draw": "the live table", "on_checkpoint": "checkpoints", "on_spawn": "storing the running record"}
IDLE_WAIT_S = 60.0  # the longest sleep once measuring has stopped: any signal still wakes it


def become_subreaper() -> None:
    """Orphans of the job come back to us (not init), so their CPU time is not lost."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass


def forward(pid: int, signo: int, code: int, sender: int) -> bool:
    """Pass a signal carbonrun received on to the command; False for one carbonrun caused itself (its
    own write to a closed pipe), which is not the command's business. A signal the kernel sent to the
    whole foreground group (a terminal's Ctrl-C or hangup) has reached the command already."""
    if sender == os.getpid() and code <= SI_USER:
        return False
    if code != SI_KERNEL:
        try:
            os.kill(pid, signo)
        except ProcessLookupError:
            pass
    return True


def wait_for(pid: int) -> int:
    """Pass signals on to `pid` until it exits; its exit code (128+N when signal N ended it). Orphans that
    came back to carbonrun meanwhile are reaped too."""
    waiter = Waiter(caller().waited)
    while True:
        got = waiter.wait(IDLE_WAIT_S)
        if got is None:
            continue
        signo, code, sender = got
        if signo != signal.SIGCHLD:
            forward(pid, signo, code, sender)
            continue
        while True:
            try:
                done, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return 1  # someone else reaped it: its code is lost
            if done == 0:
                break
            if done == pid:
                exit_code = os.waitstatus_to_exitcode(status)
                return 128 - exit_code if exit_code < 0 else exit_code


def run_unmeasured(argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> int:
    """The command with no measuring at all, when carbonrun could not set one up: the same start, the
    same signals, its exit code. carbonrun's trouble never decides whether the command runs."""
    block_signals()
    return wait_for(spawn(argv, env))


class Session(Loop):
    """Drives the measuring loop for one child process: spawn, sleep in sigtimedwait, reap."""

    def __init__(self, meters: Sequence[Meter], accountant: Accountant, interval: float,
                 proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(meters, accountant, interval, proc_root, clock, wall)
        self.pid = 0
        self.measuring = True  # False once a part of measuring failed: the command still runs to its end
        self.on_spawn: Optional[Hook] = None  # once the command has started (the store's first insert)
        self._root_cpu = 0.0  # the child's own and reaped descendants' CPU, from wait4

    def run(self, argv: Sequence[str], env: Optional[Mapping[str, str]] = None) -> Outcome:
        """Spawn argv and measure it until it exits. Read caller() first thing in the program; the
        signals are blocked here, just before the spawn, so that until then carbonrun stays as easy
        to interrupt or end as any program (there is no command yet to pass a signal on to).

        Once the command has started, nothing on carbonrun's side (a meter, the store, the live table)
        can end this before the command does: a failing part stops, with a note, and the wait goes on."""
        become_subreaper()
        try:
            self.begin()
        except Exception as e:  # a meter that cannot be read does not stop the command from running
            self.t0 = self.now = self.clock()
            self._stop_measuring("the opening reads", e)
        self._guard_hooks()
        block_signals()
        self.pid = spawn(argv, env)
        try:  # a large tree moves into a job cgroup (collectors/process.py:JobCgroup): a flat cost
            self.tree = ProcessTree(self.pid, self.proc_root, orphans_of=os.getpid(), use_cgroup=True)
        except Exception as e:
            self._stop_measuring("the process tree", e)
        if self.on_spawn is not None:
            self.on_spawn(self)
        self._loop()
        return self._finish()

    def _stop_measuring(self, what: str, e: BaseException) -> None:
        self.measuring = False
        self.outcome.notes.append(f"measuring stopped early ({what} failed: {type(e).__name__}: {e}); "
                                  "the figures cover the run up to then")

    def _guard_hooks(self) -> None:
        """A live table on a broken terminal or a full store disk turns itself off, with a note."""
        def guarded(name: str, hook: Hook) -> Hook:
            def call(loop: Loop) -> None:
                try:
                    hook(loop)
                except Exception as e:
                    setattr(self, name, None)
                    self.outcome.notes.append(f"{HOOKS[name]} stopped: {type(e).__name__}: {e}")
            return call

        for name in HOOKS:
            hook = getattr(self, name)
            if hook is not None:
                setattr(self, name, guarded(name, hook))

    def _loop(self) -> None:
        waiter = Waiter(caller().waited)
        while True:
            got = waiter.wait(self.wait_s() if self.measuring else IDLE_WAIT_S)
            if got is not None and self._on_signal(*got):
                return
            if self.measuring:
                try:
                    self.advance(self.clock())
                except Exception as e:
                    self._stop_measuring("a tick", e)

    def _on_signal(self, signo: int, code: int = SI_USER, sender: int = 0) -> bool:
        """Handle one signal; True when the command has exited."""
        if signo == signal.SIGCHLD:
            return self._reap()
        if forward(self.pid, signo, code, sender) and signo in INTERRUPTING:
            self.outcome.interrupted = True
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
        o = self.outcome
        try:
            if not self.measuring or self.tree is None:
                raise _Stopped
            self.tree.finish(self._root_cpu)
            self.end()
        except Exception as e:
            if not isinstance(e, _Stopped):
                self._stop_measuring("the closing reads", e)
            now = self.clock()
            o.ended_wall, o.duration_s = self.wall(), now - self.t0
        finally:
            if self.tree is not None:  # its files and the job cgroup, whatever stopped measuring
                try:
                    self.tree.close()
                except OSError:
                    pass
        if o.signalled == signal.SIGINT:
            o.interrupted = True
        return o


class _Stopped(Exception):
    """Measuring had stopped before the command ended: close the outcome with what there is."""
