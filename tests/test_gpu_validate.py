"""The GPU validation's two paths: the power path can be forced where the counter works; the script
itself says plainly that there is nothing to validate on a machine without a GPU."""
from __future__ import annotations

import ctypes.util
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_validate.py"


def test_the_power_path_can_be_forced_where_the_counter_works(cli, tmp_path, stubnvml):
    cfg = stubnvml.config(tmp_path, [{"power": 150000}])
    counter = cli("--quiet", "--attribution", "machine", "--", "sleep", "0.5", env=stubnvml.overlay(cfg))
    assert counter.returncode == 0, counter.stderr.decode()
    assert [c["source"] for c in cli.record()["components"] if c["component"] == "gpu"] == ["nvml-energy"]
    forced = cli("--quiet", "--attribution", "machine", "--", "sleep", "0.5",
                 env={**stubnvml.overlay(cfg), "CARBONRUN_NVML_FORCE_POWER": "1"})
    assert forced.returncode == 0, forced.stderr.decode()
    rec = cli.record()
    gpu = [c for c in rec["components"] if c["component"] == "gpu"]
    assert [c["source"] for c in gpu] == ["nvml-power"] and gpu[0]["machine_j"] > 0
    assert any("CARBONRUN_NVML_FORCE_POWER=1" in n for n in rec["notes"])


@pytest.mark.skipif(ctypes.util.find_library("cuda") is not None, reason="a CUDA driver is installed here")
def test_gpu_validate_fails_gracefully_without_a_gpu(tmp_path):
    p = subprocess.run([sys.executable, str(SCRIPT), "--seconds", "1"], capture_output=True, text=True,
                       timeout=60, env={"PATH": "/usr/bin:/bin", "LD_LIBRARY_PATH": str(tmp_path)})
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("gpu_validate: nothing to validate here:") and "Traceback" not in p.stderr
    assert p.stdout == ""
