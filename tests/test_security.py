"""The attack matrix of docs/security.md: each case tried as an attacker would, against the real code.

Numbers from every source, credentials that must stay home, secrets that must not be shown, and
outputs that must stay inert. Providers are loopback servers (tests/fakes/), runs are real
subprocesses of the CLI; store-specific attacks (modes, owners, symlinks) are in tests/test_store.py.
"""
from __future__ import annotations

import csv
import io
import json
import os
import stat
import subprocess
import time
from pathlib import Path
from typing import Any, Dict

import pytest

from carbonrun.errors import CarbonrunError
from carbonrun.intensity.carbon import IntensityFileError, load_intensity_file, resolve_intensity
from carbonrun.intensity.providers import get_provider
from carbonrun.intensity.providers.base import ProviderError, iso
from carbonrun.net import http_get
from carbonrun.redact import redact_text
from carbonrun.sanitize import csv_cell, terminal
from tests.fakes.hostile_http import Dripper, Flood, Redirector
from tests.fakes.http import Server

NOW = 1_700_000_000.0
HALF = 1_699_999_200.0
TOKEN = "em-secret-token-123"
WT_USER, WT_PASS = "wt-user-x", "wt-pass-secret"
NET_ENV = {"http_proxy": "", "https_proxy": "", "HTTP_PROXY": "", "HTTPS_PROXY": "", "no_proxy": "127.0.0.1"}


def em_latest(g: Any) -> Dict[str, Any]:
    return {"zone": "FR", "carbonIntensity": g, "datetime": iso(HALF)[:-1] + ":00.000Z",
            "temporalGranularity": "hourly"}


def uk_now(g: Any) -> Dict[str, Any]:
    return {"data": [{"from": iso(HALF), "to": iso(HALF + 1800), "intensity": {"forecast": g, "actual": g}}]}


def err(p: subprocess.CompletedProcess) -> str:
    return p.stderr.decode()


# == numbers =========================================================================================
@pytest.mark.parametrize("flag, value", [("--pue", "nan"), ("--pue", "inf"), ("--interval", "nan"),
                                         ("--interval", "inf"), ("--intensity", "1e308"), ("--pue", "-1")])
def test_flag_numbers_are_finite_and_in_range(cli, flag, value):
    p = cli("--quiet", flag, value, "--", "python3", "-c", "open('ran', 'w')")
    assert p.returncode == 2, err(p)
    assert err(p).startswith(f"carbonrun: error: invalid {flag[2:]} '{value}' (flag)")
    assert not (cli.home / "ran").exists() and not (cli.home / "store").exists()  # nothing ran or stored


def test_env_nan_is_refused_naming_the_variable(cli):
    p = cli("--quiet", "--", "python3", "-c", "open('ran', 'w')", env={"CARBONRUN_PUE": "nan"})
    assert p.returncode == 2 and "invalid pue 'nan' (env CARBONRUN_PUE): PUE must be a finite number" in err(p)
    assert not (cli.home / "ran").exists()


def test_toml_nan_is_refused_naming_file_and_line(cli):
    (cli.home / "carbonrun.toml").write_text('region = "FR"\n\npue = nan\n')
    p = cli("--quiet", "--", "python3", "-c", "open('ran', 'w')")
    assert p.returncode == 2, err(p)
    assert f"invalid pue nan (project file {cli.home / 'carbonrun.toml'}:3)" in err(p)
    assert not (cli.home / "ran").exists()


def test_user_toml_inf_in_pyproject_section_names_its_line(tmp_path):
    from carbonrun import settings

    (tmp_path / "pyproject.toml").write_text('[project]\nname = "x"\n\n[tool.carbonrun]\ninterval = inf\n')
    with pytest.raises(CarbonrunError, match=r"pyproject\.toml:5\): interval must be a finite number"):
        settings.resolve({}, {"HOME": str(tmp_path)}, str(tmp_path))


@pytest.mark.parametrize("option", [{"pue": float("nan")}, {"interval": float("inf")}, {"intensity": -500.0},
                                    {"pue": "nan"}])
def test_track_refuses_non_finite_options_before_the_block(tmp_path, monkeypatch, option):
    from carbonrun import track

    monkeypatch.setenv("CARBONRUN_HOME", str(tmp_path / "store"))
    monkeypatch.setenv("HOME", str(tmp_path))
    ran = []
    with pytest.raises(CarbonrunError, match="must be"):
        with track("block", **option):
            ran.append(1)
    assert not ran and not (tmp_path / "store").exists()


@pytest.mark.parametrize("answer", ["NaN", "Infinity", "-Infinity", "-500", "1e308", '"12"x', "true"])
def test_provider_numbers_are_refused_and_the_run_falls_back(server, answer):
    body = '{"zone": "FR", "carbonIntensity": %s, "datetime": "%s", "temporalGranularity": "hourly"}' % (
        answer, iso(HALF))
    server.routes["/v3/carbon-intensity/latest"] = (200, body, 0)
    opts = {"base_url": server.url, "clock": lambda: NOW, "timeout": 2.0, "token": TOKEN}
    got = resolve_intensity(intensity=None, intensity_file=None, provider="electricitymaps", provider_options=opts,
                            region="FR", now=NOW)
    assert got.source == "table:country" and 0 < got.g_per_kwh < 5000
    assert any("live provider electricitymaps failed, fell back" in n for n in got.notes), got.notes
    assert len(server.requests) == 1


