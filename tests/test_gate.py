"""`carbonrun gate`: the statistics against reference values, and the real CLI as CI runs it.

Most end-to-end tests give the CLI a static powercap tree whose package counter only the measured
command advances (by a known number of joules): the verdicts are then exact, whatever else the
machine is doing. One test uses the CPU-time estimate itself, with effects larger than the spread
this estimate shows on a shared runner (docs/gate.md). The A/B gate's statistics are checked against
printed signed-rank tables, enumeration and simulation (fixed seeds); `--vs-ref` runs against a real
git repository made in a temporary directory.
"""
from __future__ import annotations

import itertools
import json
import math
import random
import shlex
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from carbonrun.gate import paired as pg
from carbonrun.gate import stats as g
from carbonrun.gate.result import fmt
from tests.fakes.spending import SpendingRapl

N = 1_500_000  # about 0.15 s of CPU for CPython on a current core


def burn(factor: float = 1.0) -> list:
    return [sys.executable, "-c", f"i = 0\nwhile i < {int(N * factor)}: i += 1"]


def err(p) -> str:
    return p.stderr.decode()


# -- statistics: distributions ---------------------------------------------------------------------

@pytest.mark.parametrize("t", [-3.0, -0.4, 0.0, 0.7, 2.0, 12.0])
def test_t_sf_matches_closed_forms(t):
    # df = 1 is the Cauchy distribution; df = 2 has P(T > t) = (1 - t / sqrt(2 + t^2)) / 2.
    assert g.t_sf(t, 1) == pytest.approx(0.5 - math.atan(t) / math.pi, abs=1e-12)
    assert g.t_sf(t, 2) == pytest.approx(0.5 * (1 - t / math.sqrt(2 + t * t)), abs=1e-12)


@pytest.mark.parametrize("t, df, upper", [
    (2.015, 5, 0.05), (2.228, 10, 0.025), (2.528, 20, 0.01), (2.750, 30, 0.005), (1.697, 30, 0.05),
])
def test_t_sf_matches_printed_tables(t, df, upper):
    # Critical values as printed (three decimals) in standard t tables.
    assert g.t_sf(t, df) == pytest.approx(upper, rel=2e-3)


def _t_sf_by_integration(t: float, df: float, steps: int = 20000) -> float:
    """Simpson's rule on the t density from 0 to t: an independent check for fractional df."""
    c = math.exp(math.lgamma((df + 1) / 2) - math.lgamma(df / 2)) / math.sqrt(df * math.pi)
    f = lambda x: c * (1 + x * x / df) ** (-(df + 1) / 2)  # noqa: E731
    h = t / steps
    s = f(0) + f(t) + sum((4 if i % 2 else 2) * f(i * h) for i in range(1, steps))
    return 0.5 - s * h / 3


@pytest.mark.parametrize("t, df", [(1.897367, 5.882353), (0.5, 3.3), (3.1, 17.25)])
def test_t_sf_fractional_df_matches_integration(t, df):
    assert g.t_sf(t, df) == pytest.approx(_t_sf_by_integration(t, df), abs=1e-9)


@pytest.mark.parametrize("a, b, x", [(0.5, 0.5, 0.3), (2.5, 7.0, 0.9), (30.0, 0.5, 0.97), (3.0, 4.0, 0.2)])
def test_betainc_identities(a, b, x):
    assert g.betainc(a, 1.0, x) == pytest.approx(x ** a, rel=1e-12)
    assert g.betainc(1.0, b, x) == pytest.approx(1 - (1 - x) ** b, rel=1e-12)
    assert g.betainc(a, a, 0.5) == pytest.approx(0.5, abs=1e-12)
    assert g.betainc(a, b, x) == pytest.approx(1 - g.betainc(b, a, 1 - x), abs=1e-12)


def test_betainc_arcsine_case():
    # I_x(1/2, 1/2) = (2 / pi) asin(sqrt(x))
    for x in (0.01, 0.3, 0.5, 0.8, 0.999):
        assert g.betainc(0.5, 0.5, x) == pytest.approx(2 / math.pi * math.asin(math.sqrt(x)), abs=1e-12)


@pytest.mark.parametrize("p, z", [(0.975, 1.959964), (0.95, 1.644854), (0.8, 0.841621), (0.5, 0.0), (0.01, -2.326348)])
def test_norm_ppf(p, z):
    assert g.norm_ppf(p) == pytest.approx(z, abs=1e-6)


# -- statistics: tests -----------------------------------------------------------------------------

@pytest.mark.parametrize("m, n", [(1, 1), (2, 6), (3, 4), (5, 5), (4, 7)])
def test_u_distribution_matches_enumeration(m, n):
    brute = [0] * (m * n + 1)
    for xs in itertools.combinations(range(m + n), m):  # ranks of the x's among m + n distinct values
        ys = [r for r in range(m + n) if r not in xs]
        brute[sum(1 for x in xs for y in ys if x > y)] += 1
    assert list(g.u_counts(m, n)) == brute
    assert sum(brute) == math.comb(m + n, m)


def test_mann_whitney_exact_values():
    base = [10.0, 11.0, 12.0, 13.0, 14.0]
    above = [20.0, 21.0, 22.0, 23.0, 24.0]
    r = g.mann_whitney(base, above)
    assert r.method == "exact" and r.statistic == 25
    assert r.p_greater == pytest.approx(1 / 252) and r.p_less == 1.0
    # Tables: for n1 = n2 = 5, P(U <= 2) = 4/252 and P(U <= 3) = 7/252.
    assert g.mann_whitney(base, [9.0, 9.5, 10.5, 10.7, 9.7]).p_less == pytest.approx(4 / 252)  # U = 2
    assert g.mann_whitney(base, [9.0, 9.5, 10.5, 11.5, 9.7]).p_less == pytest.approx(7 / 252)  # U = 3


