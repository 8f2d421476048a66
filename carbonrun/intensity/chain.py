"""The intensity a run would use, from its settings, and each step of the precedence that chose it.

The order itself is carbon.resolve_intensity's; STEPS names its steps in that order, so `carbonrun
intensity`, `carbonrun doctor` and a run can never disagree: all three call from_settings and explain.
Only a configured live provider touches the network.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

from carbonrun import config, paths
from carbonrun.errors import CarbonrunError
from carbonrun.intensity import carbon, providers, regions
from carbonrun.settings import Settings


class Step(NamedTuple):
    id: str  # stable, for --json
    label: str  # as people see it
    source: str  # the first part of Intensity.source when this step applied


STEPS = (
    Step("intensity", "--intensity", "flag"),
    Step("intensity-file", "--intensity-file", "file"),
    Step("provider", "live provider", "provider"),
    Step("region", "region", "table"),
    Step("timezone", "time zone", "timezone"),
    Step("world-average", "world average", "world-average"),
)


def provider_options(st: Settings, env: Optional[Mapping[str, str]] = None) -> Dict[str, Any]:
    """Options for st.provider: its [providers.<name>] config tables (project over user), credentials from
    the environment, --provider-url."""
    env = os.environ if env is None else env
    name = providers.configured(st.provider)
    opts: Dict[str, Any] = {}
    if name:
        for _label, table in reversed(config.load_layers(os.getcwd(), env)):
            raw = (table.get("providers") or {}).get(name)
            if isinstance(raw, dict):
                opts.update({str(k).replace("-", "_"): v for k, v in raw.items()})
        opts.update(providers.credentials(name, env))
    if st.provider_url:
        opts["base_url"] = st.provider_url
    return opts


def from_settings(st: Settings, now: float, tz_name: Optional[str] = None,
                  background: bool = False) -> carbon.Intensity:
    """The Intensity a run started at `now` is accounted with; bad input is a usage error (exit 2).
    `background` (a run): a live provider answers on a thread, never before the command starts."""
    try:
        return carbon.resolve_intensity(
            intensity=st.intensity, intensity_file=st.intensity_file, provider=st.provider,
            provider_options=provider_options(st), region=st.region, now=now, tz_name=tz_name,
            cache_dir=str(paths.cache_dir()), background=background)
    except (ValueError, regions.UnknownRegion) as e:  # an unknown region or provider, a bad file or figure
        raise CarbonrunError(str(e), 2) from None


# -- explaining the choice -------------------------------------------------------------------------------
def _where(st: Settings, name: str) -> str:
    src = st.sources.get(name, "default")
    return "on the command line" if src == "flag" else f"from {src}"


def explain(st: Settings, result: Optional[carbon.Intensity], tz_name: Optional[str] = None) -> List[Dict[str, Any]]:
    """Each step in order, {step, label, state, detail, used}: state is used | not set | skipped (a higher
    step applied; detail says what it would give) | failed | no guess; when the settings could not be
    resolved (result None: the error says why), a given step is `set` and the fallbacks `not reached`."""
    source = result.source.split(":")[0] if result is not None else None
    used = next((i for i, s in enumerate(STEPS) if s.source == source), -1)

    def state(rank: int, is_set: bool) -> str:
        if used < 0:
            return "set" if is_set else "not set"
        return "used" if rank == used else ("skipped" if rank > used and is_set else "not set")

    ci, f = st.intensity, st.intensity_file
    states = [
        (state(0, ci is not None), f"{ci:g} g/kWh {_where(st, 'intensity')}" if ci is not None
         else "no fixed figure given"),
        (state(1, bool(f)), (result.how if result is not None and used == 1
                             else f"{f} {_where(st, 'intensity_file')}") if f else "no time series given"),
        _provider(st, result, used),
        _region(st, used),
        _timezone(used, tz_name),
        ("used" if used == 5 else "skipped" if used >= 0 else "not reached",
         f"{carbon.WORLD_AVERAGE_G:g} g/kWh (Ember, 2023)"),
    ]
    return [{"step": s.id, "label": s.label, "state": st_, "detail": detail, "used": i == used}
            for i, (s, (st_, detail)) in enumerate(zip(STEPS, states))]


def _provider(st: Settings, result: Optional[carbon.Intensity], used: int) -> Tuple[str, str]:
    name = providers.configured(st.provider)
    if not name:
        return "not set", "none configured (no network is used without one)"
    if result is None:
        return "set", f"{name} {_where(st, 'provider')}"
    if used == 2:
        return "used", result.how
    failed = [n for n in result.notes if n.startswith("live provider")]
    if failed:
        return "failed", failed[0]
    return "skipped", f"{name} {_where(st, 'provider')} (not asked: a higher step applied)"


def _region(st: Settings, used: int) -> Tuple[str, str]:
    if not st.region:
        return "not set", "give REGION, --region, or `region` in the config"
    try:
        r = regions.lookup(st.region)
    except regions.UnknownRegion:
        return "failed", f"{st.region!r} is in no packaged table"
    what = f"{r.key} ({r.name}) {_where(st, 'region')}: {r.g_per_kwh:g} g/kWh ({r.year})"
    return ("used" if used == 3 else "skipped" if used >= 0 else "set"), what


def _timezone(used: int, tz_name: Optional[str]) -> Tuple[str, str]:
    zone = tz_name if tz_name is not None else regions.local_timezone()
    code = regions.guess_from_timezone(zone)
    guess = f"{zone} -> {code}" if code else (f"{zone} names no country" if zone else "no system time zone")
    if used < 0:
        return "not reached", guess
    return ("used" if used == 4 else "skipped" if code else "no guess"), guess