def test_a_region_cannot_change_the_providers_path(server):
    server.routes["/regional/postcode/"] = (200, {"data": []}, 0)
    provider = get_provider("uk", {"base_url": server.url, "clock": lambda: NOW, "region": "../../login?x=1#"})
    with pytest.raises(ProviderError):
        provider.current()
    assert server.paths() == ["/regional/postcode/..%2F..%2FLOGIN%3FX%3D1%23"]


def test_a_planted_cache_answer_is_not_believed(server, tmp_path):
    from carbonrun.intensity.providers.base import DiskCache

    server.routes["/intensity"] = (200, uk_now(200), 0)
    cache = tmp_path / "cache"
    old = os.umask(0)
    try:
        assert get_provider("uk", {"base_url": server.url, "clock": lambda: NOW, "cache_dir": str(cache)}
                            ).current()[0] == 200.0
    finally:
        os.umask(old)
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700  # no one else can plant an answer...
    [entry] = list(cache.iterdir())
    entry.write_text(entry.read_text().replace("200", "1"))
    if os.geteuid() == 0:  # ...and one planted by another user (as root can) is ignored
        os.chown(entry, 12345, 12345)
        provider = get_provider("uk", {"base_url": server.url, "clock": lambda: NOW, "cache_dir": str(cache)})
        assert provider.current()[0] == 200.0 and provider.requests == 1
    entry.chmod(0o666)
    assert DiskCache(str(cache)).get(f"{server.url}/intensity", NOW) is None  # group/world-writable: ignored


def test_a_providers_junk_cannot_fill_the_notes(server):
    server.routes["/v3/carbon-intensity/latest"] = (200, {**em_latest(100), "datetime": "x" * 1_000_000}, 0)
    got = resolve_intensity(intensity=None, intensity_file=None, provider="electricitymaps", region="FR", now=NOW,
                            provider_options={"base_url": server.url, "token": TOKEN, "clock": lambda: NOW})
    assert got.source == "table:country" and max(len(n) for n in got.notes) < 400, got.notes


@pytest.mark.parametrize("answer", [float("nan"), float("inf"), -500, 1e308])
def test_uk_and_watttime_refuse_non_finite_figures(server, answer):
    server.routes["/intensity"] = (200, uk_now(answer), 0)
    with pytest.raises(ProviderError, match="unexpected answer"):
        get_provider("uk", {"base_url": server.url, "clock": lambda: NOW}).current()
    server.routes["/login"] = (200, {"token": "t"}, 0)
    server.routes["/v3/forecast"] = (200, {"meta": {"units": "g_co2_per_kwh", "data_point_period_seconds": 300},
                                           "data": [{"point_time": iso(HALF), "value": answer}]}, 0)
    wt = get_provider("watttime", {"base_url": server.url, "clock": lambda: NOW, "user": "u", "password": "p",
                                   "region": "CAISO_NORTH"})
    with pytest.raises(ProviderError, match="unexpected answer"):
        wt.current()


def test_provider_time_and_period_out_of_range_are_refused(server):
    server.routes["/login"] = (200, {"token": "t"}, 0)
    server.routes["/v3/forecast"] = (200, {"meta": {"data_point_period_seconds": float("inf")},
                                           "data": [{"point_time": iso(HALF), "value": 100}]}, 0)
    wt = get_provider("watttime", {"base_url": server.url, "clock": lambda: NOW, "user": "u", "password": "p",
                                   "region": "X"})
    with pytest.raises(ProviderError, match="data period"):
        wt.current()
    server.routes["/intensity"] = (200, {"data": [{"from": "0001-01-01T00:00-23:59", "to": iso(HALF),
                                                   "intensity": {"forecast": 100}}]}, 0)
    with pytest.raises(ProviderError, match="unexpected answer"):
        get_provider("uk", {"base_url": server.url, "clock": lambda: NOW}).current()


@pytest.mark.parametrize("name, text, where", [
    ("s.csv", "timestamp,g_per_kwh\n1700000000,100\ninf,120\n", "line 3"),
    ("s.csv", "timestamp,g_per_kwh\n-inf,100\n", "line 2"),
    ("s.csv", "timestamp,g_per_kwh\n1e300,100\n", "line 2"),
    ("s.csv", "timestamp,g_per_kwh\n1700000000,nan\n", "line 2"),
    ("s.csv", "timestamp,g_per_kwh\n1700000000,1e308\n", "line 2"),
    ("s.json", '[{"timestamp": 1700000000, "g_per_kwh": 1}, {"timestamp": Infinity, "g_per_kwh": 2}]', "entry 2"),
    ("s.json", '[{"timestamp": NaN, "g_per_kwh": 2}]', "entry 1"),
    ("s.json", '[{"timestamp": 1700000000, "g_per_kwh": -Infinity}]', "entry 1"),
    ("s.json", '[{"timestamp": true, "g_per_kwh": 1}]', "entry 1"),
])
def test_intensity_files_refuse_non_finite_values_naming_the_line(tmp_path, name, text, where):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(IntensityFileError, match=rf"intensity file {path}, {where}: "):
        load_intensity_file(str(path))


