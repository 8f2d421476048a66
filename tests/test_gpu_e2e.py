"""`carbonrun` with GPUs, through the real nvidia-ml-py binding and a stub libnvidia-ml.so.1."""
from __future__ import annotations


import pytest



def test_job_gpu_counted_foreign_gpu_machine_only(cli, tmp_path, stubnvml):
    cfg = stubnvml.config(tmp_path, [{"power": 200000, "procs": "children:1000000"},
                                     {"power": 80000, "procs": "1:5000000", "energy": 0}])
    p = cli("--quiet", "--", "sleep", "1.5", env=stubnvml.overlay(cfg))
    assert p.returncode == 0, p.stderr.decode()
    rec = cli.record()
    gpus = {c["device"]: c for c in rec["components"] if c["component"] == "gpu"}
    assert set(gpus) == {"gpu0", "gpu1"}
    assert gpus["gpu0"]["source"] == "nvml-energy" and gpus["gpu1"]["source"] == "nvml-power"
    dur = rec["duration_s"]
    assert gpus["gpu0"]["machine_j"] == pytest.approx(200 * dur, rel=0.02)
    assert gpus["gpu1"]["machine_j"] == pytest.approx(80 * dur, rel=0.05)
    assert gpus["gpu0"]["job_j"] > 0.8 * gpus["gpu0"]["machine_j"]  # the job's from its first step
    assert gpus["gpu1"]["job_j"] == 0  # someone else's GPU: machine figure only
    assert gpus["gpu0"]["used_by_job"] is True and gpus["gpu1"]["used_by_job"] is False
    assert [g["index"] for g in rec["host"]["gpus"]] == [0, 1]
    assert all(g["uuid"] and g["name"] for g in rec["host"]["gpus"])


def test_no_nvml_library_says_no_gpu_found(cli):
    p = cli("--quiet", "true")
    assert p.returncode == 0
    rec = cli.record()
    assert rec["host"]["gpus"] == []
    assert any(n.startswith("no GPU found") for n in rec["notes"])
    assert not any(c["component"] == "gpu" for c in rec["components"])


def test_gpus_none_skips_nvml(cli, tmp_path, stubnvml):
    cfg = stubnvml.config(tmp_path, [{"power": 200000}])
    p = cli("--quiet", "--gpus", "none", "true", env=stubnvml.overlay(cfg))
    assert p.returncode == 0
    assert not any(c["component"] == "gpu" for c in cli.record()["components"])


def test_short_run_keeps_its_gpu_energy_after_the_job_left(cli, tmp_path, stubnvml):
    cfg = stubnvml.config(tmp_path, [{"power": 300000, "procs": "children:1000000"}])
    p = cli("--quiet", "--", "sleep", "0.25", env=stubnvml.overlay(cfg))
    assert p.returncode == 0, p.stderr.decode()
    gpu = [c for c in cli.record()["components"] if c["component"] == "gpu"][0]
    assert gpu["job_j"] == pytest.approx(gpu["machine_j"], rel=0.02)
