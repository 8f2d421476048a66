"""Intensity resolution, time series, integration, social cost, equivalents, and the impact statement."""
from __future__ import annotations

import json
import re

import pytest

import carbonrun.intensity.providers as providers
from carbonrun.intensity.carbon import (
    WORLD_AVERAGE_G, IntensityFileError, equivalent, load_intensity_file, parse_scc,
    resolve_intensity, social_cost,
)
from carbonrun.intensity.carbon import iso
from carbonrun.intensity.providers.base import ProviderError
from carbonrun.intensity.regions import UnknownRegion
from carbonrun.report import latex, statement
from tests.fakes import provider as fakes

T0 = 1_700_000_000.0
ZONE_TAB = "FR\t+4852+00220\tEurope/Paris\nJP\t+353916+1394441\tAsia/Tokyo\n"


@pytest.fixture
def zone_tab(tmp_path):
    p = tmp_path / "zone.tab"
    p.write_text("# comment\n" + ZONE_TAB)
    return str(p)


@pytest.fixture
def two_step(tmp_path):
    """100 g/kWh for the first half-hour, 500 after."""
    p = tmp_path / "ci.csv"
    p.write_text(f"timestamp,g_per_kwh\n{iso(T0)},100\n{iso(T0 + 1800)},500\n")
    return str(p)


class FakeProvider(fakes.FakeProvider):
    reading = (123.0, T0, T0 + 1800)


def resolve(**kw):
    args = dict(intensity=None, intensity_file=None, provider=None, provider_options={}, region=None,
                now=T0, tz_name="Etc/UTC")
    args.update(kw)
    return resolve_intensity(**args)


# -- precedence ---------------------------------------------------------------------------------------
def test_flag_beats_everything(two_step, monkeypatch):
    monkeypatch.setattr(providers, "get_provider", lambda *a, **k: pytest.fail("provider contacted"))
    r = resolve(intensity=42, intensity_file=two_step, provider="uk", region="FR")
    assert (r.source, r.g_per_kwh, r.region, r.time_varying) == ("flag", 42.0, "FR", False)
    assert "--intensity" in r.how


def test_file_beats_provider_and_region(two_step, monkeypatch):
    monkeypatch.setattr(providers, "get_provider", lambda *a, **k: pytest.fail("provider contacted"))
    r = resolve(intensity_file=two_step, provider="uk", region="FR")
    assert r.source == "file" and r.time_varying and r.at(T0 + 10) == 100.0


def test_provider_beats_region(monkeypatch):
    monkeypatch.setattr(providers, "get_provider", lambda name, options: FakeProvider(options))
    r = resolve(provider="fake", region="FR")
    assert (r.source, r.g_per_kwh, r.region, r.time_varying) == ("provider:fake", 123.0, "FR", True)
    assert r.to_record()["provider"]["granularity_s"] == 1800


def test_failed_provider_falls_back_to_region_with_note(monkeypatch):
    class Broken(FakeProvider):
        def current(self, region=None):
            raise ProviderError("Fake: HTTP 500 from http://x/intensity")

    monkeypatch.setattr(providers, "get_provider", lambda name, options: Broken(options))
    r = resolve(provider="fake", region="FR")
    assert (r.source, r.g_per_kwh) == ("table:country", 56.0)
    assert r.notes == ["live provider fake failed, fell back: Fake: HTTP 500 from http://x/intensity"]


def test_provider_bug_does_not_raise(monkeypatch):
    class Buggy(FakeProvider):
        def current(self, region=None):
            raise ZeroDivisionError

    monkeypatch.setattr(providers, "get_provider", lambda name, options: Buggy(options))
    r = resolve(provider="fake", region="DE")
    assert r.source == "table:country" and "ZeroDivisionError" in r.notes[0]


def test_provider_none_means_not_configured(monkeypatch):
    monkeypatch.setattr(providers, "get_provider", lambda *a, **k: pytest.fail("provider contacted"))
    assert resolve(provider="none", region="FR").source == "table:country"


def test_region_tables():
    fr = resolve(region="france")
    assert (fr.source, fr.region, fr.g_per_kwh, fr.notes) == ("table:country", "FR", 56.0, [])
    assert "France" in fr.how and "2023" in fr.how and "CC BY 4.0" in fr.how
    gcp = resolve(region="gcp:europe-west9")
    assert (gcp.source, gcp.region, gcp.g_per_kwh) == ("table:cloud", "gcp:europe-west9", 16.3)


def test_unknown_region_raises():
    with pytest.raises(UnknownRegion, match="did you mean"):
        resolve(region="Frnace")


def test_timezone_guess_then_world_average(zone_tab):
    r = resolve(tz_name="Europe/Paris", zone_tab=zone_tab)
    assert (r.source, r.region, r.g_per_kwh) == ("timezone", "FR", 56.0)
    assert "Europe/Paris" in r.how and any("--region" in n for n in r.notes)
    w = resolve(tz_name="Etc/UTC", zone_tab=zone_tab)
    assert (w.source, w.region, w.g_per_kwh) == ("world-average", None, WORLD_AVERAGE_G)
    assert WORLD_AVERAGE_G == 480.0 and "Ember" in w.how


