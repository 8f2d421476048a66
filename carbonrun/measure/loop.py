"""The measuring core shared by a wrapped command and a tracked block: tick, attribute, draw, checkpoint.

A `Loop` reads every meter each interval (a tick), and every ATTRIBUTION_STEP_S samples the job's
process tree and hands the step's energy to the accountant. What drives it differs: `Session` (a child
process, woken by signals) and `Block` (this process, on a daemon thread). The schedule does not.
"""
from __future__ import annotations

import _thread
import os
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence

from carbonrun.accounting.energy import Accountant, Attributor
from carbonrun.collectors.base import ATTRIBUTION_STEP_S, Meter
from carbonrun.collectors.process import ProcessTree, TreeSample

if TYPE_CHECKING:
    import threading

CHECKPOINT_EVERY_S = 5.0  # how often a running record is stored: a crash loses at most this much
DRAW_EVERY_S = 0.25  # the live table's refresh period


@dataclass(eq=False)
class Outcome:
    """What the loop measured; record.fill turns it into the run record."""

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


Hook = Callable[["Loop"], None]


class Loop:
    """Meters, accountant and schedule of one measured job. Clocks are injectable for tests.

    The driver calls begin() once, then advance(now) whenever it wakes (wait_s() says how long it may
    sleep), then end(). `tree` must be set before the first advance().
    """

    def __init__(self, meters: Sequence[Meter], accountant: Accountant, interval: float,
                 proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        self.meters = list(meters)
        self.acct = accountant
        self.interval = interval
        self.proc_root = proc_root
        self.clock, self.wall = clock, wall
        self.on_draw: Optional[Hook] = None  # live table, <= 4 Hz
        self.on_checkpoint: Optional[Hook] = None  # store, every few seconds
        self.checkpoint_every = CHECKPOINT_EVERY_S
        self.draw_every = DRAW_EVERY_S
        self.tree: Optional[ProcessTree] = None
        self.t0 = 0.0
        self.now = 0.0
        self.readings = [0.0] * len(self.meters)
        self.attributor = Attributor()
        self.outcome = Outcome(started_wall=wall())
        self._next_tick = self._next_step = self._next_draw = self._next_ckpt = 0.0

    @property
    def elapsed(self) -> float:
        return self.now - self.t0

    def begin(self) -> None:
        """Opening reads, so the first tick has a base: energy before now is not the job's."""
        self.t0 = self.now = self.clock()
        self.outcome.started_wall = self.wall()
        for i, m in enumerate(self.meters):
            self.readings[i] = m.read(self.t0)
        self.acct.baseline(self.readings)
        self._next_tick = self.t0 + self.interval
        self._next_step = self.t0 + ATTRIBUTION_STEP_S
        self._next_draw = self.t0 + self.draw_every
        self._next_ckpt = self.t0 + self.checkpoint_every

    def wait_s(self) -> float:
        """How long the driver may sleep before the next tick is due."""
        return max(0.0, self._next_tick - self.clock())

    def advance(self, now: float) -> None:
        """Tick if due; then attribute, draw and checkpoint on their own periods. Late ticks are
        dropped (the counters are cumulative: nothing is lost, the next tick covers the gap)."""
        if now < self._next_tick:
            return
        self.tick(now)
        self._next_tick += self.interval
        if self._next_tick <= now:
            self._next_tick = now + self.interval
        if now < self._next_step:
            return
        self.step()
        self._next_step += ATTRIBUTION_STEP_S
        if self._next_step <= now:
            self._next_step = now + ATTRIBUTION_STEP_S
        if self.on_draw and now >= self._next_draw:
            self.on_draw(self)
            self._next_draw = now + self.draw_every
        if self.on_checkpoint and now >= self._next_ckpt:
            self.on_checkpoint(self)
            self._next_ckpt = now + self.checkpoint_every

    def tick(self, now: float) -> None:
        self.now = now
        readings = self.readings
        for i, m in enumerate(self.meters):
            readings[i] = m.read(now)
        self.outcome.samples += 1

    def job_cpu(self, sample: TreeSample) -> float:
        """The job's cumulative CPU seconds in a tree sample."""
        return sample.job_cpu_s

    def step(self) -> None:
        """Attribute the energy since the last step by the job's share of busy CPU time."""
        assert self.tree is not None
        s = self.tree.sample()
        job = self.job_cpu(s)
        self.outcome.job_cpu_s, self.outcome.busy_cpu_s = job, s.busy_cpu_s
        view = self.attributor.view(job, s.busy_cpu_s, s.pids, s.rss_bytes)
        self.acct.step(self.now - self.t0, self.wall(), self.readings, view)

    def end(self) -> Outcome:
        """The last tick and step, and the outcome's closing figures."""
        assert self.tree is not None
        now = self.clock()
        self.tick(now)
        self.step()
        self.tree.close()
        o = self.outcome
        o.ended_wall = self.wall()
        o.duration_s = now - self.t0
        o.peak_rss = self.tree.peak_rss
        for m in self.meters:
            o.notes.extend(m.notes)
        return o


class Block(Loop):
    """The loop for code running in this process (carbonrun.track), on a daemon thread.

    The job is this process and its children, from start() on, less the sampler thread's own CPU
    time: measuring is not the block's work.
    """

    def __init__(self, meters: Sequence[Meter], accountant: Accountant, interval: float,
                 proc_root: str = "/proc", clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        super().__init__(meters, accountant, interval, proc_root, clock, wall)
        self._job0 = self._job_prev = 0.0
        self._own0 = self._own = 0.0
        self._stop: Optional[threading.Event] = None
        self._thread: Optional[threading.Thread] = None
        self._ident = -1  # the sampler thread's

    def start(self) -> None:
        import threading  # only here: a wrapped command's start-up does without it

        self.tree = ProcessTree(os.getpid(), self.proc_root)
        self._job0 = self.tree.sample().job_cpu_s  # CPU time used before the block is not the block's
        self.begin()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="carbonrun-track", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        """A failure ends measuring, not the program."""
        assert self._stop is not None
        self._ident, self._own0 = _thread.get_ident(), time.thread_time()
        try:
            while not self._stop.wait(self.wait_s()):
                self.advance(self.clock())
        except Exception as e:  # a meter bug must not go unnoticed, nor kill the user's work
            self.outcome.notes.append(f"measuring stopped early: {type(e).__name__}: {e}")

    def job_cpu(self, sample: TreeSample) -> float:
        """CPU seconds of the block so far: this process tree since the start, less the sampler thread."""
        if _thread.get_ident() == self._ident:
            self._own = time.thread_time() - self._own0
        self._job_prev = max(self._job_prev, sample.job_cpu_s - self._job0 - self._own)
        return self._job_prev

    def stop(self, exit_code: int, interrupted: bool = False) -> Outcome:
        """Stop the thread, take the last tick and step, and close the outcome."""
        if self._stop is not None and self._thread is not None:
            self._stop.set()
            self._thread.join()
        o = self.end()
        o.exit_code, o.interrupted = exit_code, interrupted
        return o
