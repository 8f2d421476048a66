"""Packaged grid-intensity tables: countries (Ember via OWID) and cloud regions (Google, CCF).

Tables load on first use (never at import) and are cached, so `import carbonrun.intensity.regions` stays free.
Regions are named as users type them: ISO alpha-2/alpha-3, English country name, or `aws:`/`gcp:`/`azure:`
plus the provider's region id. The time-zone helpers give a best guess when the user named no region.
"""
from __future__ import annotations

import csv
import functools
import io
import os
import unicodedata
from typing import Dict, List, Mapping, NamedTuple, Optional

CLOUD_PROVIDERS = ("aws", "gcp", "azure")
_CLOUD_TITLES = {"aws": "AWS", "gcp": "GCP", "azure": "Azure"}
# Common names that differ from the table's English names (matched after accent folding).
_ALIASES = {
    "uk": "GB", "great britain": "GB", "britain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "united states of america": "US", "america": "US", "russia": "RU", "turkey": "TR",
    "czech republic": "CZ", "ivory coast": "CI", "macedonia": "MK", "swaziland": "SZ",
    "cape verde": "CV", "burma": "MM", "holland": "NL", "korea": "KR", "republic of korea": "KR",
    "dr congo": "CD", "democratic republic of the congo": "CD", "palestine": "PS",
}
_ISO3: Dict[str, str] = {}  # alpha-2 -> alpha-3, filled with the country table


class Region(NamedTuple):
    """One row of a packaged table: the annual (or provider-reported) grid intensity of a place."""

    key: str  # "FR" or "gcp:europe-west9"
    name: str  # "France" or "GCP europe-west9 (Paris)"
    g_per_kwh: float
    year: int
    source: str  # source and licence, verbatim from the table
    kind: str  # "country" | "cloud"
    basis: str = "lifecycle"  # lifecycle (construction and fuel supply too) | operational (combustion only)


class UnknownRegion(LookupError):
    """The region is in no packaged table; the message lists the closest names."""


