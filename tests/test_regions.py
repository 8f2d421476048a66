"""Packaged region tables, lookups, suggestions, and the time-zone guess."""
from __future__ import annotations

import csv
import io
import os
from importlib import resources

import pytest

from carbonrun.intensity import regions
from carbonrun.intensity.regions import UnknownRegion, guess_from_timezone, list_regions, local_timezone, lookup


def _data(name: str) -> str:
    return resources.files("carbonrun").joinpath("data").joinpath(name).read_text(encoding="utf-8")


@pytest.mark.parametrize("query", ["FR", "fr", "FRA", "france", "France ", "FRANCE"])
def test_country_by_code_or_name(query):
    r = lookup(query)
    assert (r.key, r.name, r.kind, r.g_per_kwh, r.year) == ("FR", "France", "country", 56.0, 2023)
    assert "CC BY 4.0" in r.source


def test_united_kingdom_and_aliases():
    assert lookup("united kingdom").key == "GB"
    assert lookup("GBR").key == "GB"
    assert lookup("uk").key == "GB"
    assert lookup("reunion").name == "Réunion"  # accents folded
    assert lookup("british virgin islands").key == "VG"  # "Virgin Islands, British" reordered


@pytest.mark.parametrize("query,g,year,src", [
    ("gcp:europe-west9", 16.3, 2024, "Google Cloud"),
    ("GCP:Europe-West9", 16.3, 2024, "Google Cloud"),
    ("aws:us-east-1", 379.07, 2021, "Cloud Carbon Footprint AWS"),
    ("azure:westeurope", 328.4, 2021, "Cloud Carbon Footprint Azure"),
])
def test_cloud_regions(query, g, year, src):
    r = lookup(query)
    assert r.kind == "cloud" and r.key == query.lower()
    assert (r.g_per_kwh, r.year) == (g, year)
    assert src in r.source and "Apache-2.0" in r.source


def test_cloud_region_name_includes_location():
    assert lookup("gcp:europe-west9").name == "GCP europe-west9 (Paris)"


def test_unknown_region_lists_closest_matches():
    with pytest.raises(UnknownRegion) as exc:
        lookup("XX")
    msg = str(exc.value)
    assert msg.startswith("unknown region 'XX'; did you mean: ")
    assert "MX (Mexico)" in msg


def test_misspelt_name_and_cloud_region_suggest_the_right_one():
    with pytest.raises(UnknownRegion, match=r"did you mean: FR \(France\)"):
        lookup("Frnace")
    with pytest.raises(UnknownRegion) as exc:
        lookup("gcp:europe-west99")
    suggestions = str(exc.value).split("did you mean: ")[1]
    assert suggestions.startswith("gcp:europe-west9") and "aws:" not in suggestions


def test_unknown_region_is_a_lookup_error_not_a_value_error():
    # the CLI maps UnknownRegion to exit 2; it must not be swallowed as a bad-file ValueError
    assert issubclass(UnknownRegion, LookupError) and not issubclass(UnknownRegion, ValueError)


def test_list_regions_and_filter():
    everything = list_regions()
    assert len(everything) == 212 + 136
    kinds = [r.kind for r in everything]
    assert kinds.index("cloud") == 212 and set(kinds[212:]) == {"cloud"}  # countries first
    names = [r.name for r in everything[:212]]
    assert names == sorted(names)
    aws = list_regions("aws")
    assert len(aws) == 27 and all(r.key.startswith("aws:") for r in aws)
    assert [r.key for r in list_regions("paris")] == ["gcp:europe-west9"]
    assert list_regions("no-such-place") == []


def test_packaged_tables_and_attribution():
    countries = list(csv.DictReader(io.StringIO(_data("countries.csv"))))
    clouds = list(csv.DictReader(io.StringIO(_data("cloud_regions.csv"))))
    cpus = list(csv.DictReader(io.StringIO(_data("cpu_tdp.csv"))))
    assert len(countries) == 212 and all(r["source"] for r in countries)
    assert len(clouds) == 136 and {r["provider"] for r in clouds} == {"aws", "gcp", "azure"}
    assert len(cpus) > 4000 and set(cpus[0]) == {"model", "tdp_w"} and float(cpus[0]["tdp_w"]) > 0
    att = _data("ATTRIBUTION.md")
    for needle in ("Ember", "Our World in Data", "CC BY 4.0", "region-carbon-info", "Cloud Carbon Footprint",
                   "Apache-2.0", "CodeCarbon", "MIT", "countries.csv", "cloud_regions.csv", "cpu_tdp.csv"):
        assert needle in att, needle


