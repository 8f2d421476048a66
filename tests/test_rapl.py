"""RAPL discovery and meters against a fake powercap tree whose counters really run and wrap."""
from __future__ import annotations

import os
import time
from pathlib import Path
from typing import List, Tuple

import pytest

from carbonrun.collectors import rapl
from carbonrun.collectors.base import Discovery, Probe

try:
    from tests.fakes.powercap import FakePowercap, Zone, range_for, standard_zones
except ImportError:  # pytest put tests/ itself on sys.path (no tests/__init__.py)
    from fakes.powercap import FakePowercap, Zone, range_for, standard_zones


def run_for(found: Discovery, seconds: float, every: float = 0.05) -> Tuple[float, float, List[float]]:
    """Read every meter every `every` s for `seconds`; (t0, t1, joules per meter at t1).
    t0 is taken right after discovery opened the meters (their zero)."""
    t0 = time.monotonic()
    values = [0.0] * len(found.meters)
    while time.monotonic() - t0 < seconds:
        time.sleep(every)
        values = [m.read(time.monotonic()) for m in found.meters]
    return t0, time.monotonic(), values


def by_device(found: Discovery, values: List[float]) -> dict:
    return {m.device: v for m, v in zip(found.meters, values)}


def counted_j(found: Discovery, values: List[float]) -> float:
    return sum(v for m, v in zip(found.meters, values) if m.counted)


def detail(found: Discovery, zone_id: str) -> dict:
    (d,) = [d for d in found.details if Path(d["path"]).parent.name == zone_id]
    return d


@pytest.fixture
def close_meters():
    opened: List[Discovery] = []
    yield opened.append
    for found in opened:
        for meter in found.meters:
            meter.close()


def discover(root: Path, close_meters) -> Discovery:
    found = rapl.discover(Probe(rapl_root=str(root)))
    close_meters(found)
    return found


# -- the fake itself ---------------------------------------------------------------------------

def test_fake_mirrors_the_kernel_layout(tmp_path):
    FakePowercap(tmp_path, standard_zones(), mmio_duplicate=True)
    assert (tmp_path / "intel-rapl" / "enabled").read_text() == "1\n"
    assert os.path.islink(tmp_path / "intel-rapl:0")
    assert (tmp_path / "intel-rapl:0").resolve() == (tmp_path / "intel-rapl" / "intel-rapl:0").resolve()
    nested = tmp_path / "intel-rapl:0" / "intel-rapl:0:1"
    assert (nested / "name").read_text() == "dram\n"
    assert os.path.samefile(nested, tmp_path / "intel-rapl:0:1")
    assert (tmp_path / "intel-rapl-mmio:0" / "name").read_text() == "package-0\n"
    for f in ("name", "energy_uj", "max_energy_range_uj", "enabled"):
        assert (tmp_path / "intel-rapl:0:0" / f).is_file()


def test_fake_counters_advance_and_wrap(tmp_path):
    zone = Zone("package-0", 50.0, range_for(50.0, 0.2))
    with FakePowercap(tmp_path, [zone]):
        energy = tmp_path / "intel-rapl:0" / "energy_uj"
        seen = []
        for _ in range(30):
            time.sleep(0.02)
            seen.append(int(energy.read_text()))
    assert max(seen) <= zone.max_range_uj
    assert any(b < a for a, b in zip(seen, seen[1:])), "a 0.2 s wrap over 0.6 s must go down"
    assert sum(b > a for a, b in zip(seen, seen[1:])) >= 20


# -- discovery and accuracy --------------------------------------------------------------------

def test_single_socket_cpu_and_dram_within_1_percent_with_wraps(tmp_path, close_meters):
    with FakePowercap(tmp_path, standard_zones(wrap_seconds=0.7)) as fake:
        found = discover(tmp_path, close_meters)
        t0, t1, values = run_for(found, 2.0)
    got = by_device(found, values)
    assert sorted(got) == ["dram-0", "package-0"]
    assert {m.component for m in found.meters} == {"cpu", "dram"}
    assert all(m.source == "rapl" and not m.estimated and m.counted for m in found.meters)
    assert got["package-0"] > 2 * 65.0 * 0.7, "the package counter wrapped at least twice"
    assert counted_j(found, values) == pytest.approx(72.0 * (t1 - t0), rel=0.01)
    assert got["package-0"] == pytest.approx(fake.truth_j("package-0", t0, t1), rel=0.01)
    assert got["dram-0"] == pytest.approx(fake.truth_j("dram", t0, t1), rel=0.01)
    assert found.notes == []


