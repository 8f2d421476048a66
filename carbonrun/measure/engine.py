"""Put the parts together for one measured run: meters, intensity, store, session, record.

Used by `carbonrun run`, the gate and the sweep. Renders nothing: the caller passes a draw hook.
"""
from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from carbonrun.collectors.base import Discovery, Probe
from carbonrun.errors import CarbonrunError
from carbonrun.settings import Settings


@dataclass(eq=False)
class Prepared:
    settings: Settings
    probe: Probe
    found: Discovery
    intensity: object
    scc: Optional[Tuple[float, float, float]]
    store: object
    record: dict
    job: Optional[object] = None  # issue 11: launcher.Claim (SLURM/torchrun: who meters the node)


def open_store(st: Settings):
    from carbonrun.store import open_store  # issue 11: SQLite path or postgresql:// URL

    return open_store(st.store)


def resolve_intensity(st: Settings, now: float):
    from carbonrun.intensity import carbon
    from carbonrun.intensity import regions

    try:
        return carbon.resolve_intensity(
            intensity=st.intensity, intensity_file=st.intensity_file, provider=st.provider,
            provider_options=provider_options(st),  # config [providers.<name>] + env (docs/carbon.md)
            region=st.region, now=now, cache_dir=str(cache_dir()))
    except regions.UnknownRegion as e:
        raise CarbonrunError(str(e), 2) from None
    except ValueError as e:  # a bad intensity file
        raise CarbonrunError(str(e), 2) from None


# -- provider options (hook for `intensity`, `plan` and runs; docs/carbon.md) --
_PROVIDER_ENV = {"electricitymaps": {"token": "CARBONRUN_ELECTRICITYMAPS_TOKEN"},
                 "watttime": {"user": "CARBONRUN_WATTTIME_USER", "password": "CARBONRUN_WATTTIME_PASSWORD"}}


def provider_options(st: Settings, env=None) -> dict:
    """Options for st.provider: its [providers.<name>] config tables (project over user), env, --provider-url."""
    env = os.environ if env is None else env
    name = str(st.provider or "").strip().lower()
    opts: dict = {}
    if name:
        from carbonrun import config

        for _label, table in reversed(config.load_layers(os.getcwd(), env)):
            raw = (table.get("providers") or {}).get(name)
            if isinstance(raw, dict):
                opts.update({str(k).replace("-", "_"): v for k, v in raw.items()})
        opts.update({k: env[var] for k, var in _PROVIDER_ENV.get(name, {}).items() if env.get(var)})
    if st.provider_url:
        opts["base_url"] = st.provider_url
    return opts


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "carbonrun"


def parse_scc(st: Settings) -> Optional[Tuple[float, float, float]]:
    if not st.scc:
        return None
    from carbonrun.intensity.carbon import parse_scc

    try:
        return parse_scc(st.scc)
    except ValueError as e:
        raise CarbonrunError(f"invalid --scc {st.scc!r}: {e}", 2) from None


def prepare(argv: List[str], st: Settings) -> Prepared:
    """Everything that can fail on bad input fails here, before the command starts."""
    from carbonrun.collectors import open_meters
    from carbonrun.record import host_info, new_record
    from carbonrun.store.sqlite import StoreError

    now = time.time()
    intensity = resolve_intensity(st, now)
    scc = parse_scc(st)
    store = open_store(st)
    try:
        store.connect()
    except StoreError as e:
        raise CarbonrunError(str(e), 2) from None
    probe = Probe(rapl_root=st.rapl_root, proc_root=st.proc_root, gpus=st.gpus, interval=st.interval)
    found = open_meters(probe)
    record = new_record(argv, st.tags, host_info(st.proc_root, "/sys", found.gpus), st.attribution,
                        st.interval, now)
    record["base_notes"] = list(found.notes)
    return Prepared(st, probe, found, intensity, scc, store, record)


def execute(p: Prepared, argv: List[str], on_draw: Optional[Callable] = None,
            on_start: Optional[Callable] = None, env: Optional[dict] = None) -> Tuple[dict, object]:
    """Run the command under measurement and store the record; returns (record, outcome)."""
    from carbonrun.accounting.energy import Accountant
    from carbonrun.record import fill
    from carbonrun.measure.session import LaunchError, Session

    # The job section; one rank per node meters it (the node lock is held until the end).
    from carbonrun.measure import launcher

    p.job, p.settings = launcher.claim(p.record, p.settings)
    st = p.settings
    acct = Accountant(p.found.meters, p.intensity.at, st.pue, st.attribution)
    session = Session(p.found.meters, acct, st.interval, proc_root=st.proc_root)
    session.on_draw = on_draw
    record = p.record

    def checkpoint(s: Session) -> None:
        _save(p, fill(record, s, p.intensity, p.scc, final=False))
        p.intensity.refresh(time.time())  # live providers only; never blocks

    session.on_checkpoint = checkpoint
    _save(p, record, first=True)
    if on_start:
        on_start(session)
    try:
        outcome = session.run(argv, env)
    except LaunchError as e:
        record.update(status="failed", exit_code=e.exit_code, ended_at=record["started_at"])
        record["notes"].append(str(e))
        _save(p, record)
        raise
    finally:
        for m in p.found.meters:
            m.close()
        if p.job is not None:  # issue 11: let the node's next run meter it
            p.job.release()
    fill(record, session, p.intensity, p.scc, final=True)
    if st.values.get("embodied"):  # embodied carbon, beside (never in) emissions: carbonrun/embodied.py
        from carbonrun.accounting.embodied import section

        record["embodied"] = section(record, st)
    _save(p, record)
    textfile, gateway = st.values.get("prometheus_textfile"), st.values.get("pushgateway")
    if textfile or gateway:  # Prometheus export; a failure is a note
        from carbonrun import metrics

        if metrics.export(record, textfile, gateway):
            _save(p, record)
    return record, outcome


def _save(p: Prepared, record: dict, first: bool = False) -> None:
    """Store the record; if the store fails, keep it in a file beside it and say where."""
    from carbonrun.store.sqlite import StoreError
    import sqlite3

    from carbonrun.measure.launcher import mark

    mark(record)  # issue 11: a rank pointing to its node's meter counts no energy
    try:
        if first:
            p.store.begin(record, time.time())
        elif record.get("id") is not None or getattr(p.store, "keyed_by_uuid", False):  # issue 11: PgStore spools
            p.store.save(record)
        else:
            raise StoreError("the run was never inserted")
    except (StoreError, sqlite3.Error, OSError) as e:
        if record.get("status") == "running":
            return  # a checkpoint can fail; the final save will try again
        fallback = _fallback_path(p, record)
        with os.fdopen(os.open(fallback, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
            json.dump(record, f, indent=2)  # private, like the store: command lines can hold secrets
        record["notes"].append(f"the run store failed ({e}); the record was written to {fallback}")


def _fallback_path(p: Prepared, record: dict) -> Path:
    for d in (p.store.path.parent, Path.cwd(), Path("/tmp")):
        try:
            d.mkdir(parents=True, exist_ok=True)
            if os.access(d, os.W_OK):
                return d / f"carbonrun-{record['uuid']}.json"
        except OSError:
            continue
    return Path(f"carbonrun-{record['uuid']}.json")
