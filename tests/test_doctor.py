"""`carbonrun doctor` and `carbonrun config` as a user runs them, on fake powercap trees and a stub NVML."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from carbonrun.collectors.rapl import udev_fix
from carbonrun.store.sqlite import SCHEMA_VERSION

from tests.fakes.powercap import FakePowercap, Zone, range_for, standard_zones


def doctor_json(cli, *args, env=None):
    p = cli("doctor", "--json", *args, env=env)
    assert p.stderr == b"", p.stderr.decode()
    report = json.loads(p.stdout)
    assert report["exit_code"] == p.returncode
    return p.returncode, report


def fake_tree(root: Path, dram_readable: bool = True, package_readable: bool = True) -> FakePowercap:
    zones = standard_zones()
    zones[0].readable = package_readable
    zones[0].children[1].readable = dram_readable  # children: core, dram
    zones.append(Zone("psys", 12.0, range_for(12.0, 3.0)))
    return FakePowercap(root, zones)


# ------------------------------------------------------------------------------------------ RAPL


def test_no_powercap_only_estimates_exit_1(cli):
    code, r = doctor_json(cli, "--gpus", "none")
    assert code == 1
    assert r["schema"] == "carbonrun.doctor/1" and r["measured"] == []
    assert r["rapl"]["state"] == "no-zones" and r["rapl"]["zones"] == []
    assert any("modprobe" in c for c in r["rapl"]["fix"]["commands"])
    assert "/sys/class/powercap:/sys/class/powercap:ro" in r["rapl"]["fix"]["container"]
    assert r["estimate"]["used_for"] == ["cpu", "memory"] and "W" in r["estimate"]["method"]
    assert r["gpus"]["state"] == "off"


def test_missing_root_is_absent(cli, tmp_path):
    code, r = doctor_json(cli, "--gpus", "none", "--rapl-root", str(tmp_path / "nowhere"))
    assert code == 1 and r["rapl"]["state"] == "absent"
    assert r["rapl"]["root"] == str(tmp_path / "nowhere")


def test_readable_and_unreadable_zones(cli, tmp_path):
    fake_tree(tmp_path / "pc", dram_readable=False)
    code, r = doctor_json(cli, "--gpus", "none", env={"CARBONRUN_RAPL_ROOT": str(tmp_path / "pc")})
    assert code == 0
    zones = {z["zone"]: z for z in r["rapl"]["zones"]}
    assert zones["intel-rapl:0"]["name"] == "package-0" and zones["intel-rapl:0"]["measured"]
    assert zones["intel-rapl:0:1"]["name"] == "dram" and not zones["intel-rapl:0:1"]["readable"]
    assert not zones["intel-rapl:0:0"]["measured"] and "inside package-0" in zones["intel-rapl:0:0"]["reason"]
    assert zones["intel-rapl:1"]["name"] == "psys" and zones["intel-rapl:1"]["measured"]
    assert r["measured"] == ["package-0"] and r["rapl"]["state"] == "readable"
    fix = r["rapl"]["fix"]
    assert fix["commands"] == udev_fix("powercap").splitlines()
    assert fix["group"]["name"] == "powercap" and isinstance(fix["group"]["member"], bool)
    assert r["estimate"]["used_for"] == ["memory"]  # no readable dram zone


def test_only_psys_readable_is_estimates_exit_1(cli, tmp_path):
    fake_tree(tmp_path / "pc", dram_readable=False, package_readable=False)
    code, r = doctor_json(cli, "--gpus", "none", "--rapl-root", str(tmp_path / "pc"))
    assert code == 1 and r["measured"] == [] and r["rapl"]["state"] == "unreadable"
    psys = [z for z in r["rapl"]["zones"] if z["name"] == "psys"]
    assert psys and psys[0]["measured"]  # read, but never added to totals
    assert r["rapl"]["fix"]["why"].startswith("energy_uj is root-only")
    assert r["estimate"]["used_for"] == ["cpu", "memory"]


def test_text_has_the_udev_rule_and_container_mount(cli, tmp_path):
    fake_tree(tmp_path / "pc", dram_readable=False, package_readable=False)
    p = cli("doctor", "--gpus", "none", "--rapl-root", str(tmp_path / "pc"))
    out = p.stdout.decode()
    assert p.returncode == 1 and p.stderr == b""
    assert 'SUBSYSTEM=="powercap"' in out and "udevadm trigger" in out and "group powercap" in out
    assert "no  package-0" in out and "no  dram" in out and "ok  psys" in out
    assert "-v /sys/class/powercap:/sys/class/powercap:ro" in out
    assert "only estimates are possible" in out


def test_rapl_root_option_is_hidden(cli):
    p = cli("doctor", "--help")
    assert p.returncode == 0 and b"--rapl-root" not in p.stdout and b"--json" in p.stdout


# ------------------------------------------------------------------------------------------ NVML


def test_stub_gpus_energy_paths_and_mig(cli, stubnvml, tmp_path):  # noqa: F811
    cfg = stubnvml.config(tmp_path, [{"name": "Stub A"}, {"name": "Stub B", "energy": 0, "mig": 1}], driver="555.42")
    code, r = doctor_json(cli, env=stubnvml.overlay(cfg))
    assert code == 0, r
    devices = r["gpus"]["devices"]
    assert [(g["index"], g["name"], g["energy_path"], g["mig"]) for g in devices] == [
        (0, "Stub A", "nvml-energy", False), (1, "Stub B", "nvml-power", True)]
    assert all(g["measured"] for g in devices) and r["measured"] == ["gpu0", "gpu1"]
    assert "MIG" in devices[1]["hint"] and r["gpus"]["driver"] == "555.42"
    text = cli("doctor", env=stubnvml.overlay(cfg)).stdout.decode()
    assert "gpu1  Stub B  nvml-power" in text and "[MIG on]" in text


def test_driver_not_loaded_gives_hint(cli, stubnvml, tmp_path):  # noqa: F811
    cfg = stubnvml.config(tmp_path, [{}], init_error=9)
    code, r = doctor_json(cli, env=stubnvml.overlay(cfg))
    assert code == 1 and r["gpus"]["devices"] == []
    assert any("modprobe nvidia" in (p["hint"] or "") for p in r["gpus"]["problems"])


# ------------------------------------------------------------------------------------------ intensity


@pytest.mark.parametrize("args, step, source", [
    (["--region", "FR"], "region", "table:country"),
    (["--intensity", "123"], "intensity", "flag"),
])
def test_intensity_chain(cli, args, step, source):
    _, r = doctor_json(cli, "--gpus", "none", *args)
    ci = r["intensity"]
    assert ci["error"] is None and ci["source"] == source
    assert [s["step"] for s in ci["chain"] if s["used"]] == [step]
    assert [s["step"] for s in ci["chain"]] == ["intensity", "intensity-file", "provider", "region", "timezone",
                                               "world-average"]
    if step == "intensity":
        assert ci["g_per_kwh"] == 123
    same = cli("intensity", "--json", *args)  # one precedence: `intensity` explains the same chain
    assert same.returncode == 0 and json.loads(same.stdout)["chain"] == ci["chain"]


def test_region_from_project_file_and_unknown_region_reported(cli):
    (cli.home / "carbonrun.toml").write_text('region = "Atlantis"\n')
    code, r = doctor_json(cli, "--gpus", "none")
    assert code == 1 and "unknown region 'Atlantis'" in r["intensity"]["error"]
    states = {s["step"]: s["state"] for s in r["intensity"]["chain"]}
    assert states["region"] == "failed" and states["world-average"] == "not reached"
    assert r["store"]["ok"]  # the other checks still ran


# ------------------------------------------------------------------------------------------ store


def test_store_health_before_and_after_a_run(cli):
    _, r = doctor_json(cli, "--gpus", "none")
    assert r["store"]["exists"] is False and r["store"]["ok"] is True
    assert r["store"]["path"] == str(cli.home / "store" / "runs.sqlite")
    assert cli("--quiet", "true").returncode == 0
    _, r = doctor_json(cli, "--gpus", "none")
    s = r["store"]
    assert s["exists"] and s["ok"] and s["runs"] == 1 and s["schema_version"] == SCHEMA_VERSION
    assert s["mode"] == "0600" and s["writable"] and s["error"] is None


def test_store_not_ours_is_reported(cli, tmp_path):
    bad = tmp_path / "junk.sqlite"
    bad.write_bytes(b"this is not sqlite at all" * 10)
    _, r = doctor_json(cli, "--gpus", "none", "--store", str(bad))
    assert r["store"]["ok"] is False and "not a carbonrun store" in r["store"]["error"]
    assert bad.read_bytes().startswith(b"this is not")  # left untouched


def test_a_directory_fifo_or_link_as_store_is_reported_not_ok(cli, tmp_path):
    fifo, link = tmp_path / "fifo", tmp_path / "link.sqlite"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "elsewhere.sqlite")
    for path, says in ((tmp_path, "directory"), (fifo, "FIFO"), (link, "link")):
        _, r = doctor_json(cli, "--gpus", "none", "--store", str(path))
        assert r["store"]["ok"] is False and says in (r["store"]["error"] or ""), (path, r["store"])


def test_a_database_store_is_not_called_read_only(cli, pg_url):
    assert cli("--quiet", "--store", pg_url, "true").returncode == 0
    p = cli("doctor", "--gpus", "none", "--store", pg_url)
    block = p.stdout.decode().split("Run store", 1)[1]
    assert "1 runs" in block and "NOT writable" not in block and "mode None" not in block, block


def test_unreachable_database_store_is_reported_without_its_password(cli):
    url = "postgresql://alice:s3cret-pw@127.0.0.1:1/runs"
    code, r = doctor_json(cli, "--gpus", "none", "--store", url)
    s = r["store"]
    assert code == 1 and s["kind"] == "postgresql" and s["ok"] is False and s["error"]
    assert s["path"] == "postgresql://alice:***@127.0.0.1:1/runs"
    text = cli("doctor", "--gpus", "none", "--store", url).stdout
    assert b"s3cret-pw" not in text and b"alice:***@127.0.0.1" in text


# ------------------------------------------------------------------------------------------ config


def test_config_shows_each_source(cli):
    (cli.home / "carbonrun.toml").write_text('region = "FR"\npue = 1.3\n')
    user = cli.home / "config" / "carbonrun"
    user.mkdir(parents=True)
    (user / "config.toml").write_text('pue = 1.5\nattribution = "machine"\n')
    p = cli("config", "--json", "--tag", "team=ml", env={"CARBONRUN_INTERVAL": "0.5"})
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    s = out["settings"]
    assert s["interval"] == {"value": 0.5, "source": "env CARBONRUN_INTERVAL", "layer": "env"}
    assert s["region"]["value"] == "FR" and s["region"]["layer"] == "project"
    assert s["pue"]["value"] == 1.3 and s["pue"]["source"] == f"project {cli.home / 'carbonrun.toml'}"
    assert s["attribution"]["value"] == "machine" and s["attribution"]["layer"] == "user"
    assert s["tags"] == {"value": {"team": "ml"}, "source": "flag", "layer": "flag"}
    assert s["gpus"] == {"value": "all", "source": "default", "layer": "default"}
    assert out["files"] == {"project": str(cli.home / "carbonrun.toml"),
                            "user": str(user / "config.toml"), "user_exists": True}


def test_config_text(cli):
    p = cli("config", "--region", "DE")
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 0
    assert any(line.split() == ["region", "DE", "flag"] for line in lines)
    assert any(line.split()[:2] == ["pue", "1"] and line.endswith("default") for line in lines)
    assert "user file:" in p.stdout.decode() and "(absent)" in p.stdout.decode()

