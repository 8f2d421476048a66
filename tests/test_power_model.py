"""The SPECpower-fitted power model, the estimate meters built on it, `carbonrun estimate`, and the
exact integration of a time-varying intensity inside each attribution step."""
from __future__ import annotations

import functools
import importlib.util
import json
import math
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonrun.accounting.energy import Accountant
from carbonrun.collectors import estimate, open_meters, power_model
from carbonrun.collectors.base import JobView, Probe
from carbonrun.intensity.carbon import Intensity, StepSeries
from tests.fakes.meters import SetMeter
from tests.fakes.powercap import FakePowercap, Zone, range_for

XEON = power_model.Machine("Intel Xeon X5670", 24, 2, 12.0, 95.0)  # a SPECpower system: 69 W idle, 258 W full


def test_model_data_carries_its_cross_validated_error():
    cv = power_model.figures()
    assert cv["systems"] > 300 and cv["folds"] == 10
    assert 0 < cv["mean_abs_error"] < 0.15 and cv["range_coverage"] >= 0.9
    rng = power_model.load()["range"]
    assert all(lo < 1 < hi for lo, hi in zip(rng["low"], rng["high"]))


@pytest.mark.parametrize("model, arch", [
    ("Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz", "skylake"), ("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz",
                                                            "cascadelake"),
    ("AMD EPYC 7R13 Processor", "epyc-gen3"), ("AMD EPYC 7702P", "epyc-gen2"), ("Intel Xeon E5-2660 v3", "haswell"),
    ("Intel Xeon E5-2660", "sandybridge"), ("Intel Xeon X5670", "nehalem"), ("Apple M2", "unknown")])
def test_architecture_from_the_model_string(model, arch):
    assert power_model.architecture(model) == arch


def test_curve_rises_with_load_and_interpolates_between_levels():
    c = power_model.curve(XEON)
    assert all(b >= a for a, b in zip(c.watts, c.watts[1:]))
    assert 50 < c.watts[0] < 100 and 200 < c.watts[-1] < 320  # measured: 69.2 and 258
    w, low, high = c.at(0.55)
    assert w == pytest.approx((c.watts[5] + c.watts[6]) / 2) and low < 1 < high
    assert c.at(-1)[0] == c.watts[0] and c.at(2)[0] == c.watts[-1]
    assert 0 < c.memory_w < 0.4 * c.watts[0]


def test_bigger_machines_draw_more_and_a_vm_is_a_share_of_its_host():
    small = power_model.curve(power_model.Machine("Intel Xeon Gold 6148", 40, 1, 96.0, 150.0))
    big = power_model.curve(power_model.Machine("Intel Xeon Gold 6148", 80, 2, 384.0, 150.0))
    assert big.watts[-1] > 1.5 * small.watts[-1]
    vm, host = power_model.vm_curve("Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", 4)
    whole = power_model.curve(host)
    assert vm.watts[-1] == pytest.approx(whole.watts[-1] * 4 / host.threads)
    assert 0.2 < vm.watts[0] / 4 < 2.5 and 1.5 < vm.watts[-1] / 4 < 8  # W per vCPU, idle and full


def _proc(tmp_path, busy_ticks: int, model: str = "Intel Xeon X5670", physical_ids=(0, 1), hypervisor=False):
    proc = tmp_path / "proc"
    proc.mkdir(exist_ok=True)
    flags = "flags\t\t: fpu" + (" hypervisor" if hypervisor else "") + "\n"
    (proc / "cpuinfo").write_text("".join(f"processor\t: {i}\nmodel name\t: {model}\nphysical id\t: {p}\n{flags}\n"
                                          for i, p in enumerate(physical_ids)))
    (proc / "meminfo").write_text("MemTotal:       12000000 kB\n")
    (proc / "stat").write_text(f"cpu  {busy_ticks} 0 0 1000 0 0 0 0 0 0\n")
    return proc


