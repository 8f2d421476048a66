"""Live providers against a loopback HTTP server answering in each API's documented JSON shape."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

import pytest

from carbonrun.intensity.carbon import resolve_intensity
from carbonrun.intensity.providers import NAMES, get_provider
from carbonrun.intensity.providers.base import ProviderError, UnknownProvider, iso, parse_time
from carbonrun.intensity.providers.watttime import LB_PER_MWH_TO_G_PER_KWH
from tests.fakes.http import Server

NOW = 1_700_000_000.0  # 2023-11-14T22:13:20Z
HALF = 1_699_999_200.0  # 22:00Z, the half-hour containing NOW
TOKEN = "em-secret-token-123"
WT_USER, WT_PASS, WT_TOKEN = "wt-user-x", "wt-pass-secret", "wt-bearer-456"


def opts(server: Server, **extra: Any) -> Dict[str, Any]:
    return {"base_url": server.url, "clock": lambda: NOW, "timeout": 2.0, **extra}


# -- documented answer shapes -----------------------------------------------------------------------
def uk_item(t: float, forecast: int, actual: Any = None) -> Dict[str, Any]:
    return {"from": iso(t), "to": iso(t + 1800), "intensity": {"forecast": forecast, "actual": actual,
                                                               "index": "moderate"}}


def uk_regional(items: List[Dict[str, Any]], as_list: bool) -> Dict[str, Any]:
    region = {"regionid": 13, "dnoregion": "UKPN London", "shortname": "London", "data": [
        {**i, "intensity": {"forecast": i["intensity"]["forecast"], "index": "low"},
         "generationmix": [{"fuel": "gas", "perc": 30.0}]} for i in items]}
    return {"data": [region] if as_list else region}


def em_point(t: float, g: float) -> Dict[str, Any]:
    return {"zone": "FR", "carbonIntensity": g, "datetime": iso(t)[:-1] + ":00.000Z",
            "updatedAt": "2023-11-14T22:05:00.000Z", "emissionFactorType": "lifecycle", "isEstimated": False}


def wt_body(points: List[Tuple[float, float]]) -> Dict[str, Any]:
    return {"data": [{"point_time": iso(t)[:-1] + ":00+00:00", "value": v} for t, v in points],
            "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh",
                     "data_point_period_seconds": 300, "generated_at": "2023-11-14T22:10:00+00:00"}}


# -- UK -----------------------------------------------------------------------------------------------
def test_uk_national_current_prefers_actual(server):
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, 187)]}, 0)
    assert get_provider("uk", opts(server)).current() == (187.0, HALF, HALF + 1800)
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, None)]}, 0)
    assert get_provider("uk", opts(server)).current()[0] == 200.0


def test_uk_regional_current_by_postcode(server):
    server.routes["/regional/postcode/BS7"] = (200, uk_regional([uk_item(HALF, 150)], as_list=True), 0)
    p = get_provider("uk", opts(server, region="bs7 8ab"))
    assert p.current() == (150.0, HALF, HALF + 1800)
    assert p.label() == "GB postcode BS7"


def test_uk_regional_forecast_by_region_id(server):
    path = f"/regional/intensity/{iso(NOW)}/fw48h/regionid/13"
    items = [uk_item(HALF + i * 1800, 100 + i) for i in range(96)]
    server.routes[path] = (200, uk_regional(items, as_list=False), 0)
    segs = get_provider("uk", opts(server, region="13")).forecast(NOW, NOW + 3 * 3600)
    assert segs[0] == (HALF, HALF + 1800, 100.0)
    assert len(segs) == 7 and all(b - a == 1800 for a, b, _ in segs)
    assert server.paths() == [path]


def test_uk_national_forecast_path(server):
    path = f"/intensity/{iso(NOW)}/fw48h"
    server.routes[path] = (200, {"data": [uk_item(HALF, 210), uk_item(HALF + 1800, 220)]}, 0)
    segs = get_provider("uk", opts(server)).forecast(NOW, NOW + 7200)
    assert [g for _, _, g in segs] == [210.0, 220.0]


# -- Electricity Maps ---------------------------------------------------------------------------------
def test_electricitymaps_latest_and_forecast(server):
    hour = 1_699_999_200.0  # 22:00Z
    server.routes["/v3/carbon-intensity/latest"] = (200, em_point(hour, 42), 0)
    server.routes["/v3/carbon-intensity/forecast"] = (
        200, {"zone": "FR", "forecast": [{"carbonIntensity": 50, "datetime": iso(hour + 3600)},
                                         {"carbonIntensity": 60, "datetime": iso(hour + 7200)}],
              "updatedAt": iso(hour)}, 0)
    p = get_provider("electricitymaps", opts(server, token=TOKEN, region="FR"))
    assert p.current() == (42.0, hour, hour + 3600)
    assert [g for _, _, g in p.forecast(hour, hour + 3 * 3600)] == [50.0, 60.0]
    path, headers = server.requests[0]
    assert path == "/v3/carbon-intensity/latest?zone=FR"
    assert headers.get("auth-token") == TOKEN and TOKEN not in path


def test_electricitymaps_token_from_env(server, monkeypatch):
    monkeypatch.setenv("CARBONRUN_ELECTRICITYMAPS_TOKEN", TOKEN)
    server.routes["/v3/carbon-intensity/latest"] = (200, em_point(HALF, 33), 0)
    assert get_provider("electricitymaps", opts(server, region="DE")).current()[0] == 33.0
    assert server.requests[0][1].get("auth-token") == TOKEN


def test_electricitymaps_without_token_fails_cleanly(server):
    with pytest.raises(ProviderError, match="CARBONRUN_ELECTRICITYMAPS_TOKEN"):
        get_provider("electricitymaps", opts(server, region="FR")).current()
    assert server.requests == []


# -- WattTime -----------------------------------------------------------------------------------------
def wt_routes(server: Server, forecast: Dict[str, Any]) -> None:
    server.routes["/login"] = (200, {"token": WT_TOKEN}, 0)
    server.routes["/v3/forecast"] = (200, forecast, 0)


def test_watttime_login_then_moer_converted(server):
    t0 = 1_699_999_800.0  # 22:10Z
    wt_routes(server, wt_body([(t0, 1000.0)]))
    p = get_provider("watttime", opts(server, user=WT_USER, password=WT_PASS, region="CAISO_NORTH"))
    g, t_from, t_to = p.current()
    assert (t_from, t_to) == (t0, t0 + 300)
    assert g == pytest.approx(1000 * 0.453592) and LB_PER_MWH_TO_G_PER_KWH == 0.453592
    (login, login_h), (data, data_h) = server.requests
    assert login == "/login"
    assert login_h["Authorization"] == "Basic " + base64.b64encode(f"{WT_USER}:{WT_PASS}".encode()).decode()
    assert data.startswith("/v3/forecast?region=CAISO_NORTH&signal_type=co2_moer&horizon_hours=0")
    assert data_h["Authorization"] == f"Bearer {WT_TOKEN}"


def test_watttime_forecast_five_minute_segments(server):
    t0 = 1_699_999_800.0
    wt_routes(server, wt_body([(t0 + i * 300, 900.0 + i) for i in range(24)]))
    p = get_provider("watttime", opts(server, user=WT_USER, password=WT_PASS, region="CAISO_NORTH"))
    segs = p.forecast(t0, t0 + 3600)
    assert len(segs) == 13 and segs[1] == (t0 + 300, t0 + 600, pytest.approx(901 * 0.453592))


def test_watttime_relogs_in_once_when_token_expires(server):
    t0 = 1_699_999_800.0
    wt_routes(server, wt_body([(t0, 500.0)]))
    p = get_provider("watttime", opts(server, user=WT_USER, password=WT_PASS, region="CAISO_NORTH"))
    p._token = "stale"
    calls = {"n": 0}
    real_get = p.get_json

    def flaky(url, headers):
        calls["n"] += 1
        if headers.get("Authorization") == "Bearer stale":
            raise p.fail("authentication refused (HTTP 401)", 401)
        return real_get(url, headers)

    p.get_json = flaky
    assert p.current()[0] == pytest.approx(500 * 0.453592)
    assert calls["n"] == 3  # stale data call, login, data call
    assert p._token == WT_TOKEN


# -- failures fall back, secrets never leak --------------------------------------------------------------
def resolve_with(server: Server, provider: str, options: Dict[str, Any], region: str = "FR"):
    return resolve_intensity(intensity=None, intensity_file=None, provider=provider,
                             provider_options=options, region=region, now=NOW, tz_name="Etc/UTC")


def all_text(result) -> str:
    return json.dumps(result.to_record()) + "\n".join(result.notes) + result.how


@pytest.mark.parametrize("route,expect", [
    ((500, {"error": "boom"}, 0.0), "HTTP 500"),
    ((200, "{not json", 0.0), "malformed JSON"),
    ((200, {"zone": "FR"}, 0.0), "unexpected answer"),
    ((401, {"message": "bad token"}, 0.0), "authentication refused"),
    ((200, em_point(HALF, 42), 1.5), "within 0.3 s"),
])
def test_electricitymaps_failures_fall_back_to_table(server, route, expect):
    server.routes["/v3/carbon-intensity/latest"] = route
    t = time.monotonic()
    result = resolve_with(server, "electricitymaps", {**opts(server, token=TOKEN), "timeout": 0.3})
    assert time.monotonic() - t < 1.2  # the slow answer is abandoned at the timeout
    assert (result.source, result.region, result.g_per_kwh) == ("table:country", "FR", 56.0)
    assert any(expect in n and "electricitymaps" in n for n in result.notes), result.notes
    assert TOKEN not in all_text(result)


def test_uk_failure_falls_back(server):
    server.routes["/intensity"] = (503, {"error": "down"}, 0)
    result = resolve_with(server, "uk", opts(server), region="GB")
    assert result.source == "table:country" and result.region == "GB"
    assert any("HTTP 503" in n for n in result.notes)


def test_watttime_bad_credentials_never_leak(server, monkeypatch):
    monkeypatch.setenv("CARBONRUN_WATTTIME_USER", WT_USER)
    monkeypatch.setenv("CARBONRUN_WATTTIME_PASSWORD", WT_PASS)
    server.routes["/login"] = (401, {"error": f"invalid user {WT_USER}"}, 0)
    result = resolve_with(server, "watttime", opts(server, region="CAISO_NORTH"), region="US")
    assert result.source == "table:country" and result.region == "US"
    text = all_text(result)
    assert "authentication refused (HTTP 401)" in text and "CARBONRUN_WATTTIME_USER" in text
    basic = base64.b64encode(f"{WT_USER}:{WT_PASS}".encode()).decode()
    for secret in (WT_USER, WT_PASS, basic):
        assert secret not in text


def test_secrets_scrubbed_from_provider_errors(server):
    p = get_provider("electricitymaps", opts(server, token=TOKEN, region="FR"))
    err = p.fail(f"server said: token {TOKEN} rejected")
    assert TOKEN not in str(err) and "***" in str(err)


def test_unknown_zone_after_provider_failure_is_not_fatal(server):
    server.routes["/v3/carbon-intensity/latest"] = (400, {"error": "zone"}, 0)
    result = resolve_with(server, "electricitymaps", opts(server, token=TOKEN), region="US-CAL-CISO")
    assert result.source == "world-average" and result.g_per_kwh == 480.0
    assert any("not in the packaged tables" in n for n in result.notes)


def test_live_provider_success_is_time_varying_with_caveat(server):
    t0 = 1_699_999_800.0
    wt_routes(server, wt_body([(t0, 1000.0)]))
    result = resolve_with(server, "watttime", opts(server, user=WT_USER, password=WT_PASS), region="CAISO_NORTH")
    assert result.source == "provider:watttime" and result.region == "CAISO_NORTH"
    assert result.time_varying and result.g_per_kwh == pytest.approx(453.592)
    assert any("marginal" in n for n in result.notes)
    rec = result.to_record()
    assert rec["provider"] == {"name": "watttime", "granularity_s": 300}
    assert WT_PASS not in all_text(result) and WT_TOKEN not in all_text(result)


# -- cache ----------------------------------------------------------------------------------------------
def test_cache_hit_avoids_second_request(server, tmp_path):
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, 190)]}, 0)
    o = opts(server, cache_dir=str(tmp_path / "cache"))
    assert get_provider("uk", o).current()[0] == 190.0
    second = get_provider("uk", o)  # a new process would look the same
    assert second.current()[0] == 190.0
    assert len(server.requests) == 1 and second.requests == 0


def test_cache_expires_with_the_half_hour(server, tmp_path):
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, 190)]}, 0)
    cache = str(tmp_path / "cache")
    get_provider("uk", opts(server, cache_dir=cache)).current()
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF + 1800, 210, None)]}, 0)
    later = get_provider("uk", {**opts(server, cache_dir=cache), "clock": lambda: HALF + 1801})
    assert later.current() == (210.0, HALF + 1800, HALF + 3600)
    assert len(server.requests) == 2


def test_watttime_cache_hit_skips_login(server, tmp_path):
    t0 = 1_699_999_800.0
    wt_routes(server, wt_body([(t0, 1000.0)]))
    o = opts(server, user=WT_USER, password=WT_PASS, region="CAISO_NORTH", cache_dir=str(tmp_path))
    get_provider("watttime", o).current()
    get_provider("watttime", o).current()
    assert server.paths().count("/login") == 1 and len(server.requests) == 2
    assert not any(WT_TOKEN in f.read_text() for f in tmp_path.iterdir())  # tokens never hit the disk


# -- live refresh ---------------------------------------------------------------------------------------
def test_refresh_runs_in_background_and_integrates_new_values(server):
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, 200)]}, 0)
    clock = {"now": NOW}
    o = {**opts(server), "clock": lambda: clock["now"]}
    result = resolve_intensity(intensity=None, intensity_file=None, provider="uk", provider_options=o,
                               region=None, now=NOW, tz_name="Etc/UTC")
    assert result.source == "provider:uk" and result.region == "GB"
    result.refresh(NOW + 60)  # still inside the half-hour: nothing to do
    assert len(server.requests) == 1

    server.routes["/intensity"] = (200, {"data": [uk_item(HALF + 1800, 300, None)]}, 0.5)
    clock["now"] = HALF + 1810
    t = time.monotonic()
    result.refresh(HALF + 1810)
    assert time.monotonic() - t < 0.2  # never blocks on the slow answer
    result.wait(5)
    assert len(server.requests) == 2
    assert result.at(HALF + 100) == 200.0 and result.at(HALF + 1900) == 300.0
    g = result.mean(HALF + 1700, HALF + 1900)  # straddles the half-hour boundary
    assert g == pytest.approx((200 * 100 + 300 * 100) / 200)


def test_refresh_failure_keeps_last_value_with_one_note(server):
    server.routes["/intensity"] = (200, {"data": [uk_item(HALF, 200, 200)]}, 0)
    result = resolve_intensity(intensity=None, intensity_file=None, provider="uk", provider_options=opts(server),
                               region=None, now=NOW, tz_name="Etc/UTC")
    server.routes["/intensity"] = (500, {}, 0)
    for k in range(3):
        result.refresh(HALF + 1800 + k * 120)  # beyond the retry interval each time
        result.wait(5)
    assert result.at(HALF + 2000) == 200.0
    assert sum("live refresh failed" in n for n in result.notes) == 1
    assert len(server.requests) == 4


# -- registry, parsing, import hygiene ----------------------------------------------------------------------
def test_registry():
    assert NAMES == ("uk", "electricitymaps", "watttime")
    assert get_provider("uk").name == "uk"
    assert get_provider("Electricitymaps").name == "electricitymaps"
    with pytest.raises(UnknownProvider, match="choose from uk, electricitymaps, watttime"):
        get_provider("nope")
    with pytest.raises(UnknownProvider):
        resolve_intensity(intensity=None, intensity_file=None, provider="nope", provider_options={},
                          region="FR", now=NOW)


def test_parse_time_forms():
    assert parse_time("2023-11-14T22:00Z") == HALF
    assert parse_time("2023-11-14T22:00:00.000Z") == HALF
    assert parse_time("2023-11-14T23:00:00+01:00") == HALF
    assert parse_time("2023-11-14T23:00:00+0100") == HALF
    with pytest.raises(ValueError):
        parse_time("2023-11-14T22:00:00")  # no offset: ambiguous


def test_no_network_at_import():
    code = ("import socket\n"
            "def deny(*a, **k): raise AssertionError('network at import')\n"
            "socket.socket.connect = deny; socket.create_connection = deny; socket.getaddrinfo = deny\n"
            "import carbonrun.intensity.carbon, carbonrun.intensity.providers, carbonrun.intensity.providers.uk, "
            "carbonrun.intensity.providers.electricitymaps, carbonrun.intensity.providers.watttime, "
            "carbonrun.intensity.regions\n"
            "import carbonrun.report.statement, carbonrun.report.latex\n")
    subprocess.run([sys.executable, "-c", code], check=True)
