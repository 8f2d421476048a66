"""Embodied carbon: amortised manufacturing share per device, reported beside (never in) the emissions."""
from __future__ import annotations

import sys

import pytest

from carbonrun.accounting.embodied import GPU_KG, LIFETIME_YEARS, SERVER_KG, YEAR_S, section
from carbonrun.settings import resolve


def record(attribution="process", duration=3600.0, cpu_s=7200.0, threads=16, gpus=None, host_gpus=None):
    return {
        "attribution": attribution, "duration_s": duration,
        "usage": {"job_cpu_s": cpu_s, "machine_busy_cpu_s": cpu_s * 2},
        "host": {"name": "box", "cpu_threads": threads, "gpus": host_gpus or []},
        "components": [{"component": "cpu", "device": "package-0", "machine_j": 1e6, "job_j": 5e5}] + (gpus or []),
        "emissions": {"kg": 0.5, "low_kg": 0.4, "high_kg": 0.6},
    }


def gpu(index, machine_j, job_j):
    return {"component": "gpu", "device": f"gpu{index}", "machine_j": machine_j, "job_j": job_j}


def test_server_share_is_the_cpu_share():
    emb = section(record())
    [server] = emb["per_device"]
    share = 7200.0 / (3600.0 * 16)  # two threads busy on average out of 16
    assert server["share"] == pytest.approx(share)
    assert server["kg"] == pytest.approx(SERVER_KG * 3600.0 / (LIFETIME_YEARS * YEAR_S) * share)
    assert emb["kg"] == pytest.approx(server["kg"])
    assert (SERVER_KG, GPU_KG, LIFETIME_YEARS) == (1000.0, 150.0, 4.0)


def test_gpus_count_when_the_job_used_them():
    r = record(gpus=[gpu(0, 1000.0, 1000.0), gpu(1, 1000.0, 0.0), gpu(2, 1000.0, 250.0)],
               host_gpus=[{"index": i} for i in range(3)])
    emb = section(r)
    per = {d["device"]: d for d in emb["per_device"]}
    assert set(per) == {"box", "gpu0", "gpu2"}  # gpu1 idle for this job: no share
    hour = 3600.0 / (LIFETIME_YEARS * YEAR_S)
    assert per["gpu0"]["kg"] == pytest.approx(GPU_KG * hour)
    assert per["gpu2"]["share"] == pytest.approx(0.25) and per["gpu2"]["kg"] == pytest.approx(GPU_KG * hour * 0.25)
    assert emb["kg"] == pytest.approx(sum(d["kg"] for d in emb["per_device"]))


def test_machine_attribution_takes_the_whole_machine():
    r = record(attribution="machine", gpus=[gpu(0, 1000.0, 0.0)], host_gpus=[{"index": 0}, {"index": 1}])
    per = section(r)["per_device"]
    assert [d["share"] for d in per] == [1.0, 1.0, 1.0]  # server, gpu0, and gpu1 with no reading
    assert per[0]["kg"] == pytest.approx(SERVER_KG * 3600.0 / (LIFETIME_YEARS * YEAR_S))


def test_unread_gpu_is_left_out_with_a_note():
    emb = section(record(host_gpus=[{"index": 0}]))
    assert [d["kind"] for d in emb["per_device"]] == ["server"]
    assert any("GPU 0" in n and "unknown" in n for n in emb["notes"])


def test_overrides_from_settings(tmp_path):
    st = resolve({"embodied_server_kg": ("2500", "flag"), "embodied_gpu_kg": ("300", "flag"),
                  "embodied_lifetime_years": ("5", "flag")}, env={}, cwd=str(tmp_path))
    emb = section(record(cpu_s=3600.0 * 16, gpus=[gpu(0, 10.0, 10.0)]), st)
    server, g = emb["per_device"]
    frac = 3600.0 / (5 * YEAR_S)
    assert server["kg"] == pytest.approx(2500 * frac) and g["kg"] == pytest.approx(300 * frac)
    assert "2500" in emb["basis"] and "5 years" in emb["basis"]


def test_kept_beside_the_emissions():
    r = record()
    emb = section(r)
    assert r["emissions"] == {"kg": 0.5, "low_kg": 0.4, "high_kg": 0.6}
    assert emb["included_in_emissions"] is False
    assert {"kg", "method", "basis", "per_device"} <= set(emb)
    assert any("cloudcarbonfootprint.org" in s for s in emb["sources"])


def test_share_is_capped_and_safe():
    assert section(record(cpu_s=1e9))["per_device"][0]["share"] == 1.0
    assert section(record(duration=0.0))["kg"] == 0.0


# -- through the CLI ---------------------------------------------------------------------------------------
def test_cli_embodied_only_when_asked(cli):
    work = [sys.executable, "-c", "sum(range(3 * 10**6))"]
    assert cli("--quiet", "--intensity", "100", "--", *work).returncode == 0
    assert "embodied" not in cli.record()
    p = cli("--no-live", "--embodied", "--intensity", "100", "--", *work)
    assert p.returncode == 0, p.stderr.decode()
    rec = cli.record()
    emb = rec["embodied"]
    assert emb["kg"] > 0 and emb["per_device"][0]["kind"] == "server"
    # operational emissions are exactly energy x intensity: nothing embodied was mixed in
    assert rec["emissions"]["kg"] == pytest.approx(rec["energy"]["total_kwh"] * 100 / 1000, rel=1e-6)
    share = rec["usage"]["job_cpu_s"] / (rec["duration_s"] * rec["host"]["cpu_threads"])
    assert emb["per_device"][0]["share"] == pytest.approx(min(1.0, share), rel=1e-3)
    assert "embodied" in p.stderr.decode() and "not in the emissions" in p.stderr.decode()


def test_cli_embodied_from_env_and_config(cli):
    (cli.home / "carbonrun.toml").write_text("embodied = true\nembodied-server-kg = 2000\n")
    assert cli("--quiet", "--intensity", "100", "--", "true").returncode == 0
    assert cli.record()["embodied"]["per_device"][0]["embodied_kg"] == 2000.0
    env = {"CARBONRUN_EMBODIED_SERVER_KG": "3000"}
    assert cli("--quiet", "--intensity", "100", "--", "true", env=env).returncode == 0
    assert cli.record()["embodied"]["per_device"][0]["embodied_kg"] == 3000.0
    p = cli("--quiet", "--", "true", env={"CARBONRUN_EMBODIED_LIFETIME_YEARS": "0"})
    assert p.returncode == 2
