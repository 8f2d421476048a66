"""Carbon-aware start: the exact decision, gaps, short forecasts, waiting without waiting, and the real CLI
driven by forecasts served from a loopback server in each provider's JSON shape."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import time
from typing import List, Optional

import pytest

from carbonrun.intensity.planner import (
    best_start,
    bounded,
    summary_line,
    to_segments,
    wait_until,
)
from carbonrun.intensity.providers.base import iso, parse_time
from carbonrun.timefmt import format_duration, parse_duration
from tests.fakes.clock import FakeClock
from tests.fakes.http import Server

H = 3600.0


# -- durations -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, seconds", [
    ("90s", 90), ("30m", 1800), ("6h", 21600), ("1h30m", 5400), ("2d", 172800), ("45", 45), (" 1H 5m ", 3900),
    ("0.5h", 1800),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["0", "0s", "-1h", "-5", "", "abc", "1x", "h", "1h-5m", "nan"])
def test_parse_duration_refuses(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert [format_duration(s) for s in (5, 750, 11400, 2 * 86400 + 4 * 3600)] == ["5s", "12m30s", "3h10m", "2d04h"]


# -- the decision ----------------------------------------------------------------------------------------
def brute_force(segs, now, window, d, step=10.0):
    """Lowest mean over a fine grid of covered starts (the reference the exact search must match or beat)."""
    best = None
    s = now
    while s <= now + window + 1e-9:
        covered, total, t = True, 0.0, s
        for a, b, g in segs:
            if b <= t or a >= s + d:
                continue
            if a > t + 1e-9:
                covered = False
                break
            hi = min(b, s + d)
            total += g * (hi - t)
            t = hi
        if covered and t >= s + d - 1e-9:
            m = total / d
            best = m if best is None else min(best, m)
        s += step
    return best


def test_optimum_straddling_steps_starts_at_boundary_minus_duration():
    # 200 until 2h, 10 for half an hour, then 300: the best hour starts at 1h30 (= 2h30 - 1h),
    # half on the 200 step and half on the 10 step, not at any step's start.
    segs = [(0, H, 400), (H, 2 * H, 200), (2 * H, 2.5 * H, 10), (2.5 * H, 4 * H, 300)]
    plan = best_start(segs, 0.0, 3 * H, H)
    assert plan.start_at == pytest.approx(1.5 * H)
    assert plan.forecast_g_per_kwh == pytest.approx(105.0)
    assert plan.now_g_per_kwh == pytest.approx(400.0)
    assert plan.saving_pct == pytest.approx((400 - 105) / 400 * 100)


def test_optimum_spanning_two_low_steps():
    segs = [(0, H, 500), (H, 1.5 * H, 100), (1.5 * H, 2 * H, 110), (2 * H, 5 * H, 500)]
    plan = best_start(segs, 0.0, 4 * H, H)
    assert plan.start_at == pytest.approx(H) and plan.forecast_g_per_kwh == pytest.approx(105.0)


@pytest.mark.parametrize("seed", range(12))
def test_exact_search_matches_brute_force(seed):
    rng = random.Random(seed)
    t, segs = 0.0, []
    while t < 10 * H:
        step = rng.choice([300, 900, 1800, 3600])
        segs.append((t, t + step, rng.uniform(20, 600)))
        t += step
    now = rng.uniform(0, 600)
    window, d = rng.uniform(H, 6 * H), rng.uniform(600, 3 * H)
    plan = best_start(segs, now, window, d)
    reference = brute_force(segs, now, window, d)
    assert now <= plan.start_at <= now + window
    assert plan.forecast_g_per_kwh <= reference + 1e-6  # never worse than any sampled start
    # and the figure is the true mean of the chosen window
    assert plan.forecast_g_per_kwh == pytest.approx(brute_force(segs, plan.start_at, 1e-9, d, step=1.0))


def test_ties_go_to_the_earliest_start():
    plan = best_start([(0, 10 * H, 200)], 100.0, 5 * H, H)
    assert plan.start_at == 100.0 and plan.wait_s == 0 and plan.saving_pct == 0


def test_gap_is_never_filled():
    # 300, 100, then an hour with no data, then 120. Filling the gap with the last value (100) would pick
    # a start at 1h; the plan must only choose windows it has data for.
    segs = [(0, H, 300), (H, 2 * H, 100), (3 * H, 6 * H, 120)]
    plan = best_start(segs, 0.0, 5 * H, 1.5 * H)
    assert plan.start_at == pytest.approx(3 * H)
    assert plan.forecast_g_per_kwh == pytest.approx(120.0)
    assert not (plan.start_at < 3 * H and plan.start_at + 1.5 * H > 2 * H)
    assert any("gaps" in n for n in plan.notes)


def test_point_series_hole_is_a_gap():
    pts = [(0, 300), (H, 50), (4 * H, 60), (5 * H, 70)]  # hourly, with 2h..4h missing
    segs = to_segments(pts, step_s=H)
    assert segs[1] == (H, 2 * H, 50)  # holds one step, then the hole
    plan = best_start(pts, 0.0, 5 * H, 1.5 * H, step_s=H)
    assert plan.start_at == pytest.approx(4 * H)  # 1h..2h30 would cross the hole


def test_forecast_shorter_than_the_window():
    segs = [(0, H, 300), (H, 2 * H, 50), (2 * H, 3 * H, 250)]
    plan = best_start(segs, 0.0, 12 * H, H)
    assert plan.start_at == pytest.approx(H) and plan.forecast_g_per_kwh == pytest.approx(50)
    assert any("forecast ends" in n for n in plan.notes)


def test_now_a_moment_past_the_forecast_start_judges_the_whole_window():
    segs = [(0, H, 300), (H, 2 * H, 50), (2 * H, 3 * H, 250)]  # exactly the 2h window plus the 1h run
    plan = best_start(segs, 0.4, 2 * H, H)  # "now" read 0.4 s after the forecast was asked for
    assert plan.start_at == pytest.approx(H) and plan.notes == []
    assert any("forecast ends" in n for n in best_start(segs, 2.0, 2 * H, H).notes)  # seconds short: said


def test_forecast_shorter_than_the_job_starts_at_once():
    plan = best_start([(0, 2 * H, 100)], 0.0, 6 * H, 3 * H)
    assert plan.start_at == 0.0 and plan.forecast_g_per_kwh is None and not plan.has_forecast
    assert any("less than the expected 3h00m" in n for n in plan.notes)


def test_forecast_starting_later_compares_with_nothing_it_does_not_know():
    plan = best_start([(H, 3 * H, 100), (3 * H, 4 * H, 50)], 0.0, 4 * H, H)
    assert plan.start_at == pytest.approx(3 * H)
    assert plan.now_g_per_kwh is None and plan.saving_pct is None
    assert any("does not cover a run starting now" in n for n in plan.notes)


def test_no_forecast():
    plan = best_start([], 50.0, H, H)
    assert plan.start_at == 50.0 and plan.forecast_g_per_kwh is None and plan.notes


@pytest.mark.parametrize("window, d", [(0, H), (H, 0), (-H, H), (H, -1)])
def test_refuses_zero_or_negative(window, d):
    with pytest.raises(ValueError):
        best_start([(0, 10 * H, 100)], 0.0, window, d)


def test_record_points_are_bounded_and_keep_the_mean():
    segs = [(i * 300.0, (i + 1) * 300.0, float(i % 7 * 10 + 50)) for i in range(1000)]
    merged = bounded(segs)
    assert len(merged) <= 288
    assert merged[0][0] == 0 and merged[-1][1] == 300000
    area = sum(g * (b - a) for a, b, g in segs)
    assert sum(g * (b - a) for a, b, g in merged) == pytest.approx(area)
    plan = best_start(segs, 0.0, 24 * H, H)
    rec = plan.to_record()
    assert rec["forecast_points"]["merged"] and len(rec["forecast_points"]["segments"]) <= 288
    assert rec["start_at"].endswith(("+00:00", "Z")) and parse_time(rec["start_at"]) == plan.start_at


def test_summary_line_compares_forecast_and_realised():
    plan = best_start([(0, H, 300), (H, 3 * H, 100)], 0.0, 2 * H, H).to_record()
    label, text = summary_line({"plan": plan, "status": "completed",
                                "intensity": {"g_per_kwh": 150.0, "source": "provider:uk"}})
    assert label == "plan"
    assert "forecast 100 g/kWh, 67% below 300" in text and "realised 150 g/kWh (provider:uk), 50% below" in text
    assert summary_line({}) is None


# -- waiting, without waiting ----------------------------------------------------------------------------
def test_wait_until_reaches_the_start_without_waiting():
    clock = FakeClock(1000.0)
    ticks: List[float] = []
    t = time.monotonic()
    assert wait_until(1000.0 + 3725.5, clock=clock, sleep=clock.sleep, tick=ticks.append) is None
    assert time.monotonic() - t < 1.0
    assert clock.t == pytest.approx(4725.5) and sum(clock.sleeps) == pytest.approx(3725.5)
    assert max(clock.sleeps) <= 1.0 and ticks[0] == pytest.approx(3725.5) and ticks == sorted(ticks, reverse=True)


def test_wait_until_cancelled_by_a_signal():
    clock = FakeClock(0.0)

    def sleep(seconds: float) -> Optional[int]:
        clock.sleep(seconds)
        return signal.SIGINT if clock.t >= 5 else None

    assert wait_until(3600.0, clock=clock, sleep=sleep) == signal.SIGINT
    assert clock.t == pytest.approx(5.0)


def test_wait_until_in_the_past_returns_at_once():
    clock = FakeClock(10.0)
    assert wait_until(5.0, clock=clock, sleep=clock.sleep) is None and clock.sleeps == []


def test_plan_and_wait_with_injected_clock(tmp_path):
    from carbonrun.cli.plan import plan_and_wait
    from carbonrun.settings import resolve

    now = 1_800_000_000.0
    f = tmp_path / "fc.csv"
    f.write_text(f"timestamp,g_per_kwh\n{now - H},300\n{now + 2 * H},80\n{now + 4 * H},300\n")
    st = resolve({"intensity_file": (str(f), "flag"), "start_within": ("6h", "flag"),
                  "expected_duration": ("1h", "flag"), "store": (str(tmp_path / "s.sqlite"), "flag")},
                 env={}, cwd=str(tmp_path))
    clock = FakeClock(now)

    class Stream(list):
        def write(self, s: str) -> None:
            self.append(s)

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return False

    out = Stream()
    rec = plan_and_wait(["./job"], st, stream=out, clock=clock, sleep=clock.sleep)
    assert clock.t == pytest.approx(now + 2 * H)  # waited, virtually, until the low step
    assert rec["waited_s"] == pytest.approx(2 * H) and rec["forecast_g_per_kwh"] == 80.0
    assert rec["source"] == "file:fc.csv" and rec["expected_duration_from"] == "--expected-duration"
    text = "".join(out)
    assert "about 73% less CO2" in text and "Ctrl-C cancels" in text


# -- loopback providers ----------------------------------------------------------------------------------
@pytest.fixture
def server():
    s = Server()
    yield s
    s.close()


NET_ENV = {"http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "no_proxy": "127.0.0.1"}


def _aligned(step: float) -> float:
    """The start of the current step, after waiting out the last seconds of one (no race at the boundary)."""
    now = time.time()
    if step - now % step < 5:
        time.sleep(step - now % step + 0.1)
        now = time.time()
    return now - now % step


def plan_json(cli, *args: str, env: Optional[dict] = None) -> dict:
    p = cli("plan", "--json", *args, env={**NET_ENV, **(env or {})})
    assert p.returncode == 0, p.stderr.decode()
    return json.loads(p.stdout)


def test_plan_from_uk_forecast(cli, server):
    half = _aligned(1800)
    values = [300, 290, 280, 100, 90, 300] + [310] * 90  # the best hour: the 100 and 90 half-hours
    items = [{"from": iso(half + i * 1800), "to": iso(half + (i + 1) * 1800),
              "intensity": {"forecast": v, "actual": None, "index": "moderate"}} for i, v in enumerate(values)]
    server.routes["/intensity/"] = (200, {"data": items})
    out = plan_json(cli, "--start-within", "12h", "--expected-duration", "1h", "--provider", "uk",
                    "--provider-url", server.url, "--region", "GB")
    assert out["start_at_unix"] == pytest.approx(half + 3 * 1800)
    assert out["forecast_g_per_kwh"] == pytest.approx(95.0)
    now_g = out["now_g_per_kwh"]  # the hour from now: within the 300, 290, 280 half-hours
    assert out["source"] == "provider:uk" and 280 <= now_g <= 300
    assert out["saving_pct"] == pytest.approx((now_g - 95) / now_g * 100, abs=0.1)
    assert "fw48h" in server.requests[0][0]


def test_plan_from_electricitymaps_forecast_with_token_from_env(cli, server):
    hour = _aligned(3600)
    token = "em-token-plan-xyz"
    fc = [{"carbonIntensity": g, "datetime": iso(hour + (i + 1) * 3600)} for i, g in enumerate([250, 60, 70, 400])]
    server.routes["/v3/carbon-intensity/forecast"] = (200, {"zone": "FR", "forecast": fc})
    server.routes["/v3/carbon-intensity/latest"] = (
        200, {"zone": "FR", "carbonIntensity": 200, "datetime": iso(hour), "temporalGranularity": "hourly"})
    out = plan_json(cli, "--start-within", "4h", "--expected-duration", "2h", "--provider", "electricitymaps",
                    "--provider-url", server.url, "--region", "FR",
                    env={"CARBONRUN_ELECTRICITYMAPS_TOKEN": token})
    assert out["start_at_unix"] == pytest.approx(hour + 2 * 3600)  # 60 and 70: mean 65
    assert out["forecast_g_per_kwh"] == pytest.approx(65.0)
    assert all(h.get("auth-token") == token for _, h in server.requests)
    # the forecast starts at the next hour: the current hour's value was added, so "now" is known
    assert out["now_g_per_kwh"] is not None


def test_plan_from_watttime_forecast_with_config_credentials(cli, server):
    t0 = _aligned(300)
    values = [900, 880, 870] + [400] * 6 + [950] * 40  # lbs/MWh; a 30-minute low from the 15th minute
    body = {"data": [{"point_time": iso(t0 + i * 300)[:-1] + ":00+00:00", "value": v} for i, v in enumerate(values)],
            "meta": {"region": "CAISO_NORTH", "signal_type": "co2_moer", "units": "lbs_co2_per_mwh",
                     "data_point_period_seconds": 300}}
    server.routes["/login"] = (200, {"token": "wt-token"})
    server.routes["/v3/forecast"] = (200, body)
    cfg = cli.home / "config" / "carbonrun"
    cfg.mkdir(parents=True)
    (cfg / "config.toml").write_text('[providers.watttime]\nuser = "u-plan"\npassword = "p-plan"\n'
                                     'region = "CAISO_NORTH"\n')
    out = plan_json(cli, "--start-within", "2h", "--expected-duration", "30m", "--provider", "watttime",
                    "--provider-url", server.url)
    assert out["start_at_unix"] == pytest.approx(t0 + 900)
    assert out["forecast_g_per_kwh"] == pytest.approx(400 * 0.453592, rel=1e-4)
    assert server.requests[0][0] == "/login" and "region=CAISO_NORTH" in server.requests[1][0]


def test_plan_text_prints_iso_and_slurm_begin(cli, tmp_path):
    now = time.time()
    f = tmp_path / "fc.csv"
    f.write_text(f"timestamp,g_per_kwh\n{now - H},300\n{now + 2 * H},80\n{now + 4 * H},300\n")
    p = cli("plan", "--start-within", "6h", "--expected-duration", "1h", "--intensity-file", str(f))
    assert p.returncode == 0, p.stderr.decode()
    text = p.stdout.decode()
    last = text.strip().splitlines()[-1]
    assert last.startswith("start 20") and "sbatch --begin=20" in last
    assert "about 73% less CO2" in text


def test_plan_json_without_forecast_starts_now(cli):
    out = plan_json(cli, "--start-within", "6h", "--expected-duration", "1h", "--region", "FR")
    assert out["wait_s"] == 0 and out["forecast_g_per_kwh"] is None
    assert any("annual averages" in n for n in out["notes"])


@pytest.mark.parametrize("args", [
    ["--start-within", "0", "--expected-duration", "1h"],
    ["--start-within", "-2h", "--expected-duration", "1h"],
    ["--start-within", "6h", "--expected-duration", "0s"],
    ["--start-within", "6h"],
    ["--start-within", "soon", "--expected-duration", "1h"],
])
def test_plan_refuses_bad_durations(cli, args):
    p = cli("plan", *args, "--region", "FR")
    assert p.returncode == 2, p.stderr.decode()
    assert b"Traceback" not in p.stderr


# -- carbonrun run --start-within ------------------------------------------------------------------------
def future_file(tmp_path, low_in: float) -> str:
    now = time.time()
    f = tmp_path / "future.csv"
    f.write_text(f"timestamp,g_per_kwh\n{now - H},300\n{now + low_in},100\n{now + low_in + H},300\n")
    return str(f)


def test_ctrl_c_during_the_wait_cancels_without_starting(cli, tmp_path):
    marker = tmp_path / "started"
    argv = cli.argv("run", "--start-within", "2h", "--expected-duration", "10m", "--intensity-file",
                    future_file(tmp_path, 1800), "--", "sh", "-c", f"touch {marker}")
    proc = subprocess.Popen(argv, env=cli.env, cwd=cli.home, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = b""
    while b"Ctrl-C cancels" not in seen:
        line = proc.stderr.readline()
        assert line, seen.decode()
        seen += line
    proc.send_signal(signal.SIGINT)
    rc = proc.wait(timeout=10)
    err = seen + proc.stderr.read()
    assert rc == 130, err.decode()
    assert not marker.exists()
    assert b"not started" in err and b"about 67% less CO2" in seen
    assert cli("report", "last", "--format", "json").returncode != 0  # no run was stored


def test_waits_then_runs_and_records_the_plan(cli, tmp_path):
    marker = tmp_path / "started-at"
    t = time.time()
    p = cli("run", "--no-live", "--start-within", "1h", "--expected-duration", "60s", "--intensity-file",
            future_file(tmp_path, 2.0), "--", "sh", "-c", f"date +%s.%N > {marker}")
    assert p.returncode == 0, p.stderr.decode()
    rec = cli.record()
    plan = rec["plan"]
    started = float(marker.read_text())
    assert started >= t + 1.9  # the command waited for the low step
    assert plan["waited_s"] > 0.5 and plan["forecast_g_per_kwh"] == 100.0
    assert 100 < plan["now_g_per_kwh"] < 110  # under 2 s of 300, then 100, over the next minute
    assert plan["source"] == "file:future.csv" and plan["expected_duration_s"] == 60
    assert plan["forecast_points"]["count"] >= 2 and plan["window_s"] == 3600
    assert {"decided_at", "start_at", "saving_pct", "expected_duration_from"} <= set(plan)
    assert "plan" in p.stderr.decode() and "realised 100 g/kWh" in p.stderr.decode()


def test_expected_duration_defaults_to_the_median_of_earlier_runs(cli, tmp_path):
    cmd = ["sh", "-c", "sleep 0.2"]
    p = cli("run", "--quiet", "--start-within", "1h", "--region", "FR", "--", *cmd)
    assert p.returncode == 2 and b"--expected-duration" in p.stderr
    for _ in range(3):
        assert cli("--quiet", "--region", "FR", "--", *cmd).returncode == 0
    p = cli("run", "--quiet", "--start-within", "1h", "--intensity-file", future_file(tmp_path, 3 * H), "--", *cmd)
    assert p.returncode == 0, p.stderr.decode()
    plan = cli.record()["plan"]
    assert plan["expected_duration_from"] == "median of 3 earlier completed runs"
    assert 0.15 < plan["expected_duration_s"] < 2.0


def test_no_forecast_says_so_and_starts_at_once(cli):
    t = time.monotonic()
    p = cli("run", "--quiet", "--start-within", "6h", "--expected-duration", "1h", "--region", "FR", "--", "true")
    assert p.returncode == 0 and time.monotonic() - t < 20
    assert b"no usable forecast; starting now" in p.stderr and b"annual averages" in p.stderr
    assert cli.record()["plan"]["forecast_g_per_kwh"] is None


def test_now_flag_overrides_a_configured_start_within(cli, tmp_path):
    env = {"CARBONRUN_START_WITHIN": "2h", "CARBONRUN_EXPECTED_DURATION": "10m"}
    t = time.monotonic()
    p = cli("run", "--quiet", "--now", "--intensity-file", future_file(tmp_path, 1800), "--", "true", env=env)
    assert p.returncode == 0 and time.monotonic() - t < 20
    assert b"plan" not in p.stderr and "plan" not in cli.record()


@pytest.mark.parametrize("value", ["0", "-1h", "never"])
def test_run_refuses_bad_start_within(cli, tmp_path, value):
    marker = tmp_path / "m"
    p = cli("run", "--start-within", value, "--expected-duration", "1h", "--region", "FR", "--", "touch", str(marker))
    assert p.returncode == 2 and not marker.exists(), p.stderr.decode()