def test_intensity_file_inf_timestamp_exits_2_before_the_command(cli):
    (cli.home / "s.csv").write_text("timestamp,g_per_kwh\ninf,100\n")
    p = cli("--quiet", "--intensity-file", "s.csv", "--", "python3", "-c", "open('ran', 'w')")
    assert p.returncode == 2 and "s.csv, line 2: timestamp 'inf' must be a finite number" in err(p), err(p)
    assert not (cli.home / "ran").exists()


@pytest.mark.parametrize("args", [("gate", "--max-kwh", "nan"), ("gate", "--max-kg", "inf"),
                                  ("gate", "--confidence", "nan", "--max-kg", "1"),
                                  ("gate", "--max-increase", "nan", "--max-kg", "1"), ("prune", "--older-than", "nan")])
def test_command_numbers_are_finite(cli, args):
    p = cli(*args, *(["--", "python3", "-c", "open('ran', 'w')"] if args[0] == "gate" else ["--dry-run"]))
    assert p.returncode == 2 and "Invalid value for" in err(p), err(p)
    assert not (cli.home / "ran").exists()


@pytest.mark.parametrize("kind", ["fifo", "zero", "huge"])
def test_an_intensity_file_that_never_ends_cannot_hold_the_run(cli, kind):
    path = cli.home / "s.csv"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "zero":
        path.symlink_to("/dev/zero")
    else:
        with open(path, "wb") as f:
            f.truncate(65 << 20)  # sparse: 65 MiB of nothing
    p = cli("--quiet", "--intensity-file", "s.csv", "--", "python3", "-c", "open('ran', 'w')", timeout=20)
    assert p.returncode == 2 and "intensity file s.csv: cannot read (it is " in err(p), err(p)
    assert not (cli.home / "ran").exists()


def test_a_cloned_config_link_to_a_device_or_fifo_is_not_read(cli):
    (cli.home / "carbonrun.toml").symlink_to("/dev/zero")
    os.mkfifo(cli.home / "pyproject.toml")
    p = cli("config", timeout=20)
    assert p.returncode == 0 and "(none found from here upwards)" in p.stdout.decode(), err(p)


def test_deeply_nested_files_are_refused_not_a_crash(tmp_path):
    from carbonrun import settings
    from carbonrun.gate.stats import GateError, read_baseline

    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "s.json").write_text(deep)
    with pytest.raises(IntensityFileError, match="nested too deeply"):
        load_intensity_file(str(tmp_path / "s.json"))
    (tmp_path / "b.json").write_text(deep)
    with pytest.raises(GateError, match="not readable"):
        read_baseline(str(tmp_path / "b.json"))
    (tmp_path / "carbonrun.toml").write_text(f"a = {deep}\n")
    with pytest.raises(CarbonrunError, match="invalid TOML: nested too deeply"):
        settings.resolve({}, {"HOME": str(tmp_path)}, str(tmp_path))


def test_gate_baseline_with_huge_or_negative_samples_is_refused(tmp_path):
    from carbonrun.gate.stats import BASELINE_SCHEMA, GateError, read_baseline

    (tmp_path / "zero.json").symlink_to("/dev/zero")  # committed as a link: must not hang or fill memory
    with pytest.raises(GateError, match="not readable"):
        read_baseline(str(tmp_path / "zero.json"))

    for samples in ([1e308, 1.0], [-1.0, 2.0]):
        path = tmp_path / "b.json"
        path.write_text(json.dumps({"schema": BASELINE_SCHEMA, "metric": "energy", "samples": samples,
                                    "host": {}, "meters": []}))
        with pytest.raises(GateError, match="corrupt: samples must be"):
            read_baseline(str(path))


# == credentials =====================================================================================
def test_no_credential_header_follows_a_redirect_to_another_origin(server):
    server.routes["/v3/carbon-intensity/latest"] = (200, em_latest(50), 0)
    # another origin: a different port, and a different host name for the same address
    for target in (server.url, server.url.replace("127.0.0.1", "localhost")):
        hop = Redirector(target)
        try:
            provider = get_provider("electricitymaps", {"base_url": hop.url, "token": TOKEN, "region": "FR",
                                                        "clock": lambda: NOW, "timeout": 2.0})
            assert provider.current()[0] == 50.0  # the redirect is followed...
            assert hop.headers_seen()[0]["auth-token"] == TOKEN  # ...the first hop is where the user sent it
        finally:
            hop.close()
        assert "auth-token" not in server.requests[-1][1]  # ...but the token stays behind


