"""Every setting in one table, and their resolution: flags > CARBONRUN_* env > project > user > defaults."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

from carbonrun import config, validate
from carbonrun.errors import CarbonrunError
from carbonrun.redact import redact_text
from carbonrun.timefmt import parse_duration
from carbonrun.intensity import providers
from carbonrun.validate import Range, number


def _number(kind: str, bounds: Range) -> Callable[[Any], float]:
    """A finite number within bounds (validate.number: the one check for every source)."""
    def convert(v: Any) -> float:
        return number(v, bounds, kind)
    return convert


def _choice(*names: str) -> Callable[[Any], str]:
    def convert(v: Any) -> str:
        if str(v) not in names:
            raise ValueError(f"must be one of {', '.join(names)}")
        return str(v)
    return convert


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _tags(v: Any) -> Dict[str, str]:
    """K=V pairs from a flag list, a comma/space separated string, or a TOML table."""
    if isinstance(v, Mapping):
        return {str(k): str(x) for k, x in v.items()}
    items = v if isinstance(v, (list, tuple)) else str(v).replace(",", " ").split()
    out = {}
    for item in items:
        if "=" not in item or not item.split("=", 1)[0]:
            raise ValueError(f"tag {item!r} is not K=V (a key, =, a value)")
        k, val = item.split("=", 1)
        out[k] = val
    return out


def _scc(v: Any) -> str:
    """LOW,CENTRAL,HIGH checked here, so a bad one is refused with its source; kept as given."""
    from carbonrun.intensity.carbon import parse_scc  # loads the region tables: only when scc is set

    parse_scc(str(v))
    return str(v)


def _duration(v: Any) -> float:
    """Seconds from 90s, 30m, 6h, 1h30m, 2d: the one duration grammar (timefmt.parse_duration)."""
    return number(parse_duration(v), validate.DURATION_S, "a duration")


class Spec(NamedTuple):
    convert: Callable[[Any], Any]
    default: Any
    help: str


SPECS: Dict[str, Spec] = {
    "interval": Spec(_number("interval", validate.INTERVAL_S), 0.1, "seconds between energy samples (0.001 to 3600)"),
    "pue": Spec(_number("PUE", validate.PUE), 1.0, "data-centre power usage effectiveness (1.0 = the machine only)"),
    "region": Spec(str, None, "grid region: ISO country (FR, FRA, France) or aws:/gcp:/azure: cloud region"),
    "intensity": Spec(_number("intensity", validate.G_PER_KWH), None, "fixed grid intensity, g CO2eq per kWh"),
    "intensity_file": Spec(str, None, "CSV or JSON time series of g CO2eq per kWh"),
    "provider": Spec(_choice(*providers.NAMES, providers.OFF), None, "live intensity provider"),
    "provider_url": Spec(str, None, "base URL of the live provider (mirrors, tests)"),
    "attribution": Spec(_choice("process", "machine"), "process", "count the job's process tree, or the machine"),
    "tags": Spec(_tags, {}, "KEY=VALUE labels stored with the run"),
    "quiet": Spec(_bool, False, "no live table; a one-line summary"),
    "live": Spec(_bool, True, "draw the live table when stderr is a terminal"),
    "json": Spec(str, None, "also write the run record to this file"),
    "store": Spec(str, None, "the run store: an SQLite file, a postgresql:// URL, or none to keep nothing"),
    "keep_timeline": Spec(_bool, False, "store the full power timeline (default: at most 120 points)"),
    "gpus": Spec(str, "all", "GPUs to meter: all, none, or indices like 0,2"),
    "scc": Spec(_scc, None, "social cost of carbon LOW,CENTRAL,HIGH in USD per tonne"),
    "rapl_root": Spec(str, "/sys/class/powercap", "powercap root (for containers and tests)"),
    "proc_root": Spec(str, "/proc", "procfs root"),
    # carbon-aware start and embodied carbon (planner.py, embodied.py; docs/carbon.md)
    "start_within": Spec(_duration, None, "start when the forecast is lowest within this time (6h, 1h30m, 2d)"),
    "expected_duration": Spec(_duration, None, "how long the command runs, for --start-within (45m, 2h)"),
    "embodied": Spec(_bool, False, "also report embodied (manufacturing) carbon, beside the emissions"),
    "embodied_server_kg": Spec(_number("embodied-server-kg", validate.EMBODIED_KG), 1000.0,
                               "server manufacturing kg CO2eq"),
    "embodied_gpu_kg": Spec(_number("embodied-gpu-kg", validate.EMBODIED_KG), 150.0, "manufacturing kg CO2eq per GPU"),
    "embodied_lifetime_years": Spec(_number("embodied-lifetime-years", validate.LIFETIME_YEARS), 4.0,
                                    "hardware lifetime, years"),
    # Prometheus export after each run (carbonrun/metrics.py)
    "prometheus_textfile": Spec(str, None, "node_exporter textfile collector directory: write carbonrun.prom there"),
    "pushgateway": Spec(str, None, "Prometheus Pushgateway URL to push each run's metrics to"),
}


# Where resolve's warnings go (a project file's destinations ignored): the CLI sets a stderr writer
# here once, so every command shows them; the core itself never prints.
warn: Optional[Callable[[str], None]] = None


def env_name(name: str) -> str:
    return "CARBONRUN_" + name.upper()


@dataclass(eq=False)
class Settings:
    values: Dict[str, Any] = field(default_factory=dict)
    sources: Dict[str, str] = field(default_factory=dict)
    warnings: List[str] = field(default_factory=list)  # one line each, for the CLI to show (config.py)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None


def _convert(name: str, raw: Any, where: str) -> Any:
    """Convert and check one value; refuse it naming its source (the file and line for a config file)."""
    try:
        return SPECS[name].convert(raw)
    except (TypeError, ValueError, OverflowError) as e:
        spelled = name.replace("_", "-")
        if where.startswith(("project ", "user ")):
            where = f"{where.split(' ', 1)[0]} file {config.locate(where, name)}"
        raise CarbonrunError(redact_text(f"invalid {spelled} {raw!r} ({where}): {e}")) from None


def resolve(flags: Mapping[str, Tuple[Any, str]], env: Optional[Mapping[str, str]] = None,
            cwd: Optional[str] = None) -> Settings:
    """Merge the layers. `flags` maps a setting to (value, "flag" | "env" | another label, such as
    "track() argument") for what the caller was given."""
    env = os.environ if env is None else env
    out = Settings()
    layers = config.load_layers(cwd or os.getcwd(), env, out.warnings)  # [(label, {name: value})], highest first
    for name, spec in SPECS.items():
        if name in flags and flags[name][0] is not None:
            value, how = flags[name]
            where = f"env {env_name(name)}" if how == "env" else how  # "flag", or "track() argument"
        elif env_name(name) in env and name not in flags:
            value, where = env[env_name(name)], f"env {env_name(name)}"
        else:
            value, where = spec.default, "default"
            for label, table in layers:
                if name in table:
                    value, where = table[name], label
                    break
        out.values[name] = value if value is None or where == "default" else _convert(name, value, where)
        out.sources[name] = where
    sink = warn
    if sink is not None:
        for line in out.warnings:
            sink(line)
    return out
