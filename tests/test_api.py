"""The Python API, `carbonrun.track`: in-process measurement into the same store as the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from fakes.powercap import FakePowercap, standard_zones  # noqa: E402

import carbonrun  # noqa: E402
from carbonrun.errors import CarbonrunError  # noqa: E402


@pytest.fixture
def env(cli, monkeypatch, tmp_path):
    """This process set up as the `cli` fixture's subprocesses are, so both see one store."""
    for key in [k for k in os.environ if k.startswith("CARBONRUN_")]:
        monkeypatch.delenv(key)
    for key in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME", "CARBONRUN_HOME",
                "CARBONRUN_RAPL_ROOT"):
        monkeypatch.setenv(key, cli.env[key])
    monkeypatch.setenv("CARBONRUN_GPUS", "none")
    monkeypatch.chdir(tmp_path)
    return cli


def burn(seconds: float) -> None:
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass


def test_block_is_stored_as_a_run_record(env):
    with carbonrun.track("phase", tags={"team": "ml"}) as run:
        burn(0.3)
        assert isinstance(run.id, int)
        assert env.record(str(run.id))["status"] == "running"  # inserted when the block started
    rec = run.record
    assert rec["schema"] == "carbonrun.run/1" and rec["command"] == ["python:phase"]
    assert rec["tags"] == {"team": "ml", "phase": "phase"}
    assert rec["status"] == "completed" and rec["exit_code"] == 0
    assert rec["duration_s"] >= 0.3 and rec["samples"] >= 2
    assert rec["energy"]["total_kwh"] > 0 and rec["emissions"]["kg"] > 0
    assert "base_notes" not in rec and "pid" not in rec
    stored = env.record("last")
    assert stored["uuid"] == rec["uuid"] and stored["status"] == "completed"
    assert stored["energy"] == rec["energy"]
    table = env("report", "last")
    assert table.returncode == 0 and b"python:phase" in table.stdout


def test_checkpoints_reach_the_store_while_the_block_runs(env, monkeypatch):
    from carbonrun.measure import loop

    monkeypatch.setattr(loop, "CHECKPOINT_EVERY_S", 0.2)
    with carbonrun.track("long") as run:
        burn(0.6)
        mid = env.record(str(run.id))
    assert mid["status"] == "running" and mid["samples"] > 0
    assert 0 < mid["energy"]["total_kwh"] < run.record["energy"]["total_kwh"]
    assert run.record["status"] == "completed"


def test_live_figures_grow_during_the_block(env):
    with carbonrun.track("live") as run:
        burn(0.3)
        first = run.energy_j
        burn(0.3)
        second = run.energy_j
        assert run.elapsed_s >= 0.5 and run.emissions_kg > 0
        assert run.record is None
    assert 0 < first < second <= run.record["energy"]["total_kwh"] * 3.6e6


def test_exception_marks_failed_and_propagates(env):
    with pytest.raises(ValueError, match="boom"):
        with carbonrun.track("broken") as run:
            raise ValueError("boom")
    assert run.record["status"] == "failed" and run.record["exit_code"] == 1
    assert any("ValueError: boom" in n for n in run.record["notes"])
    assert env.record("last")["status"] == "failed"


def test_decorator_measures_each_call(env):
    @carbonrun.track("step", tags={"k": "v"})
    def double(x):
        time.sleep(0.05)
        return 2 * x

    assert double(3) == 6 and double(4) == 8
    b = env.record("last")
    a = env.record(str(b["id"] - 1))
    assert a["id"] != b["id"] and a["command"] == b["command"] == ["python:step"]
    assert b["tags"] == {"k": "v", "phase": "step"}


def test_decorator_name_defaults_to_the_function(env):
    @carbonrun.track()
    def evaluate():
        return "done"

    assert evaluate() == "done" and evaluate.__name__ == "evaluate"
    assert env.record("last")["command"] == ["python:test_decorator_name_defaults_to_the_function.<locals>.evaluate"]


def test_rapl_machine_energy_matches_truth(env, tmp_path):
    with FakePowercap(tmp_path / "pc", standard_zones(wrap_seconds=0.4)):
        with carbonrun.track("rapl", rapl_root=str(tmp_path / "pc"), attribution="machine") as run:
            time.sleep(1.0)  # counters wrap twice meanwhile
    pkg = next(c for c in run.record["components"] if c["device"] == "package-0")
    assert pkg["source"] == "rapl" and not pkg["estimated"]
    assert pkg["machine_j"] == pytest.approx(65.0 * run.record["duration_s"], rel=0.05)


def test_cpu_share_is_the_blocks_not_the_process_history(env):
    burn(0.4)  # before the block: must not be charged to it
    with carbonrun.track("idle") as idle:
        time.sleep(0.4)
    with carbonrun.track("busy") as busy:
        burn(0.4)
    assert idle.record["usage"]["job_cpu_s"] < 0.15
    assert 0.3 <= busy.record["usage"]["job_cpu_s"] <= 0.7
    job = lambda r: next(c["job_j"] for c in r["components"] if c["component"] == "cpu")  # noqa: E731
    assert job(busy.record) > 3 * job(idle.record)


