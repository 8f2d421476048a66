"""Grid carbon intensity for a run, and what its emissions mean (social cost, an everyday equivalent).

Resolution order (DESIGN.md, Carbon rules): --intensity > --intensity-file > live provider (only when
configured) > region table > region guessed from the time zone > world average. The chosen Intensity says
which and why. Time-varying intensity is integrated per step, kg = sum(E_t x CI_t) (Haghshenas et al.,
2022), never mean energy x mean intensity.
"""
from __future__ import annotations

import bisect
import csv
import io
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple

if TYPE_CHECKING:  # the providers (and urllib) load only when a provider is configured
    from carbonrun.intensity.providers.base import Provider

from carbonrun import timefmt
from carbonrun.redact import redact_text
from carbonrun.validate import G_PER_KWH, SCC_USD_PER_T, UNIX_TIME, is_sane, number
from carbonrun.intensity import providers
from carbonrun.intensity.regions import Region, UnknownRegion, guess_from_timezone, local_timezone, lookup
from carbonrun.config import read_limited

WORLD_AVERAGE_G = 480.0  # g CO2eq/kWh, 2023 (Ember, Global Electricity Review 2024)
DEFAULT_SCC = (120.0, 190.0, 340.0)  # US$ per tonne CO2
EPA_BASIS = ("US EPA (Dec 2023) social cost of carbon, 2020 dollars, emission year 2020: $120/t (2.5% discount), "
             "$190/t (2.0%, central), $340/t (1.5%)")
CAR_G_PER_KM = 250.0  # US EPA: about 400 g CO2 per mile for an average passenger car
FLIGHT_KG = 900.0  # one passenger, New York <-> San Francisco round trip (Strubell et al., 2019)
INTENSITY_FILE_MAX_BYTES = 64 << 20  # years of 5-minute points; /dev/zero is not a series
RETRY_S = 60.0  # least time between two live refreshes, so a failing provider is not hammered
_SECRET_KEYS = ("token", "password", "secret", "key", "user")


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC to the second, for notes and records."""
    return timefmt.iso(t, utc=True)


class IntensityFileError(ValueError):
    """A bad --intensity-file; the message is one line naming the file and the line or entry."""


class StepSeries:
    """Intensity as a step function of time: each value holds from its start until the next start.

    Coverage runs from the first start to `end`. Outside it the nearest value is used; the caller
    decides whether that deserves a note.
    """

    def __init__(self, points: Sequence[Tuple[float, float]], end: Optional[float] = None) -> None:
        pts = sorted(points)
        self.starts = [p[0] for p in pts]
        self.values = [p[1] for p in pts]
        self.end = end if end is not None else self.starts[-1]

    def add(self, t_from: float, t_to: float, g: float) -> None:
        """Insert (or replace) a segment; used as live values arrive."""
        i = bisect.bisect_left(self.starts, t_from)
        if i < len(self.starts) and self.starts[i] == t_from:
            self.values[i] = g
        else:
            self.starts.insert(i, t_from)
            self.values.insert(i, g)
        self.end = max(self.end, t_to)

    def value_at(self, t: float) -> float:
        i = bisect.bisect_right(self.starts, t) - 1
        return self.values[max(i, 0)]

    def covers(self, t: float) -> bool:
        return self.starts[0] <= t <= self.end

    def mean_between(self, t0: float, t1: float) -> float:
        """Time-weighted mean over [t0, t1]: the exact intensity for constant power over a step."""
        if t1 <= t0:
            return self.value_at(t0)
        cuts = [t0] + self.starts[bisect.bisect_right(self.starts, t0):bisect.bisect_left(self.starts, t1)] + [t1]
        total = sum(self.value_at(a) * (b - a) for a, b in zip(cuts, cuts[1:]))
        return total / (t1 - t0)


def _start_without_signals(thread: threading.Thread) -> None:
    """Start a helper thread with every signal blocked: signals are the main thread's to take (a wrapped
    command's runner passes them on), and one delivered here would end carbonrun instead."""
    import signal  # only when a live provider is asked

    old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    try:
        thread.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@dataclass(eq=False)