def test_watttime_password_never_follows_a_redirect(server):
    hop = Redirector(server.url)
    try:
        wt = get_provider("watttime", {"base_url": hop.url, "user": WT_USER, "password": WT_PASS,
                                       "region": "CAISO_NORTH", "clock": lambda: NOW, "timeout": 2.0})
        server.routes["/login"] = (401, {"error": "no"}, 0)
        with pytest.raises(ProviderError, match="authentication refused") as e:
            wt.current()
    finally:
        hop.close()
    assert all("authorization" not in h for _, h in server.requests) and server.requests
    assert WT_PASS not in str(e.value)


def test_same_origin_redirect_keeps_the_credentials(server):
    server.routes["/old/v3/carbon-intensity/latest"] = (200, em_latest(70), 0)
    hop = Redirector(server.url)  # a different port: that is another origin, so check same-origin via a path
    hop.close()
    from urllib.request import Request

    from carbonrun.net import redirect_handler

    handler = redirect_handler()()
    req = Request(server.url + "/a", headers={"Auth-Token": TOKEN})
    same = handler.redirect_request(req, None, 302, "Found", {}, server.url + "/b")
    other = handler.redirect_request(req, None, 302, "Found", {}, "http://localhost:1/b")
    down = handler.redirect_request(Request("https://h.example/a", headers={"Authorization": "Basic x"}),
                                    None, 302, "Found", {}, "http://h.example/a")
    assert same.get_header("Auth-token") == TOKEN
    assert other.get_header("Auth-token") is None and down.get_header("Authorization") is None


def test_redirect_to_another_scheme_is_refused():
    from urllib.error import HTTPError
    from urllib.request import Request

    from carbonrun.net import redirect_handler

    with pytest.raises(HTTPError):
        redirect_handler()().redirect_request(Request("http://127.0.0.1/a"), None, 302, "Found", {}, "file:///etc/passwd")


@pytest.mark.parametrize("url", ["http://api.electricitymaps.example", "ftp://127.0.0.1", "http://10.0.0.1:8080"])
def test_credentials_need_https_except_to_loopback(url):
    provider = get_provider("electricitymaps", {"base_url": url, "token": TOKEN, "region": "FR", "timeout": 1.0})
    with pytest.raises(ProviderError, match="refusing to send credentials .* only over https") as e:
        provider.current()
    assert provider.requests == 0 and TOKEN not in str(e.value)


def test_credentials_may_go_to_loopback_over_http(server):
    server.routes["/v3/carbon-intensity/latest"] = (200, em_latest(40), 0)
    for host in ("127.0.0.1", "localhost"):
        provider = get_provider("electricitymaps", {"base_url": server.url.replace("127.0.0.1", host),
                                                    "token": TOKEN, "region": "FR", "clock": lambda: NOW})
        assert provider.current()[0] == 40.0


def test_a_dripping_server_cannot_hold_a_request_past_its_deadline():
    body = json.dumps(em_latest(10)).encode()
    drip = Dripper(body, every_s=0.05)  # ~4 s for the whole answer, one byte at a time
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            http_get(drip.url + "/x", {}, timeout=0.5)
        assert time.monotonic() - t0 < 1.0
        provider = get_provider("uk", {"base_url": drip.url, "timeout": 0.4, "clock": lambda: NOW})
        t0 = time.monotonic()
        with pytest.raises(ProviderError, match="no answer .* within 0.4 s"):
            provider.current()
        assert time.monotonic() - t0 < 1.0
    finally:
        drip.close()


def test_a_dripping_pushgateway_cannot_hold_carbonruns_exit(monkeypatch):
    from carbonrun.metrics import push

    monkeypatch.setenv("no_proxy", "127.0.0.1")
    drip = Dripper(b"x" * 200, every_s=0.1)  # 20 s of answer
    try:
        t0 = time.monotonic()
        with pytest.raises(TimeoutError):
            push(drip.url, "carbonrun_runs 1\n", {}, timeout=0.3)
        assert time.monotonic() - t0 < 0.8
    finally:
        drip.close()
    assert drip.requests and drip.requests[0][0] == "/metrics/job/carbonrun"


def test_an_endless_answer_is_cut_at_the_size_limit():
    from carbonrun.net import MAX_BODY

    flood = Flood(MAX_BODY + (1 << 20))
    try:
        provider = get_provider("uk", {"base_url": flood.url, "timeout": 5.0, "clock": lambda: NOW})
        with pytest.raises(ProviderError, match="larger than 8 MiB"):
            provider.current()
    finally:
        flood.close()


def _project(cli, port: int) -> Path:
    checkout = cli.home / "checkout"
    checkout.mkdir()
    (checkout / "pyproject.toml").write_text(
        f'[project]\nname = "x"\n\n[tool.carbonrun]\nprovider = "watttime"\nprovider-url = "http://127.0.0.1:{port}"\n'
        f'region = "FR"\n\n[tool.carbonrun.providers.watttime]\nbase-url = "http://127.0.0.1:{port}"\n')
    return checkout


