#!/usr/bin/env python3
"""Check carbonrun's GPU energy on a real NVIDIA GPU: the counter path against the power path, and
both against references read outside carbonrun.

Needs only the NVIDIA driver (libcuda.so.1, libnvidia-ml.so.1) and this repository's environment: no
CUDA toolkit, no network, nothing to install. The load is a small PTX kernel (a busy FMA loop) that
the driver compiles and runs through the CUDA driver API, called with ctypes.

For each path (the energy counter, then the power path forced with CARBONRUN_NVML_FORCE_POWER=1),
carbonrun wraps `gpu_validate.py --burn S` on GPU 0; meanwhile this script reads, outside carbonrun,
the NVML energy counter (nvmlDeviceGetTotalEnergyConsumption, what `nvidia-smi -q -d POWER` reports
as energy consumption) and samples `nvidia-smi --query-gpu=power.draw` every 100 ms (integrated by
trapezoid). It prints one table: each path's GPU joules and their ratio to the references.

    .venv/bin/python benchmarks/gpu_validate.py [--seconds 20] [--gpu 0] [--json out.json]

Exit status: 0 when the counter path is within 2 % of the NVML counter read outside carbonrun and the
power path within 10 % of it; 1 otherwise; 2 when there is no GPU or driver here (nothing was checked).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

REPO = Path(__file__).resolve().parent.parent
NO_GPU = 2

# A busy loop of four independent FMA chains per thread (enough work in flight to keep the SMs busy);
# the result is stored so the compiler cannot drop the loop. PTX ISA 7.0 / sm_70: the driver JITs it
# for any newer GPU.
PTX = rb"""
.version 7.0
.target sm_70
.address_size 64
.visible .entry burn(.param .u64 out, .param .u32 iters)
{
    .reg .pred %p;
    .reg .f32 %a, %b, %c, %d, %k, %k1, %k2, %k3, %k4;
    .reg .u32 %i, %n, %rt, %rc, %rn, %idx;
    .reg .u64 %ptr, %off;
    ld.param.u64 %ptr, [out];
    ld.param.u32 %n, [iters];
    mov.u32 %rt, %tid.x;
    mov.u32 %rc, %ctaid.x;
    mov.u32 %rn, %ntid.x;
    mad.lo.u32 %idx, %rc, %rn, %rt;
    cvt.rn.f32.u32 %a, %idx;
    mov.f32 %b, %a;
    mov.f32 %c, %a;
    mov.f32 %d, %a;
    mov.f32 %k, 0f3F7FFFFE;
    mov.f32 %k1, 0f3F000000;
    mov.f32 %k2, 0f3E800000;
    mov.f32 %k3, 0f3E000000;
    mov.f32 %k4, 0f3D800000;
    mov.u32 %i, 0;
LOOP:
    fma.rn.f32 %a, %a, %k, %k1;
    fma.rn.f32 %b, %b, %k, %k2;
    fma.rn.f32 %c, %c, %k, %k3;
    fma.rn.f32 %d, %d, %k, %k4;
    add.u32 %i, %i, 1;
    setp.lt.u32 %p, %i, %n;
    @%p bra LOOP;
    add.f32 %a, %a, %b;
    add.f32 %c, %c, %d;
    add.f32 %a, %a, %c;
    cvta.to.global.u64 %ptr, %ptr;
    mul.wide.u32 %off, %idx, 4;
    add.u64 %ptr, %ptr, %off;
    st.global.f32 [%ptr], %a;
    ret;
}
"""


class NoGpu(Exception):
    """No driver or no device: nothing can be validated here."""


def _cuda() -> Any:
    try:
        lib = ctypes.CDLL("libcuda.so.1")
    except OSError as e:
        raise NoGpu(f"no CUDA driver library (libcuda.so.1): {e}") from None
    return lib


def _check(lib: Any, what: str, rc: int) -> None:
    if rc != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(rc, ctypes.byref(name))
        raise RuntimeError(f"{what} failed: {(name.value or b'?').decode()} ({rc})")


def burn(seconds: float, device: int = 0) -> int:
    """Keep the GPU busy for `seconds` with the PTX kernel; returns the number of launches."""
    cu = _cuda()
    rc = cu.cuInit(0)
    if rc != 0:
        raise NoGpu(f"cuInit failed ({rc}): no usable GPU")
    dev, ctx, mod, fn = ctypes.c_int(), ctypes.c_void_p(), ctypes.c_void_p(), ctypes.c_void_p()
    _check(cu, "cuDeviceGet", cu.cuDeviceGet(ctypes.byref(dev), device))
    sms = ctypes.c_int()
    _check(cu, "cuDeviceGetAttribute", cu.cuDeviceGetAttribute(ctypes.byref(sms), 16, dev))  # SM count
    _check(cu, "cuCtxCreate", cu.cuCtxCreate_v2(ctypes.byref(ctx), 0, dev))
    _check(cu, "cuModuleLoadData", cu.cuModuleLoadData(ctypes.byref(mod), ctypes.c_char_p(PTX + b"\0")))
    _check(cu, "cuModuleGetFunction", cu.cuModuleGetFunction(ctypes.byref(fn), mod, b"burn"))
    blocks, threads = sms.value * 8, 256
    out = ctypes.c_uint64()
    _check(cu, "cuMemAlloc", cu.cuMemAlloc_v2(ctypes.byref(out), blocks * threads * 4))
    iters = ctypes.c_uint32(1_000_000)  # tens of ms per launch on a large GPU: launch gaps are negligible
    params = (ctypes.c_void_p * 2)(ctypes.cast(ctypes.byref(out), ctypes.c_void_p),
                                   ctypes.cast(ctypes.byref(iters), ctypes.c_void_p))
    launches, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        _check(cu, "cuLaunchKernel", cu.cuLaunchKernel(fn, blocks, 1, 1, threads, 1, 1, 0, None, params, None))
        _check(cu, "cuCtxSynchronize", cu.cuCtxSynchronize())
        launches += 1
    cu.cuMemFree_v2(out)
    cu.cuCtxDestroy_v2(ctx)
    return launches


class Sampler(threading.Thread):
    """`nvidia-smi --query-gpu=power.draw -lms 100` in the background, integrated by trapezoid."""

    def __init__(self, gpu: int) -> None:
        super().__init__(daemon=True)
        self.gpu = gpu
        self.points: List[Any] = []
        self.proc: Optional["subprocess.Popen[str]"] = None

    def run(self) -> None:
        exe = shutil.which("nvidia-smi")
        if exe is None:
            return
        argv = [exe, f"--id={self.gpu}", "--query-gpu=power.draw", "--format=csv,noheader,nounits", "-lms", "100"]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.points.append((time.monotonic(), float(line.strip())))
            except ValueError:
                continue

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
        self.join(timeout=5)



def trapezoid(points: List[Any]) -> Optional[float]:
    """Joules from (monotonic time, watts) samples."""
    if len(points) < 2:
        return None
    return float(sum((t1 - t0) * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(points, points[1:])))


def _nvml_counter(gpu: int) -> Optional[Any]:
    """A function returning GPU `gpu`'s NVML energy counter in joules, or None without one."""
    try:
        import pynvml

        pynvml.nvmlInit()
        handle = pynvml.nvmlDeviceGetHandleByIndex(gpu)
        pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    except Exception:
        return None
    return lambda: float(pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)) / 1000.0


