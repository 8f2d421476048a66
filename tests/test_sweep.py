"""`carbonrun sweep`: the real CLI in a subprocess against the stub NVML library, plus the core's pure parts.

The stub caps each GPU's power at the limit in force (its `state` file keeps limit changes across
processes), so with a profile above every swept limit a run's GPU energy is limit x time, known exactly
(`--attribution machine`: the whole GPUs, whatever the job's share of them).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Dict, List

import pytest

from carbonrun.sweep import core
from carbonrun.store.sqlite import Store

from tests.fakes.stubnvml import run_python

# Sleeps 0.1 s + 30000 / limit ms (+ 0.3 s when SLOW=1): 0.3 s at 150 W, 0.2 s at 300 W. sh starts in
# milliseconds, so the durations barely depend on how busy the machine is.
MODEL = ('ms=$((100 + 30000 / {power_limit} + 300 * ${SLOW:-0})); '
         'sleep "$((ms / 1000)).$(printf %03d $((ms % 1000)))"')


def gpu(limit_w: int, **extra: object) -> Dict[str, object]:
    """A stub GPU drawing 400 W unless capped, owned by carbonrun's child, range 100-400 W."""
    return {"power": 400000, "limit": limit_w * 1000, "limit_min": 100000, "limit_max": 400000,
            "procs": "children:1000000", **extra}


def limits_now(stubnvml, config: Path, n: int) -> List[int]:
    """The limits (mW) in force now, asked through NVML in a fresh process."""
    out = run_python(
        "import json; from carbonrun.collectors import nvml\n"
        f"print(json.dumps({{'mw': [nvml.get_power_limit(i) for i in range({n})]}}))",
        stubnvml.env(config))
    return out["mw"]


def state_changes(config: Path) -> List[List[float]]:
    """Every limit change the stub recorded: [gpu, time, mW]."""
    path = config.parent / "stubnvml.state"
    if not path.exists():
        return []
    return [[float(x) for x in line.split()] for line in path.read_text().splitlines()]


def runs(cli, **tags: str) -> List[dict]:
    """Stored runs with these tags, oldest first."""
    path = cli.home / "store" / "runs.sqlite"
    return list(reversed(Store(path).query(tags=tags))) if path.exists() else []


def sweep_state(cli) -> Path:
    return cli.home / "store" / "sweep-limits.json"


def wait_for(path: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def popen(cli, *args: str, env: dict, **kw) -> subprocess.Popen:
    return subprocess.Popen(cli.argv(*args), env={**cli.env, **env}, cwd=cli.home, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, **kw)


# ---------------------------------------------------------------- end to end, with the stub


def test_limits_grid_energy_pareto_and_restore(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(350), gpu(300)])
    out_json, out_html = tmp_path / "sweep.json", tmp_path / "sweep.html"
    p = cli("sweep", "--power-limit", "150,300", "--param", "SLOW=0,1", "--energy", "gpu", "--objective",
            "energy", "--attribution", "machine", "--json", str(out_json), "--html", str(out_html),
            "--", "sh", "-c", MODEL, env=stubnvml.overlay(config))
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "SLOW = 0, 1: set as environment variable SLOW" in err
    data = json.loads(out_json.read_text())
    pts = data["points"]
    assert [(q["power_limit_w"], q["params"]["SLOW"]) for q in pts] == [(150, "0"), (150, "1"), (300, "0"),
                                                                        (300, "1")]
    assert all(q["status"] == "completed" and q["n"] == 1 for q in pts)
    for q in pts:  # two GPUs, each capped at the limit: energy = 2 x limit x time
        assert q["gpu_energy_j"] == pytest.approx(2 * q["power_limit_w"] * q["time_s"], rel=0.05), q
        assert q["edp_js"] == pytest.approx(q["gpu_energy_j"] * q["time_s"])
        assert q["power_w"] == pytest.approx(q["gpu_energy_j"] / q["time_s"])
    assert pts[2]["time_s"] < pts[0]["time_s"] < pts[3]["time_s"] < pts[1]["time_s"]
    assert [q["pareto"] for q in pts] == [True, False, True, False]
    assert data["recommended"] == 0 and pts[0]["recommended"]
    assert data["max_power_w"] == 800
    assert "Pareto-optimal" in err and "150 W, SLOW=0; 300 W, SLOW=0" in err
    assert "recommended for --objective energy: 150 W, SLOW=0" in err
    # each run stored, tagged with the sweep, the limit and the parameter
    stored = runs(cli, sweep=data["sweep"])
    assert [(r["tags"]["power_limit"], r["tags"]["SLOW"]) for r in stored] == [("150", "0"), ("150", "1"),
                                                                               ("300", "0"), ("300", "1")]
    assert [r["id"] for r in stored] == [q["runs"][0]["id"] for q in pts]
    # the limits were really set (each once), then put back
    changes = [(int(g), int(mw)) for g, _, mw in state_changes(config)]
    assert changes[2:] == [(0, 150000), (1, 150000), (0, 300000), (1, 300000), (0, 350000), (1, 300000)]
    assert limits_now(stubnvml, config, 2) == [350000, 300000]
    assert not sweep_state(cli).exists()
    page = out_html.read_text()
    assert page.startswith("<!DOCTYPE html>") and "<polyline" in page and "150 W, SLOW=1" in page