class Intensity:
    """The grid intensity a run is accounted with, where it came from, and why.

    g_per_kwh is the figure to show. For a fixed figure it is that figure. For a time series or a
    live provider it is the mean of the series' points (or the current live value); a run's record
    shows the energy-weighted mean the accountant applied instead (record.fill), so that
    kg = total kWh x g_per_kwh / 1000 holds exactly.
    """

    g_per_kwh: float
    region: Optional[str]
    source: str  # flag | file | provider:<name> | table:country | table:cloud | timezone | world-average
    how: str
    time_varying: bool = False
    notes: List[str] = field(default_factory=list)
    basis: Optional[str] = None  # lifecycle | operational, when the source says (the packaged tables do)
    year: Optional[int] = None  # the year of an annual figure
    series: Optional[StepSeries] = field(default=None, repr=False)
    provider: Optional["Provider"] = field(default=None, repr=False)
    _lock: Any = field(default_factory=threading.Lock, init=False, repr=False, compare=False)
    _thread: Optional[threading.Thread] = field(default=None, init=False, repr=False, compare=False)
    _next_refresh: float = field(default=0.0, init=False, repr=False)
    _noted: Set[str] = field(default_factory=set, init=False, repr=False, compare=False)
    _live: Optional[Dict[str, Any]] = field(default=None, init=False, repr=False, compare=False)
    _last_used: float = field(default=0.0, init=False, repr=False, compare=False)

    # -- values -------------------------------------------------------------------------------------
    def at(self, unix_time: float) -> float:
        """g CO2eq/kWh at that time (the step value of the interval containing it)."""
        if self.series is None:
            return self.g_per_kwh
        with self._lock:
            self._check_coverage(unix_time)
            self._last_used = max(self._last_used, unix_time)
            return self.series.value_at(unix_time)

    def mean(self, t0: float, t1: float) -> float:
        """g CO2eq/kWh averaged over [t0, t1]: exact for energy used evenly within it (an attribution
        step), where the value at either end would charge a whole step at the wrong figure."""
        if self.series is None:
            return self.g_per_kwh
        if t1 <= t0:
            return self.at(t1)
        with self._lock:
            self._check_coverage(t0)
            self._check_coverage(t1)
            self._last_used = max(self._last_used, t1)
            return self.series.mean_between(t0, t1)

    def _check_coverage(self, t: float) -> None:
        s = self.series
        if self.source == "file" and s is not None and not s.covers(t) and "coverage" not in self._noted:
            self._noted.add("coverage")
            self.notes.append(f"intensity series covers {iso(s.starts[0])}..{iso(s.end)}; "
                              "the run's times outside it used the nearest value")

    # -- live providers -----------------------------------------------------------------------------
    def go_live(self, provider: "Provider", options: Mapping[str, Any], now: float) -> None:
        """Ask `provider` on a background thread and use its answer from when it arrives; this figure
        stands until then (and for the whole run if it never does). The network is never on the path to
        the command's start: a provider that hangs or drips only leaves the run on this figure."""
        self.provider = provider
        self.series = StepSeries([(now, self.g_per_kwh)], end=now)
        self._live = {"asked_at": now, "before": {"g_per_kwh": self.g_per_kwh, "source": self.source,
                                                  "region": self.region, "how": self.how}}
        self._thread = threading.Thread(target=self._first_answer, args=(dict(options),),
                                        name="carbonrun-intensity", daemon=True)
        _start_without_signals(self._thread)

    def _first_answer(self, options: Mapping[str, Any]) -> None:
        from carbonrun.intensity.providers.base import ProviderError  # a provider is loaded already

        provider, live = self.provider, self._live
        assert provider is not None and live is not None and self.series is not None
        try:
            g, t_from, t_to = provider.current()
        except Exception as exc:  # a provider bug, like a provider failure, leaves the figure in place
            why = f": {exc}" if isinstance(exc, ProviderError) else f" ({type(exc).__name__})"
            with self._lock:
                self.provider = None
                live["failed_after_s"] = round(time.time() - live["asked_at"], 3)
                self.notes.append(_scrub(f"live provider {provider.name} failed, fell back{why}", options))
            return
        arrived = time.time()
        label = provider.label()
        with self._lock:
            before = live["before"]
            self.series.add(max(arrived, self.series.starts[0]), t_to, g)
            live.update(arrived_at=arrived, arrived_after_s=round(arrived - live["asked_at"], 3))
            self.source, self.region, self.time_varying = f"provider:{provider.name}", label, True
            self.how = (f"{_live_how(provider, label, g, t_from, t_to)}; it arrived"
                        f" {arrived - live['asked_at']:.1f} s after the start, which used {before['g_per_kwh']:g}"
                        f" g/kWh ({before['source']}) until then")
            self._next_refresh = arrived
            if provider.caveat:
                self.notes.append(provider.caveat)

    def refresh(self, unix_time: float) -> None:
        """Fetch a newer live value in the background when the current one has run out; never blocks.

        Call it every tick; it does nothing unless the provider's interval (UK 30 min, Electricity Maps
        1 h, WattTime 5 min) has ended, and retries a failing provider at most every RETRY_S seconds.
        """
        if self.provider is None or self.series is None:
            return
        with self._lock:
            busy = self._thread is not None and self._thread.is_alive()
            if busy or unix_time < max(self._next_refresh, self.series.end):
                return
            self._next_refresh = unix_time + RETRY_S
            self._thread = threading.Thread(target=self._fetch, name="carbonrun-intensity", daemon=True)
            _start_without_signals(self._thread)

    def _fetch(self) -> None:
        from carbonrun.intensity.providers.base import ProviderError  # a provider is loaded already

        assert self.provider is not None and self.series is not None
        try:
            g, t_from, t_to = self.provider.current()
        except ProviderError as exc:
            with self._lock:
                if "refresh" not in self._noted:
                    self._noted.add("refresh")
                    self.notes.append(f"live refresh failed, the last value was kept: {exc}")
            return
        except Exception as exc:  # a provider bug must not kill the run
            with self._lock:
                self.notes.append(f"live refresh failed ({type(exc).__name__}); the last value was kept")
            return
        with self._lock:
            self.series.add(t_from, t_to, g)

    def wait(self, timeout: Optional[float] = None) -> None:
        """Wait for a refresh in flight (tests; the end of a run)."""
        thread = self._thread
        if thread is not None:
            thread.join(timeout)

    # -- record -------------------------------------------------------------------------------------
    def to_record(self) -> Dict[str, Any]:
        """The run record's `intensity` object (notes go to the record's top-level notes)."""
        rec: Dict[str, Any] = {"g_per_kwh": round(self.g_per_kwh, 3), "region": self.region, "source": self.source,
                               "how": self.how, "time_varying": self.time_varying}
        if self.basis is not None:  # lifecycle and operational figures differ: say which this is
            rec.update(basis=self.basis, year=self.year)
        if self.series is not None and self.time_varying:
            with self._lock:
                s = self.series
                rec["series"] = {
                    "points": len(s.values), "from": iso(s.starts[0]), "to": iso(s.end),
                    "min": min(s.values), "max": max(s.values),
                    "g_per_kwh_is": "mean of the points",
                }
        if self.provider is not None:
            rec["provider"] = {"name": self.provider.name, "granularity_s": self.provider.granularity_s}
        if self._live is not None:
            rec.update(self._live_record())
        return rec

    def _live_record(self) -> Dict[str, Any]:
        """How the live value came: when it arrived, and what the run used before (or instead of) it."""
        with self._lock:
            live = dict(self._live or {})
            before = live.pop("before")
            asked = live.pop("asked_at")
            arrived = live.pop("arrived_at", None)
            out: Dict[str, Any] = {"live": {"asked_at": iso(asked), **live, "before": before}}
            if arrived is None or (self._last_used and arrived > self._last_used):
                # no step of the run used it: the run is the fallback's, whatever came later
                state = ("failed" if "failed_after_s" in live else "arrived after the run's last step"
                         if arrived is not None else "had not arrived when the run ended")
                out["live"]["used"] = False
                out.update(g_per_kwh=before["g_per_kwh"], source=before["source"], region=before["region"],
                           how=f"{before['how']} (the live value {state})", time_varying=False)
                out.pop("series", None)
            else:
                out["live"]["used"] = True
                out["live"]["used_from"] = iso(arrived)
        return out


