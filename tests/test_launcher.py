"""Launcher awareness: SLURM/torchrun job sections, one meter per node, `report --job` over nodes."""
from __future__ import annotations

import fcntl
import json
import subprocess
import time
from datetime import datetime

import pytest

from carbonrun.measure import launcher

from tests.fakes.postgres import server
from tests.fakes.powercap import FakePowercap, standard_zones

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_NODEID": "3", "SLURM_LOCALID": "1", "SLURM_PROCID": "7",
         "SLURM_NTASKS": "7", "SLURM_TASKS_PER_NODE": "2(x3),1", "CARBONRUN_HOSTNAME": "gpu-07"}


def test_slurm_job_section():
    job = launcher.detect(SLURM)
    assert job == {"launcher": "slurm", "job_id": "4242", "node": "gpu-07", "node_index": 3, "rank": 7,
                   "local_rank": 1, "world_size": 7, "local_world_size": 1}


@pytest.mark.parametrize("spec, node, want", [("2(x3),1", 0, 2), ("2(x3),1", 2, 2), ("4", 0, 4), ("1,3", 1, 3),
                                              ("2(x3)", 5, None), ("weird", 0, None), (None, 0, None)])
def test_tasks_per_node(spec, node, want):
    assert launcher.tasks_on_node(spec, node) == want


def test_torchrun_under_slurm_keeps_slurms_job_id():
    env = {"TORCHELASTIC_RUN_ID": "none", "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8",
           "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1", "SLURM_JOB_ID": "99", "CARBONRUN_HOSTNAME": "n1"}
    job = launcher.detect(env)
    assert (job["launcher"], job["job_id"], job["rank"], job["local_rank"], job["world_size"],
            job["local_world_size"], job["node_index"]) == ("torchrun", "99", 5, 1, 8, 4, 1)
    assert launcher.detect({k: v for k, v in env.items() if k != "SLURM_JOB_ID"})["job_id"] == "none"
    assert launcher.detect({"HOME": "/x"}) is None


def test_first_holder_meters_others_point_to_it(tmp_path):
    lock = tmp_path / "locks" / "job-1-n0.lock"
    meter = launcher.elect(lock, "uuid-meter")
    second = launcher.elect(lock, "uuid-second")
    other_node = launcher.elect(tmp_path / "locks" / "job-1-n1.lock", "uuid-n1")
    assert (meter.role, second.role, second.metered_by) == ("meter", "pointer", "uuid-meter")
    assert other_node.role == "meter"
    meter.release()
    assert lock.read_text() == ""  # a later pointer cannot read a finished meter's uuid
    again = launcher.elect(lock, "uuid-next")
    assert again.role == "meter"
    again.release()
    other_node.release()


def test_stale_or_missing_holder_uuid(tmp_path):
    lock = tmp_path / "job.lock"
    lock.write_text("uuid-of-a-dead-run 999999999\n")  # a meter killed with SIGKILL: no lock held
    c = launcher.elect(lock, "uuid-new")
    assert c.role == "meter" and lock.read_text().split()[0] == "uuid-new"
    c.release()
    with open(lock, "a+") as holder:  # held, but the holder has not written its uuid yet
        fcntl.flock(holder, fcntl.LOCK_EX)
        waited = launcher.elect(lock, "uuid-late", wait_s=0.1)
    assert (waited.role, waited.metered_by) == ("pointer", None)


def _record(node, rank, role, uuid, kwh, kg, metered_by=None, duration=1.0, status="completed"):
    return {"uuid": uuid, "status": status, "duration_s": duration, "started_at": "2024-05-01T10:00:00.000+02:00",
            "ended_at": "2024-05-01T08:00:0%d.000+00:00" % int(duration),
            "energy": {"total_kwh": kwh, "machine_kwh": kwh, "job_kwh": kwh, "pue": 1.0},
            "emissions": {"kg": kg, "low_kg": kg / 2, "high_kg": kg * 2},
            "job": {"launcher": "slurm", "job_id": "7", "node": node, "rank": rank, "role": role,
                    "metered_by": metered_by}}


def test_aggregate_counts_each_node_once():
    runs = [_record("a", 0, "meter", "ma", 1.0, 0.1, duration=3), _record("a", 1, "pointer", "pa", 0, 0, "ma"),
            _record("b", 2, "meter", "mb", 2.0, 0.2), _record("b", 3, "pointer", "pb", 0, 0, "mb"),
            _record("a", 0, "meter", "ma2", 0.5, 0.05),  # a second job step on node a, after the first
            _record("c", 4, "pointer", "pc", 0, 0, "gone", status="incomplete")]
    agg = launcher.aggregate(runs, "7")
    assert (agg["nodes"], agg["ranks"], agg["runs"], agg["metering_runs"]) == (3, 5, 6, 3)
    assert agg["energy"]["total_kwh"] == pytest.approx(3.5) and agg["emissions"]["kg"] == pytest.approx(0.35)
    assert agg["emissions"]["high_kg"] == pytest.approx(0.7) and agg["duration_s"] == 3
    assert agg["ended_at"] == "2024-05-01T08:00:03.000+00:00" and agg["started_at"].endswith("+02:00")
    by_node = {n["node"]: n for n in agg["per_node"]}
    assert by_node["a"]["total_kwh"] == pytest.approx(1.5) and by_node["a"]["ranks"] == 2
    assert by_node["c"]["total_kwh"] == 0
    assert any("points to run gone" in n and "node c" in n for n in agg["notes"])
    assert any("pc on c is incomplete" in n for n in agg["notes"])
    with pytest.raises(KeyError):
        launcher.aggregate([], "8")