def test_a_cloned_projects_provider_url_gets_no_credentials(cli, server):
    server.routes["/login"] = (200, {"token": "t"}, 0)
    checkout = _project(cli, int(server.url.rsplit(":", 1)[1]))
    secrets = {"CARBONRUN_WATTTIME_USER": WT_USER, "CARBONRUN_WATTTIME_PASSWORD": WT_PASS, **NET_ENV}
    p = cli("doctor", "--json", cwd=checkout, env=secrets)
    assert server.requests == []  # nothing was sent there, least of all the password
    assert "warning: ignored provider, provider-url, providers.watttime.base-url from the project file" in err(p)
    assert "trusted-projects" in err(p)
    run = cli("--quiet", "--", "true", cwd=checkout, env=secrets)
    assert run.returncode == 0 and server.requests == [] and "ignored provider" in err(run)
    assert cli.record()["intensity"]["source"] == "table:country"


def test_the_user_can_trust_a_project_like_git_safe_directory(cli, server):
    server.routes["/login"] = (200, {"token": "t"}, 0)
    checkout = _project(cli, int(server.url.rsplit(":", 1)[1]))
    (cli.home / "config" / "carbonrun").mkdir(parents=True)
    (cli.home / "config" / "carbonrun" / "config.toml").write_text(f'trusted-projects = ["{checkout}"]\n')
    secrets = {"CARBONRUN_WATTTIME_USER": WT_USER, "CARBONRUN_WATTTIME_PASSWORD": WT_PASS, **NET_ENV}
    p = cli("doctor", "--json", cwd=checkout, env=secrets)
    assert "ignored" not in err(p)
    assert server.paths() and server.paths()[0] == "/login"  # the user's own choice: credentials go


def test_a_project_file_cannot_write_outside_the_project(cli):
    (cli.home / "bashrc").write_text("export PATH=/usr/bin\n")
    repo = cli.home / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "carbonrun.toml").write_text(f'json = "{cli.home / "bashrc"}"\nprometheus-textfile = "../.."\n')
    p = cli("--quiet", "--", "true", cwd=repo / "sub")
    assert p.returncode == 0 and "ignored json, prometheus-textfile from the project file" in err(p), err(p)
    assert (cli.home / "bashrc").read_text() == "export PATH=/usr/bin\n" and not (cli.home / "carbonrun.prom").exists()
    (repo / "carbonrun.toml").write_text('json = "run.json"\n')  # inside the project: the project's choice
    p = cli("--quiet", "--", "true", cwd=repo / "sub")
    assert p.returncode == 0 and "ignored" not in err(p) and (repo / "sub" / "run.json").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another user needs root")
def test_a_project_file_owned_by_another_user_is_ignored(tmp_path):
    from carbonrun import settings

    work = tmp_path / "shared" / "work"
    work.mkdir(parents=True)
    planted = tmp_path / "shared" / "carbonrun.toml"  # e.g. /tmp/carbonrun.toml, above someone's cwd
    planted.write_text('intensity = 1\nregion = "FR"\n')
    os.chown(planted, 12345, 12345)
    st = settings.resolve({}, {"HOME": str(tmp_path / "home")}, str(work))
    assert st.intensity is None and st.region is None
    assert "belongs to another user (uid 12345)" in st.warnings[0]
    trusted = {"HOME": str(tmp_path / "home"), "CARBONRUN_TRUSTED_PROJECTS": str(planted.parent)}
    assert settings.resolve({}, trusted, str(work)).intensity == 1.0


def test_a_project_store_url_and_pushgateway_are_ignored_but_a_local_store_is_kept(tmp_path):
    from carbonrun import settings

    (tmp_path / "carbonrun.toml").write_text(
        'store = "postgresql://evil.example/steal"\npushgateway = "http://evil.example:9091"\n'
        'trusted-projects = ["/"]\n')
    st = settings.resolve({}, {"HOME": str(tmp_path / "home")}, str(tmp_path))
    assert st.store is None and st.pushgateway is None
    assert "trusted-projects, pushgateway, store" in st.warnings[0]  # a project cannot trust itself
    (tmp_path / "carbonrun.toml").write_text('store = "runs.sqlite"\n')
    st = settings.resolve({}, {"HOME": str(tmp_path / "home")}, str(tmp_path))
    assert st.store == "runs.sqlite" and not st.warnings
    for outside in ("/tmp/elsewhere.sqlite", "../up.sqlite", "~/runs.sqlite"):  # runs written outside: no
        (tmp_path / "carbonrun.toml").write_text(f'store = "{outside}"\n')
        st = settings.resolve({}, {"HOME": str(tmp_path / "home")}, str(tmp_path))
        assert st.store is None and "ignored store" in st.warnings[0], outside
    (tmp_path / "carbonrun.toml").write_text('store = "none"\n')
    assert settings.resolve({}, {"HOME": str(tmp_path / "home")}, str(tmp_path)).store == "none"
    st = settings.resolve({"store": ("postgresql://mine.example/db", "flag")}, {"HOME": str(tmp_path)}, str(tmp_path))
    assert st.store == "postgresql://mine.example/db"  # a flag is the user's own choice


# == secrets shown ===================================================================================
PG = "postgresql://alice:s3cr3t-pw@db.example:5432/runs?sslmode=require&password=hunter22"