# -- intensity files ---------------------------------------------------------------------------------
_TIME_KEYS = ("timestamp", "time", "datetime", "date", "from", "t", "point_time")
_VALUE_KEYS = ("g_per_kwh", "gco2_per_kwh", "g_co2e_per_kwh", "gco2eq_per_kwh", "g_kwh", "carbon_intensity",
               "carbonintensity", "intensity", "value", "g")


def _norm(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.strip().lower()).strip("_")


def _timestamp(value: Any) -> float:
    """Unix seconds (a number) or ISO 8601 with an offset; finite and between 1970 and 9999."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"timestamp {value!r} is not unix seconds or ISO 8601")
    text = str(value).strip()
    try:
        float(text)
    except ValueError:
        from carbonrun.intensity.providers.base import parse_time  # HTTP-side module: only for ISO times

        return parse_time(text)
    except OverflowError:
        pass
    return number(value, UNIX_TIME, f"timestamp {text[:40]!r}")


def _g(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"intensity {value!r} is not a number of g CO2eq/kWh")
    return number(value, G_PER_KWH, f"intensity {str(value)[:40]!r} g CO2eq/kWh")


def _csv_points(text: str, fail: Any) -> List[Tuple[float, float]]:
    reader = csv.reader(io.StringIO(text))
    header: Optional[List[str]] = None
    ti = vi = -1
    points = []
    for row in reader:
        if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [_norm(h) for h in row]
            ti = next((header.index(k) for k in _TIME_KEYS if k in header), 0 if len(header) == 2 else -1)
            vi = next((header.index(k) for k in _VALUE_KEYS if k in header), 1 if len(header) == 2 else -1)
            if ti < 0 or vi < 0:
                raise fail(reader.line_num, "header needs a timestamp column and a g/kWh column "
                                            "(e.g. timestamp,g_per_kwh)")
            continue
        try:
            points.append((_timestamp(row[ti]), _g(row[vi])))
        except (ValueError, IndexError) as exc:
            raise fail(reader.line_num, str(exc) if isinstance(exc, ValueError) else "missing column") from None
    return points


def _json_points(text: str, fail: Any, fail_entry: Any) -> List[Tuple[float, float]]:
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise fail(exc.lineno, f"malformed JSON ({exc.msg})") from None
    except RecursionError:
        raise fail(1, "JSON nested too deeply") from None
    items = body.get("data") if isinstance(body, dict) else body
    if not isinstance(items, list):
        raise fail(1, 'expected a list of {"timestamp", "g_per_kwh"} or {"data": [...]}')
    points = []
    for n, item in enumerate(items, 1):
        try:
            norm = {_norm(k): v for k, v in item.items()}
            t = next(norm[k] for k in _TIME_KEYS if k in norm)
            g = next(norm[k] for k in _VALUE_KEYS if k in norm)
            points.append((_timestamp(t), _g(g)))
        except StopIteration:
            raise fail_entry(n, 'needs "timestamp" and "g_per_kwh"') from None
        except (ValueError, TypeError, AttributeError) as exc:
            raise fail_entry(n, str(exc) if isinstance(exc, ValueError) else "not an object") from None
    return points


def load_intensity_file(path: str, *, region: Optional[str] = None) -> Intensity:
    """An Intensity from a CSV or JSON time series; IntensityFileError (one line) if the file is bad.

    CSV: a header naming a timestamp column and a g/kWh column (timestamp,g_per_kwh). JSON: a list of
    {"timestamp", "g_per_kwh"} or {"data": [...]}. Timestamps are unix seconds or ISO 8601 with an
    offset. Each value holds until the next point; the last one for the series' median spacing (an
    hourly series' last hour), which is where coverage ends.
    """
    def fail(line: int, why: str) -> IntensityFileError:
        return IntensityFileError(f"intensity file {path}, line {line}: {why}")

    def fail_entry(n: int, why: str) -> IntensityFileError:
        return IntensityFileError(f"intensity file {path}, entry {n}: {why}")

    try:
        text = read_limited(path, INTENSITY_FILE_MAX_BYTES, "utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc).replace(path, "it")
        raise IntensityFileError(f"intensity file {path}: cannot read ({why[:120]})") from None
    is_json = path.lower().endswith(".json") or text.lstrip()[:1] in ("[", "{")
    points = _json_points(text, fail, fail_entry) if is_json else _csv_points(text, fail)
    if not points:
        raise IntensityFileError(f"intensity file {path}: no data rows")
    times = sorted(t for t, _ in points)
    dup = next((a for a, b in zip(times, times[1:]) if a == b), None)
    if dup is not None:
        raise IntensityFileError(f"intensity file {path}: timestamp {iso(dup)} appears twice")
    gaps = sorted(b - a for a, b in zip(times, times[1:]))
    series = StepSeries(points, end=times[-1] + (gaps[len(gaps) // 2] if gaps else 0.0))
    values = series.values
    how = (f"time series from {os.path.basename(path)}: {len(values)} points, {iso(series.starts[0])}.."
           f"{iso(series.end)}, {min(values):g}-{max(values):g} g/kWh; each value holds until the next point")
    return Intensity(sum(values) / len(values), _region_label(region), "file", how,
                     time_varying=len(values) > 1, series=series)


# -- resolution --------------------------------------------------------------------------------------
def _region_label(region: Optional[str]) -> Optional[str]:
    """The table key for a region name when there is one, else the name as given (labels only)."""
    if not region:
        return None
    try:
        return lookup(region).key
    except UnknownRegion:
        return region


def _scrub(text: str, options: Mapping[str, Any]) -> str:
    """Belt and braces: providers scrub their own secrets; remove any configured ones again."""
    secrets = [str(v) for k, v in options.items() if v and any(s in k.lower() for s in _SECRET_KEYS)]
    secrets += [v for k, v in os.environ.items() if k.startswith("CARBONRUN_") and v
                and any(s in k.lower() for s in _SECRET_KEYS)]
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return redact_text(text)


def provider_defaults(options: Optional[Mapping[str, Any]], region: Optional[str], cache_dir: Optional[str],
                      timeout: float) -> Dict[str, Any]:
    """The provider's options over the run's defaults; the run's region unless the options name one."""
    opts = {"cache_dir": cache_dir, "timeout": timeout, **dict(options or {})}
    if region and not opts.get("region"):
        opts["region"] = region
    return opts