def test_cpu_estimate_integrates_the_curve_over_windows(tmp_path):
    proc = _proc(tmp_path, 0)
    threads = os.cpu_count() or 1
    power = power_model.curve(XEON)
    m = estimate.CpuEstimate(str(proc), threads, power, "test")
    assert m.read(100.0) == 0.0
    # one window of 2 s at 50 % load: half of every thread busy, in 1/100 s ticks
    (proc / "stat").write_text(f"cpu  {threads * 100} 0 0 1000 0 0 0 0 0 0\n")
    joules = m.read(102.0)
    want = (power.at(0.5)[0] - power.memory_w) * 2.0
    assert joules == pytest.approx(want, rel=1e-6)
    assert (m.low_factor, m.high_factor) == pytest.approx(power.at(0.5)[1:])
    assert m.read(102.1) >= joules  # an open window never goes back
    m.close()


def test_whole_machine_estimate_splits_off_memory_and_notes_its_method(tmp_path):
    proc = _proc(tmp_path, 0)
    found = estimate.discover(Probe(rapl_root=str(tmp_path / "none"), proc_root=str(proc), sys_root=str(tmp_path)))
    cpu, ram = found.meters
    assert (cpu.component, ram.component) == ("cpu", "ram")
    assert "whole machine: 2 x Intel Xeon X5670" in cpu.method and "SPECpower" in cpu.method
    assert ram.watts == pytest.approx(cpu.power.memory_w) and ram.watts > 0
    assert any("range" in n and "never saw" in n for n in cpu.notes)
    for m in found.meters:
        m.close()


def test_a_readable_dram_counter_replaces_the_memory_estimate(tmp_path):
    """Package unreadable, DRAM readable: the CPU is estimated, memory is measured, never both."""
    root = tmp_path / "powercap"
    zones = [Zone("package-0", 65.0, range_for(65.0, 60), readable=False,
                  children=[Zone("dram", 7.0, range_for(7.0, 60))])]
    FakePowercap(root, zones)
    found = open_meters(Probe(rapl_root=str(root), proc_root=str(_proc(tmp_path, 0)), sys_root=str(tmp_path),
                              gpus="none"))
    comps = sorted((m.component, m.source) for m in found.meters)
    assert comps == [("cpu", "estimate"), ("dram", "rapl")]
    assert any("memory measured by the RAPL dram counter" in n for n in found.notes)
    for m in found.meters:
        m.close()
    from carbonrun.doctor import check_estimate

    assert check_estimate(Probe(rapl_root=str(root), proc_root=str(_proc(tmp_path, 0)), sys_root=str(tmp_path)),
                          ["dram"])["used_for"] == ["cpu"]


def test_a_vm_is_estimated_as_its_share_of_a_host(tmp_path):
    proc = _proc(tmp_path, 0, "Intel(R) Xeon(R) Platinum 8259CL CPU @ 2.50GHz", hypervisor=True)
    found = estimate.discover(Probe(proc_root=str(proc), sys_root=str(tmp_path)))
    assert found.details[0]["virtualised"] and "virtual machine" in found.meters[0].method
    assert "cascadelake" in found.meters[0].method
    for m in found.meters:
        m.close()


def test_estimate_command_json(cli):
    p = cli("estimate", "--cpu-model", "Intel Xeon X5670", "--threads", "24", "--chips", "2", "--memory-gb", "12",
            "--tdp", "95", "--load", "50", "--json")
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out["low_w"] < out["watts"] < out["high_w"] and 120 < out["watts"] < 220  # measured 170 W
    assert out["architecture"] == "nehalem" and "whole machine" in out["method"]
    assert out["error"]["range_coverage"] >= 0.9
    here = cli("estimate")
    assert here.returncode == 0 and b"W at 100% load" in here.stdout and b"method:" in here.stdout
    other = json.loads(cli("estimate", "--cpu-model", "AMD EPYC 7763", "--json").stdout)
    assert other["threads"] == 128 and other["memory_gb"] == 128  # a typical machine of its kind, not this one
    assert other["idle_w"] < other["full_w"] < 400
    for load in ("101", "nan"):
        bad = cli("estimate", "--load", load)
        assert bad.returncode == 2 and bad.stderr.startswith(b"carbonrun: error:") and not bad.stdout, load


