"""carbonrun.collectors.nvml against a stub libnvidia-ml.so.1, through the real nvidia-ml-py binding.

Each stubbed case runs in a subprocess started with LD_LIBRARY_PATH at the stub (see tests/stubnvml).
"""
from __future__ import annotations

import ctypes.util
import os
from pathlib import Path

import pytest

from carbonrun.collectors.nvml import select_gpus, visible_gpus

from tests.fakes.stubnvml import read_epoch, run_python, truth_joules

PRELUDE = """
import ctypes, json, os, time
from carbonrun.collectors.base import JobView, Probe
from carbonrun.collectors import nvml

def restart_epoch():
    # Phase the stub on now (before its library loads), so subprocess start-up time does not matter.
    path = os.environ["STUBNVML_CONFIG"]
    lines = [l for l in open(path).read().splitlines() if not l.startswith("epoch=")]
    open(path, "w").write("\\n".join(lines + ["epoch=%.9f" % time.monotonic()]) + "\\n")

def stub_count(what):
    lib = ctypes.CDLL("libnvidia-ml.so.1")
    lib.stubnvml_count.restype = ctypes.c_long
    return lib.stubnvml_count(what.encode())

def emit(**kw):
    print(json.dumps(kw))
"""


def run(code: str, env: dict) -> dict:
    return run_python(PRELUDE + code, env)


# ---------------------------------------------------------------- energy paths


def test_energy_counter_two_gpus_match_truth(stubnvml, tmp_path):
    gpus = [{"power": 100000, "name": "Stub A"}, {"power": 250000, "name": "Stub B"}]
    out = run("""
import pynvml  # the import is not part of opening the meters
t0 = time.monotonic(); d = nvml.discover(Probe()); t1 = time.monotonic()
for _ in range(20):
    time.sleep(0.05)
    now = time.monotonic()
    for m in d.meters: m.read(now)
calls = stub_count("energy")
for m in d.meters: m.read(now + 0.001)  # within MIN_QUERY_S: answered from the last value
cached_calls = stub_count("energy")
now = time.monotonic(); js = [m.read(now) for m in d.meters]; t2 = time.monotonic()
emit(t0=t0, t1=t1, now=now, t2=t2, j=js, devices=[m.device for m in d.meters],
     sources=[m.source for m in d.meters], gpus=d.gpus, notes=d.notes, calls=calls, cached_calls=cached_calls)
""", stubnvml.env(stubnvml.config(tmp_path, gpus)))
    assert out["devices"] == ["gpu0", "gpu1"]
    assert out["sources"] == ["nvml-energy", "nvml-energy"]
    assert [g["name"] for g in out["gpus"]] == ["Stub A", "Stub B"]
    assert all(g["energy_path"] == "nvml-energy" and g["mig"] is False and g["driver"] for g in out["gpus"])
    assert out["gpus"][1]["uuid"].startswith("GPU-5b01")
    assert out["cached_calls"] == out["calls"]
    for gpu, joules in zip(gpus, out["j"]):
        low = gpu["power"] / 1000 * (out["now"] - out["t1"])  # counter opened at the latest at t1
        high = gpu["power"] / 1000 * (out["t2"] - out["t0"])
        truth = (low + high) / 2
        assert (high - low) / truth < 0.01, "the measured interval is not pinned down well enough"
        assert abs(joules - truth) / truth < 0.01, (joules, low, high)
    assert out["j"][1] / out["j"][0] == pytest.approx(2.5, rel=0.01)


def test_power_only_square_wave_within_3_percent(stubnvml, tmp_path):
    gpu = {"wave": "1.0,300000,100000", "energy": 0}
    config = stubnvml.config(tmp_path, [gpu])
    out = run("""
restart_epoch()
d = nvml.discover(Probe())
nows, js = [], []
for _ in range(61):
    now = time.monotonic(); nows.append(now); js.append(d.meters[0].read(now))
    time.sleep(0.05)
emit(nows=nows, j=js, source=d.meters[0].source, gpus=d.gpus, notes=d.notes)
""", stubnvml.env(config))
    assert out["source"] == "nvml-power"
    assert out["gpus"][0]["energy_path"] == "nvml-power"
    assert out["j"][0] == 0.0
    truth = truth_joules(gpu, read_epoch(config), out["nows"][0], out["nows"][-1])
    assert truth > 300  # about 3 s at 200 W on average
    assert abs(out["j"][-1] - truth) / truth < 0.03, (out["j"][-1], truth)
    assert all(b >= a for a, b in zip(out["j"], out["j"][1:])), "energy must never decrease"
    note = " ".join(out["notes"])
    assert "gpu0" in note and "one-second average" in note and "Not Supported" in note


