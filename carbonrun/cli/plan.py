"""`carbonrun plan` and the terminal side of `carbonrun run --start-within`: forecast, decide, show, wait.

The forecast and the decision are intensity/planner.py's (planner.decide); this module prints the plan and
waits with a countdown. Without a provider or a future series there is no forecast, and the plan says so
and starts at once.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import signal
import sys
import time
from typing import Any, Callable, Dict, List, Optional

import click

from carbonrun import settings as settings_mod
from carbonrun.errors import CarbonrunError
from carbonrun.intensity import providers
from carbonrun.intensity.planner import Plan, decide, earlier_durations, expected_duration, wait_until
from carbonrun.intensity.regions import UnknownRegion, lookup
from carbonrun.measure.engine import open_store, parse_scc
from carbonrun.measure.spawn import Waiter
from carbonrun.settings import SPECS, Settings
from carbonrun.timefmt import format_duration

CANCEL = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT}


def _earlier(st: Settings, argv: List[str]) -> Callable[[], List[float]]:
    """Earlier durations of this command, read from the run store only when the setting does not say."""
    def read() -> List[float]:
        try:
            store = open_store(st)
        except Exception:  # no usable store: the history is only a default
            return []
        try:
            return earlier_durations(store, argv)
        finally:
            store.close()
    return read


# -- showing it ------------------------------------------------------------------------------------------
def clock_text(t: float, now: float) -> str:
    """Local wall time: 03:10 today, else with the day."""
    when, today = _dt.datetime.fromtimestamp(t), _dt.datetime.fromtimestamp(now)
    return when.strftime("%H:%M") if when.date() == today.date() else when.strftime("%a %d %b %H:%M")


def describe(plan: Plan) -> str:
    """One line: what was decided and what it saves."""
    d = format_duration(plan.expected_duration_s)
    if not plan.has_forecast:
        return "no usable forecast; starting now"
    fc = plan.forecast_g_per_kwh or 0.0
    against = ""
    if plan.now_g_per_kwh is not None:
        against = f" against {plan.now_g_per_kwh:.0f} now"
        if plan.saving_pct is not None and plan.saving_pct >= 0.5:
            against += f": about {plan.saving_pct:.0f}% less CO2"
    if plan.wait_s < 1:
        return (f"starting now is best in the {format_duration(plan.window_s)} window: "
                f"forecast {fc:.0f} g/kWh for the expected {d}")
    return (f"start at {clock_text(plan.start_at, plan.decided_at)} (in {format_duration(plan.wait_s)}), "
            f"forecast {fc:.0f} g/kWh{against} for the expected {d}")


def begin_line(plan: Plan) -> str:
    """The start time for schedulers: ISO 8601 with offset, and SLURM's --begin (local time)."""
    local = _dt.datetime.fromtimestamp(plan.start_at).astimezone()
    return f"start {local.isoformat(timespec='seconds')}  sbatch --begin={local.strftime('%Y-%m-%dT%H:%M:%S')}"


def plan_json(plan: Plan) -> Dict[str, Any]:
    rec = plan.to_record()
    local = _dt.datetime.fromtimestamp(plan.start_at).astimezone()
    rec.update(start_at_unix=round(plan.start_at, 3), wait_s=round(plan.wait_s, 3),
               slurm_begin=local.strftime("%Y-%m-%dT%H:%M:%S"), summary=describe(plan))
    return rec


# -- run --start-within ----------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _waiter() -> Waiter:
    return Waiter(CANCEL)  # built on first use: nothing at import time


def _sleep_for_signal(timeout: float) -> Optional[int]:
    """Sleep, waking for a cancelling signal (blocked by `run`, so taken here rather than by a handler).

    spawn.Waiter, not signal.sigtimedwait: after a stop and continue past the deadline, CPython's returns
    a siginfo with a garbage signal number."""
    got = _waiter().wait(max(timeout, 0.001))
    return got[0] if got is not None else None


def _countdown(stream: Any, plan: Plan) -> Any:
    at = clock_text(plan.start_at, plan.decided_at)
    if not stream.isatty():
        stream.write(f"carbonrun: waiting until {at} ({format_duration(plan.wait_s)}); Ctrl-C cancels\n")
        stream.flush()
        return None

    def tick(left: float) -> None:
        stream.write(f"\r\033[Kcarbonrun: starting in {format_duration(left)} at {at} (Ctrl-C cancels)")
        stream.flush()
    return tick


