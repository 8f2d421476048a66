"""The whole CLI against a fake powercap tree whose counters advance at known power."""
from __future__ import annotations

import pytest

from tests.fakes.powercap import FakePowercap, Zone, range_for, standard_zones

MACHINE_W = 72.0  # package 65 W + dram 7 W; core (40 W) lies inside the package


def _machine_run(cli, tmp_path, mmio: bool):
    root = tmp_path / "powercap"
    with FakePowercap(root, standard_zones(wrap_seconds=0.8), mmio_duplicate=mmio):
        p = cli("--quiet", "--attribution", "machine", "--interval", "0.05", "--", "sleep", "2",
                env={"CARBONRUN_RAPL_ROOT": str(root)})
    assert p.returncode == 0, p.stderr.decode()
    return cli.record()


@pytest.mark.parametrize("mmio", [False, True], ids=["intel-rapl", "with-mmio-duplicate"])
def test_machine_energy_is_package_plus_dram(cli, tmp_path, mmio):
    rec = _machine_run(cli, tmp_path, mmio)
    joules = rec["energy"]["machine_kwh"] * 3.6e6
    truth = MACHINE_W * rec["duration_s"]
    assert joules == pytest.approx(truth, rel=0.01)
    comps = {(c["component"], c["device"]) for c in rec["components"]}
    assert comps == {("cpu", "package-0"), ("dram", "dram-0")}  # core never a component
    assert not any(c["estimated"] for c in rec["components"])
    assert rec["energy"]["total_kwh"] == pytest.approx(rec["energy"]["machine_kwh"])


def test_process_attribution_keeps_machine_and_job(cli, tmp_path):
    root = tmp_path / "powercap"
    with FakePowercap(root, standard_zones(wrap_seconds=0.8)):
        p = cli("--quiet", "--", "sleep", "1", env={"CARBONRUN_RAPL_ROOT": str(root)})
    assert p.returncode == 0
    rec = cli.record()
    e = rec["energy"]
    assert e["machine_kwh"] * 3.6e6 == pytest.approx(MACHINE_W * rec["duration_s"], rel=0.01)
    assert e["job_kwh"] < 0.2 * e["machine_kwh"]  # sleep uses almost no CPU
    assert e["total_kwh"] == pytest.approx(e["job_kwh"])


def test_unreadable_counters_fall_back_to_the_estimate(cli, tmp_path):
    root = tmp_path / "powercap"
    zones = [Zone("package-0", 65.0, range_for(65.0, 1.0), readable=False)]
    with FakePowercap(root, zones):
        p = cli("--quiet", "--", "sh", "-c", "exit 3", env={"CARBONRUN_RAPL_ROOT": str(root)})
    assert p.returncode == 3
    rec = cli.record()
    assert all(c["estimated"] for c in rec["components"])
    assert any("not readable" in n or "unreadable" in n for n in rec["notes"]), rec["notes"]
    assert any("estimated energy" in n for n in rec["notes"])