def test_gpu_with_neither_counter_nor_power_is_unmeasured_not_zero(stubnvml, tmp_path):
    out = run("""
d = nvml.discover(Probe())
emit(devices=[m.device for m in d.meters], gpus=d.gpus, notes=d.notes)
""", stubnvml.env(stubnvml.config(tmp_path, [{"power": 150000}, {"energy": 0, "power_supported": 0}])))
    assert out["devices"] == ["gpu0"]
    assert out["gpus"][1]["energy_path"] is None
    assert any("gpu1" in n and "not measured" in n for n in out["notes"])


# ---------------------------------------------------------------- attribution


def test_job_share_foreign_own_shared_unsupported_and_hidden(stubnvml, tmp_path):
    (tmp_path / "proc" / "4242").mkdir(parents=True)  # 4242 is visible here, 5353 is not
    gpus = [
        {"procs": "4242:1000000"},  # another user's process only
        {"procs": "1111:1000000"},  # the job only
        {"procs": "1111:1000000,4242:3000000"},  # shared: the job holds a quarter of the memory
        {"procs_supported": 0},
        {"procs": "5353:1000000"},  # a PID this namespace cannot see
        {"procs": ""},  # idle
    ]
    out = run(f"""
d = nvml.discover(Probe(proc_root={str(tmp_path / "proc")!r}))
job = JobView(cpu_share=0.5, pids=frozenset({{1111, 1112}}))
shares = []
for step in range(3):
    now = 1000.0 + step * 0.1
    for m in d.meters: m.read(now)
    shares = [[m.job_share(job) for m in d.meters] for _ in range(3)]
emit(shares=shares, queries=stub_count("procs"), touched=[m.touched for m in d.meters],
     notes=[n for m in d.meters for n in m.notes])
""", stubnvml.env(stubnvml.config(tmp_path, gpus)))
    assert out["shares"][0] == pytest.approx([0.0, 1.0, 0.25, 1.0, 0.0, 0.0])
    assert all(row == out["shares"][0] for row in out["shares"])
    assert out["queries"] == 3 * len(gpus)  # one process query per GPU per attribution step
    assert out["touched"] == [False, True, True, False, False, False]
    shared = [n for n in out["notes"] if "split by GPU memory" in n]
    assert len(shared) == 1 and shared[0].startswith("gpu2")
    assert any(n.startswith("gpu3") and "cannot list" in n for n in out["notes"])
    assert any(n.startswith("gpu4") and "5353" in n and "not visible" in n for n in out["notes"])
    assert not any(n.startswith("gpu0") or n.startswith("gpu5") for n in out["notes"])


# ---------------------------------------------------------------- selection


def test_visible_gpus_follows_cuda_rules():
    uuids = ["GPU-aa11", "GPU-aa22", "GPU-bb33"]
    assert visible_gpus(None, uuids) == ([0, 1, 2], [])
    assert visible_gpus("2,0", uuids)[0] == [2, 0]
    assert visible_gpus("GPU-bb,aa11", uuids)[0] == [2, 0]  # UUID prefixes, with or without GPU-
    assert visible_gpus("GPU-aa,1", uuids)[0] == []  # ambiguous prefix hides everything from there on
    shown, notes = visible_gpus("0,-1,1", uuids)
    assert shown == [0] and "'-1'" in notes[0]
    shown, notes = visible_gpus("", uuids)
    assert shown == [] and "hides every GPU" in notes[-1]
    assert visible_gpus("MIG-GPU-bb33/1/0", uuids)[0] == [2]
    assert visible_gpus("MIG-4f2a", uuids, resolve=lambda u: 1)[0] == [1]


