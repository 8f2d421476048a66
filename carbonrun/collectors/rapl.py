"""Linux powercap RAPL meters (control types intel-rapl and intel-rapl-mmio; AMD uses intel-rapl too).

What is counted, and why:
- CPU = the sum of `package-*` zones, DRAM = the sum of `dram` zones, one meter per zone.
- `core` and `uncore` are subzones whose energy is already inside their package: never metered.
- `psys` covers the whole platform (package + dram + the rest): its own meter, counted=False.
- The same zone can be exposed twice (the intel-rapl-mmio mirror of a package, a name repeated under
  one package). Identity is (zone name, package id from the parent path), never the values; the
  intel-rapl copy wins.
- energy_uj runs from 0 to max_energy_range_uj ("range of the above energy counter",
  Documentation/ABI/testing/sysfs-class-powercap), so a reading lower than the last one wrapped once:
  add max_energy_range_uj + 1. (intel_rapl reports the range as 0xffffffff energy units, so the true
  step is range + one unit, 15-61 uJ: off by at most that per wrap of 65-260 kJ.) A wrap is only
  seen if a tick comes before the next: the wrap period at the zone's highest plausible power
  (its constraint's max_power_uw, else twice its largest power limit, else PLAUSIBLE_W) bounds the
  interval, which is capped at half of it, with a note (discover's max_interval).
- energy_uj is root-only since CVE-2020-8694: an unreadable zone is a note and a doctor entry
  (udev_fix() has the fix), never an exception.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Set, Tuple

from carbonrun.collectors.base import Discovery, Meter, Probe

CONTROL_TYPES = ("intel-rapl", "intel-rapl-mmio")
# Zone ids are "<control type>:<id>[:<id>...]", ids in hex (the kernel names them "%s:%x").
_ZONE_ID = re.compile(r"^(intel-rapl(?:-mmio)?):([0-9a-f]+(?::[0-9a-f]+)*)$")
_INSIDE_PACKAGE = ("core", "uncore")
_CVE_HINT = "energy_uj is root-only since CVE-2020-8694"
UDEV_RULES_FILE = "/etc/udev/rules.d/99-carbonrun-powercap.rules"
PLAUSIBLE_W = {"cpu": 500.0, "dram": 150.0, "psys": 1500.0}  # above any part sold today, turbo included


@dataclass(eq=False)
class _Zone:
    """One zone directory found under the root."""

    zid: str  # "intel-rapl:0:1"
    path: str  # its directory, as first found (the flat /sys/class/powercap entry when there is one)
    ctype: str
    ids: Tuple[int, ...]
    name: str = ""

    @property
    def energy_path(self) -> str:
        return os.path.join(self.path, "energy_uj")

    @property
    def top_id(self) -> str:
        return f"{self.ctype}:{self.ids[0]:x}"


class RaplMeter(Meter):
    """One zone's energy_uj, kept open: read() is one pread, a parse and an add."""

    source = "rapl"
    estimated = False

    def __init__(self, fd: int, first_uj: int, max_range_uj: int, component: str, device: str,
                 zone: str, path: str, counted: bool = True) -> None:
        super().__init__()
        self.component, self.device, self.counted = component, device, counted
        self.zone, self.path = zone, path
        self._fd = fd
        self.modulus = max_range_uj + 1
        self._last_uj = first_uj
        self._total_uj = 0
        self._dead = False

    def read(self, now: float) -> float:
        if self._dead:
            return self._total_uj / 1e6
        try:
            uj = _parse(os.pread(self._fd, 32, 0))
        except (OSError, ValueError) as exc:
            self._lose(exc)
            return self._total_uj / 1e6
        delta = uj - self._last_uj
        if delta < 0:  # wrapped
            delta += self.modulus
        self._last_uj = uj
        self._total_uj += delta
        return self._total_uj / 1e6

    def position(self) -> Optional[Dict[str, float]]:
        return {"uj": self._last_uj}

    def reading_at(self, position: Dict[str, float]) -> Optional[float]:
        """Back from the last reading to that raw value (less than one wrap ago)."""
        back = (self._last_uj - int(position["uj"])) % self.modulus
        return (self._total_uj - back) / 1e6 if back <= self._total_uj else None

    def _lose(self, exc: BaseException) -> None:
        """The zone went away: keep the last value for good (a later reading could be a new counter)."""
        self._dead = True
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "no value"
        self.notes.append(f"RAPL {self.device} ({self.zone}): energy_uj stopped reading mid-run ({reason}); "
                          f"its energy stays at {self._total_uj / 1e6:.1f} J from then on")
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _parse(data: bytes) -> int:
    """First line only: sysfs gives "N\\n"; a file rewritten in place may briefly trail old bytes."""
    return int(data.partition(b"\n")[0])