def measure(path: str, seconds: float, gpu: int, work: Path) -> Dict[str, Any]:
    """One carbonrun run around the burner, with the references read around it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARBONRUN_")}
    env.update(CARBONRUN_HOME=str(work / "store"), XDG_CONFIG_HOME=str(work / "config"),
               XDG_CACHE_HOME=str(work / "cache"), CUDA_VISIBLE_DEVICES=str(gpu), PYTHONPATH=str(REPO))
    if path == "power":
        env["CARBONRUN_NVML_FORCE_POWER"] = "1"
    out = work / f"{path}.json"
    counter = _nvml_counter(gpu)
    sampler = Sampler(gpu)
    sampler.start()
    time.sleep(0.5)
    e0 = counter() if counter else None
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "carbonrun", "--quiet", "--attribution", "machine", "--intensity",
                        "100", "--json", str(out), "--", sys.executable, __file__, "--burn", str(seconds)],
                       env=env, capture_output=True, text=True, timeout=seconds + 120)
    t1 = time.monotonic()
    e1 = counter() if counter else None
    time.sleep(0.3)
    sampler.stop()
    if p.returncode != 0:
        raise RuntimeError(f"carbonrun ({path} path) exited {p.returncode}: {p.stderr.strip()[-500:]}")
    rec = json.loads(out.read_text())
    gpus = [c for c in rec["components"] if c["component"] == "gpu"]
    if not gpus:
        raise NoGpu(f"carbonrun found no GPU: {'; '.join(rec.get('notes', []))}")
    smi_j = trapezoid([(t, w) for t, w in sampler.points if t0 <= t <= t1])
    return {"path": path, "source": gpus[0]["source"], "carbonrun_j": gpus[0]["machine_j"],
            "duration_s": rec["duration_s"], "wall_s": t1 - t0,
            "nvml_counter_j": None if e0 is None or e1 is None else e1 - e0, "nvidia_smi_power_j": smi_j}


def _ratio(a: Optional[float], b: Optional[float]) -> str:
    return f"{a / b:.4f}" if a is not None and b else "n/a"


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0, help="load time of each run [default: 20]")
    ap.add_argument("--gpu", type=int, default=0, help="NVML/CUDA index of the GPU [default: 0]")
    ap.add_argument("--json", metavar="FILE", help="write every figure as JSON")
    ap.add_argument("--burn", type=float, metavar="S", help=argparse.SUPPRESS)  # the load itself
    args = ap.parse_args(argv)
    try:
        if args.burn is not None:
            burn(args.burn)
            return 0
        _cuda()  # fail early and clearly where there is no driver
        if _nvml_counter(args.gpu) is None and shutil.which("nvidia-smi") is None:
            raise NoGpu("no NVML GPU and no nvidia-smi")
        with tempfile.TemporaryDirectory(prefix="carbonrun-gpu-") as tmp:
            rows = [measure(path, args.seconds, args.gpu, Path(tmp)) for path in ("counter", "power")]
    except NoGpu as e:
        print(f"gpu_validate: nothing to validate here: {e}", file=sys.stderr)
        return NO_GPU
    except (RuntimeError, OSError, subprocess.SubprocessError) as e:
        print(f"gpu_validate: error: {e}", file=sys.stderr)
        return 1
    print("| path | carbonrun source | carbonrun J | NVML counter J (outside) | nvidia-smi power.draw J | "
          "carbonrun / counter | carbonrun / smi | duration s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        counter_j, smi_j = r["nvml_counter_j"], r["nvidia_smi_power_j"]
        print(f"| {r['path']} | {r['source']} | {r['carbonrun_j']:.1f} | "
              f"{'n/a' if counter_j is None else f'{counter_j:.1f}'} | {'n/a' if smi_j is None else f'{smi_j:.1f}'} | "
              f"{_ratio(r['carbonrun_j'], counter_j)} | {_ratio(r['carbonrun_j'], smi_j)} | {r['duration_s']:.2f} |")
    counter, power = rows
    power_w = power["carbonrun_j"] / power["duration_s"]
    counter_w = counter["carbonrun_j"] / counter["duration_s"]
    print(f"\npower path / counter path, mean watts: {power_w:.1f} / {counter_w:.1f} = {power_w / counter_w:.4f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    ok = all(r["nvml_counter_j"] and abs(r["carbonrun_j"] / r["nvml_counter_j"] - 1) <= tol
             for r, tol in ((counter, 0.02), (power, 0.10)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
