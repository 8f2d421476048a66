"""Electricity Maps API v3: per-zone carbon intensity (lifecycle), hourly by default; needs a token.

The token comes from the provider options (config) or CARBONRUN_ELECTRICITYMAPS_TOKEN and travels only
in the `auth-token` header, never in a URL, so cache keys and messages cannot hold it.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional

from carbonrun.intensity.providers.base import (
    Provider, Reading, Segment, env_or_option, g_per_kwh, overlapping, parse_time, segments_from_points,
)

TOKEN_ENV = "CARBONRUN_ELECTRICITYMAPS_TOKEN"
_GRANULARITY = {"5_minutes": 300, "15_minutes": 900, "hourly": 3600, "daily": 86400}


class ElectricityMaps(Provider):
    name = "electricitymaps"
    title = "Electricity Maps"
    default_base_url = "https://api.electricitymaps.com"
    granularity_s = 3600

    def __init__(self, options: Optional[Mapping[str, Any]] = None) -> None:
        super().__init__(options)
        self._token = env_or_option(options, "token", TOKEN_ENV)

    def secrets(self) -> List[str]:
        return [self._token] if self._token else []

    def credentials_hint(self) -> str:
        return TOKEN_ENV

    def _headers(self) -> Mapping[str, str]:
        if not self._token:
            raise self.fail(f"no API token; set {TOKEN_ENV} or the provider's token in the config")
        return {"auth-token": self._token}

    def _zone(self, region: Optional[str]) -> str:
        zone = region or self.region
        if not zone:
            raise self.fail("no zone; set the region to an Electricity Maps zone such as FR or US-CAL-CISO")
        return zone

    def _step(self, body: Any) -> float:
        return float(_GRANULARITY.get(str(body.get("temporalGranularity")), self.granularity_s))

    def current(self, region: Optional[str] = None) -> Reading:
        def parse(body: Any) -> Reading:
            t = parse_time(body["datetime"])
            return g_per_kwh(body["carbonIntensity"]), t, t + self._step(body)

        return self.fetch("/v3/carbon-intensity/latest", parse, lambda reading: reading[2],
                          params={"zone": self._zone(region)}, headers=self._headers)

    def _series(self, path: str, key: str, start: float, end: float, region: Optional[str]) -> List[Segment]:
        def parse(body: Any) -> List[Segment]:
            points = [(parse_time(p["datetime"]), g_per_kwh(p["carbonIntensity"]))
                      for p in body[key] if p.get("carbonIntensity") is not None]
            return segments_from_points(points, self._step(body))

        keep = self.clock() + self.granularity_s
        segs = self.fetch(path, parse, lambda _: keep, params={"zone": self._zone(region)}, headers=self._headers)
        return overlapping(segs, start, end)

    def forecast(self, start: float, end: float, region: Optional[str] = None) -> List[Segment]:
        return self._series("/v3/carbon-intensity/forecast", "forecast", start, end, region)