def _read_text(path: str) -> Optional[str]:
    """A small sysfs attribute; O_NONBLOCK so that a FIFO planted in a --rapl-root tree cannot hang us."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            return os.read(fd, 4096).decode("ascii", "replace").strip()
        finally:
            os.close(fd)
    except OSError:
        return None


def _listdir(path: str) -> List[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def _find_zones(root: str) -> List[_Zone]:
    """Every RAPL zone under root, each id once: the flat entries /sys/class/powercap lists first,
    then subzones nested in zone and control-type directories (for roots that only nest)."""
    found: Dict[str, _Zone] = {}
    queue = [root]
    while queue:
        parent = queue.pop(0)
        for entry in _listdir(parent):
            match = _ZONE_ID.match(entry)
            path = os.path.join(parent, entry)
            if match and entry not in found:
                ids = tuple(int(i, 16) for i in match.group(2).split(":"))
                found[entry] = _Zone(entry, path, match.group(1), ids)
                queue.append(path)
            elif parent == root and entry in CONTROL_TYPES:
                queue.append(path)
    # intel-rapl before intel-rapl-mmio, so the first copy of a zone seen twice is the one kept.
    return sorted(found.values(), key=lambda z: (CONTROL_TYPES.index(z.ctype), z.ids))


def _package_id(zone: _Zone, names: Dict[str, str]) -> str:
    """The package a zone belongs to, from its top-level ancestor: "0" for package-0 and its
    subzones, "0-die-1" on multi-die parts; "" for psys (the platform is one)."""
    if zone.name == "psys":
        return ""
    top = names.get(zone.top_id, "")
    return top[len("package-"):] if top.startswith("package-") else str(zone.ids[0])


def _open_counter(path: str) -> Tuple[int, int]:
    """(fd, first reading); raises OSError or ValueError when the counter cannot be read."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)  # a FIFO fails at pread, never blocks
    try:
        return fd, _parse(os.pread(fd, 32, 0))
    except BaseException:
        os.close(fd)
        raise


def _readable(path: str) -> bool:
    """For doctor: could this user read the counter (zones that are never metered)."""
    try:
        fd, _ = _open_counter(path)
    except (OSError, ValueError):
        return False
    os.close(fd)
    return True


def _why(exc: BaseException) -> str:
    """Why a counter could not be read, naming the CVE when it is the usual permission problem."""
    if isinstance(exc, PermissionError):
        return f"permission denied ({_CVE_HINT})"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return "not a number"


def _meter_kind(name: str) -> Optional[Tuple[str, bool]]:
    """(component, counted) for zones that get a meter, None for the rest."""
    if name.startswith("package"):
        return "cpu", True
    if name == "dram":
        return "dram", True
    if name == "psys":
        return "psys", False
    return None


def _device(component: str, zone: _Zone, pkg: str, used: Set[str]) -> str:
    """package-N, dram-N (its package), psys; the zone id is appended only if a name repeats."""
    if component == "cpu":
        device = zone.name
    elif component == "dram":
        device = f"dram-{pkg}"
    else:
        device = "psys"
    return device if device not in used else f"{device}@{zone.zid}"


def discover(probe: Probe) -> Discovery:
    """RAPL meters under probe.rapl_root; notes (never exceptions) for what is missing or unreadable."""
    root = probe.rapl_root
    found = Discovery()
    if not os.path.isdir(root):
        found.notes.append(f"no powercap tree at {root}: no RAPL energy counters here "
                           "(not Linux, or a VM or container without them)")
        return found
    zones = _find_zones(root)
    if not zones:
        found.notes.append(f"no intel-rapl zones under {root}: this CPU or kernel exposes no RAPL counters")
        return found
    for zone in zones:
        zone.name = _read_text(os.path.join(zone.path, "name")) or ""
    names = {z.zid: z.name for z in zones}
    claimed: Dict[Tuple[str, str], str] = {}  # (name, package id) -> zone id that counts it
    unreadable: List[Tuple[_Zone, Tuple[str, str], BaseException]] = []
    for zone in zones:
        detail = _add_zone(found, zone, names, claimed, unreadable)
        found.details.append(detail)
    _note_unreadable(found, [(z, e) for z, key, e in unreadable if key not in claimed])
    _cap_interval(found, probe.interval)
    return found


def plausible_watts(zone_dir: str, component: str) -> float:
    """The most a zone could draw: a constraint's max power, else twice its largest limit, else a default."""
    limits: List[float] = []
    for entry in _listdir(zone_dir):
        if entry.startswith("constraint_") and entry.endswith(("_max_power_uw", "_power_limit_uw")):
            text = _read_text(os.path.join(zone_dir, entry)) or ""
            if text.isdigit() and int(text) > 0:
                limits.append(int(text) / 1e6 * (1 if entry.endswith("_max_power_uw") else 2))
    return max(limits) if limits else PLAUSIBLE_W.get(component, PLAUSIBLE_W["cpu"])


