"""The live intensity provider interface, plus what every provider shares: HTTP, cache, secrets.

Why stdlib urllib: the providers make a handful of small GETs per run; a new dependency is not worth it.
Every failure becomes a one-line ProviderError whose text has had the provider's secrets removed, so
callers may put it in notes and logs as is.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import re
import stat
import time
import urllib.parse
from typing import Any, Callable, List, Mapping, Optional, Tuple, TypeVar, Union

from carbonrun.net import CREDENTIAL_HEADERS, MAX_BODY, TooLarge, credential_problem, http_get  # the HTTP client
from carbonrun.validate import G_PER_KWH, STEP_S, TIMEOUT_S, UNIX_TIME, number
from carbonrun.timefmt import iso as _iso
from carbonrun.files import private_dirs, write_atomic
from carbonrun.redact import redact_text

T = TypeVar("T")
Segment = Tuple[float, float, float]  # (valid_from, valid_to, g CO2eq per kWh), unix seconds
Reading = Tuple[float, float, float]  # (g CO2eq per kWh, valid_from, valid_to): what current() returns
USER_AGENT = "carbonrun"


class ProviderError(Exception):
    """A provider could not give a figure; the message is one line and holds no secret."""

    def __init__(self, message: str, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.status = status


# What parsing an unexpected (or hostile) answer can raise: a wrong shape, a bad number or time.
_BAD_ANSWER = (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError, RecursionError)


class UnknownProvider(ValueError):
    """No provider has that name (a usage error, unlike a provider failure)."""


_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}:\d{2})(:\d{2})?(?:\.(\d+))?\s*(Z|z|[+-]\d{2}(?::?\d{2})?)$"
)


def _short(exc: BaseException, limit: int = 160) -> str:
    """An exception's text cut to `limit` characters: a server's junk must not fill notes and records."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def parse_time(text: str) -> float:
    """Unix seconds from ISO 8601 with a UTC offset ("2024-05-01T12:00Z", "...T12:00:00.000+02:00").

    Written out because Python 3.9's fromisoformat takes neither "Z" nor 3-digit fractions everywhere,
    and a time without an offset is ambiguous, so it is refused.
    """
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not an ISO 8601 time")
    m = _ISO.match(text.strip())
    if not m:
        raise ValueError(f"{text!r} is not ISO 8601 with a UTC offset")
    date, hm, sec, frac, off = m.groups()
    if off in ("Z", "z"):
        off = "+00:00"
    elif len(off) == 3:
        off += ":00"
    elif ":" not in off:
        off = f"{off[:3]}:{off[3:]}"
    frac6 = f".{(frac or '')[:6]:0<6}"
    try:
        t = _dt.datetime.fromisoformat(f"{date}T{hm}{sec or ':00'}{frac6}{off}").timestamp()
    except OverflowError:
        t = math.inf
    return number(t, UNIX_TIME, f"time {text.strip()[:40]!r}")


def iso(t: float) -> str:
    """Unix seconds as ISO 8601 UTC to the minute, the form the provider APIs take."""
    return _iso(t, utc=True, timespec="minutes")