def test_mann_whitney_normal_approximation_with_ties():
    # By hand: cur beats base in 16 pairs and ties 5 -> U = 18.5; tied values 2, 3, 4 occur 3, 3 and
    # 2 times among N = 10 -> sum(t^3 - t) = 24 + 24 + 6 = 54; var = 25/12 * (11 - 54/90) = 21.6667;
    # z = (18.5 - 12.5 - 0.5) / sqrt(21.6667) = 1.181568; p = 1 - Phi(1.181568) = 0.118684.
    base = [1.0, 2.0, 2.0, 3.0, 4.0]
    cur = [2.0, 3.0, 3.0, 4.0, 5.0]
    r = g.mann_whitney(base, cur)
    assert r.method == "normal approximation" and r.statistic == 18.5
    assert r.p_greater == pytest.approx(0.118684, abs=2e-6)


def test_mann_whitney_large_samples_use_the_normal_approximation():
    base = [float(i) for i in range(30)]
    cur = [i + 0.5 for i in range(30)]
    r = g.mann_whitney(base, cur)
    # U = 465 (one more than half of 900 per step); z = (465 - 450 - 0.5) / sqrt(900 * 61 / 12)
    assert r.method == "normal approximation"
    assert r.p_greater == pytest.approx(1 - g.norm_cdf(14.5 / math.sqrt(900 * 61 / 12)), abs=1e-12)


def test_welch_by_hand():
    # means 3 and 6, variances 2.5 and 10: se^2 = 2.5/5 + 10/5 = 2.5, t = 3 / sqrt(2.5) = 1.897367,
    # df = 2.5^2 / (0.5^2/4 + 2^2/4) = 5.882353.
    r = g.welch([1.0, 2.0, 3.0, 4.0, 5.0], [2.0, 4.0, 6.0, 8.0, 10.0])
    assert r.statistic == pytest.approx(1.897367, abs=1e-6)
    assert r.df == pytest.approx(5.882353, abs=1e-6)
    assert r.p_greater == pytest.approx(_t_sf_by_integration(1.897367, 5.882353), abs=1e-6)
    assert r.p_greater + r.p_less == pytest.approx(1.0)


def test_welch_needs_two_samples_and_handles_no_spread():
    with pytest.raises(g.GateError):
        g.welch([1.0], [1.0, 2.0])
    flat = g.welch([1.0, 1.0], [2.0, 2.0])
    assert flat.p_greater == 0.0 and flat.p_less == 1.0


def test_hodges_lehmann_exact_interval():
    # Differences (12..16) - (10..14) run -2..6; the median is 2. Tables give the two-sided 5%
    # critical U = 2 for n1 = n2 = 5, so the interval is the 3rd smallest to the 3rd largest: -1..5.
    hl, ci = g.hodges_lehmann([10, 11, 12, 13, 14], [12, 13, 14, 15, 16], 0.95)
    assert hl == 2 and ci == (-1, 5)
    assert g.hodges_lehmann([1, 2], [3, 4], 0.95)[1] is None  # 2 vs 2 runs cannot reach 95%


def test_runs_needed_formula():
    # n = 2 (1.644854 + 0.841621)^2 (0.10 / 0.05)^2 = 49.46 -> 50; Mann-Whitney / (3/pi) -> 51.8 -> 52
    assert g.runs_needed(0.10, 0.05, 0.05, "welch") == 50
    assert g.runs_needed(0.10, 0.05, 0.05, "mannwhitney") == 52
    assert g.runs_needed(0.10, 0.05, 0.05, "none") is None