def test_core_and_uncore_are_never_metered(tmp_path, close_meters):
    zones = standard_zones()
    zones[0].children.append(Zone("uncore", 5.0, range_for(5.0, 3.0)))
    with FakePowercap(tmp_path, zones) as fake:
        found = discover(tmp_path, close_meters)
        t0, t1, values = run_for(found, 0.5)
    assert {m.device for m in found.meters} == {"package-0", "dram-0"}
    for zid in ("intel-rapl:0:0", "intel-rapl:0:2"):
        d = detail(found, zid)
        assert d["readable"] and not d["counted"] and "inside package-0" in d["reason"]
    assert counted_j(found, values) == pytest.approx(fake.truth_j("package-0", t0, t1) + fake.truth_j("dram", t0, t1),
                                                     rel=0.02)


def test_psys_is_its_own_meter_and_not_counted(tmp_path, close_meters):
    zones = standard_zones() + [Zone("psys", 90.0, range_for(90.0, 3.0))]
    with FakePowercap(tmp_path, zones) as fake:
        found = discover(tmp_path, close_meters)
        t0, t1, values = run_for(found, 0.5)
    (psys,) = [m for m in found.meters if m.component == "psys"]
    assert psys.device == "psys" and psys.counted is False
    assert by_device(found, values)["psys"] == pytest.approx(fake.truth_j("psys", t0, t1), rel=0.02)
    assert counted_j(found, values) == pytest.approx(72.0 * (t1 - t0), rel=0.02)
    assert detail(found, "intel-rapl:1")["reason"].startswith("whole platform")


def test_mmio_duplicate_counts_once_and_prefers_intel_rapl(tmp_path, close_meters):
    with FakePowercap(tmp_path, standard_zones(wrap_seconds=0.7), mmio_duplicate=True):
        found = discover(tmp_path, close_meters)
        t0, t1, values = run_for(found, 1.0)
    (cpu,) = [m for m in found.meters if m.component == "cpu"]
    assert cpu.zone == "intel-rapl:0"
    mirror = detail(found, "intel-rapl-mmio:0")
    assert mirror["readable"] and not mirror["counted"] and "intel-rapl:0" in mirror["reason"]
    assert counted_j(found, values) == pytest.approx(72.0 * (t1 - t0), rel=0.01)


def test_same_name_twice_under_one_package_counts_once(tmp_path, close_meters):
    dram = Zone("dram", 7.0, range_for(7.0, 3.0))
    zones = [Zone("package-0", 65.0, range_for(65.0, 3.0), [dram, Zone("dram", 7.0, dram.max_range_uj)])]
    FakePowercap(tmp_path, zones)
    found = discover(tmp_path, close_meters)
    assert sorted(m.device for m in found.meters) == ["dram-0", "package-0"]
    assert "counted once" in detail(found, "intel-rapl:0:1")["reason"]


def test_two_sockets_are_separate_meters(tmp_path, close_meters):
    with FakePowercap(tmp_path, standard_zones(wrap_seconds=0.7, sockets=2)) as fake:
        found = discover(tmp_path, close_meters)
        t0, t1, values = run_for(found, 1.0)
    got = by_device(found, values)
    assert sorted(got) == ["dram-0", "dram-1", "package-0", "package-1"]
    assert counted_j(found, values) == pytest.approx(144.0 * (t1 - t0), rel=0.01)
    assert got["dram-1"] == pytest.approx(fake.truth_j("intel-rapl:1:1", t0, t1), rel=0.02)


def test_wrap_adds_the_documented_range_exactly(tmp_path, close_meters):
    zone = Zone("package-0", 1.0, 999_999)  # counter runs 0..999999, so one wrap is 1_000_000 uJ
    FakePowercap(tmp_path, [zone])
    energy = tmp_path / "intel-rapl:0" / "energy_uj"
    energy.write_text("999000\n")
    found = discover(tmp_path, close_meters)
    (meter,) = found.meters
    energy.write_text("500\n")
    assert meter.read(0.0) == pytest.approx(1500 / 1e6)  # 999000 -> 999999 -> 0 -> 500
    energy.write_text("2500\n")
    assert meter.read(0.0) == pytest.approx(3500 / 1e6)


# -- failures are notes, never exceptions ------------------------------------------------------

def test_unreadable_zone_gives_a_note_and_no_meter(tmp_path, close_meters):
    zones = standard_zones()
    zones[0].children[1].readable = False  # dram
    with FakePowercap(tmp_path, zones):
        found = discover(tmp_path, close_meters)
    assert [m.device for m in found.meters] == ["package-0"]
    d = detail(found, "intel-rapl:0:1")
    assert d["readable"] is False and d["counted"] is False and "not readable" in d["reason"]
    (note,) = found.notes
    assert "intel-rapl:0:1 (dram)" in note and "carbonrun doctor" in note