def _live_how(provider: "Provider", label: Optional[str], g: float, t_from: float, t_to: float) -> str:
    return (f"live value from {provider.title} for {label}: {g:.0f} g/kWh for {iso(t_from)}..{iso(t_to)}, "
            f"refreshed every {provider.granularity_s // 60} min during the run")


def _from_provider(name: str, opts: Mapping[str, Any], now: float, notes: List[str]) -> Optional[Intensity]:
    from carbonrun.intensity.providers.base import ProviderError  # only with a configured provider

    provider = providers.get_provider(name, opts)  # UnknownProvider (a usage error) propagates
    try:
        g, t_from, t_to = provider.current()
    except ProviderError as exc:
        notes.append(_scrub(f"live provider {name} failed, fell back: {exc}", opts))
        return None
    except Exception as exc:  # never let a provider bug end the run
        notes.append(f"live provider {name} failed ({type(exc).__name__}), fell back")
        return None
    label = provider.label()
    how = _live_how(provider, label, g, t_from, t_to)
    out = Intensity(g, label, f"provider:{provider.name}", how, time_varying=True, notes=notes,
                    series=StepSeries([(t_from, g)], end=t_to), provider=provider)
    out._next_refresh = now
    if provider.caveat:
        out.notes.append(provider.caveat)
    return out