def _validate(st: Settings) -> None:
    """Bad input fails now, not after hours of waiting (prepare checks the rest again)."""
    parse_scc(st)
    if st.region and st.intensity is None and not st.intensity_file and not providers.configured(st.provider):
        try:
            lookup(st.region)
        except UnknownRegion as e:
            raise CarbonrunError(str(e), 2) from None


def plan_and_wait(argv: List[str], st: Settings, stream: Any = None, clock: Any = time.time,
                  sleep: Any = _sleep_for_signal) -> Dict[str, Any]:
    """Decide, show the plan on stderr, wait for the start; the record's `plan` section.

    A cancelling signal during the wait raises CarbonrunError with 128+N (130 for Ctrl-C): the command
    never starts.
    """
    stream = sys.stderr if stream is None else stream
    _validate(st)
    duration, how = expected_duration(st, _earlier(st, argv))
    plan = decide(st, clock(), float(st.start_within), duration)
    plan.extra["expected_duration_from"] = how
    stream.write(f"carbonrun: plan: {describe(plan)} ({plan.source or 'no forecast source'}; duration: {how})\n")
    for note in plan.notes:
        stream.write(f"carbonrun: plan note: {note}\n")
    stream.flush()
    t0 = clock()
    if plan.start_at > t0:
        tick = _countdown(stream, plan)
        sig = wait_until(plan.start_at, clock=clock, sleep=sleep, tick=tick)
        if tick is not None:
            stream.write("\r\033[K")
        if sig:
            name = signal.Signals(sig).name
            raise CarbonrunError(f"cancelled by {name} while waiting: the command was not started", 128 + sig)
        stream.write("carbonrun: starting now, as planned\n")
        stream.flush()
    plan.extra["waited_s"] = round(clock() - t0, 3)
    return plan.to_record()


# -- carbonrun plan --------------------------------------------------------------------------------------
@click.command(epilog="Examples:\n\n\b\n"
                      "  carbonrun plan --start-within 12h --expected-duration 2h --provider uk\n"
                      "  carbonrun plan --start-within 1d --expected-duration 6h --intensity-file fc.csv\n"
                      "  sbatch --begin=$(carbonrun plan --start-within 8h --expected-duration 3h \\\n"
                      "                   --provider uk --json | jq -r .slurm_begin) job.sh")
@click.option("--start-within", metavar="DURATION", help="Latest start, from now: 90s, 30m, 6h, 1h30m, 2d.")
@click.option("--expected-duration", metavar="DURATION", help="How long the job runs: 45m, 2h, ...")
@click.option("--region", metavar="REGION", help=SPECS["region"].help)
@click.option("--intensity", metavar="G", help=SPECS["intensity"].help)
@click.option("--intensity-file", metavar="FILE", help=SPECS["intensity_file"].help + " (may reach into the future)")
@click.option("--provider", metavar="NAME", help=SPECS["provider"].help + ": " + providers.names_help())
@click.option("--provider-url", metavar="URL", help=SPECS["provider_url"].help, hidden=True)
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON.")
def plan(as_json: bool, **params: Any) -> int:
    """When to start a job of a given length to emit least: the decision `run --start-within` makes.

    Nothing is run. Prints the start time in ISO 8601 and in SLURM's `--begin` format, for cron or
    batch schedulers. Needs a forecast: a live provider that publishes one or an --intensity-file series
    that reaches into the future; without one it says so and answers "now".
    """
    flags = {k: (v, "flag") for k, v in params.items() if v is not None}
    st = settings_mod.resolve(flags)
    if not st.values.get("start_within"):
        raise CarbonrunError("give --start-within (like 6h): the latest time to start, from now", 2)
    if not st.values.get("expected_duration"):
        raise CarbonrunError("give --expected-duration (like 2h): how long the job runs", 2)
    p = decide(st, time.time(), float(st.start_within), float(st.expected_duration))
    if as_json:
        sys.stdout.write(json.dumps(plan_json(p), indent=2) + "\n")
        return 0
    out = [describe(p), f"source: {p.source or 'none'}; window {format_duration(p.window_s)}; "
                        f"{p.candidates} start times compared"]
    out += [f"note: {n}" for n in p.notes]
    out.append(begin_line(p))
    sys.stdout.write("\n".join(out) + "\n")
    return 0