@pytest.mark.parametrize("as_json", [False, True])
def test_config_never_prints_a_password(cli, as_json):
    p = cli("config", *(["--json"] if as_json else []), env={"CARBONRUN_STORE": PG})
    out = p.stdout.decode()
    assert p.returncode == 0 and "alice:***@db.example" in out
    assert "s3cr3t-pw" not in out and "hunter22" not in out and "password=***" in out


@pytest.mark.parametrize("text, secret", [
    (PG, "s3cr3t-pw"), (PG, "hunter22"),
    ("postgresql://u:pa ss[@h/db: unexpected spaces found in \"pa ss[\"", "pa ss["),
    ("postgresql://u:p@ss/w0rd@h/db", "ss/w0rd"),
    ("https://api.example/v3?zone=FR&token=tok123&key=k456", "tok123"),
    ("https://api.example/v3?zone=FR&token=tok123&key=k456", "k456"),
    ("host=db user=alice password='se cret' dbname=x", "se cret"),
    ("invalid store 'postgresql://alice:s3cr3t@db/x' (env CARBONRUN_STORE)", "s3cr3t"),
])
def test_redaction_covers_userinfo_query_and_malformed_passwords(text, secret):
    out = redact_text(text)
    assert secret not in out and "***" in out


def test_a_malformed_password_is_not_echoed_in_errors(cli):
    p = cli("history", "--store", "postgresql://alice:pa ss[w0rd@127.0.0.1:1/x")
    assert p.returncode != 0 and "pa ss[w0rd" not in err(p) and "w0rd" not in err(p), err(p)


def test_a_password_in_a_provider_url_stays_out_of_notes(server):
    url = server.url.replace("http://", "http://user:hunter22@")
    got = resolve_intensity(intensity=None, intensity_file=None, provider="uk", now=NOW, region="FR",
                            provider_options={"base_url": url, "timeout": 1.0, "clock": lambda: NOW})
    assert got.notes and not any("hunter22" in n for n in got.notes), got.notes


def test_a_password_in_a_provider_url_stays_out_of_the_record(cli):
    p = cli("--quiet", "--provider", "uk", "--provider-url", "http://user:hunter22@127.0.0.1:1", "--", "true",
            env=NET_ENV)
    assert p.returncode == 0, err(p)
    p = cli("report", "last", "--format", "json")
    assert p.returncode == 0 and b"hunter22" not in p.stdout and b"live provider uk failed" in p.stdout


@pytest.mark.parametrize("what", ["json", "report"])
def test_files_with_command_lines_are_private_even_under_umask_0(cli, what):
    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(cli.argv(*args), capture_output=True, env=cli.env, cwd=cli.home, timeout=60,
                              preexec_fn=lambda: os.umask(0))

    assert run("--quiet", "--json", "run.json", "--", "true", "--password=x").returncode == 0
    if what == "report":
        assert run("report", "last", "-o", "run.html").returncode == 0
    path = cli.home / ("run.json" if what == "json" else "run.html")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# == inert outputs ===================================================================================
def _hostile_run(cli) -> None:
    bindir = cli.home / "bin"
    bindir.mkdir()
    for name in ("=HYPERLINK(\"http:evil\")", "@SUM(1+1)", "+cmd|'calc'!A0"):
        exe = bindir / name
        exe.write_text("#!/bin/sh\nexit 0\n")
        exe.chmod(0o755)
        p = cli("--quiet", "--tag", "@x=-2+3", "--tag", "t=\tTAB", "--", name,
                env={"PATH": f"{bindir}:{os.environ['PATH']}"})
        assert p.returncode == 0, err(p)


def test_csv_formats_start_no_cell_with_a_formula(cli):
    _hostile_run(cli)
    for args in (("history", "--format", "csv"), ("report", "last", "--format", "csv"),
                 ("report", "last", "--format", "codecarbon"), ("history", "--format", "codecarbon")):
        p = cli(*args)
        assert p.returncode == 0, err(p)
        rows = list(csv.reader(io.StringIO(p.stdout.decode())))
        assert len(rows) >= 2
        for row in rows[1:]:
            for cell in row:
                assert not cell.startswith(("=", "+", "@", "\t", "\r")), (args, cell)
                assert not cell.startswith("-") or _is_number(cell), (args, cell)
    rows = list(csv.DictReader(io.StringIO(cli("history", "--format", "csv").stdout.decode())))
    assert {r["command"] for r in rows} == {"'=HYPERLINK(\"http:evil\")", "'@SUM(1+1)", "'+cmd|'calc'!A0"}


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


EVIL_TERM = "\x1b]0;pwned\x07\x1b[2J\x9b31m\u202e"


def test_terminal_tables_escape_control_sequences_from_stored_runs(cli):
    for _ in range(2):
        p = cli("--quiet", "--tag", f"t={EVIL_TERM}", "--", "python3", "-c", f"#{EVIL_TERM}")
        assert p.returncode == 0, err(p)
    outputs = {"history": cli("history"), "report": cli("report", "last"), "compare": cli("compare", "-2", "-1"),
               "history --tag": cli("history", "--tag", f"t={EVIL_TERM}"),
               "statement": cli("report", "last", "--format", "statement"), "rm": cli("rm", "last")}
    for name, p in outputs.items():
        assert p.returncode == 0, (name, err(p))
        out = p.stdout.decode() + err(p)
        for ch in ("\x1b", "\x07", "\x9b", "\u202e"):
            assert ch not in out, (name, repr(out))
    assert "\\x1b]0;pwned\\x07" in outputs["history"].stdout.decode() + outputs["report"].stdout.decode()