def _from_region(region: Region, source: str, how: str, notes: List[str]) -> Intensity:
    return Intensity(region.g_per_kwh, region.key, source, how, notes=notes, basis=region.basis, year=region.year)


def resolve_intensity(
    *,
    intensity: Optional[float],
    intensity_file: Optional[str],
    provider: Optional[str],
    provider_options: Optional[Mapping[str, Any]],
    region: Optional[str],
    now: float,
    tz_name: Optional[str] = None,
    zone_tab: str = "/usr/share/zoneinfo/zone.tab",
    cache_dir: Optional[str] = None,
    timeout: float = 3.0,
    background: bool = False,
) -> Intensity:
    """The intensity a run is accounted with, first that applies (see the module doc).

    tz_name None means the system's zone (TZ, /etc/timezone, /etc/localtime). Raises UnknownRegion
    for a region in no table, IntensityFileError for a bad file, UnknownProvider for a provider name
    that does not exist, ValueError for a negative --intensity; provider failures only add a note.
    `background`: for a run, return at once with the next step's figure and let the live provider's
    answer arrive on a thread (Intensity.go_live); otherwise wait for it (`carbonrun intensity`, plans).
    """
    if intensity is not None:
        try:
            g = number(intensity, G_PER_KWH, "--intensity")
        except ValueError as exc:
            raise ValueError(f"{exc} g CO2eq/kWh, not {intensity!r}") from None
        return Intensity(g, _region_label(region), "flag", f"set with --intensity ({g:g} g CO2eq/kWh)")
    if intensity_file:
        return load_intensity_file(intensity_file, region=region)
    notes: List[str] = []
    name = providers.configured(provider)
    opts = provider_defaults(provider_options, region, cache_dir, timeout)
    if name and background:
        provider_obj = providers.get_provider(name, opts)  # UnknownProvider (a usage error) propagates
        def tables(place: Optional[str]) -> Intensity:
            return resolve_intensity(intensity=None, intensity_file=None, provider=None, provider_options=None,
                                     region=place, now=now, tz_name=tz_name, zone_tab=zone_tab)
        try:
            base = tables(region)
        except UnknownRegion:  # the provider may know it; the tables do not
            base = tables(None)
            base.notes.insert(0, f"region {region!r} is not in the packaged tables")
        base.go_live(provider_obj, opts, now)
        return base
    if name:
        live = _from_provider(name, opts, now, notes)
        if live is not None:
            return live
    if region:
        try:
            r = lookup(region)
        except UnknownRegion:
            if not notes:  # no provider was tried: the user named a place we do not know
                raise
            notes.append(f"region {region!r} is not in the packaged tables either")
        else:
            how = f"annual average for {r.name} ({r.year}; {r.source})"
            return _from_region(r, f"table:{r.kind}", how, notes)
    zone = tz_name if tz_name is not None else local_timezone()
    code = guess_from_timezone(zone, zone_tab)
    if code:
        guessed: Optional[Region]
        try:
            guessed = lookup(code)
        except UnknownRegion:
            guessed = None
        if guessed is not None:
            r = guessed
            notes.append(f"no region set; guessed {r.name} from the time zone {zone}; set --region to be sure")
            how = f"annual average for {r.name} ({r.year}; {r.source}), guessed from the time zone {zone}"
            return _from_region(r, "timezone", how, notes)
    notes.append("no region set or guessed from the time zone; used the world average (set --region)")
    how = f"world average {WORLD_AVERAGE_G:g} g CO2eq/kWh in 2023 (Ember, Global Electricity Review 2024)"
    return Intensity(WORLD_AVERAGE_G, None, "world-average", how, notes=notes, basis="lifecycle", year=2023)