def test_select_gpus_indexes_the_visible_list():
    uuids = ["GPU-aa11", "GPU-aa22", "GPU-bb33"]
    assert select_gpus("all", [2, 0], uuids) == ([2, 0], [])
    assert select_gpus("none", [2, 0], uuids) == ([], [])
    assert select_gpus("1", [2, 0], uuids) == ([0], [])
    chosen, notes = select_gpus("0,5", [2, 0], uuids)
    assert chosen == [2] and "'5'" in notes[0]


def test_cuda_visible_devices_and_gpus_flag_through_the_binding(stubnvml, tmp_path):
    out = run("""
def devices(cvd, gpus):
    if cvd is None: os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    else: os.environ["CUDA_VISIBLE_DEVICES"] = cvd
    d = nvml.discover(Probe(gpus=gpus))
    for m in d.meters: m.close()
    return [m.device for m in d.meters], [g["index"] for g in d.gpus], d.notes
r = {"all": devices(None, "all"), "cvd": devices("GPU-5b02,0", "all"), "both": devices("GPU-5b02,0", "1"),
     "pair": devices(None, "0,2"), "none": devices(None, "none"), "hidden": devices("", "all")}
inits = stub_count("init")
r["none_inits"] = [devices(None, "none"), stub_count("init") - inits]
emit(**r)
""", stubnvml.env(stubnvml.config(tmp_path, [{}, {}, {}, {}])))
    assert out["all"][0] == ["gpu0", "gpu1", "gpu2", "gpu3"]
    assert out["cvd"][0] == ["gpu2", "gpu0"] and out["cvd"][1] == [2, 0]
    assert out["both"][0] == ["gpu0"]
    assert out["pair"][0] == ["gpu0", "gpu2"]
    assert out["none"][0] == [] and any("--gpus none" in n for n in out["none"][2])
    assert out["hidden"][0] == [] and any("hides every GPU" in n for n in out["hidden"][2])
    assert out["none_inits"][1] == 0  # --gpus none never touches NVML


# ---------------------------------------------------------------- failure modes


def test_gpu_lost_mid_run_keeps_energy_up_to_then(stubnvml, tmp_path):
    config = stubnvml.config(tmp_path, [{"power": 200000, "lost_after": 1.0}, {"power": 100000}])
    out = run("""
restart_epoch()
t0 = time.monotonic(); d = nvml.discover(Probe()); t1 = time.monotonic()
job = JobView(cpu_share=1.0, pids=frozenset({1}))
last_ok = None; series = []
for _ in range(32):
    now = time.monotonic(); j = d.meters[0].read(now); d.meters[1].read(now); d.meters[0].job_share(job)
    if not series or j > series[-1]: last_ok = now
    series.append(j); time.sleep(0.05)
emit(t0=t0, t1=t1, last_ok=last_ok, j=series, other=d.meters[1].read(time.monotonic()), notes=d.meters[0].notes)
""", stubnvml.env(config))
    lost_at = read_epoch(config) + 1.0
    assert out["last_ok"] < lost_at
    low, high = 200 * (out["last_ok"] - out["t1"]), 200 * (lost_at - out["t0"])
    assert low * 0.99 <= out["j"][-1] <= high * 1.01
    assert out["j"][-1] > 0.8 * 200 * (lost_at - out["t0"])  # kept, not zeroed
    assert out["j"][-1] == out["j"][-10]  # nothing after the loss
    assert out["other"] > 100 * 1.2  # the other GPU carries on
    lost_notes = [n for n in out["notes"] if "lost" in n]
    assert len(lost_notes) == 1 and lost_notes[0].startswith("gpu0")


def test_mig_mode_is_said(stubnvml, tmp_path):
    out = run("""
d = nvml.discover(Probe())
emit(gpus=d.gpus, notes=d.notes, details=d.details)
""", stubnvml.env(stubnvml.config(tmp_path, [{"mig": 1}, {"mig": 0}])))
    assert [g["mig"] for g in out["gpus"]] == [True, False]
    mig_notes = [n for n in out["notes"] if "MIG" in n]
    assert len(mig_notes) == 1 and mig_notes[0].startswith("gpu0") and "shared by all MIG slices" in mig_notes[0]
    assert "MIG" in (out["details"][0]["hint"] or "")


