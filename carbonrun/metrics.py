"""A finished run as Prometheus metrics: node_exporter's textfile collector, or a Pushgateway.

Text exposition format 0.0.4, written by hand (no client library at run time). Exporting is best
effort: a failure becomes a note in the record, never an error, since the run itself succeeded.
"""
from __future__ import annotations

import base64
import math
import re
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Tuple
from urllib.parse import quote

from carbonrun.units import counted_components, counted_j
from carbonrun.files import write_atomic
from carbonrun.measure.launcher import hostname
from carbonrun.redact import redact

if TYPE_CHECKING:
    from carbonrun.record import RunRecord

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXTFILE = "carbonrun.prom"
PUSH_TIMEOUT_S = 3.0
_OWN_LABELS = {"component", "device", "source", "region", "job_id", "launcher"}
_RESERVED = _OWN_LABELS | {"job", "instance", "le", "quantile"}  # job/instance: Prometheus's target labels

Sample = Tuple[Dict[str, str], float]


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def label_name(key: str) -> str:
    """A tag key as a valid label name; `tag_` in front when it would clash or be reserved."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", key) or "_"
    if name[0].isdigit() or name.startswith("__") or name in _RESERVED:
        name = "tag_" + name
    return name


def base_labels(record: RunRecord) -> Dict[str, str]:
    """The run's tags and, under a launcher, its job: on every sample."""
    out = {label_name(k): str(v) for k, v in sorted((record.get("tags") or {}).items())}
    job = record.get("job")
    if job:
        out.update(job_id=str(job.get("job_id")), launcher=str(job.get("launcher")))
    return out


def _value(x: float) -> str:
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    return repr(x)


def _family(name: str, kind: str, help_text: str, samples: List[Sample]) -> str:
    lines = [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {kind}"]
    for labels, value in samples:
        body = ",".join(f'{k}="{escape_label(v)}"' for k, v in labels.items())
        lines.append(f"{name}{{{body}}} {_value(value)}" if body else f"{name} {_value(value)}")
    return "\n".join(lines) + "\n"


def render(record: RunRecord) -> str:
    """The run's metrics in the text format; energy is the counted share (job or machine) before PUE."""
    base = base_labels(record)
    attribution = record.get("attribution")
    energy = [({**base, "component": c["component"], "device": str(c["device"]), "source": c["source"]},
               counted_j(c, attribution)) for c in counted_components(record)]
    ci = record.get("intensity") or {}
    out = [
        # gauges: each is the last run's figure, replaced by the next run, not a running total
        _family("carbonrun_energy_joules", "gauge",
                "Energy counted for the last run, per component, before PUE (the job's share, or the machine).",
                energy),
        _family("carbonrun_emissions_grams", "gauge", "Emissions of the last run, g CO2eq (PUE included).",
                [(base, (record.get("emissions") or {}).get("kg", 0.0) * 1000)]),
        _family("carbonrun_run_duration_seconds", "gauge", "Wall-clock duration of the last run.",
                [(base, record.get("duration_s") or 0.0)]),
    ]
    if ci.get("g_per_kwh") is not None:
        out.append(_family("carbonrun_intensity_grams_per_kwh", "gauge", "Grid intensity applied to the last run.",
                           [({**base, "region": str(ci.get("region") or "")}, ci["g_per_kwh"])]))
    ended = record.get("ended_at")
    if ended:
        out.append(_family("carbonrun_run_end_timestamp_seconds", "gauge", "When the last run ended (Unix time).",
                           [(base, datetime.fromisoformat(ended).timestamp())]))
    return "".join(out)


def write_textfile(directory: str, text: str) -> Path:
    """DIR/carbonrun.prom, replaced atomically so node_exporter never reads half a file."""
    target = Path(directory) / TEXTFILE
    write_atomic(target, text, mode=0o644)  # node_exporter usually runs as another user
    return target


def grouping(record: RunRecord) -> Dict[str, str]:
    """The Pushgateway group: one per node (and job), so the next run there replaces this one."""
    job = record.get("job")
    out = {"instance": (job or {}).get("node") or hostname()}
    if job:
        out["job_id"] = str(job.get("job_id"))
    return out


def push_url(base: str, groups: Dict[str, str]) -> str:
    """/metrics/job/carbonrun/K/V...; a value with `/` (or empty) goes base64url-encoded, as the gateway wants."""
    path = "/metrics/job/carbonrun"
    for k, v in groups.items():
        if "/" in v or not v:
            path += f"/{k}@base64/{base64.urlsafe_b64encode(v.encode()).decode() or '='}"
        else:
            path += f"/{k}/{quote(v, safe='')}"
    return base.rstrip("/") + path


def push(base: str, text: str, groups: Dict[str, str], timeout: float = PUSH_TIMEOUT_S) -> None:
    """HTTP PUT: the group's metrics become exactly these (within `timeout` in all: carbonrun/net.py)."""
    from carbonrun.net import http_get  # HTTP only for a Pushgateway

    http_get(push_url(base, groups), {"Content-Type": CONTENT_TYPE}, timeout, method="PUT", data=text.encode())


def export(record: RunRecord, textfile: Optional[str], pushgateway: Optional[str]) -> bool:
    """Write/push the run's metrics as configured; returns True when a note was added to the record."""
    if not textfile and not pushgateway:
        return False
    import http.client  # HTTP only with a Pushgateway

    notes: List[str] = []
    job = record.get("job") or {}
    if job.get("role") == "pointer":
        notes.append(f"Prometheus metrics left to the node's metering run {job.get('metered_by')}")
    else:
        text = render(record)
        if textfile:
            try:
                write_textfile(textfile, text)
            except OSError as e:
                notes.append(f"could not write the Prometheus textfile in {textfile}: {e.strerror or e}")
        if pushgateway:
            try:
                push(pushgateway, text, grouping(record))
            except (OSError, ValueError, http.client.HTTPException) as e:
                notes.append(f"could not push metrics to {redact(pushgateway)}: {e}")
    record.setdefault("notes", []).extend(notes)
    return bool(notes)