def test_failed_command_is_recorded_and_limits_restored(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(250)])
    env = stubnvml.overlay(config)
    p = cli("sweep", "--power-limit", "150,200", "--json", str(tmp_path / "a.json"), "--", "sh", "-c", "exit 3",
            env=env)
    assert p.returncode == 3, p.stderr.decode()
    pts = json.loads((tmp_path / "a.json").read_text())["points"]
    assert [q["status"] for q in pts] == ["failed", "failed"]  # went on after the first failure
    assert [q["runs"][0]["exit_code"] for q in pts] == [3, 3]
    assert "no recommendation" in p.stderr.decode()
    assert limits_now(stubnvml, config, 1) == [250000]
    p = cli("sweep", "--power-limit", "150,200", "--stop-on-failure", "--", "sh", "-c", "exit 3", env=env)
    assert p.returncode == 3
    assert "stopped early" in p.stderr.decode()
    assert len(runs(cli)) == 3  # 2 + 1: the second sweep stopped at its first failure
    assert limits_now(stubnvml, config, 1) == [250000]
    assert not sweep_state(cli).exists()


def test_sigint_mid_sweep_stops_and_restores(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(320), gpu(280)])
    proc = popen(cli, "sweep", "--power-limit", "150,200,250", "--", "sh", "-c",
                 f"touch {tmp_path}/started-{{power_limit}}; exec sleep 30", env=stubnvml.overlay(config))
    wait_for(tmp_path / "started-150")
    assert limits_now(stubnvml, config, 2) == [150000, 150000]  # in force during the run
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err.decode()
    assert "interrupted (SIGINT)" in err.decode()
    assert not (tmp_path / "started-200").exists()
    stored = runs(cli)
    assert len(stored) == 1 and stored[0]["status"] == "interrupted"
    assert limits_now(stubnvml, config, 2) == [320000, 280000]
    assert not sweep_state(cli).exists()


def test_sigkill_leaves_state_that_restore_puts_back(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(330)])
    env = stubnvml.overlay(config)
    proc = popen(cli, "sweep", "--power-limit", "180,200", "--", "sh", "-c",
                 f"touch {tmp_path}/started; exec sleep 30", env=env, start_new_session=True)
    wait_for(tmp_path / "started")
    os.killpg(proc.pid, signal.SIGKILL)  # carbonrun and its child: no finally, no atexit
    proc.communicate(timeout=30)
    assert limits_now(stubnvml, config, 1) == [180000]
    assert json.loads(sweep_state(cli).read_text())["gpus"][0]["limit_mw"] == 330000
    p = cli("sweep", "--power-limit", "150", "--", "true", env=env)
    assert p.returncode == 2 and b"carbonrun sweep --restore" in p.stderr
    assert len(runs(cli)) == 1  # the refused sweep ran nothing
    p = cli("sweep", "--restore", env=env)
    assert p.returncode == 0, p.stderr.decode()
    assert b"gpu0 back to 330 W" in p.stderr
    assert limits_now(stubnvml, config, 1) == [330000]
    assert not sweep_state(cli).exists()
    p = cli("sweep", "--restore", env=env)
    assert p.returncode == 0 and b"nothing to restore" in p.stderr


