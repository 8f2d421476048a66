"""Put the parts together for one measured run: meters, intensity, store, loop, record.

One path for every way a run is measured: `carbonrun run`, the gate and the sweep call prepare() then
execute() (a child process); carbonrun.track() calls prepare(), start() with a Block, and finish()
(code in this process). So the launcher claim, checkpoints, embodied carbon, metrics export and the
store's fallback apply to all of them alike. Renders nothing: the caller passes a draw hook.
"""
from __future__ import annotations

import _thread
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Dict, Optional, Sequence, Tuple, TypeVar

from carbonrun.collectors.base import Discovery, Probe
from carbonrun import paths
from carbonrun.errors import CarbonrunError
from carbonrun import store as stores
from carbonrun.intensity import carbon, chain
from carbonrun.settings import Settings
from carbonrun.collectors import open_meters
from carbonrun.record import fill, host_info, new_record, to_json
from carbonrun.accounting.energy import Accountant
from carbonrun.measure import launcher
from carbonrun.measure.launcher import mark, take_over
from carbonrun.measure.session import LaunchError, Session

if TYPE_CHECKING:
    from carbonrun.accounting.energy import Accountant
    from carbonrun.collectors.base import Meter
    from carbonrun.intensity.carbon import Intensity
    from carbonrun.measure.launcher import Claim
    from carbonrun.measure.loop import Loop, Outcome
    from carbonrun.record import RunRecord
    from carbonrun.store.base import Store

    L = TypeVar("L", bound=Loop)


LIVE_GRACE_S = 0.5  # at most this long after the command ended, for a live intensity answer in flight
STORE_FAILED = "the run store failed"  # how the notes saying where a record went instead begin


@dataclass(eq=False)
class Prepared:
    """A run ready to start: everything that can fail on bad input has been resolved."""

    settings: Settings
    probe: Probe
    found: Discovery
    intensity: Intensity
    scc: Optional[Tuple[float, float, float]]
    store: Store  # SQLite, PostgreSQL, or none (--no-store)
    record: RunRecord
    job: Optional[Claim] = None  # SLURM/torchrun: this rank's claim on metering its node
    thread: int = 0  # the thread that opened `store` (SQLite connections stay in theirs)
    released: bool = False


def open_store(st: Settings) -> Store:
    """The run store of the settings (an SQLite path or a postgresql:// URL), not yet connected."""
    store = stores.open_store(st.store)
    store.keep_timeline = bool(st.values.get("keep_timeline"))  # else a coarse timeline is stored
    return store


# The intensity from the settings, once (intensity/chain.py); the names stay importable from here.
resolve_intensity = chain.from_settings
provider_options = chain.provider_options


def cache_dir() -> Path:
    return paths.cache_dir()


def parse_scc(st: Settings) -> Optional[Tuple[float, float, float]]:
    if not st.scc:
        return None
    try:
        return carbon.parse_scc(st.scc)
    except ValueError as e:
        raise CarbonrunError(f"invalid --scc {st.scc!r}: {e}", 2) from None


def cap_interval(st: Settings, found: Discovery) -> Settings:
    """Settings whose interval sees every counter wrap (found.max_interval); the collector's note
    says why in the record, and settings.warn (the CLI's stderr) tells the user now."""
    if found.max_interval is None or st.interval <= found.max_interval:
        return st
    from carbonrun import settings  # the warn hook the CLI set

    why = next((n for n in found.notes if n.startswith("--interval")), "--interval capped (RAPL wrap period)")
    if settings.warn is not None:
        settings.warn(why)
    return replace(st, values={**st.values, "interval": found.max_interval},
                   sources={**st.sources, "interval": "capped (RAPL wrap period)"})


def prepare(argv: Sequence[str], st: Settings) -> Prepared:
    """Everything that can fail on bad input fails here, before the command starts."""
    now = time.time()
    intensity = resolve_intensity(st, now, background=True)  # a live provider answers while the command runs
    scc = parse_scc(st)
    store = open_store(st)
    refused = store.open_for_run()  # an unusable store is a warning: the run goes on, its record kept aside
    probe = Probe(rapl_root=st.rapl_root, proc_root=st.proc_root, gpus=st.gpus, interval=st.interval)
    found = open_meters(probe)
    st = cap_interval(st, found)  # an interval past a RAPL counter's wrap period would miss wraps
    record = new_record(argv, st.tags, host_info(st.proc_root, "/sys", found.gpus), st.attribution,
                        st.interval, now)
    record["base_notes"] = list(found.notes) + ([f"not stored: {refused}"] if refused else [])
    return Prepared(st, probe, found, intensity, scc, store, record, thread=_thread.get_ident())