def test_summary_statistics():
    s = g.summarize([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s.median == 3.0 and s.iqr == 2.0 and s.mad == 1.0
    assert s.cv == pytest.approx(math.sqrt(((1 - 22) ** 2 + 20 ** 2 + 19 ** 2 + 18 ** 2 + 78 ** 2) / 4) / 22)


# -- verdict logic ---------------------------------------------------------------------------------

BASE = [100.0, 101.0, 99.0, 100.5, 99.5, 100.2]


def test_verdicts():
    up = [x * 1.3 for x in BASE]
    assert g.compare(BASE, up, 5, "mannwhitney", 0.95).verdict == "regression"
    assert g.compare(BASE, up, 5, "welch", 0.95).verdict == "regression"
    assert g.compare(BASE, [x * 0.7 for x in BASE], 5, "mannwhitney", 0.95).verdict == "improvement"
    small = g.compare(BASE, [x * 1.03 for x in BASE], 5, "mannwhitney", 0.95)
    assert small.verdict == "no change" and small.change_pct == pytest.approx(3.0)
    assert g.compare(BASE, [x * 1.03 for x in BASE], 2, "none", 0.95).verdict == "regression"


def test_a_big_median_change_inside_the_noise_is_no_change():
    base = [50.0, 150.0, 80.0, 120.0, 100.0]
    cur = [x * 1.1 for x in base]
    c = g.compare(base, cur, 5, "mannwhitney", 0.95)
    assert c.change_pct == pytest.approx(10.0) and c.verdict == "no change"
    assert c.test.p_greater > 0.2
    assert any("runs per side are needed" in w for w in c.warnings)


def test_too_few_runs_warns_that_nothing_can_be_significant():
    c = g.compare([1.0, 1.1], [2.0, 2.1], 5, "mannwhitney", 0.95)
    assert c.verdict == "no change"
    assert any("smallest possible p" in w for w in c.warnings)
    three = g.compare([1.0, 1.01, 0.99], [2.0, 2.1, 1.9], 5, "mannwhitney", 0.95)  # exact p = 1/20 = 0.05
    assert three.test.p_greater == 0.05 and three.verdict == "no change"  # 0.05 is not below alpha 0.05
    assert any("smallest possible p" in w for w in three.warnings)


def test_budgets_use_the_median_run():
    recs = [{"energy": {"total_kwh": k}, "emissions": {"kg": k / 2}} for k in (1.0, 5.0, 2.0)]
    (kwh, kg) = g.budgets(recs, 1.5, 1.5)
    assert kwh.value == 2.0 and kwh.exceeded and kg.value == 1.0 and not kg.exceeded


# -- baseline file and comparability ---------------------------------------------------------------

HOST = {"name": "runner-1", "cpu_model": "AMD EPYC", "cpu_threads": 4, "memory_gb": 16.0,
        "virtualised": True, "gpus": []}
METERS = [{"component": "cpu", "device": "cpu", "source": "estimate", "estimated": True}]


def _baseline(**kw) -> g.Baseline:
    args = dict(metric="energy", samples=[1.0, 2.0], host=g.fingerprint(HOST), meters=METERS,
                settings={"attribution": "process", "pue": 1.0}, command=["x"], carbonrun_version="0.1.0")
    args.update(kw)
    return g.Baseline(**args)


def test_baseline_round_trip(tmp_path):
    path = str(tmp_path / "b.json")
    g.write_baseline(path, _baseline())
    back = g.read_baseline(path)
    assert back.samples == [1.0, 2.0] and back.metric == "energy" and back.host == g.fingerprint(HOST)
    assert json.loads(Path(path).read_text())["median"] == 1.5


@pytest.mark.parametrize("text, says", [
    ("{not json", "not readable JSON"),
    ('{"schema": "other"}', "corrupt"),
    ('{"schema": "carbonrun.gate-baseline/1", "metric": "energy", "samples": [], "host": {}, "meters": []}',
     "samples"),
    ('{"schema": "carbonrun.gate-baseline/1", "metric": "watts", "samples": [1], "host": {}, "meters": []}',
     "metric"),
])
def test_corrupt_baselines_are_refused(tmp_path, text, says):
    (tmp_path / "b.json").write_text(text)
    with pytest.raises(g.GateError, match=says):
        g.read_baseline(str(tmp_path / "b.json"))


def test_differences():
    settings = {"attribution": "process", "pue": 1.0}
    b = _baseline()
    assert g.differences(b, {**HOST, "name": "runner-2", "memory_gb": 16.4}, METERS, settings) == []
    assert "cpu_model" in g.differences(b, {**HOST, "cpu_model": "Intel Xeon"}, METERS, settings)[0]
    assert "memory_gb" in g.differences(b, {**HOST, "memory_gb": 32.0}, METERS, settings)[0]
    rapl = [{"component": "cpu", "device": "package-0", "source": "rapl", "estimated": False}]
    assert "measured by rapl" in g.differences(b, HOST, rapl, settings)[0]
    assert "pue" in g.differences(b, HOST, METERS, {"attribution": "process", "pue": 1.5})[0]


# -- the CLI, end to end: a counter the command advances, so the energy is exact ---------------------

def test_same_energy_passes_more_fails_less_improves(cli):
    rapl = SpendingRapl(cli.home)
    gate = ["gate", "--baseline", "b.json"]
    made = cli(*gate, "--update-baseline", "--", *rapl.spend(100), env=rapl.env)
    assert made.returncode == 0 and "baseline written to b.json" in err(made), err(made)
    data = json.loads((cli.home / "b.json").read_text())
    assert sorted(round(x * 3.6e6, 3) for x in data["samples"]) == [98, 99, 100, 101, 102]
    assert data["meters"] == [
        {"component": "cpu", "device": "package-0", "source": "rapl", "estimated": False},
        {"component": "dram", "device": "dram-0", "source": "rapl", "estimated": False}]
    assert data["settings"] == {"attribution": "machine", "pue": 1.0} and "name" not in data["host"]

    same = cli(*gate, "--", *rapl.spend(100), env=rapl.env)
    assert same.returncode == 0 and "NO CHANGE" in err(same), err(same)
    assert "changed +0.0%, within ±5%" in err(same)

    summary = cli.home / "step-summary.md"
    summary.write_text("# earlier step\n")
    heavy = cli(*gate, "--json", "r.json", "--", *rapl.spend(130),
                env={**rapl.env, "GITHUB_STEP_SUMMARY": str(summary)})
    assert heavy.returncode == 1 and "REGRESSION" in err(heavy), err(heavy)
    assert "another command: argument 4 was 100, now 130" in err(heavy)
    result = json.loads((cli.home / "r.json").read_text())
    assert result["verdict"] == "regression" and result["exit_code"] == 1
    assert result["change_pct"] == pytest.approx(30.0)
    assert result["test"]["method"] == "exact" and result["test"]["p_greater"] == pytest.approx(1 / 252)
    lo, hi = result["ci_pct"]
    assert 25 < lo <= 30 <= hi < 35
    md = summary.read_text()
    assert md.startswith("# earlier step\n")  # appended, not overwritten
    assert f"| baseline (b.json) | 5 | {fmt('energy', 100 / 3.6e6)} |" in md
    assert f"| current | 5 | {fmt('energy', 130 / 3.6e6)} |" in md and "| verdict | | **regression** |" in md

    light = cli(*gate, "--update-baseline-on-improvement", "--", *rapl.spend(70), env=rapl.env)
    assert light.returncode == 0 and "IMPROVEMENT" in err(light), err(light)
    assert "fell 30.0%" in err(light)
    refreshed = json.loads((cli.home / "b.json").read_text())
    assert round(refreshed["median"] * 3.6e6, 3) == 70


def test_noisy_command_whose_median_moves_less_than_its_noise_does_not_fail(cli):
    rapl = SpendingRapl(cli.home)
    noisy = "0.5,1.5,0.8,1.2,1.0"
    cli("gate", "--baseline", "b.json", "--update-baseline", "--", *rapl.spend(100, noisy), env=rapl.env)
    p = cli("gate", "--baseline", "b.json", "--json", "r.json", "--", *rapl.spend(108, noisy), env=rapl.env)
    assert p.returncode == 0, err(p)
    assert "NO CHANGE" in err(p) and "not significantly" in err(p)  # +8% is past 5%, but inside the noise
    result = json.loads((cli.home / "r.json").read_text())
    assert result["change_pct"] == pytest.approx(8.0) and result["test"]["p_greater"] > 0.2
    assert result["runs_needed"] > 5 and "runs per side are needed" in err(p)
    assert cli("gate", "--baseline", "b.json", "--test", "none", "--", *rapl.spend(108, noisy),
               env=rapl.env).returncode == 1  # the threshold alone would have failed it


def test_against_tagged_store_runs(cli):
    rapl = SpendingRapl(cli.home)
    for _ in range(5):
        assert cli("run", "--quiet", "--tag", "branch=main", "--", *rapl.spend(100), env=rapl.env).returncode == 0
    assert cli("run", "--quiet", "--tag", "branch=dev", "--", *rapl.spend(500), env=rapl.env).returncode == 0
    p = cli("gate", "--against", "branch=main", "--against-limit", "4", "--tag", "branch=main",
            "--runs", "4", "--warmup", "0", "--json", "r.json", "--", *rapl.spend(130, "1.0,1.01,0.99,1.02"),
            env=rapl.env)
    assert p.returncode == 1, err(p)
    assert "against runs tagged branch=main" in err(p)
    result = json.loads((cli.home / "r.json").read_text())
    assert result["baseline"]["n"] == 4 and result["baseline"]["source"] == "runs tagged branch=main"
    assert 1.0 * 98 <= result["baseline"]["median"] * 3.6e6 <= 102  # the dev run (500 J) was not taken
    from carbonrun.store.sqlite import Store

    tagged = Store(cli.home / "store" / "runs.sqlite").query(tags={"gate": result["gate"]})
    assert len(tagged) == 4 and all(r["tags"]["branch"] == "main" for r in tagged)
    assert sorted(r["id"] for r in tagged) == sorted(result["current"]["runs"])
    again = cli("gate", "--against", "branch=main", "--against-limit", "4", "--runs", "4", "--warmup", "0",
                "--", *rapl.spend(130, "1.0,1.01,0.99,1.02"), env=rapl.env)
    assert again.returncode == 0 and "NO CHANGE" in err(again), err(again)  # the last 4 are the 130 J runs


# -- the CLI, end to end, with the CPU-time estimate ---------------------------------------------------

def test_cpu_burn_estimate_fails_more_work_and_reports_less(cli):
    # No counter: energy is estimated from CPU time. On a shared runner the same loop's CPU time
    # moved by up to 1.5x between minutes (docs/gate.md), so the factors here stay beyond that.
    made = cli("gate", "--baseline", "b.json", "--update-baseline", "--runs", "6", "--", *burn())
    assert made.returncode == 0, err(made)
    data = json.loads((cli.home / "b.json").read_text())
    assert all(m["estimated"] and m["source"] == "estimate" for m in data["meters"])
    heavy = cli("gate", "--baseline", "b.json", "--runs", "5", "--warmup", "0", "--", *burn(2.5))
    assert heavy.returncode == 1 and "REGRESSION" in err(heavy), err(heavy)
    light = cli("gate", "--baseline", "b.json", "--runs", "5", "--warmup", "0", "--", *burn(0.4))
    assert light.returncode == 0 and "IMPROVEMENT" in err(light), err(light)


def test_against_with_no_matching_runs_is_a_usage_error(cli):
    p = cli("gate", "--against", "branch=nowhere", "--", "true")
    assert p.returncode == 2 and "no completed runs tagged branch=nowhere" in err(p)


@pytest.mark.parametrize("argv, says", [
    (["--warmup", "0", "--", "sh", "-c", "exit 4"], "run 1/5 failed (exit 4"),
    (["--", "sh", "-c", "exit 4"], "warm-up run 1 failed (exit 4)"),
    (["--", "no-such-program-xyz"], "command not found"),
    (["--vs", "sh -c 'exit 4'", "--", "true"], "warm-up run 1 of the baseline failed (exit 4)"),
    (["--vs", "true", "--warmup", "0", "--", "no-such-program-xyz"], "command not found"),
])
def test_failing_command_exits_3(cli, argv, says):
    p = cli("gate", "--max-kwh", "1", *argv)
    assert p.returncode == 3, err(p)
    assert says in err(p) and "Traceback" not in err(p)


def test_a_later_failing_run_exits_3(cli):
    script = "import pathlib, sys; f = pathlib.Path('n'); k = len(f.read_text()) if f.exists() else 0; " \
             "f.write_text('x' * (k + 1)); sys.exit(5 if k == 2 else 0)"
    p = cli("gate", "--max-kwh", "1", "--warmup", "0", "--runs", "4", "--", sys.executable, "-c", script)
    assert p.returncode == 3 and "run 3/4 failed (exit 5" in err(p)


def test_missing_or_corrupt_baseline_exits_2_before_running(cli):
    marker = cli.home / "ran"
    cmd = ["--", "touch", str(marker)]
    p = cli("gate", "--baseline", "absent.json", *cmd)
    assert p.returncode == 2 and "absent.json not found" in err(p) and "--update-baseline" in err(p)
    (cli.home / "bad.json").write_text("{ half a file")
    p = cli("gate", "--baseline", "bad.json", *cmd)
    assert p.returncode == 2 and "bad.json is not readable JSON" in err(p)
    (cli.home / "bad.json").write_text('{"schema": "carbonrun.gate-baseline/1", "metric": "energy"}')
    p = cli("gate", "--baseline", "bad.json", *cmd)
    assert p.returncode == 2 and "corrupt" in err(p)
    assert not marker.exists()


@pytest.mark.parametrize("argv, says", [
    (["--", "true"], "nothing to gate against"),
    (["--baseline", "b.json", "--against", "a=b", "--", "true"], "not both"),
    (["--update-baseline", "--max-kwh", "1", "--", "true"], "needs --baseline"),
    (["--max-increase", "lots", "--max-kwh", "1", "--", "true"], "percentage"),
    (["--metric", "watts", "--max-kwh", "1", "--", "true"], "watts"),
    (["--test", "welch", "--runs", "1", "--max-kwh", "1", "--", "true"], "welch"),
    (["--vs", "true", "--baseline", "b.json", "--", "true"], "--baseline does not go with --vs"),
    (["--vs", "true", "--vs-ref", "HEAD", "--", "true"], "not both"),
    (["--vs", "true", "--test", "mannwhitney", "--", "true"], "paired runs use --test wilcoxon"),
    (["--vs", "true", "--runs", "6", "--max-runs", "9", "--", "true"], "not both"),
    (["--max-runs", "9", "--max-kwh", "1", "--", "true"], "needs --vs or --vs-ref"),
    (["--setup", "make", "--max-kwh", "1", "--", "true"], "goes with --vs-ref"),
    (["--metric", "auto", "--max-kwh", "1", "--", "true"], "--metric auto needs pairs"),
    (["--vs", "'unclosed", "--", "true"], "not a command line"),
])
def test_usage_errors_exit_2(cli, argv, says):
    p = cli("gate", *argv)
    assert p.returncode == 2 and says in err(p)


@pytest.fixture
def baseline(cli) -> Path:
    p = cli("gate", "--baseline", "b.json", "--update-baseline", "--runs", "2", "--warmup", "0", "--",
            sys.executable, "-c", "pass")
    assert p.returncode == 0, err(p)
    return cli.home / "b.json"


def test_baseline_from_another_machine_is_not_comparable(cli, baseline):
    data = json.loads(baseline.read_text())
    data["host"]["cpu_model"] = "Imaginary CPU 9000"
    baseline.write_text(json.dumps(data))
    p = cli("gate", "--baseline", "b.json", "--runs", "2", "--", *burn(0.1))
    assert p.returncode == 2
    assert "not comparable" in err(p) and "Imaginary CPU 9000" in err(p) and "--allow-different-host" in err(p)
    assert "run 1/" not in err(p)  # refused before running anything
    p = cli("gate", "--baseline", "b.json", "--runs", "2", "--allow-different-host", "--", *burn(0.1))
    assert p.returncode in (0, 1), err(p)
    assert "compared across machines as asked" in err(p)


def test_measured_versus_estimated_or_other_metric_is_not_comparable(cli, baseline):
    data = json.loads(baseline.read_text())
    data["meters"] = [{"component": "cpu", "device": "package-0", "source": "rapl", "estimated": False}]
    baseline.write_text(json.dumps(data))
    p = cli("gate", "--baseline", "b.json", "--", "true")
    assert p.returncode == 2 and "measured by rapl" in err(p)
    p = cli("gate", "--baseline", "b.json", "--metric", "duration", "--", "true")
    assert p.returncode == 2 and "holds energy" in err(p)


def test_budgets(cli):
    tiny = [sys.executable, "-c", "pass"]
    p = cli("gate", "--max-kwh", "1e-12", "--runs", "1", "--warmup", "0", "--summary", "s.md", "--", *tiny)
    assert p.returncode == 1 and "BUDGET EXCEEDED" in err(p)
    assert "**budget exceeded**" in (cli.home / "s.md").read_text()
    p = cli("gate", "--max-kwh", "1", "--max-kg", "1", "--runs", "1", "--warmup", "0", "--", *tiny)
    assert p.returncode == 0 and "WITHIN BUDGET" in err(p)


# -- paired statistics: the signed-rank test, Walsh averages, the sequential plan ------------------------

@pytest.mark.parametrize("n", [1, 2, 5, 8, 11])
def test_signed_rank_distribution_matches_enumeration(n):
    brute = [0] * (n * (n + 1) // 2 + 1)
    for signs in itertools.product((0, 1), repeat=n):
        brute[sum(r for r, s in zip(range(1, n + 1), signs) if s)] += 1
    assert list(pg.signed_rank_counts(n)) == brute


@pytest.mark.parametrize("n, w, p", [
    # Printed tables of the lower tail P(W+ <= w): the critical values of the one-sided 5% and 2.5% tests.
    (6, 2, 3 / 64), (8, 3, 5 / 256), (8, 5, 10 / 256), (10, 8, 25 / 1024), (10, 10, 43 / 1024), (12, 17, 0.0461),
])
def test_wilcoxon_exact_p_values_match_tables(n, w, p):
    # Ranks 1..w-ish negative: the differences 1..n with the ranks summing to w negative.
    neg = set()
    for r in range(n, 0, -1):  # greedy: a set of ranks summing to w
        if sum(neg) + r <= w:
            neg.add(r)
    assert sum(neg) == w
    d = [-float(r) if r in neg else float(r) for r in range(1, n + 1)]
    result = pg.wilcoxon([-x for x in d])  # W+ of -d is w
    assert result.method == "exact" and result.statistic == w
    assert result.p_less == pytest.approx(p, abs=5e-5)
    assert pg.wilcoxon(d).p_greater == pytest.approx(p, abs=5e-5)  # the mirror image, the other tail


def test_wilcoxon_normal_approximation_with_ties_and_zeros():
    # |d| = 1, 2, 2, 3, 4 -> ranks 1, 2.5, 2.5, 4, 5; W+ = 1 + 2.5 + 2.5 + 5 = 11; one tie of 2:
    # var = 5*6*11/24 - (8 - 2)/48 = 13.625; z = (11 - 7.5 - 0.5) / sqrt(13.625); p = 1 - Phi(z) = 0.208183.
    r = pg.wilcoxon([1.0, 2.0, 2.0, -3.0, 4.0, 0.0])  # the zero is dropped
    assert r.method == "normal approximation" and r.statistic == 11
    assert r.p_greater == pytest.approx(0.208183, abs=1e-6)
    assert pg.wilcoxon([0.0, 0.0]).p_greater == 1.0  # nothing but zeros: no evidence either way


def test_walsh_interval_is_the_set_the_test_does_not_reject():
    d = [0.31, -0.12, 0.05, 0.44, 0.27, -0.03, 0.18, 0.09, 0.52, 0.14]
    est, (lo, hi) = pg.walsh_interval(d, 0.025)
    walsh = sorted((d[i] + d[j]) / 2 for i in range(10) for j in range(i, 10))
    # Tables: n = 10, two-sided 5% critical W = 8, so the interval is the 9th smallest to the 9th largest.
    assert (lo, hi) == (walsh[8], walsh[-9]) and est == statistics.median(walsh)
    eps = 1e-9
    assert pg.wilcoxon([x - (lo - eps) for x in d]).p_greater <= 0.025  # just below: rejected
    assert pg.wilcoxon([x - (lo + eps) for x in d]).p_greater > 0.025  # just above: not
    assert pg.wilcoxon([x - (hi + eps) for x in d]).p_less <= 0.025
    assert pg.walsh_interval([0.1, 0.2, 0.3], 0.025)[1] is None  # 3 pairs cannot reach 97.5% one-sided


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1, 1, allow_nan=False), min_size=1, max_size=14), st.sampled_from([0.01, 0.025, 0.1]))
def test_signed_rank_test_and_interval_are_consistent(d, tail):
    up, down = pg.wilcoxon(d), pg.wilcoxon([-x for x in d])
    assert up.p_greater == pytest.approx(down.p_less) and up.p_less == pytest.approx(down.p_greater)
    assert 0 < up.p_greater <= 1 and up.p_greater + up.p_less >= 1 - 1e-9  # the tails overlap at W itself
    est, ci = pg.walsh_interval(d, tail)
    if ci is not None:
        assert ci[0] <= est <= ci[1]
        if ci[0] > 0 and up.method == "exact":  # the interval excludes 0 exactly when the test rejects
            assert up.p_greater <= tail