def test_no_permission_is_refused_before_any_run(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(300), gpu(300, set_error=4)])
    p = cli("sweep", "--power-limit", "150,200", "--", "touch", str(tmp_path / "ran"),
            env=stubnvml.overlay(config))
    err = p.stderr.decode()
    assert p.returncode == 2, err
    assert "no permission to change GPU power limits" in err and "gpu1" in err and "root" in err
    assert "Traceback" not in err
    assert not (tmp_path / "ran").exists() and runs(cli) == []
    assert all(mw == 300000 for _, _, mw in state_changes(config))  # at most set to itself by the probe
    assert not sweep_state(cli).exists()


def test_refusals_are_usage_errors(stubnvml, cli, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(300, limit_min=120000, limit_max=350000)])
    env = stubnvml.overlay(config)
    ran = tmp_path / "ran"
    p = cli("sweep", "--power-limit", "100,200,400", "--", "touch", str(ran), env=env)
    assert p.returncode == 2
    assert b"100 W is outside gpu0's range 120 W to 350 W" in p.stderr and b"400 W" in p.stderr
    for args, words in [
        (["--power-limit", "150,abc"], b"'abc' is not a number"),
        (["--param", "2X=a,b"], b"not NAME=VALUE"),
        (["--param", "N=1,,2"], b"empty value"),
        (["--param", "N=1", "--objective", "eta=2"], b"eta must be a number from 0 to 1"),
        ([], b"nothing to sweep"),
        (["--power-limit", "200", "--gpus", "none"], b"--gpus none"),
    ]:
        p = cli("sweep", *args, "--", "touch", str(ran), env=env)
        assert p.returncode == 2 and words in p.stderr, (args, p.stderr)
    p = cli("sweep", "--power-limit", "200", "--", "touch", str(ran))  # no NVML library at all
    assert p.returncode == 2 and b"needs an NVIDIA GPU" in p.stderr and b"--param alone" in p.stderr
    p = cli("sweep", "--param", "N=1,2", "--energy", "gpu", "--", "touch", str(ran))  # refused before any run
    assert p.returncode == 2 and b"--energy gpu needs an NVIDIA GPU" in p.stderr, p.stderr
    assert len(p.stderr.splitlines()) == 1 and b"[1/2]" not in p.stderr
    assert not ran.exists() and runs(cli) == [] and state_changes(config) == []


def test_param_sweep_without_gpu(cli, tmp_path):
    log = tmp_path / "log"
    p = cli("sweep", "--param", "N=1,2", "--param", "M=a,b", "--repeat", "2", "--objective", "eta=0.5",
            "--json", str(tmp_path / "s.json"), "--", "sh", "-c", f'echo "{{N}} $M" >> {log}')
    err = p.stderr.decode()
    assert p.returncode == 0, err
    assert "N = 1, 2: replaces {N} in the command" in err
    assert "M = a, b: set as environment variable M" in err
    rows = [line.split() for line in err.splitlines() if " completed " in line and not line.startswith("[")]
    energies = [r[r.index("J") - 1] for r in rows]  # the table's energy column: its first figure in J
    assert len(energies) == 4 and all(e.startswith("~") for e in energies), err  # estimated, marked
    assert all(len(e.strip("~").replace(".", "").lstrip("0")) <= 2 for e in energies), err  # at 2 digits
    assert "~ estimated" in err
    assert log.read_text().split("\n")[:-1] == ["1 a", "1 a", "1 b", "1 b", "2 a", "2 a", "2 b", "2 b"]
    data = json.loads((tmp_path / "s.json").read_text())
    assert [q["n"] for q in data["points"]] == [2, 2, 2, 2]
    assert data["gpus"] == [] and data["max_power_basis"].startswith("the highest average power")
    assert sum(q["recommended"] for q in data["points"]) == 1 and any(q["pareto"] for q in data["points"])
    stored = runs(cli, sweep=data["sweep"])
    assert len(stored) == 8 and "power_limit" not in stored[0]["tags"]
    assert [(r["tags"]["N"], r["tags"]["M"]) for r in stored[::2]] == [("1", "a"), ("1", "b"), ("2", "a"),
                                                                      ("2", "b")]