def _read_own(path: str) -> bytes:
    """A cache file's bytes, only if it is a regular file of ours that no one else may write (a cache
    in a directory others can write could otherwise feed the run any intensity)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise OSError(f"{path}: not a private file of ours")
        return f.read(2 * MAX_BODY)


class DiskCache:
    """Small JSON cache keyed by URL, each entry kept until the end of the data's validity.

    Why: a run, `carbonrun intensity` and a later scheduler often ask for the same half-hour or hour;
    the provider's granularity bounds how long an answer stays true. No directory, no cache.
    """

    def __init__(self, directory: Optional[str]) -> None:
        self.directory = directory

    def _path(self, url: str) -> str:
        return os.path.join(self.directory or "", hashlib.sha256(url.encode()).hexdigest()[:40] + ".json")

    def get(self, url: str, now: float) -> Any:
        if not self.directory:
            return None
        try:
            entry = json.loads(_read_own(self._path(url)))
            if entry.get("url") == url and float(entry["expires_at"]) > now:
                return entry["body"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, RecursionError):
            pass
        return None

    def put(self, url: str, body: Any, expires_at: float, now: float) -> None:
        if not self.directory or expires_at <= now:
            return
        try:
            private_dirs(self.directory)  # 0700 whatever the umask: no one else plants an answer
            write_atomic(self._path(url), json.dumps({"url": url, "fetched_at": now, "expires_at": expires_at,
                                                      "body": body}))
        except OSError:
            pass  # a cache that cannot be written is only a slower cache


class Provider:
    """A live grid-intensity source. Subclasses set the class attributes and implement current().

    Options (all optional): base_url (mirrors, tests), timeout (seconds per request), cache_dir,
    region (the provider's own zone/region id), clock (a time.time stand-in), and the provider's
    credentials (else read from CARBONRUN_* environment variables).
    """

    name = "base"
    title = "provider"
    default_base_url = ""
    granularity_s = 3600
    default_region: Optional[str] = None
    caveat: Optional[str] = None  # a note the record must carry whenever this provider's figure is used

    def __init__(self, options: Optional[Mapping[str, Any]] = None) -> None:
        opts = dict(options or {})
        self.base_url = str(opts.get("base_url") or self.default_base_url).rstrip("/")
        self.timeout = number(opts.get("timeout") or 3.0, TIMEOUT_S, "provider timeout (s)")
        self.region: Optional[str] = opts.get("region") or self.default_region
        self.cache = DiskCache(opts.get("cache_dir"))
        self.clock: Callable[[], float] = opts.get("clock") or time.time
        self.requests = 0  # HTTP requests actually sent (cache hits do not count)

    # -- the interface ------------------------------------------------------------------------------
    def current(self, region: Optional[str] = None) -> Reading:
        """(g_per_kwh, valid_from, valid_to): the intensity now and the interval it is valid for."""
        raise NotImplementedError

    def forecast(self, start: float, end: float, region: Optional[str] = None) -> List[Segment]:
        """Forecast intensities overlapping [start, end] (for carbon-aware scheduling)."""
        raise ProviderError(f"{self.title}: no forecast endpoint")

    def label(self, region: Optional[str] = None) -> Optional[str]:
        """The region name to record for a figure from this provider."""
        return region or self.region

    # -- shared machinery ---------------------------------------------------------------------------
    def secrets(self) -> List[str]:
        """Values that must never appear in messages (tokens, passwords, derived headers)."""
        return []

    def scrub(self, text: str) -> str:
        for secret in sorted(self.secrets(), key=len, reverse=True):
            if secret and len(secret) >= 3:
                text = text.replace(secret, "***")
        return text

    def fail(self, message: str, status: Optional[int] = None) -> ProviderError:
        return ProviderError(redact_text(self.scrub(f"{self.title}: {message}")), status)

    def fetch(
        self,
        path: str,
        parse: Callable[[Any], T],
        expires: Callable[[T], float],
        params: Optional[Mapping[str, Any]] = None,
        headers: Union[None, Mapping[str, str], Callable[[], Mapping[str, str]]] = None,
        cache: bool = True,
    ) -> T:
        """GET base_url+path as JSON, parse it, and cache the raw answer until expires(parsed).

        headers may be a callable so that a login happens only when the cache misses.
        """
        url = self.base_url + path + ("?" + urllib.parse.urlencode(params) if params else "")
        now = self.clock()
        body = self.cache.get(url, now) if cache else None
        if body is not None:
            try:
                return parse(body)
            except _BAD_ANSWER:
                pass  # a cached answer we cannot read: ask again
        hdrs = headers() if callable(headers) else (headers or {})
        body = self.get_json(url, hdrs)
        try:
            parsed = parse(body)
        except _BAD_ANSWER as exc:
            raise self.fail(f"unexpected answer ({type(exc).__name__}: {_short(exc)})") from None
        if cache:
            self.cache.put(url, body, min(expires(parsed), now + 2 * self.granularity_s), now)
        return parsed

    def get_json(self, url: str, headers: Mapping[str, str]) -> Any:
        """One GET within the timeout, all of it; every failure becomes a scrubbed ProviderError."""
        import urllib.error  # HTTP errors: only once a request failed

        shown = url.split("?", 1)[0]
        if any(name.lower() in CREDENTIAL_HEADERS for name in headers):
            problem = credential_problem(url)
            if problem:
                raise self.fail(f"refusing to send credentials to {shown}: {problem}")
        self.requests += 1
        try:
            raw = http_get(url, {"Accept": "application/json", "User-Agent": USER_AGENT, **headers}, self.timeout)
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403):
                raise self.fail(f"authentication refused (HTTP {exc.code}); check {self.credentials_hint()}",
                                exc.code) from None
            raise self.fail(f"HTTP {exc.code} from {shown}", exc.code) from None
        except TooLarge:
            raise self.fail(f"answer from {shown} larger than {MAX_BODY >> 20} MiB") from None
        except Exception as exc:  # URLError, timeouts, resets, malformed URLs, bad redirects
            reason = getattr(exc, "reason", exc)
            if isinstance(exc, TimeoutError) or "timed out" in str(reason):
                raise self.fail(f"no answer from {shown} within {self.timeout:g} s") from None
            raise self.fail(f"cannot reach {shown} ({reason})") from None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise self.fail(f"malformed JSON from {shown}") from None

    def credentials_hint(self) -> str:
        return "the provider's credentials"


def g_per_kwh(value: Any, scale: float = 1.0) -> float:
    """A provider's intensity figure, checked: NaN, Infinity, negatives and 1e308 are not answers."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"intensity {value!r} is not a number")
    return number(number(value, what="intensity") * scale, G_PER_KWH, "intensity (g CO2eq/kWh)")


def step_s(value: Any) -> float:
    """A provider's data period in seconds, checked like every other number."""
    return number(value, STEP_S, "data period (s)")


def env_or_option(options: Optional[Mapping[str, Any]], key: str, env_var: str) -> Optional[str]:
    """A credential from the options (config) or else the environment; never from the command line."""
    value = (options or {}).get(key) or os.environ.get(env_var)
    return str(value) if value else None


def segments_from_points(points: List[Tuple[float, float]], step_s: float) -> List[Segment]:
    """Point series -> segments: each point holds until the next one (the last for step_s)."""
    points = sorted(points)
    out: List[Segment] = []
    for i, (t, g) in enumerate(points):
        t_to = points[i + 1][0] if i + 1 < len(points) else t + step_s
        out.append((t, t_to, g))
    return out


def overlapping(segments: List[Segment], start: float, end: float) -> List[Segment]:
    return [s for s in segments if s[1] > start and s[0] <= end]

