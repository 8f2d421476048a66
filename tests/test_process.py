"""The job's CPU time: the live /proc tree, children reaped between samples, orphans."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from carbonrun.collectors.process import BusyClock, ProcessTree

SPAWNER = textwrap.dedent("""
    import os, resource, subprocess, sys, time
    burn = "import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.02: pass"
    for i in range(int(sys.argv[1])):
        subprocess.run([sys.executable, "-S", "-c", burn])
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    total = s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime
    open(sys.argv[2], "w").write(str(total))
    time.sleep(0.5)  # stay alive so the tree can be sampled after the last child was reaped
""")


def test_tree_counts_children_that_came_and_went(tmp_path):
    truth_file = tmp_path / "truth"
    p = subprocess.Popen([sys.executable, "-c", SPAWNER, "60", str(truth_file)])
    tree = ProcessTree(p.pid)
    seen_pids = set()
    while not truth_file.exists() or not truth_file.read_text():
        seen_pids |= tree.sample().pids
        time.sleep(0.1)
    time.sleep(0.1)
    sample = tree.sample()
    p.wait()
    truth = float(truth_file.read_text())
    # 60 children x 20 ms each: most started and exited between two 0.1 s samples.
    assert truth > 60 * 0.02
    assert abs(sample.job_cpu_s - truth) <= 0.02 * truth + 0.02, (sample.job_cpu_s, truth)
    assert len(seen_pids) < 61  # proof that many children were never seen alive


def test_job_cpu_never_decreases_and_busy_advances():
    burn = "import time\nt=time.process_time()\nwhile time.process_time()-t<0.5: pass"
    p = subprocess.Popen([sys.executable, "-c", burn])
    tree = ProcessTree(p.pid)
    values = []
    while p.poll() is None:
        values.append(tree.sample().job_cpu_s)
        time.sleep(0.05)
    assert values == sorted(values)
    assert values[-1] > 0.2
    assert values[-1] <= tree.sample().busy_cpu_s + 0.05  # the job's time is part of the machine's
    assert BusyClock().read() > 0


def test_finish_takes_the_kernels_final_figure():
    tree = ProcessTree(999_999_999)  # no such process: nothing live to read
    tree.add_reaped(0.5)
    tree.finish(1.25)
    assert tree.job_cpu_s == 1.75
    assert tree.sample().job_cpu_s == 1.75


MANY = textwrap.dedent("""
    import subprocess, sys, time
    sleepers = [subprocess.Popen(["sleep", "30"]) for _ in range(int(sys.argv[1]))]
    time.sleep(0.6)  # the tree is seen and moves into its cgroup
    burn = "import time\\nt=time.process_time()\\nwhile time.process_time()-t<0.05: pass"
    for _ in range(10):
        subprocess.run([sys.executable, "-S", "-c", burn])  # born in the cgroup, come and go
    for p in sleepers:
        p.kill()
        p.wait()
    import resource
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    open(sys.argv[2], "w").write(str(s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime))
    time.sleep(0.3)
""")


def test_a_large_tree_moves_into_a_cgroup_and_is_counted_in_one_read(tmp_path):
    truth_file = tmp_path / "truth"
    p = subprocess.Popen([sys.executable, "-c", MANY, "20", str(truth_file)])
    tree = ProcessTree(p.pid, discover_every=1, use_cgroup=True, cgroup_from=16)
    while not truth_file.exists() or not truth_file.read_text():
        sample = tree.sample()
        time.sleep(0.05)
    sample = tree.sample()
    if tree.cgroup is None:
        p.kill()
        pytest.skip("no writable cgroup v2 here (the /proc walk serves alone)")
    path = tree.cgroup.path
    assert open(f"/proc/{p.pid}/cgroup").read().strip().endswith(path[len(tree.cgroup.home):])
    truth = float(truth_file.read_text())
    assert truth > 0.5  # ten children of 50 ms each, all born after the move
    assert abs(sample.job_cpu_s - truth) <= 0.03 * truth + 0.03, (sample.job_cpu_s, truth)
    assert p.pid in sample.pids and sample.rss_bytes > 0
    p.wait()
    tree.close()
    assert not os.path.exists(path)  # removed once the job is done


def test_a_small_tree_never_touches_cgroups():
    p = subprocess.Popen(["sleep", "0.5"])
    tree = ProcessTree(p.pid, discover_every=1, use_cgroup=True, cgroup_from=16)
    before = open(f"/proc/{p.pid}/cgroup").read()
    for _ in range(3):
        tree.sample()
    assert tree.cgroup is None and open(f"/proc/{p.pid}/cgroup").read() == before
    p.wait()
    tree.close()


def test_cgroup_close_hands_leftover_daemons_home():
    from carbonrun.collectors.process import JobCgroup

    cg = JobCgroup.create()
    if cg is None:
        pytest.skip("no writable cgroup v2 here")
    p = subprocess.Popen(["sleep", "30"])
    try:
        assert cg.adopt([p.pid]) and cg.pids() == [p.pid]
        cg.close()
        assert not os.path.exists(cg.path)
        assert cg.path[len(cg.home):] not in open(f"/proc/{p.pid}/cgroup").read()
    finally:
        p.kill()
        p.wait()


def test_cgroup_can_be_turned_off(monkeypatch):
    from carbonrun.collectors.process import JobCgroup

    monkeypatch.setenv("CARBONRUN_CGROUP", "off")
    assert JobCgroup.create() is None


def test_a_killed_carbonruns_empty_cgroup_is_removed_by_the_next_one():
    from carbonrun.collectors.process import JobCgroup

    cg = JobCgroup.create()
    if cg is None:
        pytest.skip("no writable cgroup v2 here")
    dead = subprocess.Popen(["true"])
    dead.wait()  # a pid that no longer exists, as a SIGKILLed carbonrun's
    stale = f"{cg.home}/carbonrun-{dead.pid}"
    os.mkdir(stale)
    cg.close()
    again = JobCgroup.create()
    assert again is not None and not os.path.exists(stale)
    again.close()