# ---------------------------------------------------------------- the core on synthetic points


def point(e: float, t: float, status: str = "completed", limit: float = 100.0, **params: str) -> core.Point:
    p = core.Point(limit, dict(params))
    p.runs.append(core.RunResult(1, status, 0 if status == "completed" else 1, t, e, e))
    return p


def test_pareto_front():
    pairs = [(10.0, 5.0), (8.0, 6.0), (12.0, 4.0), (11.0, 5.5), (8.0, 6.0), None, (20.0, 4.0)]
    # (11, 5.5) is beaten by (10, 5); (20, 4) by (12, 4); equal points do not beat each other
    assert core.pareto(pairs) == [True, True, True, False, True, False, False]
    assert core.pareto([]) == []


def test_objectives_and_recommendation():
    pts = [point(100, 10, limit=150), point(150, 5, limit=250), point(260, 3, limit=300),
           point(90, 12, status="failed", limit=100)]
    expect = {"energy": 0, "time": 2, "edp": 1}  # EDP: 1000, 750, 780
    for text, best in expect.items():
        assert core.analyse(pts, core.Objective.parse(text), "job", None) == best
        assert [p.recommended for p in pts] == [i == best for i in range(4)]
    # eta: 0.5 x E + 0.5 x 40 W x t -> 300, 175, 190: 250 W; eta=1 is energy, eta=0 is time
    obj = core.Objective.parse("eta=0.5")
    assert obj.cost(100, 10, 40) == pytest.approx(0.5 * 100 + 0.5 * 40 * 10)
    assert core.analyse(pts, obj, "job", 40) == 1 and pts[1].cost == pytest.approx(175)
    assert core.analyse(pts, core.Objective.parse("eta=1"), "job", 40) == 0
    assert core.analyse(pts, core.Objective.parse("eta=0"), "job", 40) == 2
    assert [p.pareto for p in pts] == [True, True, True, False]  # the failed point is never a candidate
    assert pts[3].cost is None
    for bad in ("speed", "eta=1.5", "eta=x", "eta="):
        with pytest.raises(ValueError):
            core.Objective.parse(bad)


def test_repeats_use_medians():
    p = core.Point(None, {})
    for t, e in [(1.0, 100.0), (9.0, 50.0), (2.0, 400.0)]:
        p.runs.append(core.RunResult(None, "completed", 0, t, e, None))
    assert (p.time_s, p.energy_j, p.gpu_j) == (2.0, 100.0, None)
    assert p.edp("job") == 200.0 and p.power_w("job") == 50.0
    p.runs.append(core.RunResult(None, "failed", 1, 1.0, 1.0, None))
    assert p.status == "failed" and not p.ok


def test_si_figures_never_use_exponents():
    assert core.si(9.3e-05, "J*s") == "93.0 \u00b5J*s" and core.si(0.00593, "J*s") == "5.93 mJ*s"
    assert core.si(2.03, "W") == "2.03 W" and core.si(1234.5, "W") == "1.23 kW" and core.si(999.9, "W") == "1.00 kW"
    assert core.si(0.0, "W") == "0 W"
    assert all("e" not in core.si(10.0 ** -k, "s").split()[0] for k in range(15))


