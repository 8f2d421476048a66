"""A stub libnvidia-ml.so.1 (stub_nvml.c) for tests that go through the real nvidia-ml-py binding.

The library is compiled once per test session into a temporary directory. A process sees it when it starts
with LD_LIBRARY_PATH pointing there (the dynamic loader reads LD_LIBRARY_PATH only at process start, so
stubbed code runs in a subprocess). The session fixture `stubnvml` (tests/conftest.py) builds it:

    def test_x(stubnvml, cli, tmp_path):
        cfg = stubnvml.config(tmp_path, [{"power": 200000, "procs": "children:1000000"},
                                         {"wave": "1,300000,100000", "energy": 0}])
        cli("run", "--", "sleep", "1", env=stubnvml.overlay(cfg))   # LD_LIBRARY_PATH + STUBNVML_CONFIG
        # or: subprocess.run([...], env=stubnvml.env(cfg))         # os.environ + the same two variables

Truth: the stub's power is a function of CLOCK_MONOTONIC (= Python's time.monotonic() on Linux) and the
configured `epoch`; truth_joules() integrates the same profile over any interval.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Mapping, Optional


SOURCE = Path(__file__).with_name("stub_nvml.c")
REPO = Path(__file__).resolve().parents[2]


def compiler() -> Optional[str]:
    """A C compiler on PATH, or None."""
    return shutil.which(os.environ.get("CC") or "gcc") or shutil.which("cc")


def build(out_dir: Path) -> Path:
    """Compile the stub into out_dir/libnvidia-ml.so.1; returns out_dir."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler (gcc or cc) found")
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libnvidia-ml.so.1"
    cmd = [cc, "-shared", "-fPIC", "-O2", "-o", str(lib), str(SOURCE), "-lm", "-lpthread"]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out_dir


@dataclass(frozen=True)
class StubNvml:
    """The built stub: where it lives and how to point a process at it."""

    lib_dir: Path

    def config(self, directory: Path, gpus: List[Dict[str, object]], **globals_: object) -> Path:
        """Write a stub config for `gpus` (one dict of gpuI.* keys each) into `directory`; returns its path.

        `epoch` defaults to now (time.monotonic()) and `state` to a file beside the config, so the test knows
        both the phase of square waves and where power limits persist.
        """
        settings: Dict[str, object] = {"gpus": len(gpus), "epoch": f"{time.monotonic():.9f}",
                                       "state": directory / "stubnvml.state"}
        settings.update(globals_)
        lines = [f"{k}={v}" for k, v in settings.items()]
        for i, gpu in enumerate(gpus):
            lines += [f"gpu{i}.{k}={v}" for k, v in gpu.items()]
        path = directory / "stubnvml.conf"
        path.write_text("\n".join(lines) + "\n")
        return path

    def overlay(self, config: Optional[Path]) -> Dict[str, str]:
        """Just the variables that make a process load the stub (to merge into another fixture's env).

        config None: the stub's default, one 100 W GPU with an energy counter.
        """
        extra = {"LD_LIBRARY_PATH": str(self.lib_dir)}
        if config is not None:
            extra["STUBNVML_CONFIG"] = str(config)
        return extra

    def env(self, config: Optional[Path], base: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
        """`base` (default os.environ) plus overlay(config), carbonrun importable, CUDA_VISIBLE_DEVICES unset."""
        env = dict(os.environ if base is None else base)
        env.update(self.overlay(config))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.pop("CUDA_VISIBLE_DEVICES", None)
        return env


def read_epoch(config: Path) -> float:
    """The `epoch` a config written by StubNvml.config() uses."""
    for line in config.read_text().splitlines():
        if line.startswith("epoch="):
            return float(line.split("=", 1)[1])
    raise ValueError(f"{config} has no epoch")


def truth_joules(gpu: Mapping[str, object], epoch: float, t0: float, t1: float) -> float:
    """Exact energy (J) of a stub GPU (its `power` or `wave`, no power limit) between monotonic t0 and t1."""
    return _cumulative(gpu, epoch, t1) - _cumulative(gpu, epoch, t0)


def _cumulative(gpu: Mapping[str, object], epoch: float, t: float) -> float:
    x = max(0.0, t - epoch)
    if "wave" not in gpu:
        return float(gpu.get("power", 100000)) / 1000.0 * x  # type: ignore[arg-type]
    period, high, low = (float(v) for v in str(gpu["wave"]).split(","))
    half, n = period / 2, math.floor(x / period)
    r = x - n * period
    return (n * (high + low) * half + high * min(r, half) + low * max(0.0, r - half)) / 1000.0


def run_python(code: str, env: Mapping[str, str], timeout: float = 60) -> dict:
    """Run `code` in a fresh interpreter; it must print one JSON object as its last stdout line."""
    proc = subprocess.run([sys.executable, "-c", code], env=dict(env), capture_output=True, text=True,
                          timeout=timeout, cwd=str(REPO))
    assert proc.returncode == 0, f"subprocess failed:\n{proc.stdout}\n{proc.stderr}"
    return json.loads(proc.stdout.strip().splitlines()[-1])
