"""A powercap tree whose counter only the measured command moves, by a number of joules it is told.

A static tree (package-0 holding dram, no thread advancing it): each run of `spend()` adds its joules
(times the next factor of a spread) to the package counter. With `--attribution machine` a run's
energy is then exactly what the command added, so the gate's verdicts can be asserted without the
run-to-run noise of a shared machine.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

# The command: adds joules x spread[k] to the counter, k counting the runs in its working directory.
SPEND = """
import pathlib, sys
counter, joules, spread = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
seen = pathlib.Path("runs-so-far")
k = int(seen.read_text()) if seen.exists() else 0
seen.write_text(str(k + 1))
with open(counter, "r+") as f:
    uj = int(f.read().split()[0]) + round(joules * float(spread[k % len(spread)]) * 1e6)
    f.seek(0)
    f.write(f"{uj}\\n")
    f.truncate()
"""
JITTER = "1.0,1.01,0.99,1.02,0.98"  # any 5 consecutive runs see each factor once


class SpendingRapl:
    """The tree under home/rapl; env points carbonrun at it, with machine attribution."""

    def __init__(self, home: Path) -> None:
        pkg = home / "rapl" / "intel-rapl:0"
        for zone, name in ((pkg, "package-0"), (pkg / "intel-rapl:0:0", "dram")):
            zone.mkdir(parents=True)
            (zone / "name").write_text(name + "\n")
            (zone / "energy_uj").write_text("0\n")
            (zone / "max_energy_range_uj").write_text(f"{2 ** 40}\n")
        self.counter = pkg / "energy_uj"
        self.env = {"CARBONRUN_RAPL_ROOT": str(home / "rapl"), "CARBONRUN_ATTRIBUTION": "machine"}

    def spend(self, joules: float, spread: str = JITTER) -> List[str]:
        return [sys.executable, "-c", SPEND, str(self.counter), str(joules), spread]