@pytest.mark.parametrize("fmt", ["markdown", "csv", "latex", "html", "statement"])
def test_file_formats_printed_to_a_terminal_are_escaped_too(cli, fmt):
    p = cli("--quiet", "--", "python3", "-c", f"#{EVIL_TERM}")
    assert p.returncode == 0, err(p)
    from tests.test_cli_manners import in_terminal

    out = in_terminal(cli, "report", "last", "--format", fmt, no_color=True).decode()
    assert out and not any(ch in out for ch in ("\x1b", "\x07", "\x9b", "\u202e")), repr(out)


def test_a_project_files_strings_cannot_drive_the_terminal(cli):
    (cli.home / "carbonrun.toml").write_text('region = "\\u001b]0;pwned\\u0007FR"\ntags = {a = "\\u001b[2J"}\n')
    shown = cli("config")
    assert shown.returncode == 0 and "\x1b" not in shown.stdout.decode() and "\\x1b]0;pwned" in shown.stdout.decode()
    bad = cli("--quiet", "--", "true")  # the region is unknown: the error line quotes it, escaped
    assert bad.returncode == 2 and "\x1b" not in err(bad) and "\x07" not in err(bad), err(bad)


def test_a_committed_baselines_command_cannot_drive_the_terminal(cli):
    made = cli("gate", "--baseline", "b.json", "--update-baseline", "--runs", "2", "--", "true")
    assert made.returncode == 0, err(made)
    data = json.loads((cli.home / "b.json").read_text())
    data["command"] = ["tr\x1b]0;pwned\x07ue", "\x1b[2J"]
    (cli.home / "b.json").write_text(json.dumps(data))
    p = cli("gate", "--baseline", "b.json", "--runs", "2", "--", "true")
    out = p.stdout.decode() + err(p)
    assert "another command" in out and "\x1b" not in out and "\x07" not in out, out


def test_sanitize_helpers():
    assert [csv_cell(v) for v in ("=1+1", "-1.5", "-x", "+3", "@a", "\tb", "\rc", "plain", 3, None, "＝1")] == [
        "'=1+1", "-1.5", "'-x", "+3", "'@a", "'\tb", "\nc", "plain", 3, None, "'＝1"]
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow([csv_cell("x\r=HYPERLINK(1)"), "y"])
    assert list(csv.reader(io.StringIO(buf.getvalue()))) == [["x\n=HYPERLINK(1)", "y"]]  # one row, two cells
    assert terminal("a\x1b[2Jb\nc\u202ed\x7f") == "a\\x1b[2Jb\\nc\\u202ed\\x7f"
    assert terminal("grüße ✓ 中文") == "grüße ✓ 中文"


# == property-based: hostile strings and numbers through every parser and format ======================
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st  # noqa: E402

HOSTILE = st.lists(st.sampled_from(list("=+-@\t\r\n\x1b\x07\x9b\u202e\x00;,\"'|`<>&\\{}$%#_^~[]: aZ0.9")
                                   + ["<script>", "\\x", "--", "=cmd|", "ＡＢ", "\U0001f600", "1e5", "-2"]),
                   max_size=12).map("".join)
FAST = hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.fixture(scope="module")
def real_record(tmp_path_factory) -> Dict[str, Any]:
    """One real run's record (a subprocess of the CLI), to be filled with hostile strings."""
    from tests.conftest import CLI

    home = tmp_path_factory.mktemp("rec")
    (home / "no-powercap").mkdir()
    cli = CLI(home)
    p = cli("--quiet", "--region", "FR", "--tag", "a=b", "--", "true")
    assert p.returncode == 0, err(p)
    return cli.record()


def _with(record: Dict[str, Any], s: str) -> Dict[str, Any]:
    r = json.loads(json.dumps(record))
    r["command"] = [s, "--x", s]
    r["tags"] = {f"k{s}": s, "plain": s}
    r["cwd"] = s
    r["notes"] = [s]
    r["host"]["name"] = s
    r["intensity"]["region"] = s or None
    for c in r.get("components") or []:
        c["device"] = s
    return r


CONTROL = [chr(c) for c in (*range(0, 9), *range(11, 32), 0x7F, *range(0x80, 0xA0), 0x202E, 0x2066)]


@FAST
@given(s=HOSTILE)
def test_every_output_format_keeps_hostile_strings_inert(real_record, s):
    from carbonrun.report import available, formatter

    rec = _with(real_record, s)
    for name in available():
        out = formatter(name).render(rec)
        if name == "json":
            assert json.loads(out)["command"] == rec["command"]
            continue
        if name in ("csv", "codecarbon"):
            for row in list(csv.reader(io.StringIO(out)))[1:]:
                for cell in row:
                    assert not cell.startswith(("=", "+", "@", "\t", "\r", "＝")) or _is_number(cell), (name, cell)
                    assert not cell.startswith("-") or _is_number(cell) or cell.startswith("'"), (name, cell)
            continue
        if name == "html":
            assert "<script>" not in out.split("</style>")[-1] or "<script>" not in s, name
        if name in ("table", "statement"):
            bad = [ch for ch in CONTROL if ch in out]
            assert not bad, (name, bad, repr(out))