def test_negative_flag_is_rejected():
    with pytest.raises(ValueError):
        resolve(intensity=-1)


def test_record_shape():
    rec = resolve(region="FR").to_record()
    assert rec == {"g_per_kwh": 56.0, "region": "FR", "source": "table:country",
                   "how": rec["how"], "time_varying": False, "basis": "lifecycle", "year": 2023}
    gcp = resolve(region="gcp:europe-west9").to_record()
    assert (gcp["basis"], gcp["year"]) == ("operational", 2024)
    assert "basis" not in resolve(intensity=100).to_record()  # a bare figure states no basis


# -- time series and integration ----------------------------------------------------------------------
def test_step_values(two_step):
    r = load_intensity_file(two_step)
    assert r.at(T0) == 100.0 and r.at(T0 + 1799.9) == 100.0
    assert r.at(T0 + 1800) == 500.0 and r.at(T0 + 3600) == 500.0
    assert r.notes == []  # the last point holds for the series' spacing
    assert r.g_per_kwh == 300.0  # before accounting: the mean of the points


def test_outside_coverage_uses_nearest_and_notes_once(two_step):
    r = load_intensity_file(two_step)
    assert r.at(T0 - 600) == 100.0 and r.at(T0 + 10_000) == 500.0 and r.at(T0 - 1) == 100.0
    assert len(r.notes) == 1
    assert r.notes[0] == (f"intensity series covers {iso(T0)}..{iso(T0 + 3600)}; "
                          "the run's times outside it used the nearest value")


def test_integration_is_sum_of_energy_times_intensity(two_step):
    r = load_intensity_file(two_step)
    step, kg, kwh_total = 60.0, 0.0, 0.0
    for k in range(60):  # one hour: 1 kWh in the clean half, 3 kWh in the dirty half
        t = T0 + k * step
        kwh = (1.0 if t < T0 + 1800 else 3.0) / 30
        kg += kwh * r.mean(t, t + step) / 1000
        kwh_total += kwh
    expected = 1.0 * 100 / 1000 + 3.0 * 500 / 1000  # 1.6 kg
    mean_times_mean = kwh_total * (100 + 500) / 2 / 1000  # 1.2 kg, the wrong answer
    assert kg == pytest.approx(expected, rel=0.01)
    assert abs(kg - mean_times_mean) > 0.3
    assert kg * 1000 / kwh_total == pytest.approx(400.0, rel=0.01)  # energy-weighted: 1600 g / 4 kWh
    assert r.notes == []  # the run stayed inside the series


def test_step_straddling_a_change_is_split(two_step):
    r = load_intensity_file(two_step)
    assert r.mean(T0 + 1700, T0 + 1900) == pytest.approx(300.0)  # 100 s at 100, 100 s at 500


def test_fixed_intensity_integration():
    r = resolve(intensity=200)
    assert r.mean(T0, T0 + 10) == 200.0 and r.at(T0 + 99) == 200.0


def test_json_series_both_shapes_and_unix_seconds(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps([{"timestamp": T0 + 1800, "g_per_kwh": 500}, {"timestamp": T0, "g_per_kwh": 100}]))
    b = tmp_path / "b.json"
    b.write_text(json.dumps({"data": [{"timestamp": "2023-11-14T22:13:20Z", "g_per_kwh": 100},
                                      {"timestamp": "2023-11-14T23:43:20+01:00", "g_per_kwh": 500}]}))
    for p in (a, b):
        r = load_intensity_file(str(p))
        assert r.at(T0 + 5) == 100.0 and r.at(T0 + 1805) == 500.0


def test_csv_with_unix_seconds_and_other_header(tmp_path):
    p = tmp_path / "ci.csv"
    p.write_text(f"time,carbon_intensity\n{T0:.0f},80\n{T0 + 3600:.0f},90\n")
    assert load_intensity_file(str(p)).at(T0 + 3600) == 90.0


@pytest.mark.parametrize("content,where", [
    ("timestamp,g_per_kwh\n2023-11-14T22:00Z,100\n2023-11-14T22:30Z,abc\n", "line 3"),
    ("timestamp,g_per_kwh\n2023-11-14T22:00:00,100\n", "line 2"),  # no UTC offset
    ("timestamp,g_per_kwh\n2023-11-14T22:00Z,-5\n", "line 2"),
    ("when,what,why\n1,2,3\n", "line 1"),
    ("timestamp,g_per_kwh\n", "no data rows"),
    ("timestamp,g_per_kwh\n1700000000,1\n1700000000,2\n", "appears twice"),
])
def test_bad_csv_names_file_and_line(tmp_path, content, where):
    p = tmp_path / "bad.csv"
    p.write_text(content)
    with pytest.raises(IntensityFileError) as exc:
        load_intensity_file(str(p))
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError) and "\n" not in msg
    assert msg.startswith(f"intensity file {p}") and where in msg