def test_tables_are_not_read_at_import(tmp_path):
    import subprocess
    import sys

    code = ("import carbonrun.intensity.regions as r, carbonrun.intensity.carbon; "
            "assert r._tables.cache_info().currsize == 0")
    subprocess.run([sys.executable, "-c", code], check=True)


ZONE_TAB = """# tz zone descriptions
#country-
#code\tcoordinates\tTZ\tcomments
FR\t+4852+00220\tEurope/Paris
GB\t+513030-0000731\tEurope/London
US\t+404251-0740023\tAmerica/New_York\tEastern (most areas)
CH,DE,LI\t+4723+00832\tEurope/Zurich
"""


@pytest.fixture
def zone_tab(tmp_path):
    p = tmp_path / "zone.tab"
    p.write_text(ZONE_TAB)
    return str(p)


def test_guess_from_timezone(zone_tab):
    assert guess_from_timezone("Europe/Paris", zone_tab) == "FR"
    assert guess_from_timezone("America/New_York", zone_tab) == "US"
    assert guess_from_timezone("Europe/Zurich", zone_tab) == "CH"  # zone1970.tab style: first code
    assert guess_from_timezone("Etc/UTC", zone_tab) is None
    assert guess_from_timezone(None, zone_tab) is None
    assert guess_from_timezone("Europe/Paris", zone_tab + ".missing") is None


def test_local_timezone_sources(tmp_path):
    empty = tmp_path / "empty"
    (empty / "etc").mkdir(parents=True)
    assert local_timezone(str(empty), env={"TZ": "Europe/Paris"}) == "Europe/Paris"
    assert local_timezone(str(empty), env={"TZ": ":/usr/share/zoneinfo/Asia/Tokyo"}) == "Asia/Tokyo"
    assert local_timezone(str(empty), env={}) is None

    with_file = tmp_path / "file"
    (with_file / "etc").mkdir(parents=True)
    (with_file / "etc" / "timezone").write_text("Europe/London\n")
    assert local_timezone(str(with_file), env={}) == "Europe/London"
    # a POSIX rule names no zone: the files win
    assert local_timezone(str(with_file), env={"TZ": "CET-1CEST"}) == "Europe/London"

    with_link = tmp_path / "link"
    (with_link / "etc").mkdir(parents=True)
    os.symlink("/usr/share/zoneinfo/America/New_York", with_link / "etc" / "localtime")
    assert local_timezone(str(with_link), env={}) == "America/New_York"


def test_lookup_is_cached():
    regions._tables.cache_clear()
    regions._index.cache_clear()
    lookup("FR")
    lookup("DE")
    assert regions._tables.cache_info().misses == 1


def test_tables_carry_their_basis_and_compare_says_when_it_differs():
    from carbonrun.intensity.carbon import compare_regions

    assert (lookup("FR").basis, lookup("gcp:europe-west9").basis, lookup("aws:eu-west-3").basis) == \
        ("lifecycle", "operational", "operational")
    record = {"id": 1, "command": ["x"], "energy": {"total_kwh": 1.0}, "emissions": {"kg": 0.1},
              "intensity": {"g_per_kwh": 100.0, "region": "FR", "source": "table:country", "basis": "lifecycle"}}
    mixed = compare_regions(record, ["FR", "gcp:europe-west9"])
    assert {r["region"]: r["basis"] for r in mixed["regions"]} == {"FR": "lifecycle", "gcp:europe-west9": "operational"}
    assert len(mixed["notes"]) == 1 and "differ in basis" in mixed["notes"][0]
    assert compare_regions(record, ["FR", "DE"])["notes"] == []