def wrap_period_s(meter: "RaplMeter") -> float:
    """Seconds for the counter to go round once at the zone's highest plausible power."""
    return meter.modulus / 1e6 / plausible_watts(os.path.dirname(meter.path), meter.component)


def _cap_interval(found: Discovery, interval: float) -> None:
    """A tick must come within each wrap period, or a wrap goes unseen: cap the interval at half the
    shortest one and say so (the session reads found.max_interval)."""
    periods = [(wrap_period_s(m), m) for m in found.meters if isinstance(m, RaplMeter)]
    if not periods:
        return
    period, meter = min(periods, key=lambda pm: pm[0])
    found.max_interval = period / 2
    if interval > found.max_interval:
        found.notes.append(f"--interval {interval:g} s capped at {found.max_interval:.3g} s: RAPL {meter.device} "
                           f"({meter.zone}) wraps every {period:.3g} s at "
                           f"{plausible_watts(os.path.dirname(meter.path), meter.component):.0f} W, and a longer "
                           "interval could miss a wrap")


def _add_zone(found: Discovery, zone: _Zone, names: Dict[str, str], claimed: Dict[Tuple[str, str], str],
              unreadable: List[Tuple[_Zone, Tuple[str, str], BaseException]]) -> Dict[str, Any]:
    """Meter one zone if it counts; return its doctor entry."""
    detail: Dict[str, Any] = {"kind": "rapl", "path": zone.energy_path, "name": zone.name, "readable": False,
              "counted": False, "reason": None}
    kind = _meter_kind(zone.name)
    if kind is None:
        detail["readable"] = _readable(zone.energy_path)
        parent = names.get(zone.top_id, "its package")
        detail["reason"] = (f"inside {parent}: already in its energy, never added" if zone.name in _INSIDE_PACKAGE
                            else f"zone {zone.name or '(no name)'} is not a package, dram or psys zone")
        return detail
    component, counted = kind
    key = (zone.name, _package_id(zone, names))
    try:
        fd, first = _open_counter(zone.energy_path)
    except (OSError, ValueError) as exc:
        unreadable.append((zone, key, exc))
        detail["reason"] = f"energy_uj not readable: {_why(exc)}"
        return detail
    detail["readable"] = True
    if key in claimed:
        os.close(fd)
        detail["reason"] = f"same zone as {claimed[key]} ({zone.name}): counted once"
        return detail
    max_range = _read_text(os.path.join(zone.path, "max_energy_range_uj"))
    if not max_range or not max_range.isdigit():
        os.close(fd)
        detail["reason"] = "max_energy_range_uj not readable: its wraparound could not be corrected"
        found.notes.append(f"RAPL {zone.zid} ({zone.name}) skipped: {detail['reason']}")
        return detail
    claimed[key] = zone.zid
    used = {m.device for m in found.meters}
    device = _device(component, zone, key[1], used)
    found.meters.append(RaplMeter(fd, first, int(max_range), component, device, zone.zid,
                                  zone.energy_path, counted))
    detail["counted"] = counted
    if not counted:
        detail["reason"] = "whole platform: shown on its own, never added to package + dram"
    return detail


def _note_unreadable(found: Discovery, zones: List[Tuple[_Zone, BaseException]]) -> None:
    """One note for every zone that could have counted and could not be read."""
    if not zones:
        return
    which = ", ".join(f"{z.zid} ({z.name})" for z, _ in zones)
    reasons = sorted({_why(exc) for _, exc in zones})
    found.notes.append(f"RAPL energy_uj not readable for {which}: {'; '.join(reasons)}. "
                       "These zones are not measured; `carbonrun doctor` shows the fix "
                       "(a udev rule, or chmod until reboot, that lets a group read energy_uj).")


def udev_fix(group: str = "powercap") -> str:
    """Commands that let members of `group` read energy_uj, persistently and right now."""
    rule = (f'ACTION=="add", SUBSYSTEM=="powercap", KERNEL=="intel-rapl:*|intel-rapl-mmio:*", '
            f'RUN+="/bin/chgrp {group} /sys%p/energy_uj", RUN+="/bin/chmod g+r /sys%p/energy_uj"')
    files = "/sys/class/powercap/intel-rapl*:*/energy_uj"
    return "\n".join([
        f"sudo groupadd --system {group}; sudo usermod -aG {group} \"$USER\"   # then log in again",
        f"echo '{rule}' | sudo tee {UDEV_RULES_FILE}",
        "sudo udevadm control --reload && sudo udevadm trigger --subsystem-match=powercap --action=add",
        f"# or, until the next reboot: sudo chgrp {group} {files} && sudo chmod g+r {files}",
    ])
