"""`carbonrun gate`: the statistics against reference values, and the real CLI as CI runs it.

Most end-to-end tests give the CLI a static powercap tree whose package counter only the measured
command advances (by a known number of joules): the verdicts are then exact, whatever else the
machine is doing. One test uses the CPU-time estimate itself, with effects larger than the spread
this estimate shows on a shared runner (docs/gate.md).
"""
from __future__ import annotations

import itertools
import json
import math
import sys
from pathlib import Path

import pytest

from carbonrun.gate import stats as g

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

SPEND = """
import pathlib, sys
counter, joules, spread = pathlib.Path(sys.argv[1]), float(sys.argv[2]), sys.argv[3].split(",")
seen = pathlib.Path("runs-so-far")
k = int(seen.read_text()) if seen.exists() else 0
seen.write_text(str(k + 1))
with open(counter, "r+") as f:
    uj = int(f.read().split()[0]) + round(joules * float(spread[k % len(spread)]) * 1e6)
    f.seek(0)
    f.write(f"{uj}\\n")
    f.truncate()
"""
JITTER = "1.0,1.01,0.99,1.02,0.98"  # any 5 consecutive runs see each factor once


class Rapl:
    """A static powercap tree (package-0 holding dram) whose package counter only the command moves.

    With `--attribution machine` a run's energy is then exactly what the command added: the gate's
    verdicts can be asserted without the run-to-run noise of a shared machine.
    """

    def __init__(self, home: Path) -> None:
        pkg = home / "rapl" / "intel-rapl:0"
        for zone, name in ((pkg, "package-0"), (pkg / "intel-rapl:0:0", "dram")):
            zone.mkdir(parents=True)
            (zone / "name").write_text(name + "\n")
            (zone / "energy_uj").write_text("0\n")
            (zone / "max_energy_range_uj").write_text(f"{2 ** 40}\n")
        self.counter = pkg / "energy_uj"
        self.env = {"CARBONRUN_RAPL_ROOT": str(home / "rapl"), "CARBONRUN_ATTRIBUTION": "machine"}

    def spend(self, joules: float, spread: str = JITTER) -> list:
        return [sys.executable, "-c", SPEND, str(self.counter), str(joules), spread]


def test_same_energy_passes_more_fails_less_improves(cli):
    rapl = Rapl(cli.home)
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
    assert "| baseline (b.json) | 5 | 27.778 mWh |" in md  # 100 J = 27.778 mWh
    assert "| current | 5 | 36.111 mWh |" in md and "| verdict | | **regression** |" in md

    light = cli(*gate, "--update-baseline-on-improvement", "--", *rapl.spend(70), env=rapl.env)
    assert light.returncode == 0 and "IMPROVEMENT" in err(light), err(light)
    assert "fell 30.0%" in err(light)
    refreshed = json.loads((cli.home / "b.json").read_text())
    assert round(refreshed["median"] * 3.6e6, 3) == 70


def test_noisy_command_whose_median_moves_less_than_its_noise_does_not_fail(cli):
    rapl = Rapl(cli.home)
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
    rapl = Rapl(cli.home)
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
