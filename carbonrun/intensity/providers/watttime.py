"""WattTime API v3: marginal operating emission rate (`co2_moer`) per grid region, every 5 minutes.

Login is HTTP basic auth on /login and returns a bearer token (held in memory only, never cached on
disk). MOER values come in lbs CO2 per MWh; 1 lb/MWh = 0.453592 g/kWh. The current value is the first
point of /v3/forecast with horizon_hours=0. A MOER is the rate of the generators that answer extra load,
not the grid's average, so every figure from here carries a caveat note.
"""
from __future__ import annotations

import base64
from typing import Any, Callable, List, Mapping, Optional, TypeVar

from carbonrun.intensity.providers.base import (
    Provider, ProviderError, Reading, Segment, env_or_option, g_per_kwh, overlapping, parse_time,
    segments_from_points, step_s,
)

T = TypeVar("T")
USER_ENV = "CARBONRUN_WATTTIME_USER"
PASSWORD_ENV = "CARBONRUN_WATTTIME_PASSWORD"
LB_PER_MWH_TO_G_PER_KWH = 0.453592
_UNITS = {"lbs_co2_per_mwh": LB_PER_MWH_TO_G_PER_KWH, "kg_co2_per_mwh": 1.0, "g_co2_per_kwh": 1.0}


class WattTime(Provider):
    name = "watttime"
    title = "WattTime"
    default_base_url = "https://api.watttime.org"
    granularity_s = 300
    caveat = ("WattTime's co2_moer is a marginal emission rate (the generators that respond to extra load), "
              "not the grid's average intensity; it is not comparable with the packaged annual tables")

    def __init__(self, options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(options)
        self._user = env_or_option(options, "user", USER_ENV)
        self._password = env_or_option(options, "password", PASSWORD_ENV)
        self._token: Optional[str] = None

    def secrets(self) -> List[str]:
        out = [s for s in (self._user, self._password, self._token) if s]
        if self._user and self._password:
            out.append(self._basic())
        return out

    def credentials_hint(self) -> str:
        return f"{USER_ENV} and {PASSWORD_ENV}"

    def _basic(self) -> str:
        return base64.b64encode(f"{self._user}:{self._password}".encode()).decode()

    def _login(self) -> str:
        if not (self._user and self._password):
            raise self.fail(f"no credentials; set {USER_ENV} and {PASSWORD_ENV}")
        body = self.get_json(self.base_url + "/login", {"Authorization": f"Basic {self._basic()}"})
        token = body.get("token") if isinstance(body, dict) else None
        if not token:
            raise self.fail("login answered without a token")
        self._token = str(token)
        return self._token

    def _authed(self, path: str, parse: Callable[[Any], T], expires: Callable[[T], float],
                params: Mapping[str, Any]) -> T:
        """fetch() with a bearer token: log in on a cache miss, and once more if the token expired."""
        def headers() -> Mapping[str, str]:
            return {"Authorization": f"Bearer {self._token or self._login()}"}

        try:
            return self.fetch(path, parse, expires, params=params, headers=headers)
        except ProviderError as exc:
            if exc.status != 401 or self._token is None:
                raise
            self._token = None  # tokens last about 30 minutes: log in again, once
            return self.fetch(path, parse, expires, params=params, headers=headers)

    def _region(self, region: Optional[str]) -> str:
        r = region or self.region
        if not r:
            raise self.fail("no region; set the region to a WattTime region such as CAISO_NORTH")
        return r

    def _parse(self, body: Any) -> List[Segment]:
        meta = body.get("meta") or {}
        units = str(meta.get("units", "lbs_co2_per_mwh"))
        if units not in _UNITS:
            raise ValueError(f"unsupported units {units!r}")
        step = step_s(meta.get("data_point_period_seconds") or self.granularity_s)
        points = [(parse_time(p["point_time"]), g_per_kwh(p["value"], _UNITS[units])) for p in body["data"]]
        if not points:
            raise ValueError("no data points")
        return segments_from_points(points, step)

    def _signal(self, path: str, params: Mapping[str, Any], keep: Optional[float] = None) -> List[Segment]:
        full = {"region": None, "signal_type": "co2_moer", **params}
        return self._authed(path, self._parse, lambda segs: keep or segs[0][1], full)

    def current(self, region: Optional[str] = None) -> Reading:
        t_from, t_to, g = self._signal("/v3/forecast", {"region": self._region(region), "horizon_hours": 0})[0]
        return g, t_from, t_to

    def forecast(self, start: float, end: float, region: Optional[str] = None) -> List[Segment]:
        keep = self.clock() + self.granularity_s
        segs = self._signal("/v3/forecast", {"region": self._region(region)}, keep)
        return overlapping(segs, start, end)