def test_paired_runs_needed_formula():
    # sd 0.1: n = ((1.644854 + 0.841621) * 0.1 / log 1.05)^2 = 25.97 -> 26; Wilcoxon / (3/pi) = 27.2 -> 28
    d = [0.0, 0.1 * math.sqrt(2)]
    assert pg.runs_needed(d, 5, 0.05, "t") == 26 and pg.runs_needed(d, 5, 0.05, "wilcoxon") == 28


def test_sequential_plan_spends_at_most_alpha():
    assert pg.sequential_plan(4, 0.05) == pg.fixed_plan(4, 0.05)  # too few pairs for an early look
    for n in (2, 6, 8, 12, 20, 30, 100):
        plan = pg.sequential_plan(n, 0.05)
        assert plan.looks[-1] == n and list(plan.looks) == sorted(set(plan.looks))
        assert sum(plan.alphas) <= 0.05 + 1e-12
        if len(plan.looks) > 1:
            assert 2.0 ** -plan.looks[0] <= plan.alphas[0]  # an early look can decide
    assert pg.sequential_plan(20, 0.05).looks == (7, 10, 15, 20)


def _sequential(rng, plan, effect, sd, threshold):
    d = []
    for n in range(1, plan.max_pairs + 1):
        d.append(rng.gauss(math.log1p(effect), sd))
        if n in plan.looks:
            k = plan.looks.index(n)
            look = pg.judge(d, threshold, plan.alphas[k], "wilcoxon", final=n == plan.max_pairs)
            if look.verdict:
                return look.verdict, n


