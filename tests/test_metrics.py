"""Prometheus export: text format read back by prometheus_client's parser, textfile, Pushgateway."""
from __future__ import annotations

import json
import os
import stat

import pytest

from carbonrun import metrics
from tests.fakes.http import Pushgateway

parser = pytest.importorskip("prometheus_client.parser", reason="prometheus-client is in the test extra")

TRICKY = 'a "quoted" \\ back\\slash\nand a newline'


def _record(**extra) -> dict:
    return {
        "uuid": "u-1", "attribution": "process", "tags": {"exp": TRICKY, "my-tag": "x", "job": "j", "0day": "y"},
        "components": [
            {"component": "cpu", "device": "package-0", "source": "rapl", "counted": True, "machine_j": 100.0,
             "job_j": 40.5},
            {"component": "gpu", "device": "0", "source": "nvml-energy", "counted": True, "machine_j": 300.0,
             "job_j": 300.0},
            {"component": "psys", "device": "psys", "source": "rapl", "counted": False, "machine_j": 999.0,
             "job_j": 999.0},
        ],
        "emissions": {"kg": 0.0123}, "duration_s": 12.5, "intensity": {"g_per_kwh": 56.0, "region": "FR"},
        "ended_at": "2024-05-01T10:00:00.000+00:00", **extra,
    }


def _families(text: str) -> dict:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def test_text_format_reads_back_with_exact_labels_and_values():
    fams = _families(metrics.render(_record(job={"job_id": "42", "launcher": "slurm", "role": "meter"})))
    energy = fams["carbonrun_energy_joules"]
    assert energy.type == "gauge" and "before PUE" in energy.documentation  # the last run's, not a total
    got = {s.labels["component"]: (s.name, s.value, s.labels) for s in energy.samples}
    assert set(got) == {"cpu", "gpu"}  # psys covers the others: never added
    name, value, labels = got["cpu"]
    assert name == "carbonrun_energy_joules" and value == 40.5  # the job's share (attribution process)
    assert labels["exp"] == TRICKY and labels["my_tag"] == "x" and labels["tag_job"] == "j"
    assert labels["tag_0day"] == "y" and labels["job_id"] == "42" and labels["device"] == "package-0"
    assert fams["carbonrun_emissions_grams"].type == "gauge"
    assert fams["carbonrun_emissions_grams"].samples[0].value == pytest.approx(12.3)
    assert fams["carbonrun_run_duration_seconds"].samples[0].value == 12.5
    ci = fams["carbonrun_intensity_grams_per_kwh"]
    assert ci.type == "gauge" and ci.samples[0].value == 56.0 and ci.samples[0].labels["region"] == "FR"
    assert fams["carbonrun_run_end_timestamp_seconds"].samples[0].value == 1714557600.0


def test_machine_attribution_exports_machine_energy():
    fams = _families(metrics.render(_record(attribution="machine")))
    assert {s.labels["component"]: s.value for s in fams["carbonrun_energy_joules"].samples}["cpu"] == 100.0


def test_textfile_is_replaced_atomically_and_world_readable(tmp_path):
    (tmp_path / metrics.TEXTFILE).write_text("old\n")
    assert metrics.export(_record(), str(tmp_path), None) is False
    target = tmp_path / metrics.TEXTFILE
    assert sorted(os.listdir(tmp_path)) == [metrics.TEXTFILE]  # no temporary file left behind
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert "carbonrun_energy_joules" in _families(target.read_text())


def test_failures_are_notes_never_errors(tmp_path):
    rec = _record()
    assert metrics.export(rec, str(tmp_path / "missing"), "http://u:pw@127.0.0.1:9/") is True
    assert any("could not write the Prometheus textfile" in n for n in rec["notes"])
    assert any("could not push metrics to http://u:***@127.0.0.1:9/" in n for n in rec["notes"])


def test_a_pointer_rank_leaves_the_node_to_its_meter(tmp_path):
    rec = _record(job={"job_id": "1", "role": "pointer", "metered_by": "m-uuid"})
    assert metrics.export(rec, str(tmp_path), None) is True
    assert os.listdir(tmp_path) == [] and "m-uuid" in rec["notes"][-1]


@pytest.fixture
def gateway():
    g = Pushgateway()
    yield g
    g.close()


def test_push_puts_the_text_format_under_a_grouping_key(gateway):
    rec = _record(job={"job_id": "a/b", "node": "node-1", "role": "meter", "launcher": "slurm"})
    assert metrics.export(rec, None, gateway.url + "/") is False
    (method, path, ctype, body), = gateway.seen
    assert method == "PUT" and ctype.startswith("text/plain; version=0.0.4")
    assert path == "/metrics/job/carbonrun/instance/node-1/job_id@base64/YS9i"  # "a/b", base64url
    assert {s.value for s in _families(body)["carbonrun_energy_joules"].samples} == {40.5, 300.0}


def test_a_run_writes_the_textfile_and_pushes(cli, tmp_path, gateway):
    prom = tmp_path / "textfile"
    prom.mkdir()
    env = {"CARBONRUN_PROMETHEUS_TEXTFILE": str(prom), "CARBONRUN_PUSHGATEWAY": gateway.url}
    p = cli("--quiet", "--intensity", "300", "--tag", "team=ml", "--json", str(tmp_path / "r.json"),
            "sh", "-c", "exit 3", env=env)
    assert p.returncode == 3, p.stderr.decode()
    rec = json.loads((tmp_path / "r.json").read_text())
    fams = _families((prom / metrics.TEXTFILE).read_text())
    cpu = [s for s in fams["carbonrun_energy_joules"].samples if s.labels["component"] == "cpu"]
    assert cpu and cpu[0].labels["team"] == "ml"
    assert cpu[0].value == next(c["job_j"] for c in rec["components"] if c["component"] == "cpu")
    assert fams["carbonrun_intensity_grams_per_kwh"].samples[0].value == 300
    assert len(gateway.seen) == 1 and gateway.seen[0][1].startswith("/metrics/job/carbonrun/instance/")


def test_an_unreachable_gateway_is_a_stored_note(cli, tmp_path):
    env = {"CARBONRUN_PUSHGATEWAY": "http://127.0.0.1:9"}
    p = cli("--quiet", "true", env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert any("could not push metrics" in n for n in cli.record()["notes"])


def test_last_run_values_are_gauges_without_total_suffix():
    text = metrics.render(_record())
    types = {line.split()[2]: line.split()[3] for line in text.splitlines() if line.startswith("# TYPE")}
    assert types and set(types.values()) == {"gauge"}  # each is replaced by the next run, never accumulated
    assert not any(name.endswith("_total") for name in types)
