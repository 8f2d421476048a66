"""A fake Linux powercap (RAPL) tree in a directory, whose energy counters really advance.

Layout, as the kernel builds it (`/sys/class/powercap` lists every zone flat, as symlinks into the
control-type device directory, where subzones nest):

    <root>/intel-rapl/                       control type: `enabled` + zone directories
    <root>/intel-rapl/intel-rapl:0/          name, energy_uj, max_energy_range_uj, enabled
    <root>/intel-rapl/intel-rapl:0/intel-rapl:0:0/
    <root>/intel-rapl:0 -> intel-rapl/intel-rapl:0
    <root>/intel-rapl:0:0 -> intel-rapl/intel-rapl:0/intel-rapl:0:0
    <root>/intel-rapl-mmio/intel-rapl-mmio:0/  (mmio_duplicate=True: a mirror of each package zone)
    <root>/intel-rapl-mmio:0 -> ...

Top-level zones are numbered in list order (intel-rapl:0, intel-rapl:1, ...), children in theirs.
Once started, a thread rewrites every energy_uj about every 2 ms from time.monotonic():
    energy_uj = int(watts * elapsed * 1e6) % (max_energy_range_uj + 1)
in place (pwrite, then ftruncate), so a reader that keeps the file open sees it move, as with sysfs.
time.monotonic() is system-wide, so truth_j() also holds for readers in other processes.

Unreadable zones (readable=False): energy_uj is a mode-000 file. Root ignores file modes, so when the
fake runs as root energy_uj is instead a mode-000 *directory*: opening it works, reading it fails
with EISDIR. A reader must therefore treat any OSError from energy_uj as "not readable".

remove(zone) simulates a zone vanishing mid-run: its counter stops, its energy_uj is emptied (an
open descriptor then reads nothing, the way kernfs answers ENODEV) and unlinked.
"""
from __future__ import annotations

import os
import pathlib
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

PERIOD_S = 0.002


@dataclass
class Zone:
    """One powercap zone: its name ("package-0", "core", "uncore", "dram", "psys") and true power."""

    name: str
    watts: float
    max_range_uj: int
    children: List["Zone"] = field(default_factory=list)
    socket: int = 0  # informational; the mmio mirror of a package zone is intel-rapl-mmio:<socket>
    readable: bool = True
    max_power_factor: float = 1.5  # constraint_0_max_power_uw as a multiple of watts


def range_for(watts: float, wrap_seconds: float) -> int:
    """max_energy_range_uj that makes a counter at `watts` wrap every `wrap_seconds`."""
    return max(1, round(watts * wrap_seconds * 1e6)) - 1


def standard_zones(wrap_seconds: float = 3.0, sockets: int = 1) -> List[Zone]:
    """Per socket: package-N 65 W holding core 40 W and dram 7 W (server layout: dram under package)."""

    def zone(name: str, watts: float, socket: int, children: Optional[List[Zone]] = None) -> Zone:
        return Zone(name, watts, range_for(watts, wrap_seconds), children or [], socket)

    return [zone(f"package-{s}", 65.0, s, [zone("core", 40.0, s), zone("dram", 7.0, s)])
            for s in range(sockets)]