def test_sequential_false_alarm_rate_by_simulation():
    # Identical commands, with no threshold to hide behind (0%): the stated bound is alpha = 5%.
    # Ranks and signs are all the test sees, so normal noise stands for any symmetric noise.
    rng = random.Random(20261130)
    plan = pg.sequential_plan(20, 0.05)
    verdicts = [_sequential(rng, plan, 0.0, 0.05, 0.0)[0] for _ in range(1500)]
    assert verdicts.count("regression") / len(verdicts) <= 0.05
    assert verdicts.count("improvement") / len(verdicts) <= 0.05
    # A rise of exactly the threshold: stopping early with "no change" is the other error, also <= alpha.
    early = [_sequential(rng, plan, 0.05, 0.05, 5.0) for _ in range(1500)]
    assert sum(1 for v, n in early if v == "no change" and n < 20) / len(early) <= 0.05


def test_sequential_clear_cases_stop_at_the_first_look():
    rng = random.Random(7)
    plan = pg.sequential_plan(20, 0.05)
    assert all(_sequential(rng, plan, 0.15, 0.03, 5.0) == ("regression", 7) for _ in range(50))
    assert all(_sequential(rng, plan, 0.0, 0.01, 5.0) == ("no change", 7) for _ in range(50))


def test_metric_choice_takes_the_tightest_paired_spread():
    base = [1.0, 1.0, 1.0]
    choice = pg.choose_metric({"energy": (base, [1.1, 0.9, 1.2]), "cpu-energy": (base, [1.02, 0.99, 1.01]),
                               "cpu-time": (base, [0.0, 1.0, 1.0])})
    assert choice.chosen == "cpu-energy" and choice.spreads["cpu-time"] is None
    assert choice.spreads["cpu-energy"] == pytest.approx(math.sqrt((math.log(1.02) ** 2 + math.log(0.99) ** 2
                                                                     + math.log(1.01) ** 2) / 3))
    # Too coarse: CPU seconds are kept in milliseconds, so 50 ms runs would move in 2% steps.
    assert not pg.usable("cpu-time", [0.05, 0.2], [0.2, 0.2]) and pg.usable("cpu-time", [0.2], [0.2])
    assert pg.usable("energy", [1e-9], [2e-9])  # kWh are not rounded
    # Signs are ignored: flipping a pair's ratio changes no spread, so the choice cannot favour a verdict.
    flipped = pg.choose_metric({"energy": (base, [1 / 1.1, 0.9, 1.2]), "cpu-energy": (base, [1.02, 1 / 0.99, 1.01])})
    assert flipped.spreads["energy"] == pytest.approx(choice.spreads["energy"])


