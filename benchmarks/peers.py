"""CodeCarbon as a peer for `benchmarks/run.py --peers`: a throwaway venv and a tiny wrapper.

The wrapper starts CodeCarbon's OfflineEmissionsTracker, runs the command with subprocess, stops the
tracker and writes what it measured to $BENCH_CC_OUT, with the monotonic times around start() and stop():
the benchmark asks the fake powercap tree for the truth over the command's own run (from start()'s
return to the call of stop(), the window carbonrun's figure covers) and over the tracker's whole life.

CodeCarbon has no option for the powercap root: `codecarbon.core.cpu.is_rapl_available()` and
`codecarbon.external.hardware.CPU` default to /sys/class/powercap/intel-rapl/subsystem, and the
tracker calls them without a path (checked in codecarbon 3.3.2). When $BENCH_FAKE_RAPL is set the
wrapper rewrites those two default arguments to the fake tree before the tracker is built; nothing
else of CodeCarbon is touched. Without it CodeCarbon falls back to its CPU-TDP estimate here.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

VENV = Path(os.environ.get("BENCH_CC_VENV", "/tmp/cc-venv"))
INSTALL_TIMEOUT_S = 600

WRAPPER = r'''
import json, os, subprocess, sys, time
fake = os.environ.get("BENCH_FAKE_RAPL")
if fake:  # CodeCarbon hard-codes the powercap root; point its two defaults at the fake tree
    from codecarbon.core import cpu as cc_cpu
    from codecarbon.external import hardware as cc_hw
    cc_cpu.is_rapl_available.__defaults__ = (fake,)
    defaults = list(cc_hw.CPU.__init__.__defaults__)
    defaults[0] = fake  # rapl_dir
    cc_hw.CPU.__init__.__defaults__ = tuple(defaults)
from codecarbon import OfflineEmissionsTracker
kwargs = dict(country_iso_code="FRA", output_methods=[], log_level="error", tracking_mode="machine")
if os.environ.get("BENCH_CC_SECS"):
    kwargs["measure_power_secs"] = float(os.environ["BENCH_CC_SECS"])
tracker = OfflineEmissionsTracker(**kwargs)
t_start = time.monotonic()
tracker.start()
t_started = time.monotonic()
code = subprocess.call(sys.argv[1:])
t_stopping = time.monotonic()
tracker.stop()
t_stop = time.monotonic()
d = tracker.final_emissions_data
out = os.environ.get("BENCH_CC_OUT")
if out:
    with open(out, "w") as f:
        json.dump({"t_start": t_start, "t_stop": t_stop, "t_started": t_started, "t_stopping": t_stopping,
                   "duration_s": d.duration,
                   "cpu_j": d.cpu_energy * 3.6e6, "cpu_w": d.cpu_power, "ram_j": d.ram_energy * 3.6e6}, f)
sys.exit(code)
'''


def codecarbon_python() -> Tuple[Optional[str], str]:
    """(the venv's python, its CodeCarbon version) or (None, why not): installs on first use."""
    python = VENV / "bin" / "python"
    if not _has_codecarbon(python):
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, capture_output=True,
                           timeout=120)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "codecarbon"], check=True,
                           capture_output=True, timeout=INSTALL_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as e:
            detail = getattr(e, "stderr", b"") or b""
            last = detail.decode(errors="replace").strip().splitlines()[-1:] or [str(e)]
            return None, f"cannot install codecarbon into {VENV} (no network?): {last[0]}"
        if not _has_codecarbon(python):
            return None, f"codecarbon did not install into {VENV}"
    version = subprocess.run([str(python), "-c", "import codecarbon; print(codecarbon.__version__)"],
                             capture_output=True, text=True).stdout.strip()
    return str(python), version


def _has_codecarbon(python: Path) -> bool:
    if not python.exists():
        return False
    return subprocess.run([str(python), "-c", "import codecarbon"], capture_output=True).returncode == 0


def wrapper_argv(python: str, script: Path, command: List[str]) -> List[str]:
    """The command line that runs `command` under CodeCarbon (writes WRAPPER to `script` once)."""
    if not script.exists():
        script.write_text(WRAPPER)
    return [python, str(script), *command]


def wrapper_env(base: dict, fake_root: Optional[Path], out: Optional[Path],
                measure_secs: Optional[float]) -> dict:
    env = dict(base)
    for key, value in (("BENCH_FAKE_RAPL", fake_root and str(fake_root / "intel-rapl")),
                       ("BENCH_CC_OUT", out and str(out)),
                       ("BENCH_CC_SECS", measure_secs and str(measure_secs))):
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env


def read_result(path: Path) -> dict:
    return json.loads(path.read_text())
