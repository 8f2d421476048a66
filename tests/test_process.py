"""The job's CPU time: the live /proc tree, children reaped between samples, orphans."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time

from carbonrun.collectors.process import ProcessTree, read_busy_cpu_s

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
    p = subprocess.Popen([sys.executable, "-c", "import time\nt=time.time()\nwhile time.time()-t<0.5: pass"])
    tree = ProcessTree(p.pid)
    values = []
    while p.poll() is None:
        values.append(tree.sample().job_cpu_s)
        time.sleep(0.05)
    assert values == sorted(values)
    assert values[-1] > 0.2
    assert read_busy_cpu_s() > 0


def test_finish_takes_the_kernels_final_figure():
    tree = ProcessTree(999_999_999)  # no such process: nothing live to read
    tree.add_reaped(0.5)
    tree.finish(1.25)
    assert tree.job_cpu_s == 1.75
    assert tree.sample().job_cpu_s == 1.75