# -- what the emissions mean -------------------------------------------------------------------------
def compare_regions(record: Mapping[str, Any], names: Sequence[str]) -> Dict[str, Any]:
    """What a run's energy would have emitted in each region (annual averages), lowest first.

    UnknownRegion for a name in no table.
    """
    kwh = float(record["energy"]["total_kwh"])
    rows: List[Dict[str, Any]] = []
    for name in names:
        r = lookup(name)
        rows.append({"region": r.key, "name": r.name, "g_per_kwh": r.g_per_kwh, "year": r.year, "basis": r.basis,
                     "kg": kwh * r.g_per_kwh / 1000.0})
    rows.sort(key=lambda x: float(x["kg"]))
    ci = record.get("intensity") or {}
    bases = {str(x["basis"]) for x in rows} | ({ci["basis"]} if ci.get("basis") else set())
    notes = [] if len(bases) < 2 else [
        "these figures differ in basis: lifecycle figures (Ember's countries) add the emissions of building "
        "plants and supplying fuel, operational ones (cloud providers' regions) count combustion only, so a "
        "lifecycle figure reads higher for the same grid; compare like with like"]
    return {"run": record.get("id"), "command": record.get("command"), "total_kwh": kwh,
            "actual": {"kg": record["emissions"]["kg"], "g_per_kwh": ci.get("g_per_kwh"),
                       "region": ci.get("region"), "source": ci.get("source"), "basis": ci.get("basis"),
                       "year": ci.get("year")},
            "regions": rows, "notes": notes}