def start(p: Prepared, make: Callable[[Sequence[Meter], Accountant, float, str], L], insert_now: bool = True) -> L:
    """Claim the node (launcher), build the accountant and the loop, insert the running record (unless
    `insert_now` is False: a command's run inserts it once the command has started, so that a locked or
    slow store never delays the start).

    `make` is a Loop class (Session for a command, Block for code in this process). After this,
    either finish() or release() must be called."""
    # The job section; one rank per node meters it (the node lock is held until release()).
    p.job, p.settings = launcher.claim(p.record, p.settings)
    st = p.settings
    acct = Accountant(p.found.meters, p.intensity.mean, st.pue, st.attribution)
    loop = make(p.found.meters, acct, st.interval, st.proc_root)
    loop.on_checkpoint = lambda lp: checkpoint(p, lp)
    if insert_now:
        _save(p, p.record, first=True)
    return loop


def checkpoint(p: Prepared, loop: Loop) -> None:
    """Store the running record as it stands. From another thread than the store's (a tracked
    block's sampler), with a connection of its own and a copy of the record."""
    take_over(p.job, loop, p.record)  # a rank whose node's meter has ended meters the node from here
    if _thread.get_ident() == p.thread:
        _save(p, fill(p.record, loop, p.intensity, p.scc, final=False))
    else:
        store = open_store(p.settings)
        try:
            _save(replace(p, store=store),
                  fill(p.record.copy(), loop, p.intensity, p.scc, final=False))
        finally:
            store.close()
    p.intensity.refresh(time.time())  # live providers only; never blocks


def execute(p: Prepared, argv: Sequence[str], on_draw: Optional[Callable[[Loop], None]] = None,
            on_start: Optional[Callable[[Loop], None]] = None,
            env: Optional[Dict[str, str]] = None) -> Tuple[RunRecord, Outcome]:
    """Run the command under measurement and store the record; returns (record, outcome)."""
    session = start(p, Session, insert_now=False)
    session.on_spawn = lambda loop: _save(p, p.record, first=True)  # the store waits; the command does not
    session.on_draw = on_draw
    if on_start:
        on_start(session)
    try:
        outcome = session.run(argv, env)
    except BaseException as e:
        release(p)
        if isinstance(e, LaunchError):
            p.record["status"], p.record["exit_code"] = "failed", e.exit_code
            p.record["ended_at"] = p.record["started_at"]
            p.record["notes"].append(str(e))
            _save(p, p.record, first=p.record.get("id") is None)
        raise
    return finish(p, session), outcome


def release(p: Prepared) -> None:
    """Close the meters and let the node's next run meter it (once: a second call does nothing)."""
    if p.released:
        return
    p.released = True
    for m in p.found.meters:
        m.close()
    if p.job is not None:
        p.job.release(p.found.meters)  # leaves the meters' last positions for a rank still running


def finish(p: Prepared, loop: Loop) -> RunRecord:
    """Close a measured run whose loop has ended: the final record, embodied carbon, the store,
    the Prometheus export. Releases the meters and the node claim first."""
    take_over(p.job, loop, p.record)  # the node's meter ended before this rank: count the node up to now
    release(p)
    st = p.settings
    p.intensity.wait(LIVE_GRACE_S)  # a live answer in flight: its outcome (often a quick refusal) gets noted
    record = fill(p.record, loop, p.intensity, p.scc, final=True)
    if st.values.get("embodied"):  # embodied carbon, beside (never in) emissions
        from carbonrun.accounting.embodied import section  # only with --embodied

        record["embodied"] = section(record, st)
    _save(p, record)
    textfile, gateway = st.values.get("prometheus_textfile"), st.values.get("pushgateway")
    if textfile or gateway:  # a failure is a note
        from carbonrun import metrics  # only when an export is configured

        if metrics.export(record, textfile, gateway):
            _save(p, record)
    return record


def _save(p: Prepared, record: RunRecord, first: bool = False) -> None:
    """Store the record; if the store fails, keep it aside in a private file (store/kept.py) and say where."""
    mark(record)  # a rank pointing to its node's meter counts no energy
    try:
        if first:
            p.store.begin(record, time.time())
        else:
            p.store.save(record)
    except Exception as e:  # whatever the store's trouble (SQLite, disk, network), keep the record
        if record.get("status") == "running":
            return  # a checkpoint can fail; the final save will try again
        try:
            fallback = p.store.keep_aside(record, to_json(record))  # 0600: command lines can hold secrets
        except Exception as e2:  # a full or read-only disk everywhere: the record lives on in memory
            record["notes"].append(f"{STORE_FAILED} ({e}) and no file could take the record "
                                   f"({getattr(e2, 'strerror', None) or e2}); it is only in this summary")
            return
        from carbonrun.store.kept import SYNC_HINT  # only when the store failed

        record["notes"].append(f"{STORE_FAILED} ({e}); the record was written to {fallback} {SYNC_HINT}")