def test_mark_zeroes_a_pointer_but_not_a_meter():
    comp = {"component": "cpu", "device": "0", "machine_j": 5.0, "job_j": 2.0, "low_j": 1.0, "high_j": 3.0}
    rec = {"job": {"role": "pointer", "metered_by": "m"}, "components": [dict(comp)],
           "energy": {"machine_kwh": 1.0, "job_kwh": 0.5, "total_kwh": 0.5, "pue": 1.2},
           "emissions": {"kg": 1.0, "low_kg": 0.5, "high_kg": 2.0}, "social_cost_usd": {"low": 1.0, "central": 2.0,
                                                                                       "high": 3.0, "basis": "x"}}
    launcher.mark(rec)
    assert rec["components"][0]["counted"] is False and rec["components"][0]["metered_by"] == "m"
    assert rec["components"][0]["machine_j"] == 0 and rec["energy"]["total_kwh"] == 0 and rec["energy"]["pue"] == 1.2
    assert rec["emissions"]["kg"] == 0 and rec["social_cost_usd"]["central"] == 0 and rec["social_cost_usd"]["basis"]
    meter = {"job": {"role": "meter"}, "components": [dict(comp)], "energy": {"total_kwh": 0.5}}
    launcher.mark(meter)
    assert meter["components"][0]["machine_j"] == 5.0 and meter["energy"]["total_kwh"] == 0.5


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_report_job_over_three_nodes_of_two_ranks(cli, tmp_path, kind):
    """Six ranks run at once (two per simulated node); each node's energy counts once in the job."""
    store = ["--store", server().create_db()] if kind == "postgresql" else []
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    procs = []
    for rank in range(6):
        node, local = divmod(rank, 2)
        mate = f"{barrier}/r{rank ^ 1}"
        # both ranks of a node are inside their command (past the meter election) before either ends
        wait = f"touch {barrier}/r{rank}; i=0; while [ ! -e {mate} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done"
        env = {**cli.env, "SLURM_JOB_ID": "4242", "SLURM_NODEID": str(node), "SLURM_LOCALID": str(local),
               "SLURM_PROCID": str(rank), "SLURM_NTASKS": "6", "SLURM_TASKS_PER_NODE": "2(x3)",
               "CARBONRUN_HOSTNAME": f"node-{node}", "XDG_RUNTIME_DIR": str(tmp_path)}
        procs.append(subprocess.Popen(cli.argv("--quiet", "--intensity", "200", *store, "--json",
                                               str(tmp_path / f"rank{rank}.json"), "sh", "-c", wait),
                                      env=env, cwd=tmp_path, stderr=subprocess.PIPE))
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read().decode()
    recs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(6)]
    for node in range(3):
        pair = [r for r in recs if r["job"]["node"] == f"node-{node}"]
        elected = [r for r in pair if r["job"]["role"] == "meter" and "took_over_from" not in r["job"]]
        assert len(elected) == 1, [r["job"] for r in pair]
        m = elected[0]
        p = next(r for r in pair if r is not m)
        assert f"node metered by run {m['uuid']}" in p["notes"]
        assert m["attribution"] == "machine" and m["energy"]["total_kwh"] > 0 and m["host"]["name"] == f"node-{node}"
        if p["job"]["role"] == "meter":  # it outlived the meter by a few ms and metered the node for them
            assert p["job"]["took_over_from"] == m["uuid"] and p["energy"]["total_kwh"] >= 0
            continue
        assert p["job"]["metered_by"] == m["uuid"]
        assert p["energy"]["total_kwh"] == 0 and p["emissions"]["kg"] == 0
        assert p["components"] and all(not c["counted"] and c["metered_by"] == m["uuid"] for c in p["components"])
    meters = [r for r in recs if r["job"]["role"] == "meter"]
    out = cli("report", "--job", "4242", "--format", "json", *store)
    assert out.returncode == 0, out.stderr.decode()
    agg = json.loads(out.stdout)
    assert (agg["nodes"], agg["ranks"], agg["runs"], agg["metering_runs"]) == (3, 6, 6, len(meters)), agg
    assert agg["energy"]["total_kwh"] == pytest.approx(sum(r["energy"]["total_kwh"] for r in meters))
    assert agg["emissions"]["kg"] == pytest.approx(sum(r["emissions"]["kg"] for r in meters))
    assert agg["duration_s"] == max(r["duration_s"] for r in recs) and agg["notes"] == [], agg
    table = cli("report", "--job", "4242", *store)
    assert table.returncode == 0 and "3 node(s), 6 rank(s)" in table.stdout.decode()
    assert all(f"node-{n}" in table.stdout.decode() for n in range(3))
    energy = next(line for line in table.stdout.decode().splitlines() if line.startswith("energy"))
    assert energy.split()[1].startswith("~") and len(energy.split()[1].strip("~.").lstrip("0.")) <= 3  # estimate
    missing = cli("report", "--job", "nope", *store)
    assert missing.returncode == 2 and b"no runs of job 'nope'" in missing.stderr  # like an unknown run
    assert b"SLURM_JOB_ID" in missing.stderr and len(missing.stderr.splitlines()) == 1  # one line, with a hint