# -- outside the model's data: clamped inputs, a rising curve, a flagged and widened range ---------------
def test_a_laptop_chip_below_the_data_is_clamped_rises_with_load_and_is_flagged(cli):
    p = cli("estimate", "--cpu-model", "Apple M1", "--threads", "8", "--chips", "1", "--memory-gb", "16",
            "--tdp", "10", "--load", "0", "--json")
    assert p.returncode == 0, p.stderr.decode()
    out = json.loads(p.stdout)
    assert out["full_w"] > out["idle_w"] * 1.25  # was 21.7 W at idle and at full load
    assert out["outside_data"] and any("TDP 10 W per chip below the data's smallest" in n for n in out["outside"])
    lo, hi = power_model.load()["input_ranges"]["tdp_w"]
    assert out["range_widened_by"] == pytest.approx(lo / 10, rel=1e-3)  # the clamped distance, 25 / 10
    rng = power_model.load()["range"]
    assert out["low_w"] == pytest.approx(out["watts"] * rng["low"][0] / (lo / 10), rel=0.01)
    assert out["high_w"] == pytest.approx(out["watts"] * rng["high"][0] * (lo / 10), rel=0.01)
    assert "outside the model's data" in out["method"] and "range widened x2.5" in out["method"]
    text = cli("estimate", "--cpu-model", "Apple M1", "--threads", "8", "--tdp", "10")
    assert text.returncode == 0 and b"outside the model's data" in text.stdout


def test_an_unusual_combination_inside_each_range_still_rises_and_is_flagged():
    """8 threads of a 280 W EPYC: every input is within the data, the fitted levels read flat or inverted."""
    c = power_model.curve(power_model.Machine("AMD EPYC 7763", 8, 1, 8.0, 280.0))
    floor = power_model.load()["dynamic_floor"]["full_over_idle_minus_1"]
    assert c.watts[-1] >= c.watts[0] * (1 + floor) * (1 - 1e-9) and c.watts[-1] > c.watts[0]
    assert all(b >= a for a, b in zip(c.watts, c.watts[1:]))
    assert c.outside and "flatter curve than any measured server" in c.outside[0]
    assert c.widened == power_model.OUTSIDE_FACTOR
    power, how = estimate.model_for(power_model.Machine("AMD EPYC 7763", 8, 1, 8.0, 280.0), False)
    assert "outside the model's data" in how and "x1.5" in how


def test_a_measured_kind_of_server_is_not_flagged():
    c = power_model.curve(XEON)
    assert not c.outside and c.widened == 1.0
    assert c.low == power_model.load()["range"]["low"] and c.high == power_model.load()["range"]["high"]
    lo, hi = power_model.load()["input_ranges"]["threads"]
    big = power_model.curve(power_model.Machine("Intel Xeon X5670", int(hi) * 4, 2, 12.0, 95.0))
    assert big.outside and big.widened == pytest.approx(4.0)
    assert big.watts == power_model.curve(power_model.Machine("Intel Xeon X5670", int(hi), 2, 12.0, 95.0)).watts


_MODELS = ["Apple M1", "AMD EPYC 7763", "AMD EPYC 7R13 Processor", "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz",
           "Intel Xeon X5670", "Intel(R) Core(TM) i7-8550U CPU @ 1.80GHz", "AMD Opteron 6174", "unknown", ""]


@settings(max_examples=300, deadline=None)
@given(model=st.sampled_from(_MODELS), threads=st.integers(1, 4096), chips=st.integers(1, 64),
       memory_gb=st.floats(0.1, 1 << 20), tdp=st.none() | st.floats(1, 2000),
       vendor=st.sampled_from([None, "Dell Inc.", "Apple", "QEMU"]), vm=st.booleans(),
       load=st.floats(0, 1))
def test_every_plausible_machine_gets_a_rising_finite_curve_within_its_range(model, threads, chips, memory_gb,
                                                                             tdp, vendor, vm, load):
    machine = power_model.Machine(model, threads, chips, memory_gb, tdp, vendor)
    c, _ = estimate.model_for(machine, vm)
    assert all(math.isfinite(w) and w > 0 for w in c.watts)
    assert all(b >= a for a, b in zip(c.watts, c.watts[1:])) and c.watts[-1] > c.watts[0]
    assert 0 <= c.memory_w < c.watts[0]
    w, low, high = c.at(load)
    assert math.isfinite(w) and 0 < w * low <= w <= w * high and math.isfinite(w * high)
    assert c.watts[0] <= w <= c.watts[-1]
    assert bool(c.outside) == (c.widened > 1)


