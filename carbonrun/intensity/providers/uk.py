"""National Grid ESO's Carbon Intensity API (Great Britain): no key, national and regional, half-hourly.

Region option: none/"GB"/"UK"/"national" for Great Britain as a whole, a DNO region id ("13" is
London), or the outward part of a postcode ("BS7"). National figures use the measured `actual` when the
half-hour has one, else the `forecast`; regional figures are forecasts only (the API has no actuals).
"""
from __future__ import annotations

from typing import Any, List, Optional, Tuple

from carbonrun.intensity.providers.base import (
    Provider, Reading, Segment, g_per_kwh, iso, overlapping, parse_time,
)

_NATIONAL = ("", "GB", "UK", "GBR", "NATIONAL")


def _segment(item: Any) -> Segment:
    intensity = item["intensity"]
    value = intensity.get("actual")
    if value is None:
        value = intensity["forecast"]
    t_from, t_to = parse_time(item["from"]), parse_time(item["to"])
    if t_to <= t_from:
        raise ValueError(f"half-hour {item['from']!r}..{item['to']!r} ends before it starts")
    return t_from, t_to, g_per_kwh(value)


def _national(body: Any) -> List[Segment]:
    return [_segment(item) for item in body["data"]]


def _regional(body: Any) -> List[Segment]:
    """Regional answers wrap the half-hours in a region object (a list of one, or the object itself)."""
    region = body["data"]
    if isinstance(region, list):
        region = region[0]
    return [_segment(item) for item in region["data"]]


class UKCarbonIntensity(Provider):
    name = "uk"
    title = "UK Carbon Intensity API"
    default_base_url = "https://api.carbonintensity.org.uk"
    granularity_s = 1800

    def _scope(self, region: Optional[str]) -> Optional[Tuple[str, str]]:
        """None for national, else ("regionid", "13") or ("postcode", "BS7")."""
        r = str(region or self.region or "").strip().upper()
        if r in _NATIONAL:
            return None
        if r.isdigit():
            return "regionid", r
        return "postcode", r.split()[0]

    def label(self, region: Optional[str] = None) -> Optional[str]:
        scope = self._scope(region)
        return "GB" if scope is None else f"GB {scope[0]} {scope[1]}"

    def _get(self, path_national: str, path_regional: str, region: Optional[str], keep: float) -> List[Segment]:
        scope = self._scope(region)
        if scope is None:
            return self.fetch(path_national, _national, lambda segs: keep or segs[0][1])
        from urllib.parse import quote  # a region is one path segment, whatever a config file put in it

        return self.fetch(f"{path_regional}/{scope[0]}/{quote(scope[1], safe='')}", _regional,
                          lambda segs: keep or segs[0][1])

    def current(self, region: Optional[str] = None) -> Reading:
        segs = self._get("/intensity", "/regional", region, 0.0)
        now = self.clock()
        t_from, t_to, g = next((s for s in segs if s[0] <= now < s[1]), segs[0])
        return g, t_from, t_to

    def forecast(self, start: float, end: float, region: Optional[str] = None) -> List[Segment]:
        frm = iso(start)
        keep = self.clock() + self.granularity_s
        segs = self._get(f"/intensity/{frm}/fw48h", f"/regional/intensity/{frm}/fw48h", region, keep)
        return overlapping(segs, start, end)