@FAST
@given(value=st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-10**400, 10**400),
                       st.text(max_size=12), st.booleans()),  # from a flag, CARBONRUN_* and a project file
       name=st.sampled_from(["pue", "interval", "intensity", "embodied_server_kg", "embodied_lifetime_years"]))
def test_config_values_are_finite_in_range_or_refused(tmp_path, value, name):
    from carbonrun import settings
    from carbonrun.validate import number

    toml = (str(value).lower() if isinstance(value, (bool, int)) else json.dumps(value) if isinstance(value, str)
            else {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(repr(value), repr(value)))
    project = tmp_path / "carbonrun.toml"
    for flags, env, text in (({name: (value, "flag")}, {}, None), ({}, {f"CARBONRUN_{name.upper()}": str(value)}, None),
                             ({}, {}, f"{name.replace('_', '-')} = {toml}\n")):
        if text is not None:
            project.write_text(text)
        try:
            got = settings.resolve(flags, {"HOME": str(tmp_path), **env}, str(tmp_path))
        except CarbonrunError as e:
            assert e.exit_code == 2 and "\n" not in str(e), str(e)
            if text is None:
                assert f"invalid {name.replace('_', '-')}" in str(e), str(e)
            else:  # a bad value, or a string TOML cannot hold (a lone surrogate): file and line either way
                assert f"{project}:1" in str(e), str(e)
            continue
        finally:
            project.unlink(missing_ok=True)
        x = got.values[name]
        assert number(x) == x  # finite
        assert settings.SPECS[name].convert(x) == x


@FAST
@given(rows=st.lists(st.tuples(st.one_of(st.floats(), st.integers(-10**20, 10**20), HOSTILE),
                               st.one_of(st.floats(), st.integers(-10**20, 10**20), HOSTILE)), max_size=6),
       as_json=st.booleans())
def test_intensity_files_give_finite_series_or_a_one_line_error(tmp_path, rows, as_json):
    import math

    if as_json:
        path = tmp_path / "s.json"
        path.write_text(json.dumps([{"timestamp": t, "g_per_kwh": g} for t, g in rows]))
    else:
        path = tmp_path / "s.csv"
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["timestamp", "g_per_kwh"])
        w.writerows(rows)
        path.write_text(buf.getvalue())
    try:
        got = load_intensity_file(str(path))
    except IntensityFileError as e:
        assert str(e).startswith(f"intensity file {path}") and "\n" not in str(e)
        return
    s = got.series
    assert s is not None and all(math.isfinite(v) and 0 <= v <= 5000 for v in s.values)
    assert all(0 <= t <= 253402300799 for t in s.starts) and math.isfinite(got.g_per_kwh)
    got.to_record()  # the record's times print


JSONISH = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(-10**30, 10**30), HOSTILE),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(HOSTILE, inner, max_size=3)), max_leaves=8)


@pytest.fixture(scope="module")
def module_server():
    s = Server()
    yield s
    s.close()


@FAST
@given(value=JSONISH, where=st.sampled_from(["carbonIntensity", "datetime", "temporalGranularity", "body"]))
def test_provider_payloads_give_a_sane_reading_or_a_provider_error(module_server, monkeypatch, value, where):
    import math

    for var in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    body: Any = em_latest(120)
    if where == "body":
        body = value
    else:
        body[where] = value
    module_server.routes["/v3/carbon-intensity/latest"] = (200, json.dumps(body, allow_nan=True), 0)
    provider = get_provider("electricitymaps", {"base_url": module_server.url, "token": TOKEN, "region": "FR",
                                                "clock": lambda: NOW, "timeout": 2.0})
    try:
        g, t0, t1 = provider.current()
    except ProviderError as e:
        assert "\n" not in str(e) and TOKEN not in str(e)
        return
    assert math.isfinite(g) and 0 <= g <= 5000 and math.isfinite(t0) and t0 < t1


@FAST
@given(s=HOSTILE, tail=st.text(alphabet=st.characters(blacklist_categories=["Cs"], blacklist_characters="@\n'\""),
                               max_size=16))
def test_redaction_removes_any_password_from_a_url_in_any_text(s, tail):
    from urllib.parse import quote

    secret = "Ω" + tail.strip() + "Ω"  # Ω is in no other part of the text
    for url, mark in ((f"postgresql://alice:{secret}@db.example/x", "Ω"),
                      (f"postgresql://alice:{quote(secret, safe='')}@db/x", "%CE%A9"),
                      (f"https://h.example/v3?zone=FR&password={quote(secret, safe='')}", "%CE%A9")):
        out = redact_text(f"{s} {url} {s}")
        assert mark not in out, (url, out)