@functools.lru_cache(maxsize=1)
def _fit_script():
    path = os.path.join(os.path.dirname(os.path.dirname(__file__)), "scripts", "fit_power_model.py")
    spec = importlib.util.spec_from_file_location("fit_power_model", path)
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


@settings(max_examples=100, deadline=None)
@given(watts=st.lists(st.floats(1, 5000), min_size=11, max_size=11))
def test_the_fit_script_scores_the_same_curve_shape_carbonrun_applies(watts):
    """The cross-validation's figures hold only if the script shapes its predictions as run time does."""
    script = _fit_script()
    floor = power_model.load()["dynamic_floor"]["full_over_idle_minus_1"]
    levels = [float(v) for v in power_model.load()["levels"]]
    assert power_model._shape(watts, levels, floor)[0] == pytest.approx(script.shape(watts, floor), rel=1e-12)


# -- exact integration of a time-varying intensity inside each step -------------------------------------
def test_a_step_in_intensity_is_integrated_exactly_within_each_attribution_step():
    """100 -> 500 g/kWh 3.1 s into a 6 s run at 1 kW, attribution steps of 0.2 s: the exact integral."""
    t0 = 1_700_000_000.0
    series = Intensity(100.0, None, "file", "test", time_varying=True,
                       series=StepSeries([(t0 - 60, 100.0), (t0 + 3.1, 500.0)], end=t0 + 60))
    meter = SetMeter("cpu")
    acct = Accountant([meter], series.mean, pue=1.0, attribution="machine")
    at_end = Accountant([meter], lambda t0, t1: series.at(t1), pue=1.0, attribution="machine")  # the end value
    for a in (acct, at_end):
        a.baseline([0.0])
    watts, step, t = 1000.0, 0.2, 0.0
    while t < 6.0 - 1e-9:
        t = round(t + step, 6)
        meter.joules = watts * t
        for a in (acct, at_end):
            a.step(t, t0 + t, [meter.joules], JobView(1.0, frozenset()))
    exact = watts * (3.1 * 100 + 2.9 * 500) / 3.6e6 / 1000  # kg
    assert acct.kg == pytest.approx(exact, rel=0.005)
    assert acct.kg == pytest.approx(exact, rel=1e-6)  # a step function is integrated exactly
    assert at_end.kg > exact * 1.02  # the value at each step's end charges 0.1 s at 500 instead of 100
    assert acct.mean_intensity() == pytest.approx((3.1 * 100 + 2.9 * 500) / 6)


def test_tdp_lookup_takes_the_longest_table_name_found_as_words_in_the_model_string():
    """The fast normalisation (bytes.translate) finds what the definition (a regex per name) finds."""
    import csv
    import re

    from carbonrun.collectors.estimate import lookup_tdp

    path = Path(__file__).resolve().parents[1] / "carbonrun" / "data" / "cpu_tdp.csv"
    rows = [(r["model"], float(r["tdp_w"])) for r in csv.DictReader(path.open(newline=""))]

    def reference(model):
        text = " " + re.sub(r"[^a-z0-9]+", " ", model.lower()) + " "
        keys = [(" " + re.sub(r"[^a-z0-9]+", " ", n.lower()).strip() + " ", n, w) for n, w in rows]
        found = [(n, w) for k, n, w in keys if k.strip() and k in text]
        return max(found, key=lambda f: len(f[0]), default=None)

    models = ["AMD EPYC 7763 64-Core Processor", "Intel(R) Xeon(R) Gold 6248R CPU @ 3.00GHz",
              "Intel® Core™ i7-8650U CPU @ 1.90GHz", "Apple M1", "Intel(R) Xeon(R) Processor"]
    models += [f"Intel(R) Xeon(R) {rows[i][0]} CPU @ 2GHz" for i in range(0, len(rows), 97)]
    for model in models:
        assert lookup_tdp(model) == reference(model), model
    assert lookup_tdp("AMD EPYC 7763 64-Core Processor")[1] == 280.0