def social_cost(kg: float, scc: Sequence[float] = DEFAULT_SCC) -> Dict[str, Any]:
    """Social cost of kg CO2eq in US dollars, low/central/high, with the basis of the figures."""
    low, central, high = (float(x) for x in scc)
    tonnes = kg / 1000.0
    if (low, central, high) == DEFAULT_SCC:
        basis = EPA_BASIS
    else:
        basis = f"user-supplied: ${low:g}/t (low), ${central:g}/t (central), ${high:g}/t (high)"
    return {"low": tonnes * low, "central": tonnes * central, "high": tonnes * high, "basis": basis}


def parse_scc(text: str) -> Tuple[float, float, float]:
    """ "LOW,CENTRAL,HIGH" in US$ per tonne CO2 -> a tuple; ValueError on anything else."""
    usage = f"expected LOW,CENTRAL,HIGH in US dollars per tonne CO2 (e.g. 120,190,340), not {text!r}"
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 3:
        raise ValueError(usage)
    try:
        low, central, high = (float(p) for p in parts)
    except ValueError:
        raise ValueError(usage) from None
    if not all(is_sane(x, SCC_USD_PER_T) for x in (low, central, high)) or not low <= central <= high:
        raise ValueError(usage)
    return low, central, high


def equivalent(kg: float) -> str:
    """One everyday comparison: car distance for small figures, a share of a flight for large ones."""
    kg = max(kg, 0.0)
    if kg >= FLIGHT_KG * 0.1:
        share = kg / FLIGHT_KG
        trip = "New York <-> San Francisco round trip by air (~900 kg; Strubell et al., 2019)"
        if share >= 1.5:
            return f"about {share:.1f} times one passenger's {trip}"
        return f"about {share * 100:.0f}% of one passenger's {trip}"
    km = kg * 1000.0 / CAR_G_PER_KM
    m = km * 1000
    if km >= 1:
        dist = f"{km:.1f} km" if km < 10 else f"{km:,.0f} km"
    elif m >= 1:
        dist = f"{m:.0f} m"
    else:
        dist = f"{m * 1000:.2g} mm" if m < 0.01 else f"{m * 100:.0f} cm"  # never exponent notation (9.4e+02)
        dist = dist if m >= 1e-3 else ""
    if not dist:
        return "less than 1 mm of driving an average passenger car (US EPA, ~250 g CO2/km)"
    return f"driving an average passenger car about {dist} (US EPA, ~250 g CO2/km)"