class FakePowercap:
    """The tree is built on construction (counters at 0); start() makes the counters run."""

    def __init__(self, root: pathlib.Path, zones: List[Zone], mmio_duplicate: bool = False) -> None:
        self.root = pathlib.Path(root)
        self.zones = zones
        self.mmio_duplicate = mmio_duplicate
        self.ids: Dict[str, Zone] = {}  # zone id ("intel-rapl:0:1") -> zone; mirrors included
        self._counters: Dict[str, Tuple[Zone, pathlib.Path]] = {}  # zone id -> zone, energy_uj
        self._fds: Dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t_start: Optional[float] = None
        self._t_stop: Optional[float] = None
        self._build()

    # -- building -------------------------------------------------------------------------------
    def _build(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self._control_type("intel-rapl", [(i, z) for i, z in enumerate(self.zones)], True)
        if self.mmio_duplicate:
            packages = [(z.socket, z) for z in self.zones if z.name.startswith("package")]
            self._control_type("intel-rapl-mmio", packages, False)

    def _control_type(self, ctype: str, zones: List[Tuple[int, Zone]], children: bool) -> None:
        base = self.root / ctype
        base.mkdir()
        (base / "enabled").write_text("1\n")
        for index, zone in zones:
            self._zone(base, f"{ctype}:{index:x}", zone, children)

    def _zone(self, parent: pathlib.Path, zid: str, zone: Zone, children: bool) -> None:
        zdir = parent / zid
        zdir.mkdir()
        (zdir / "name").write_text(zone.name + "\n")
        (zdir / "max_energy_range_uj").write_text(f"{zone.max_range_uj}\n")
        # what the zone could draw at most (the kernel's constraint_N_max_power_uw); bounds the wrap period
        (zdir / "constraint_0_max_power_uw").write_text(f"{int(zone.watts * zone.max_power_factor * 1e6)}\n")
        (zdir / "enabled").write_text("1\n")
        energy = zdir / "energy_uj"
        if zone.readable:
            energy.write_text("0\n")  # 0644: the fake's owner writes it; readers only read
            self._counters[zid] = (zone, energy)
        elif os.geteuid() == 0:
            energy.mkdir(mode=0)  # root reads mode-000 files; a directory fails with EISDIR
        else:
            energy.write_text("0\n")
            energy.chmod(0)
        (self.root / zid).symlink_to(os.path.relpath(zdir, self.root))
        self.ids[zid] = zone
        if children:
            for j, child in enumerate(zone.children):
                self._zone(zdir, f"{zid}:{j:x}", child, True)

    # -- running --------------------------------------------------------------------------------
    def start(self) -> "FakePowercap":
        """Start the counters (elapsed time counts from now). Idempotent."""
        if self._thread is None:
            self._fds = {zid: os.open(path, os.O_WRONLY | os.O_CLOEXEC) for zid, (_, path) in self._counters.items()}
            self._t_start = time.monotonic()
            self._write_all(self._t_start)
            self._thread = threading.Thread(target=self._run, name="fake-powercap", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        """Freeze the counters at their last written values and release the files."""
        if self._thread is None or self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._t_stop = time.monotonic()
            for fd in self._fds.values():
                os.close(fd)
            self._fds = {}

    def _run(self) -> None:
        while not self._stop.wait(PERIOD_S):
            self._write_all(time.monotonic())

    def _write_all(self, now: float) -> None:
        assert self._t_start is not None
        elapsed = now - self._t_start
        with self._lock:
            for zid, fd in self._fds.items():
                zone = self._counters[zid][0]
                data = b"%d\n" % (int(zone.watts * elapsed * 1e6) % (zone.max_range_uj + 1))
                os.pwrite(fd, data, 0)  # before truncating: a racing reader sees "new\nstale", never ""
                os.ftruncate(fd, len(data))

    def remove(self, zone: str) -> None:
        """Make a zone's energy_uj vanish mid-run (by zone id, e.g. "intel-rapl:0", or unique name)."""
        zid = self._zone_id(zone)
        with self._lock:
            fd = self._fds.pop(zid, None)
            if fd is not None:
                os.close(fd)
            path = self._counters.pop(zid)[1]
            os.truncate(path, 0)
            path.unlink()

    def _zone_id(self, zone: str) -> str:
        if zone in self.ids:
            return zone
        found = [zid for zid, z in self.ids.items() if z.name == zone]
        if len(found) != 1:
            raise KeyError(f"{zone!r} names {len(found)} zones; use a zone id such as intel-rapl:0")
        return found[0]

    # -- truth ----------------------------------------------------------------------------------
    def truth_j(self, name: str, t0: float, t1: float) -> float:
        """True joules between two monotonic times of every zone called `name` (summed, so "dram" on
        two sockets is the machine's DRAM), or of one zone by id; mmio mirrors are not extra energy."""
        zones = [self.ids[name]] if name in self.ids else _walk(self.zones, name)
        if not zones:
            raise KeyError(name)
        lo = max(t0, self._t_start if self._t_start is not None else t1)
        hi = min(t1, self._t_stop if self._t_stop is not None else t1)
        return sum(z.watts for z in zones) * max(0.0, hi - lo)

    def __enter__(self) -> "FakePowercap":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _walk(zones: List[Zone], name: str) -> List[Zone]:
    """Every zone in the tree called `name`, each once."""
    out: List[Zone] = []
    for zone in zones:
        if zone.name == name:
            out.append(zone)
        out += _walk(zone.children, name)
    return out