# -- A/B gates, end to end: both commands in this job, in pairs ----------------------------------------

DISTINCT = "1.0,1.011,0.989,1.021,0.979,1.005,0.995,1.016,0.984,1.008,0.992,1.013,0.987,1.003,0.997,1.019,0.981"


def test_vs_pairs_the_commands_in_seeded_order_and_fails_more_work(cli):
    rapl = SpendingRapl(cli.home)
    p = cli("gate", "--vs", shlex.join(rapl.spend(100, "1.0")), "--runs", "6", "--warmup", "0", "--seed", "7",
            "--metric", "energy", "--tag", "branch=dev", "--json", "r.json", "--summary", "s.md", "--",
            *rapl.spend(130, DISTINCT), env=rapl.env)
    assert p.returncode == 1 and "REGRESSION" in err(p), err(p)
    assert "the paired energy ratio rose" in err(p) and "--seed 7 repeats it" in err(p)
    result = json.loads((cli.home / "r.json").read_text())
    rng = random.Random(7)
    assert result["design"] == "paired" and result["pairs"]["n"] == 6
    assert result["pairs"]["order"] == ["bc" if rng.random() < 0.5 else "cb" for _ in range(6)]
    assert result["test"]["name"] == "Wilcoxon signed-rank" and result["test"]["method"] == "exact"
    assert result["test"]["p_greater"] == pytest.approx(1 / 64)  # six rises out of six
    assert 27 < result["change_pct"] < 33 and result["ci_level"] == pytest.approx(0.95)
    assert result["metric_choice"]["chosen"] == "energy" and result["metric_choice"]["auto"] is False
    assert result["baseline"]["median"] * 3.6e6 == pytest.approx(100)
    assert "Pairs: 6, each in random order" in (cli.home / "s.md").read_text()
    from carbonrun.store.sqlite import Store

    runs = Store(cli.home / "store" / "runs.sqlite").query(tags={"gate": result["gate"]})
    sides = sorted((r["tags"]["gate-side"], r["tags"].get("branch")) for r in runs)
    assert sides == [("baseline", None)] * 6 + [("current", "dev")] * 6  # --tag goes on the current runs
    assert sorted(result["baseline"]["runs"] + result["current"]["runs"]) == sorted(r["id"] for r in runs)