@pytest.mark.skipif(ctypes.util.find_library("nvidia-ml") is not None,
                    reason="a real NVIDIA driver library is installed here")
def test_no_library_here_means_no_gpu_found(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("LD_LIBRARY_PATH", "STUBNVML_CONFIG")}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    out = run("""
d = nvml.discover(Probe())
emit(meters=len(d.meters), gpus=d.gpus, notes=d.notes, doctor=nvml.describe(Probe()))
""", env)
    assert out["meters"] == 0 and out["gpus"] == []
    assert any(n.startswith("no GPU found") and "driver library" in n for n in out["notes"])
    assert out["doctor"][0]["readable"] is False and "driver" in out["doctor"][0]["hint"]


def test_driver_not_loaded_and_missing_pynvml(stubnvml, tmp_path):
    out = run("""
d = nvml.discover(Probe())
import sys; sys.modules["pynvml"] = None
e = nvml.discover(Probe())
emit(loaded=[len(d.meters), d.notes], missing=[len(e.meters), e.notes])
""", stubnvml.env(stubnvml.config(tmp_path, [{}], init_error=9)))
    assert out["loaded"][0] == 0 and "not loaded" in out["loaded"][1][0] and "no GPU" in out["loaded"][1][0]
    assert out["missing"][0] == 0 and "pynvml" in out["missing"][1][0] and "no GPU" in out["missing"][1][0]


def test_close_shuts_nvml_down_once(stubnvml, tmp_path):
    out = run("""
d = nvml.discover(Probe())
counts = [[stub_count("init"), stub_count("live"), stub_count("shutdown")]]
d.meters[0].close(); counts.append([stub_count("live"), stub_count("shutdown")])
d.meters[1].close(); d.meters[1].close(); counts.append([stub_count("live"), stub_count("shutdown")])
emit(counts=counts, after=d.meters[0].read(time.monotonic()))
""", stubnvml.env(stubnvml.config(tmp_path, [{}, {}])))
    assert out["counts"] == [[1, 1, 0], [1, 0], [0, 1]]


def test_describe_for_doctor(stubnvml, tmp_path):
    out = run("""
emit(details=nvml.describe(Probe()), live=stub_count("live"))
""", stubnvml.env(stubnvml.config(tmp_path, [{"name": "Stub V"}, {"energy": 0}])))
    first, second = out["details"]
    assert (first["name"], first["index"], first["energy_path"]) == ("Stub V", 0, "nvml-energy")
    assert first["readable"] is True and first["hint"] is None
    assert second["energy_path"] == "nvml-power" and "integrated" in second["hint"]
    assert out["live"] == 0  # describe leaves NVML shut down


# ---------------------------------------------------------------- power limits


def test_power_limits_cap_power_persist_and_need_permission(stubnvml, tmp_path):
    env = stubnvml.env(stubnvml.config(tmp_path, [{"power": 300000}, {"set_error": 4}]))
    out = run("""
r = {"range": nvml.power_limit_constraints(0), "before": nvml.get_power_limit(0)}
nvml.set_power_limit(0, 150000)
r["after"] = nvml.get_power_limit(0)
try: nvml.set_power_limit(1, 150000)
except nvml.PowerLimitPermissionError as e: r["denied"] = str(e)
try: nvml.set_power_limit(0, 50)
except nvml.NvmlError as e: r["invalid"] = str(e)
emit(**r)
""", env)
    assert out["range"] == [100000, 400000] and out["before"] == 400000 and out["after"] == 150000
    assert "root" in out["denied"] and "gpu1" in out["denied"]
    assert "Invalid Argument" in out["invalid"]
    later = run("""
t0 = time.monotonic(); d = nvml.discover(Probe(gpus="0")); t1 = time.monotonic(); time.sleep(0.5)
now = time.monotonic(); j = d.meters[0].read(now)
emit(limit=nvml.get_power_limit(0), watts=j / (now - t0), watts_hi=j / (now - t1))
""", env)
    assert later["limit"] == 150000  # persisted across processes
    assert later["watts"] <= 150 * 1.01 and later["watts_hi"] >= 150 * 0.99  # the cap holds power at 150 W