def test_parsing_binding_and_placeholders():
    assert core.parse_limits("150, 200,187.5") == [150.0, 200.0, 187.5]
    for bad in ("150,150", "0", "-5", "x", ""):
        with pytest.raises(ValueError):
            core.parse_limits(bad)
    for bad in ("sweep=1,2", "power_limit=1", "N=", "N=a,a", "=1"):
        with pytest.raises(ValueError):
            core.parse_knob(bad)
    knobs = core.bind_knobs([core.parse_knob("BS=32,64"), core.parse_knob("OMP=2")],
                            ["train", "--bs={BS}", "{power_limit}W", "{OMP_X}"])
    assert [(k.name, k.passed_as) for k in knobs] == [("BS", "placeholder"), ("OMP", "env")]
    grid = core.plan([200.0, 187.5], knobs)
    assert [g.label for g in grid] == ["200 W, BS=32, OMP=2", "200 W, BS=64, OMP=2",
                                       "187.5 W, BS=32, OMP=2", "187.5 W, BS=64, OMP=2"]
    argv, env = core.command_for(["train", "--bs={BS}", "{power_limit}W", "{OMP_X}"], grid[3], knobs)
    assert argv == ["train", "--bs=64", "187.5W", "{OMP_X}"] and env == {"OMP": "2"}
    with pytest.raises(ValueError):
        core.bind_knobs([core.parse_knob("A=1"), core.parse_knob("A=2")], [])


def test_render_svg_is_self_contained_and_escaped():
    pts = [point(100, 10, limit=150), point(150, 5, limit=250), point(300, 12, limit=300, NAME="<script>&'")]
    core.analyse(pts, core.Objective("edp"), "job", None)
    svg = core.render_svg([p.to_json("job") for p in pts])
    root = ET.fromstring(svg)  # well-formed XML
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    assert "<script" not in svg and "&lt;script&gt;" in svg
    assert "href" not in svg and "http" not in svg.replace('xmlns="http://www.w3.org/2000/svg"', "")
    (front,) = root.iter(ns + "polyline")
    assert len(front.get("points").split()) == 2  # through the two Pareto points only
    assert len([c for c in root.iter(ns + "circle") if c.get("r") == "5"]) == 3
    assert len([c for c in root.iter(ns + "circle") if c.get("r") == "9"]) == 1  # the recommended one
    assert "no completed point" in core.render_svg([])


def test_crash_restores_through_atexit(stubnvml, tmp_path):
    config = stubnvml.config(tmp_path, [gpu(310)])
    state = tmp_path / "sweep-limits.json"
    code = f"""
import json, sys
from pathlib import Path
from carbonrun.sweep import core
from carbonrun.collectors import nvml
guard = core.LimitGuard(core.read_limits([{{"index": 0}}]), Path({str(state)!r}), "t")
guard.arm()
guard.apply(150)
print(json.dumps({{"during": nvml.get_power_limit(0), "state": Path({str(state)!r}).exists()}}), flush=True)
raise RuntimeError("a bug mid-sweep")  # no finally here: only the atexit hook can restore
"""
    p = subprocess.run([sys.executable, "-c", code], env=stubnvml.env(config), capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1 and "a bug mid-sweep" in p.stderr
    assert json.loads(p.stdout) == {"during": 150000, "state": True}
    assert limits_now(stubnvml, config, 1) == [310000]
    assert not state.exists()


def test_signal_between_runs_is_taken_as_pending():
    code = """
import json, os, signal
from carbonrun.measure.session import block_signals
from carbonrun.sweep.core import pending_interrupt
block_signals()
os.kill(os.getpid(), signal.SIGTERM)
print(json.dumps({"first": pending_interrupt(), "second": pending_interrupt()}))
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=str(Path(__file__).resolve().parents[1]))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"first": signal.SIGTERM, "second": None}