def test_sequential_gate_stops_as_soon_as_decided(cli):
    rapl = SpendingRapl(cli.home)
    heavy = cli("gate", "--vs", shlex.join(rapl.spend(100, "1.0")), "--max-runs", "12", "--warmup", "0",
                "--metric", "energy", "--json", "r.json", "--", *rapl.spend(130, DISTINCT), env=rapl.env)
    assert heavy.returncode == 1, err(heavy)
    result = json.loads((cli.home / "r.json").read_text())
    seq = result["pairs"]["sequential"]
    assert result["pairs"]["n"] == 7 and seq["looks"] == [7, 10, 12] and seq["stopped_early"]
    assert sum(seq["alphas"]) == pytest.approx(0.05) and "decided after 7 of at most 12 pairs" in err(heavy)
    same = cli("gate", "--vs", shlex.join(rapl.spend(100, "1.0")), "--max-runs", "12", "--warmup", "0",
               "--json", "r.json", "--", *rapl.spend(100, "1.0"), env=rapl.env)
    assert same.returncode == 0 and "NO CHANGE" in err(same), err(same)
    result = json.loads((cli.home / "r.json").read_text())
    assert result["pairs"]["n"] == 7  # the interval already excludes ±5%
    choice = result["metric_choice"]  # auto, by default: energy does not move at all here
    assert choice["auto"] and choice["chosen"] == "energy" and choice["spread_pct"]["energy"] == 0
    assert "energy: tightest paired spread in this job" in err(same)


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          check=True, capture_output=True, text=True).stdout