def _fold(text: str) -> str:
    """Lower-case and strip accents so "reunion" finds "Réunion" and "turkiye" finds "Türkiye"."""
    decomposed = unicodedata.normalize("NFKD", text.strip().lower())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _read_table(name: str) -> List[Dict[str, str]]:
    with open(os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", name), encoding="utf-8") as f:
        text = f.read()
    return list(csv.DictReader(io.StringIO(text)))


@functools.lru_cache(maxsize=1)
def _tables() -> Dict[str, Region]:
    """All regions by key, countries first (in table order), then cloud regions."""
    out: Dict[str, Region] = {}
    for r in _read_table("countries.csv"):
        _ISO3[r["iso2"]] = r["iso3"]
        out[r["iso2"]] = Region(r["iso2"], r["country"], float(r["g_co2e_per_kwh"]), int(r["year"]),
                                r["source"], "country", r.get("basis") or "lifecycle")
    for r in _read_table("cloud_regions.csv"):
        key = f"{r['provider']}:{r['region']}"
        name = f"{_CLOUD_TITLES[r['provider']]} {r['region']}" + (f" ({r['location']})" if r["location"] else "")
        out[key] = Region(key, name, float(r["g_co2e_per_kwh"]), int(r["year"]), r["source"], "cloud",
                          r.get("basis") or "operational")
    return out


@functools.lru_cache(maxsize=1)
def _index() -> Dict[str, Region]:
    """Every accepted spelling (folded) -> region."""
    regions = _tables()
    idx: Dict[str, Region] = {}
    for key, region in regions.items():
        idx[_fold(key)] = region
        if region.kind == "country":
            idx[_fold(_ISO3[key])] = region
            idx[_fold(region.name)] = region
            if ", " in region.name:  # "Virgin Islands, British" -> "british virgin islands"
                head, tail = region.name.split(", ", 1)
                idx.setdefault(_fold(f"{tail} {head}"), region)
    for alias, key in _ALIASES.items():
        idx.setdefault(alias, regions[key])
    return idx


def lookup(name: str) -> Region:
    """The region for `name` (alpha-2, alpha-3, English name, or `aws:`/`gcp:`/`azure:` region)."""
    query = _fold(name)
    if ":" in query:  # tolerate "gcp: europe-west9"
        provider, _, rest = query.partition(":")
        query = f"{provider.strip()}:{rest.strip()}"
    region = _index().get(query)
    if region is None:
        raise UnknownRegion(_unknown_message(name, query))
    return region


def alpha3(key: str) -> str:
    """The ISO 3166 alpha-3 code of a country key (FR -> FRA); "" for a cloud region or an unknown key."""
    _tables()
    return _ISO3.get(key, "")


def _unknown_message(name: str, query: str) -> str:
    idx = _index()
    candidates = list(idx)
    if ":" in query:  # suggest within the same cloud when one was named
        prefix = query.split(":", 1)[0] + ":"
        candidates = [c for c in candidates if c.startswith(prefix)] or candidates
    matches: List[str] = []
    for cutoff in (0.6, 0.4):
        import difflib  # suggestions only for an unknown region

        matches = difflib.get_close_matches(query, candidates, n=8, cutoff=cutoff)
        if matches:
            break
    seen: List[str] = []
    for m in matches:
        r = idx[m]
        label = r.key if r.kind == "cloud" else f"{r.key} ({r.name})"
        if label not in seen:
            seen.append(label)
    hint = "`carbonrun intensity --list` shows all regions"
    if seen:
        return f"unknown region {name!r}; did you mean: {', '.join(seen[:5])}? ({hint})"
    return f"unknown region {name!r} ({hint})"


def list_regions(filter: Optional[str] = None) -> List[Region]:
    """All regions, countries by name then cloud regions by key; `filter` matches key, name or kind."""
    regions = list(_tables().values())
    if filter:
        needle = _fold(filter)
        regions = [r for r in regions if needle in _fold(f"{r.key} {r.name} {r.kind}")]
    return sorted(regions, key=lambda r: (r.kind != "country", r.name if r.kind == "country" else r.key))


def guess_from_timezone(tz_name: Optional[str], zone_tab_path: str = "/usr/share/zoneinfo/zone.tab") -> Optional[str]:
    """The ISO alpha-2 country of an IANA zone ("Europe/Paris" -> "FR"), or None.

    zone.tab is the system's own zone -> country map, so no table of ours can go stale. UTC and other
    country-less zones give None (the caller falls back to the world average).
    """
    if not tz_name:
        return None
    tz_name = tz_name.strip()
    try:
        with open(zone_tab_path, encoding="utf-8") as f:
            for line in f:
                if line.startswith("#") or not line.strip():
                    continue
                fields = line.rstrip("\n").split("\t")
                if len(fields) >= 3 and fields[2] == tz_name:
                    return fields[0].split(",")[0].upper()  # zone1970.tab lists several codes
    except OSError:
        return None
    return None


def _zone_from_path(path: str) -> Optional[str]:
    marker = "zoneinfo/"
    i = path.find(marker)
    return path[i + len(marker):] if i >= 0 else None


def local_timezone(etc_root: str = "/", env: Optional[Mapping[str, str]] = None) -> Optional[str]:
    """The system's IANA zone name from TZ, /etc/timezone, or the /etc/localtime link; None if unknown."""
    env = os.environ if env is None else env
    tz = (env.get("TZ") or "").lstrip(":").strip()
    if tz:
        if tz.startswith("/"):
            return _zone_from_path(tz)
        if "/" in tz or tz.upper() in ("UTC", "GMT"):
            return tz
        # POSIX rules such as "CET-1CEST" name no country: fall through to the files.
    try:
        with open(os.path.join(etc_root, "etc", "timezone"), encoding="utf-8") as f:
            name = f.readline().strip()
        if name:
            return name
    except OSError:
        pass
    try:
        return _zone_from_path(os.readlink(os.path.join(etc_root, "etc", "localtime")))
    except OSError:
        return None