def test_a_rank_that_outlives_the_nodes_meter_takes_over_and_the_job_adds_up(cli, tmp_path):
    """Two ranks on one node: the meter's command ends after ~1 s, the other's after ~3 s. The second
    continues from the first's last readings, so the job's records add up to the node's energy."""
    root = tmp_path / "powercap"
    started = tmp_path / "rank0-started"
    base = {**cli.env, "SLURM_JOB_ID": "77", "SLURM_NODEID": "0", "SLURM_NTASKS": "2", "SLURM_TASKS_PER_NODE": "2",
            "CARBONRUN_HOSTNAME": "node-0", "XDG_RUNTIME_DIR": str(tmp_path), "CARBONRUN_RAPL_ROOT": str(root)}
    with FakePowercap(root, standard_zones(wrap_seconds=600)):
        first = subprocess.Popen(cli.argv("--quiet", "--intensity", "200", "--json", str(tmp_path / "r0.json"),
                                          "sh", "-c", f"touch {started}; sleep 1"),
                                 env={**base, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"}, stderr=subprocess.PIPE)
        for _ in range(400):  # the second rank starts once the first is inside its command (it holds the lock)
            if started.exists():
                break
            time.sleep(0.01)
        second = subprocess.Popen(cli.argv("--quiet", "--intensity", "200", "--json", str(tmp_path / "r1.json"),
                                           "sleep", "3"),
                                  env={**base, "SLURM_PROCID": "1", "SLURM_LOCALID": "1"}, stderr=subprocess.PIPE)
        assert first.wait(timeout=60) == 0, first.stderr.read().decode()
        assert second.wait(timeout=60) == 0, second.stderr.read().decode()
    r0, r1 = (json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(2))
    assert r0["job"]["role"] == "meter" and r1["job"]["role"] == "meter", (r0["job"], r1["job"])
    assert r1["job"]["took_over_from"] == r0["uuid"] and r1["attribution"] == "machine"
    assert any("took over metering node node-0" in n and "no energy" in n for n in r1["notes"]), r1["notes"]
    ended = [datetime.fromisoformat(r["ended_at"]).timestamp() for r in (r0, r1)]
    node_j = 72.0 * (r0["duration_s"] + ended[1] - ended[0])  # package 65 W + dram 7 W, first start to last end
    out = cli("report", "--job", "77", "--format", "json", env={"XDG_RUNTIME_DIR": str(tmp_path)})
    assert out.returncode == 0, out.stderr.decode()
    agg = json.loads(out.stdout)
    assert agg["metering_runs"] == 2 and agg["notes"] == [], agg
    assert agg["energy"]["machine_kwh"] * 3.6e6 == pytest.approx(node_j, rel=0.01)
    assert r0["energy"]["machine_kwh"] * 3.6e6 < 0.5 * node_j  # the first rank alone misses most of it


def test_a_take_over_without_readings_left_is_a_noted_gap(tmp_path):
    from carbonrun.accounting.energy import Accountant
    from carbonrun.measure.loop import Loop
    from tests.fakes.meters import SetMeter

    lock = tmp_path / "job-9-n0.lock"
    meter = launcher.elect(lock, "uuid-meter")
    pointer = launcher.elect(lock, "uuid-pointer")
    meter.release()  # killed, in effect: no positions left beside the lock
    cpu = SetMeter("cpu")
    loop = Loop([cpu], Accountant([cpu], lambda t0, t1: 100.0, 1.0, "process"), 0.1)
    loop.begin()
    record = {"job": {"node": "n0", "role": "pointer", "metered_by": "uuid-meter"}, "uuid": "uuid-pointer"}
    assert launcher.take_over(pointer, loop, record)
    assert record["job"]["role"] == "meter" and record["job"]["gap_s"] is None
    assert any("was not metered from its meter's end" in n for n in record["base_notes"])
    cpu.joules = 50.0
    loop.tick(loop.clock())
    loop.acct.step(1.0, 0.0, loop.readings, launcher.JobView(0.0, frozenset()))
    assert loop.acct.kwh("machine") * 3.6e6 == pytest.approx(50.0) and loop.acct.attribution == "machine"
    pointer.release()
    runs = [{"uuid": "uuid-pointer", "job": {**record["job"], "job_id": "9"}, "energy": {"total_kwh": 1.0,
             "machine_kwh": 1.0}, "emissions": {"kg": 0.1, "low_kg": 0.1, "high_kg": 0.1}}]
    assert any("an unknown time not metered" in n for n in launcher.aggregate(runs, "9")["notes"])