def test_bad_json_names_file_and_line(tmp_path):
    p = tmp_path / "bad.json"
    p.write_text('[\n {"timestamp": 1, "g_per_kwh": 2},\n {"timestamp": 2 "g_per_kwh": 3}\n]')
    with pytest.raises(IntensityFileError, match=r"bad.json, line 3: malformed JSON"):
        load_intensity_file(str(p))
    p.write_text('[{"timestamp": 1, "g_per_kwh": 2}, {"when": 2}]')
    with pytest.raises(IntensityFileError, match=r"entry 2"):
        load_intensity_file(str(p))
    with pytest.raises(IntensityFileError, match="cannot read"):
        load_intensity_file(str(tmp_path / "missing.csv"))


# -- social cost and equivalents ----------------------------------------------------------------------
def test_social_cost_epa_default():
    sc = social_cost(1000.0)
    assert (sc["low"], sc["central"], sc["high"]) == (120.0, 190.0, 340.0)
    for needle in ("US EPA", "Dec 2023", "2020 dollars", "emission year 2020", "2.5%", "2.0%", "1.5%"):
        assert needle in sc["basis"]
    assert social_cost(2.0)["central"] == pytest.approx(0.38)


def test_social_cost_custom_and_parse():
    assert parse_scc("50, 100,200") == (50.0, 100.0, 200.0)
    sc = social_cost(1000.0, parse_scc("50,100,200"))
    assert sc["central"] == 100.0 and sc["basis"].startswith("user-supplied")
    for bad in ("1,2", "a,b,c", "3,2,1", "-1,2,3", "nan,1,2", "1,2,3,4", ""):
        with pytest.raises(ValueError):
            parse_scc(bad)


def test_equivalents():
    assert equivalent(1.0) == "driving an average passenger car about 4.0 km (US EPA, ~250 g CO2/km)"
    assert "about 4 m " in equivalent(0.001)
    assert "about 320 km" in equivalent(80.0)
    assert equivalent(450.0).startswith("about 50% of one passenger's New York <-> San Francisco round trip")
    assert equivalent(1800.0).startswith("about 2.0 times one passenger's")
    assert "Strubell" in equivalent(900.0)


# -- the impact statement -----------------------------------------------------------------------------
def record(region="FR", source="table:country", kg=0.5, kwh=2.0):
    return {"energy": {"total_kwh": kwh}, "emissions": {"kg": kg}, "social_cost_usd": social_cost(kg),
            "intensity": {"g_per_kwh": 250.0, "region": region, "source": source,
                          "how": "annual average (Ember via OWID, carbon_intensity_elec, CC BY 4.0)"}}


def test_statement_text():
    out = statement.render(record(), width=1000)
    first = out.splitlines()[0]
    assert first == ("This work contributed 500.0 g of CO2eq to the atmosphere and used 2.000 kWh of electricity, "
                     "having a social cost of $0.095 ($0.060 to $0.17).")
    assert "Grid carbon intensity 250 g CO2eq/kWh for France: annual average" in out
    assert "US EPA's global social cost of carbon (December 2023" in out and "-specific" not in out
    assert "\x1b[" not in out and "\x1b[1m" in statement.render(record(), color=True)


def test_statement_wraps_and_handles_no_region():
    out = statement.render(record(region=None, source="world-average"), width=60)
    assert all(len(line) <= 60 for line in out.splitlines())
    assert "-specific" not in out and "for France" not in out
    cloud = statement.render(record(region="gcp:europe-west9", source="table:cloud"), width=1000)
    assert "for GCP europe-west9 (Paris)" in cloud and "-specific" not in cloud


def test_statement_tiny_figures_keep_significant_digits():
    out = statement.render(record(kg=0.0000123, kwh=0.0000456), width=1000)
    assert "12.30 mg" in out and "164.2 J" in out and "$0.0000023" in out and "e-0" not in out
    assert "less than $0.000001" in statement.render(record(kg=1e-9, kwh=1e-8), width=1000)


def test_latex_is_escaped_and_paste_ready():
    rec = record(region="CAISO_NORTH & 50% #1", source="provider:watttime")
    out = latex.render(rec)
    body = out.split("\n", 1)[1]
    assert out.startswith("% Carbon impact statement (Henderson et al., 2020)")
    assert "500.0~g of CO$_2$eq" in body and "2.000~kWh" in body
    assert r"for CAISO\_NORTH \& 50\% \#1:" in body
    assert r"\$0.095 (\$0.060 to \$0.17)" in body and r"carbon\_intensity\_elec" in body
    stripped = body.replace("CO$_2$", "")
    assert not re.search(r"(?<!\\)[%&#_]", stripped)  # every special character escaped
    assert not re.search(r"(?<!\\)\$", stripped)
    assert body.count("{") == body.count("}") and body.rstrip().endswith("}")
