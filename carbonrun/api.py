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
children), measured by the engine that measures a wrapped command (measure/engine.py), so every
option of `carbonrun run` applies alike (embodied carbon, Prometheus export, the SLURM/torchrun
claim on the node); a daemon thread drives the loop. An exception in the block marks the run failed
and propagates.
"""
from __future__ import annotations

import functools
import warnings
from typing import TYPE_CHECKING, Any, Callable, Dict, Optional, TypeVar

from carbonrun.units import joules
from carbonrun import settings
from carbonrun.measure import engine
from carbonrun.measure.loop import Block
from carbonrun.record import public
from carbonrun.settings import SPECS

if TYPE_CHECKING:
    from carbonrun.measure.engine import Prepared
    from carbonrun.record import RunRecord

F = TypeVar("F", bound=Callable[..., Any])


class Run:
    """One tracked block: live figures while it runs, `record` (the stored run record) after."""

    def __init__(self, name: str, options: Dict[str, Any]) -> None:
        self.name = name
        self.options = options
        self.record: Optional[RunRecord] = None
        self._prepared: Optional[Prepared] = None
        self._block: Optional[Block] = None

    # -- live figures --------------------------------------------------------------------------------
    @property
    def id(self) -> Optional[int]:
        """The run's id in the store (as `carbonrun report ID` takes it)."""
        return self._prepared.record.get("id") if self._prepared else None

    @property
    def elapsed_s(self) -> float:
        return self._block.elapsed if self._block else 0.0

    @property
    def energy_kwh(self) -> float:
        """Energy so far, by attribution and times PUE (the record's energy.total_kwh)."""
        return self._block.acct.total_kwh() if self._block else 0.0

    @property
    def energy_j(self) -> float:
        return joules(self.energy_kwh)

    @property
    def emissions_kg(self) -> float:
        return self._block.acct.kg if self._block else 0.0

    # -- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Resolve settings, open meters and the store (errors raise here, before the block runs)."""
        st = settings.resolve({k: (v, "track() argument") for k, v in self.options.items()})
        if settings.warn is None:  # no CLI here: a library speaks through Python's warnings
            for line in st.warnings:
                warnings.warn(f"carbonrun: {line}", RuntimeWarning, stacklevel=3)
        st.values["tags"] = {**st.tags, "phase": self.name}
        p = self._prepared = engine.prepare([f"python:{self.name}"], st)
        try:
            self._block = engine.start(p, Block)
            self._block.start()
        except BaseException:
            engine.release(p)
            p.store.close()
            raise

    def finish(self, error: Optional[BaseException]) -> None:
        """Close the run: failed when the block raised, interrupted on Ctrl-C; store the record."""
        p, block = self._prepared, self._block
        assert p is not None and block is not None
        interrupted = isinstance(error, KeyboardInterrupt)
        try:
            block.stop(exit_code=130 if interrupted else (1 if error is not None else 0), interrupted=interrupted)
            if error is not None:
                block.outcome.notes.append(f"the tracked block raised {type(error).__name__}: {error}")
            self.record = public(engine.finish(p, block))
        finally:
            engine.release(p)  # when finish() did not get that far
            p.store.close()


class track:
    """`with track(name, **options) as run:` or `@track(name, **options)`.

    Options are the settings of `carbonrun run` by name (region, intensity, pue, attribution,
    interval, tags, store, gpus, scc, ...); environment variables and config files apply as for
    the CLI. The decorator measures each call as its own run.
    """

    def __init__(self, name: Optional[str] = None, **options: Any) -> None:
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

    def __exit__(self, exc_type: Any, exc: Optional[BaseException], tb: Any) -> None:
        assert self.run is not None
        self.run.finish(exc)  # the block's exception, if any, propagates

    def __call__(self, func: F) -> F:
        name = self.name or func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with track(name, **self.options):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