BENCH = """
import os, pathlib, sys
JOULES = {joules}
if not pathlib.Path("built").exists():
    sys.exit("not built")
with open(os.environ["COUNTER"], "r+") as f:
    uj = int(f.read().split()[0]) + JOULES * 10 ** 6
    f.seek(0)
    f.write(f"{{uj}}\\n")
    f.truncate()
"""


@pytest.fixture
def repo(cli) -> Path:
    """A git repository whose committed bench spends 100 J; the working tree's spends 130 J."""
    root = cli.home / "repo"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "bench.py").write_text(BENCH.format(joules=100))
    (root / ".gitignore").write_text("built\n")
    _git(root, "init", "-q")
    _git(root, "add", ".")
    _git(root, "commit", "-q", "-m", "bench")
    (root / "sub" / "bench.py").write_text(BENCH.format(joules=130))
    (root / "sub" / "built").write_text("")
    (cli.home / "tmp").mkdir(exist_ok=True)
    return root


def test_vs_ref_measures_the_committed_version_in_a_worktree_and_removes_it(cli, repo):
    rapl = SpendingRapl(cli.home)
    env = {**rapl.env, "COUNTER": str(rapl.counter), "TMPDIR": str(cli.home / "tmp")}
    p = cli("gate", "--vs-ref", "HEAD", "--setup", "touch built", "--runs", "5", "--metric", "energy",
            "--json", str(cli.home / "r.json"), "--", sys.executable, "bench.py", env=env, cwd=repo / "sub")
    assert p.returncode == 1 and "REGRESSION" in err(p), err(p)
    result = json.loads((cli.home / "r.json").read_text())
    head = _git(repo, "rev-parse", "HEAD").strip()
    assert result["pairs"]["ref"] == "HEAD" and result["pairs"]["commit"] == head
    assert result["baseline"]["median"] * 3.6e6 == pytest.approx(100)  # the committed bench, set up by --setup
    assert result["current"]["median"] * 3.6e6 == pytest.approx(130)
    assert _git(repo, "worktree", "list").count("\n") == 1 and not any((cli.home / "tmp").iterdir())

    failed = cli("gate", "--vs-ref", "HEAD", "--setup", "exit 5", "--", sys.executable, "bench.py", env=env,
                 cwd=repo / "sub")
    assert failed.returncode == 3 and "--setup failed in the worktree of HEAD (exit 5)" in err(failed)
    assert _git(repo, "worktree", "list").count("\n") == 1 and not any((cli.home / "tmp").iterdir())
    unbuilt = cli("gate", "--vs-ref", "HEAD", "--warmup", "0", "--", sys.executable, "bench.py", env=env,
                  cwd=repo / "sub")
    assert unbuilt.returncode == 3 and "(baseline) failed (exit 1" in err(unbuilt), err(unbuilt)
    assert not any((cli.home / "tmp").iterdir())


@pytest.mark.parametrize("ref, where, says", [
    ("no-such-branch", "repo", "--vs-ref no-such-branch: no such commit, branch or tag"),
    ("HEAD", "home", "is not inside a git repository"),
])
def test_vs_ref_that_cannot_be_checked_out_is_a_usage_error(cli, repo, ref, where, says):
    p = cli("gate", "--vs-ref", ref, "--", "true", cwd=repo if where == "repo" else cli.home)
    assert p.returncode == 2 and says in err(p) and "Traceback" not in err(p)


def test_an_interrupted_vs_ref_gate_still_removes_its_worktree(cli, repo):
    (repo / "sub" / "slow.py").write_text("import os, pathlib, time\n"
                                         "pathlib.Path(os.environ['MARK']).write_text('started')\ntime.sleep(30)\n")
    _git(repo, "add", "sub/slow.py")
    _git(repo, "commit", "-q", "-m", "slow")
    mark = cli.home / "started"
    env = {**cli.env, "MARK": str(mark), "TMPDIR": str(cli.home / "tmp")}
    p = subprocess.Popen(cli.argv("gate", "--vs-ref", "HEAD", "--warmup", "0", "--", sys.executable, "slow.py"),
                         env=env, cwd=repo / "sub", stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while not mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert mark.exists()
        p.send_signal(signal.SIGTERM)
        _, stderr = p.communicate(timeout=20)
    finally:
        p.kill()
    assert p.returncode == 130 and "interrupted during pair 1/5" in stderr.decode(), stderr.decode()
    assert _git(repo, "worktree", "list").count("\n") == 1 and not any((cli.home / "tmp").iterdir())