def test_a_millijoule_blocks_components_add_up_to_its_total(env):
    """Components are not rounded to whole millijoules: a short job's parts sum to its exact total."""
    with carbonrun.track("tiny") as run:
        burn(0.02)
    r = run.record
    parts = sum(c["job_j"] for c in r["components"] if c["counted"])
    assert parts > 0 and parts == pytest.approx(r["energy"]["job_kwh"] * 3.6e6, rel=1e-4)


def test_child_processes_of_the_block_count(env):
    code = "import time\nend = time.process_time() + 0.4\nwhile time.process_time() < end: pass\n"
    with carbonrun.track("children") as run:
        subprocess.run([sys.executable, "-c", code], check=True)
    assert run.record["usage"]["job_cpu_s"] >= 0.35


def test_bad_options_fail_before_the_block(env):
    ran = []
    with pytest.raises(CarbonrunError, match="unknown region 'Atlantis'"):
        with carbonrun.track("x", region="Atlantis"):
            ran.append(1)
    assert ran == []
    with pytest.raises(CarbonrunError, match=r"invalid pue nan \(track\(\) argument\)"):  # not "(flag)"
        with carbonrun.track("x", pue=float("nan")):
            ran.append(1)
    assert ran == []
    with pytest.raises(TypeError, match="regoin"):
        carbonrun.track("x", regoin="FR")


def shape(x):
    """A record's structure: keys all the way down, list items of dicts, and the kind of each value."""
    if isinstance(x, dict):
        return {k: shape(v) for k, v in x.items()}
    if isinstance(x, list):
        return [shape(v) for v in x] if x and isinstance(x[0], dict) else "list"
    return "null" if x is None else "bool" if isinstance(x, bool) else \
        "number" if isinstance(x, (int, float)) else type(x).__name__


def test_same_options_give_the_same_record_through_the_cli_and_track(env, tmp_path, monkeypatch):
    """One engine: embodied carbon, the Prometheus textfile and the SLURM claim apply to both alike."""
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NODEID": "0", "SLURM_PROCID": "0", "SLURM_LOCALID": "0",
             "SLURM_NTASKS": "1", "SLURM_TASKS_PER_NODE": "1", "XDG_RUNTIME_DIR": str(tmp_path)}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    prom_cli, prom_api = tmp_path / "prom-cli", tmp_path / "prom-api"
    prom_cli.mkdir(), prom_api.mkdir()
    p = env("--quiet", "--intensity", "250", "--embodied", "--prometheus-textfile", str(prom_cli),
            "--tag", "phase=same", "--json", str(tmp_path / "cli.json"), "--", "sleep", "0.3",
            env=slurm, cwd=tmp_path)
    assert p.returncode == 0, p.stderr.decode()
    by_cli = json.loads((tmp_path / "cli.json").read_text())
    with carbonrun.track("same", intensity=250, embodied=True, prometheus_textfile=str(prom_api)) as run:
        time.sleep(0.3)
    by_api = run.record
    assert by_api["embodied"]["per_device"] and by_cli["embodied"]["per_device"]
    assert by_api["job"]["job_id"] == by_cli["job"]["job_id"] == "77"
    assert by_api["job"]["role"] == by_cli["job"]["role"] == "meter"
    assert shape(by_api) == shape(by_cli)
    assert shape(env.record(str(run.id))) == shape(env.record(str(by_cli["id"])))
    for prom, rec in ((prom_cli, by_cli), (prom_api, by_api)):
        text = (prom / "carbonrun.prom").read_text()
        assert 'job_id="77"' in text and 'phase="same"' in text
        assert f"}} {float(rec['duration_s'])!r}\n" in text  # this run's figures, not the other's


def test_record_round_trips_through_json_and_other_schemas_are_refused(env):
    from carbonrun.record import SCHEMA, from_json, to_json

    with carbonrun.track("json") as run:
        pass
    assert from_json(to_json(run.record)) == run.record
    assert from_json(json.loads(to_json(run.record)))["schema"] == SCHEMA
    with pytest.raises(ValueError, match="not a carbonrun.run/1 record"):
        from_json(to_json({**run.record, "schema": "carbonrun.run/2"}))
    with pytest.raises(ValueError, match="lacks uuid"):
        from_json({k: v for k, v in run.record.items() if k != "uuid"})
    with pytest.raises(ValueError):
        from_json("[1, 2]")


def test_track_is_lazy_attribute_of_the_package():
    from carbonrun import api

    assert carbonrun.track is api.track


def test_a_project_files_ignored_destination_is_a_python_warning(env, tmp_path):
    (tmp_path / "carbonrun.toml").write_text('pushgateway = "http://127.0.0.1:9/"\n')
    with pytest.warns(RuntimeWarning, match="ignored pushgateway from the project file"):
        with carbonrun.track("warned"):
            pass
