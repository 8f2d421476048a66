"""`carbonrun estimate`: the power model's figure for a machine (or this one) at a load, with its range.

The figures come from collectors/power_model.py, the model a run without counters uses; this module
parses and renders.
"""
from __future__ import annotations

import json
import sys
from typing import Any, Dict, Optional

import click

from carbonrun.cli.numbers import FiniteRange
from carbonrun.errors import CarbonrunError
from carbonrun.collectors.estimate import lookup_tdp, model_for, this_machine
from carbonrun.collectors.power_model import figures, Machine
from carbonrun.collectors.base import Probe
from carbonrun.collectors import power_model


def _figures(cpu_model: str, threads: int, chips: int, memory_gb: float, tdp: Optional[float],
             vendor: Optional[str], virtual: bool, load: float, tdp_source: Optional[str]) -> Dict[str, Any]:
    machine = Machine(cpu_model, threads, chips, memory_gb, tdp, vendor)
    power, how = model_for(machine, virtual)
    watts, low, high = power.at(load / 100.0)
    cv = figures()
    return {
        "cpu_model": cpu_model, "architecture": power.arch, "threads": threads, "chips": chips,
        "memory_gb": round(memory_gb, 1), "tdp_w": round(power.tdp_w, 1), "tdp_source": tdp_source or power.tdp_source,
        "virtual": virtual, "load_pct": load,
        "watts": round(watts, 2), "low_w": round(watts * low, 2), "high_w": round(watts * high, 2),
        "memory_w": round(power.memory_w, 2), "idle_w": round(power.watts[0], 2), "full_w": round(power.watts[-1], 2),
        "method": how,
        "outside_data": bool(power.outside), "outside": power.outside, "range_widened_by": round(power.widened, 3),
        "error": {"mean_abs_error": cv["mean_abs_error"], "range_coverage": cv["range_coverage"],
                  "about": f"{cv['folds']}-fold cross-validation over {cv['systems']} SPECpower_ssj2008 systems, "
                           "grouped by system; the range is the 5th-95th percentile of measured / predicted"},
    }


def _text(f: Dict[str, Any]) -> str:
    what = "this VM" if f["virtual"] else f"{f['chips']} x {f['cpu_model']}"
    return (f"{f['watts']:.1f} W at {f['load_pct']:g}% load (range {f['low_w']:.1f}-{f['high_w']:.1f} W) for {what}, "
            f"{f['threads']} threads, {f['memory_gb']:g} GB\n"
            f"  {f['idle_w']:.1f} W idle, {f['full_w']:.1f} W at full load; memory part {f['memory_w']:.1f} W\n"
            f"  architecture {f['architecture']}, TDP {f['tdp_w']:g} W per chip ({f['tdp_source']})\n"
            f"  method: {f['method']}\n"
            f"  error: {f['error']['mean_abs_error']:.1%} mean absolute, range covers "
            f"{f['error']['range_coverage']:.0%} of measured points ({f['error']['about']})\n")


@click.command(epilog="Examples:\n\n\b\n"
                      "  carbonrun estimate                       this machine, idle and at each load\n"
                      "  carbonrun estimate --load 50 --json\n"
                      "  carbonrun estimate --cpu-model 'Intel Xeon Gold 6148' --threads 80 --chips 2 \\\n"
                      "      --memory-gb 192 --load 70")
@click.option("--cpu-model", metavar="M", help="CPU model name, as in /proc/cpuinfo [default: this machine's].")
@click.option("--threads", type=click.IntRange(1, 1 << 20), metavar="N",
              help="Hardware threads (a VM: its vCPUs) [default: this machine's; with --cpu-model, the"
                   " architecture's typical threads per chip x --chips].")
@click.option("--chips", type=click.IntRange(1, 64), metavar="C", help="CPU packages [default: this machine's].")
@click.option("--memory-gb", type=FiniteRange(0.1, 1 << 20), metavar="G",
              help="Memory in GB [default: this machine's; with --cpu-model, the architecture's typical"
                   " memory per thread].")
@click.option("--tdp", type=FiniteRange(1, 2000), metavar="W",
              help="TDP per chip in watts [default: the CPU table's, else the architecture's median].")
@click.option("--vendor", metavar="NAME",
              help="System vendor (Dell, Lenovo, ...) [default: this machine's DMI vendor].")
@click.option("--vm/--no-vm", "vm", default=None, help="A VM's share of a typical host [default: detected].")
@click.option("--load", type=FiniteRange(0, 100), metavar="PCT", default=100.0, show_default=True,
              help="CPU load in percent.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def estimate(cpu_model: Optional[str], threads: Optional[int], chips: Optional[int], memory_gb: Optional[float],
             tdp: Optional[float], vendor: Optional[str], vm: Optional[bool], load: float, as_json: bool) -> int:
    """The power model's wall power for a machine at a load, with its calibrated range.

    Without options it describes this machine, as a run with no readable energy counter would
    estimate it. The model is fitted on SPECpower_ssj2008 measurements of real servers (wall power,
    memory included); the range is where 90% of measured servers the fit never saw fall.
    """
    here, virtual, _ = this_machine(Probe())
    given = cpu_model is not None
    model = cpu_model if cpu_model is not None else here.cpu_model
    if given and not model.strip():
        raise CarbonrunError("--cpu-model is empty", 2)
    tdp_source = "--tdp" if tdp is not None else None
    if tdp is None:
        found = lookup_tdp(model) if given else None
        tdp = found[1] if found else (None if given else here.tdp_w)
        if found or (not given and here.tdp_w):
            tdp_source = "CodeCarbon's CPU table"
    chips = chips or (1 if given else here.chips)
    if given:  # another CPU: a typical machine of its kind, not this one's threads and memory with it
        arch = power_model.architecture(model)
        defaults = power_model.load()["arch_defaults"]
        typical = defaults.get(arch, defaults["unknown"])
        threads = threads or max(1, round(typical["threads_per_chip"])) * chips
        memory_gb = memory_gb if memory_gb is not None else round(threads * typical["memory_gb_per_thread"], 1)
    f = _figures(model, threads or here.threads, chips,
                 memory_gb if memory_gb is not None else here.memory_gb, tdp,
                 vendor if vendor is not None else (None if given else here.vendor),
                 vm if vm is not None else (False if given else virtual), load, tdp_source)
    sys.stdout.write(json.dumps(f, indent=2) + "\n" if as_json else _text(f))
    return 0
