"""Run records as a two-GPU machine with readable counters would store them, for the report formats.

The reports only read records; a record with two GPUs, RAPL counters, PUE and an embodied section is
what a CPU-only test machine cannot produce, so it is written out here, in the schema's exact shape.
"""
from __future__ import annotations

import math
from typing import Any, Dict

EPA_BASIS = ("US EPA (Dec 2023) social cost of carbon, 2020 dollars, emission year 2020: $120/t (2.5% discount), "
             "$190/t (2.0%, central), $340/t (1.5%)")


def _component(component: str, device: str, source: str, machine_j: float, job_j: float) -> Dict[str, Any]:
    return {"component": component, "device": device, "source": source, "estimated": False, "counted": True,
            "machine_j": machine_j, "job_j": job_j, "low_j": job_j, "high_j": job_j}


def gpu_run() -> Dict[str, Any]:
    """20 s of training on two A100s in France at PUE 1.1, measured, with its embodied share."""
    t = [round(0.5 * i, 3) for i in range(1, 41)]
    job_j = 1500.0 + 180.0 + 6000.0 + 4200.0
    kwh = job_j * 1.1 / 3.6e6
    kg = kwh * 56.0 / 1000
    return {
        "schema": "carbonrun.run/1", "id": 7, "uuid": "0f1e2d3c-4b5a-4697-8877-665544332211",
        "command": ["python", "train.py", "--epochs", "3"], "cwd": "/home/ada/resnet", "tags": {"exp": "baseline"},
        "host": {"name": "gpu-node-3", "platform": "Linux-6.1-x86_64", "cpu_model": "AMD EPYC 7763 64-Core Processor",
                 "cpu_threads": 128, "memory_gb": 515.4, "virtualised": False,
                 "gpus": [{"index": i, "name": "NVIDIA A100-SXM4-80GB"} for i in (0, 1)]},
        "started_at": "2024-05-01T12:00:00.000+02:00", "ended_at": "2024-05-01T12:00:20.000+02:00",
        "duration_s": 20.0, "status": "completed", "exit_code": 0, "attribution": "process", "interval_s": 0.1,
        "samples": 200,
        "components": [_component("cpu", "package-0", "rapl", 2400.0, 1500.0),
                       _component("dram", "dram-0", "rapl", 300.0, 180.0),
                       {**_component("gpu", "0", "nvml", 6000.0, 6000.0), "used_by_job": True},
                       {**_component("gpu", "1", "nvml", 4200.0, 4200.0), "used_by_job": True}],
        "usage": {"job_cpu_s": 180.0, "machine_busy_cpu_s": 290.0, "peak_rss_bytes": 6 * 2**30},
        "energy": {"machine_kwh": 12900 * 1.1 / 3.6e6, "job_kwh": job_j / 3.6e6, "pue": 1.1, "total_kwh": kwh},
        "intensity": {"g_per_kwh": 56.0, "region": "FR", "source": "region",
                      "how": "annual average for France (2023; Ember)"},
        "emissions": {"kg": kg, "low_kg": kg, "high_kg": kg},
        "social_cost_usd": {"low": kg / 1000 * 120, "central": kg / 1000 * 190, "high": kg / 1000 * 340,
                            "basis": EPA_BASIS},
        "timeline": {"t": t, "watts": {
            "cpu": [round(75 + 20 * math.sin(x / 2), 2) for x in t],
            "dram": [round(9 + 2 * math.sin(x), 2) for x in t],
            "gpu 0": [round(300 + 60 * math.sin(x / 3), 2) for x in t],
            "gpu 1": [round(210 + 40 * math.cos(x / 3), 2) for x in t]}},
        "embodied": {"kg": 0.00052, "method": "SCI M = TE x (TR/EL) x (RR/TR), as Cloud Carbon Footprint applies it",
                     "basis": "server 1000 kg CO2eq, GPU 150 kg CO2eq each, over 4 years",
                     "per_device": [{"kind": "server", "device": "gpu-node-3", "kg": 0.00022,
                                     "share_how": "job CPU time share"},
                                    {"kind": "gpu", "device": "0", "kg": 0.00015, "share_how": "used by the job"},
                                    {"kind": "gpu", "device": "1", "kg": 0.00015, "share_how": "used by the job"}],
                     "sources": [], "notes": [], "included_in_emissions": False},
        "notes": ["psys covers the other components: shown, never added"], "carbonrun_version": "0.1.0",
    }