def test_permission_denied_names_the_cve_and_doctor(tmp_path, close_meters, monkeypatch):
    # Tests run as root, which no file mode stops: raise the EACCES a normal user gets.
    FakePowercap(tmp_path, standard_zones())
    real_open = os.open

    def deny(path, flags, *args):
        if str(path).endswith("energy_uj"):
            raise PermissionError(13, "Permission denied", path)
        return real_open(path, flags, *args)

    monkeypatch.setattr(rapl.os, "open", deny)
    found = discover(tmp_path, close_meters)
    assert found.meters == []
    (note,) = found.notes
    assert "CVE-2020-8694" in note and "carbonrun doctor" in note and "intel-rapl:0 (package-0)" in note
    assert all(d["readable"] is False for d in found.details)


def test_missing_root_is_an_empty_discovery_with_a_note(tmp_path):
    found = rapl.discover(Probe(rapl_root=str(tmp_path / "nowhere")))
    assert found.meters == [] and found.details == []
    assert len(found.notes) == 1 and "no powercap tree" in found.notes[0]


def test_root_without_rapl_zones_says_so(tmp_path):
    (tmp_path / "dtpm").mkdir()
    found = rapl.discover(Probe(rapl_root=str(tmp_path)))
    assert found.meters == [] and len(found.notes) == 1 and "no intel-rapl zones" in found.notes[0]


def test_zone_vanishing_mid_run_keeps_last_value_and_notes_once(tmp_path, close_meters):
    with FakePowercap(tmp_path, standard_zones()) as fake:
        found = discover(tmp_path, close_meters)
        package, dram = sorted(found.meters, key=lambda m: m.device != "package-0")
        time.sleep(0.2)
        before = package.read(time.monotonic())
        fake.remove("intel-rapl:0")
        after = []
        for _ in range(5):
            time.sleep(0.02)
            after.append(package.read(time.monotonic()))
        dram_j = dram.read(time.monotonic())
    assert package.device == "package-0" and before > 0
    assert after == [before] * 5
    assert len(package.notes) == 1 and "mid-run" in package.notes[0]
    assert dram_j > 0 and dram.notes == []


def test_udev_fix_makes_energy_uj_group_readable():
    fix = rapl.udev_fix("power")
    assert 'SUBSYSTEM=="powercap"' in fix and 'KERNEL=="intel-rapl:*|intel-rapl-mmio:*"' in fix
    assert "chgrp power /sys%p/energy_uj" in fix and "chmod g+r /sys%p/energy_uj" in fix
    assert "udevadm trigger" in fix


# -- sampling interval against the wrap period ------------------------------------------------

def test_an_interval_near_the_wrap_period_is_capped_with_a_note(tmp_path, close_meters):
    zone = Zone("package-0", 65.0, range_for(65.0, 1.2), max_power_factor=2.0)  # wraps every 0.6 s at 130 W
    FakePowercap(tmp_path, [zone])
    found = rapl.discover(Probe(rapl_root=str(tmp_path), interval=0.4))
    close_meters(found)
    assert found.max_interval == pytest.approx(0.3, rel=1e-3)
    assert any(n.startswith("--interval 0.4 s capped at 0.3 s") and "wraps every 0.6 s at 130 W" in n
               for n in found.notes), found.notes
    quiet = rapl.discover(Probe(rapl_root=str(tmp_path), interval=0.1))
    close_meters(quiet)
    assert quiet.max_interval == pytest.approx(0.3, rel=1e-3) and quiet.notes == []


def test_a_long_interval_would_miss_wraps_so_the_run_caps_it(cli, tmp_path):
    """--interval 2 against a counter that wraps every 0.5 s at its plausible power: without the cap
    the run would miss most of its energy; with it, the record is within 1 % and says why."""
    root = tmp_path / "powercap"
    with FakePowercap(root, [Zone("package-0", 65.0, range_for(65.0, 0.75), max_power_factor=1.5)]):
        p = cli("--quiet", "--attribution", "machine", "--interval", "2", "--", "sleep", "1.5",
                env={"CARBONRUN_RAPL_ROOT": str(root)})
    assert p.returncode == 0, p.stderr.decode()
    assert b"carbonrun: warning: --interval 2 s capped at 0.25 s" in p.stderr
    rec = cli.record()
    assert rec["interval_s"] == pytest.approx(0.25, rel=1e-3)
    assert rec["energy"]["machine_kwh"] * 3.6e6 == pytest.approx(65.0 * rec["duration_s"], rel=0.01)
    assert any("capped" in n for n in rec["notes"])
