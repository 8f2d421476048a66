"""The Python API: measure a block of code in this process, for code that cannot be wrapped from outside.

    import carbonrun

    with carbonrun.track("train", region="FR") as run:
        train()
        print(run.energy_kwh)          # live figures while the block runs
    print(run.record["emissions"])     # the stored run record afterwards

    @carbonrun.track("evaluate")
    def evaluate(): ...

The record is the one `carbonrun run` stores (schema carbonrun.run/1), in the same store, with
command ["python:<name>"] and the tag phase=<name>. The job is this process (all its threads and
children): the meters, the accountant and the process tree are the same as for a child process, and
a daemon thread ticks them. An exception in the block marks the run failed and propagates.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import threading
import time
from typing import Any, Callable, Dict, Optional, TypeVar

from carbonrun.accounting.energy import J_PER_KWH, Attributor
from carbonrun.measure.session import ATTRIBUTION_STEP  # one refresh period for both

F = TypeVar("F", bound=Callable[..., Any])
CHECKPOINT_EVERY = 5.0


class Sampler:
    """The tick loop of session.Session for the current process, on a daemon thread.

    Has the attributes record.fill reads: acct, outcome, elapsed, tree.
    """

    def __init__(self, meters: list, acct: Any, interval: float, proc_root: str = "/proc",
                 on_checkpoint: Optional[Callable[["Sampler"], None]] = None) -> None:
        from carbonrun.measure.session import Outcome

        self.meters, self.acct, self.interval, self.proc_root = list(meters), acct, interval, proc_root
        self.on_checkpoint = on_checkpoint
        self.outcome = Outcome(started_wall=time.time())
        self.tree: Any = None
        self.t0 = self.now = 0.0
        self._readings = [0.0] * len(self.meters)
        self._job0 = self._job_prev = 0.0
        self.attributor = Attributor()
        self._own0 = self._own = 0.0  # the sampler thread's own CPU time: measuring is not the block's work
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    @property
    def elapsed(self) -> float:
        return self.now - self.t0

    def start(self) -> None:
        from carbonrun.collectors.process import ProcessTree

        self.tree = ProcessTree(os.getpid(), self.proc_root)
        # CPU time this process used before the block is not the block's.
        self._job0 = self.tree.sample().job_cpu_s
        self.t0 = self.now = time.monotonic()
        self.outcome.started_wall = time.time()
        for i, m in enumerate(self.meters):
            self._readings[i] = m.read(self.t0)
        self.acct.baseline(self._readings)
        self._thread = threading.Thread(target=self._loop, name="carbonrun-track", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        """Tick every interval, step every ATTRIBUTION_STEP; a failure ends measuring, not the program."""
        try:
            self._run_loop()
        except Exception as e:  # a meter bug must not go unnoticed, nor kill the user's work
            self.outcome.notes.append(f"measuring stopped early: {type(e).__name__}: {e}")

    def _run_loop(self) -> None:
        next_step = self.t0 + ATTRIBUTION_STEP
        next_ckpt = self.t0 + CHECKPOINT_EVERY
        self._own0 = time.thread_time()
        while not self._stop.wait(max(0.0, self.now + self.interval - time.monotonic())):
            now = time.monotonic()
            self._tick(now)
            if now >= next_step:
                self._step()
                next_step = now + ATTRIBUTION_STEP
            if self.on_checkpoint and now >= next_ckpt:
                self.on_checkpoint(self)
                next_ckpt = now + CHECKPOINT_EVERY

    def _tick(self, now: float) -> None:
        self.now = now
        for i, m in enumerate(self.meters):
            self._readings[i] = m.read(now)
        self.outcome.samples += 1

    def _job_cpu(self, sample: Any) -> float:
        """CPU seconds of the block so far: this process tree since the start, less the sampler thread."""
        if threading.current_thread() is self._thread:
            self._own = time.thread_time() - self._own0
        return max(self._job_prev, sample.job_cpu_s - self._job0 - self._own)

    def _step(self) -> None:
        """Session._step for the block: the job's share of busy CPU time over the step."""
        s = self.tree.sample()
        job = self._job_prev = self._job_cpu(s)
        self.outcome.job_cpu_s, self.outcome.busy_cpu_s = job, s.busy_cpu_s
        view = self.attributor.view(job, s.busy_cpu_s, s.pids, s.rss_bytes)
        self.acct.step(self.now - self.t0, time.time(), self._readings, view)

    def stop(self, exit_code: int, interrupted: bool = False) -> None:
        """Stop the thread, take the last tick and step, and close the outcome."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._tick(time.monotonic())
        self._step()
        self.tree.close()
        o = self.outcome
        o.ended_wall, o.duration_s = time.time(), self.now - self.t0
        o.exit_code, o.interrupted = exit_code, interrupted
        o.peak_rss = self.tree.peak_rss
        for m in self.meters:
            o.notes.extend(m.notes)


class Run:
    """One tracked block: live figures while it runs, `record` (the stored run record) after."""

    def __init__(self, name: str, options: Dict[str, Any]) -> None:
        self.name = name
        self.options = options
        self.record: Optional[dict] = None
        self._prepared: Any = None
        self._sampler: Optional[Sampler] = None

    # -- live figures --------------------------------------------------------------------------------
    @property
    def id(self) -> Optional[int]:
        """The run's id in the store (as `carbonrun report ID` takes it)."""
        return self._prepared.record.get("id") if self._prepared else None

    @property
    def elapsed_s(self) -> float:
        return self._sampler.elapsed if self._sampler else 0.0

    @property
    def energy_kwh(self) -> float:
        """Energy so far, by attribution and times PUE (the record's energy.total_kwh)."""
        return self._sampler.acct.total_kwh() if self._sampler else 0.0

    @property
    def energy_j(self) -> float:
        return self.energy_kwh * J_PER_KWH

    @property
    def emissions_kg(self) -> float:
        return self._sampler.acct.kg if self._sampler else 0.0

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Resolve settings, open meters and the store (errors raise here, before the block runs)."""
        from carbonrun import settings
        from carbonrun.measure import engine as runner
        from carbonrun.accounting.energy import Accountant

        st = settings.resolve({k: (v, "flag") for k, v in self.options.items()})
        st.values["tags"] = {**st.tags, "phase": self.name}
        p = runner.prepare([f"python:{self.name}"], st)
        self._prepared = p
        acct = Accountant(p.found.meters, p.intensity.at, st.pue, st.attribution)
        self._sampler = Sampler(p.found.meters, acct, st.interval, st.proc_root, self._checkpoint)
        runner._save(p, p.record, first=True)
        self._sampler.start()

    def _checkpoint(self, sampler: Sampler) -> None:
        """Runs on the sampler thread. SQLite objects stay in their thread: a connection of its own."""
        from carbonrun.measure import engine as runner
        from carbonrun.record import fill

        p = self._prepared
        store = runner.open_store(p.settings)
        try:
            runner._save(dataclasses.replace(p, store=store),
                         fill(dict(p.record), sampler, p.intensity, p.scc, final=False))
        finally:
            store.close()
        if hasattr(p.intensity, "refresh"):
            p.intensity.refresh(time.time())

    def finish(self, error: Optional[BaseException]) -> None:
        """Close the run: failed when the block raised, interrupted on Ctrl-C; store the record."""
        from carbonrun.measure import engine as runner
        from carbonrun.record import fill, public

        p, sampler = self._prepared, self._sampler
        assert p is not None and sampler is not None
        interrupted = isinstance(error, KeyboardInterrupt)
        sampler.stop(exit_code=130 if interrupted else (1 if error is not None else 0), interrupted=interrupted)
        try:
            fill(p.record, sampler, p.intensity, p.scc, final=True)
            if error is not None:
                p.record["notes"].append(f"the tracked block raised {type(error).__name__}: {error}")
            runner._save(p, p.record)
        finally:
            for m in p.found.meters:
                m.close()
            p.store.close()
        self.record = public(p.record)


class track:
    """`with track(name, **options) as run:` or `@track(name, **options)`.

    Options are the settings of `carbonrun run` by name (region, intensity, pue, attribution,
    interval, tags, store, gpus, scc, ...); environment variables and config files apply as for
    the CLI. The decorator measures each call as its own run.
    """

    def __init__(self, name: Optional[str] = None, **options: Any) -> None:
        from carbonrun.settings import SPECS

        unknown = sorted(set(options) - set(SPECS))
        if unknown:
            raise TypeError(f"unknown carbonrun.track option(s) {', '.join(unknown)}; "
                            f"known: {', '.join(SPECS)}")
        self.name, self.options = name, options
        self.run: Optional[Run] = None

    def __enter__(self) -> Run:
        self.run = Run(self.name or "block", self.options)
        self.run.start()
        return self.run

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> bool:
        assert self.run is not None
        self.run.finish(exc)
        return False  # the block's exception propagates

    def __call__(self, func: F) -> F:
        name = self.name or func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with track(name, **self.options):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
