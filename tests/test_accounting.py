"""Attributor and Accountant in closed form: shares, carry, PUE, ranges, kg = sum(E_t x PUE x CI_t)."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from carbonrun.accounting.energy import Accountant, Attributor
from carbonrun.collectors.base import JobView
from carbonrun.units import J_PER_KWH
from tests.fakes.meters import SetMeter

PIDS = frozenset({10, 11})


def job(share: float) -> JobView:
    return JobView(share, PIDS)


# -- Attributor ----------------------------------------------------------------------------------------
def test_share_is_job_cpu_over_busy_cpu_per_step():
    a = Attributor()
    v = a.view(1.0, 4.0, PIDS, 100)
    assert v.cpu_share == 0.25 and v.cpu_s == 1.0 and v.pids == PIDS and v.rss_bytes == 100
    v = a.view(4.0, 8.0, PIDS, 100)  # this step: 3 of 4 busy seconds
    assert v.cpu_share == 0.75 and v.cpu_s == 3.0


def test_job_cpu_ahead_of_the_machine_counter_is_clipped_and_carried():
    a = Attributor()
    assert a.view(3.0, 2.0, PIDS, 0).cpu_share == 1.0  # 1 s the busy counter has not seen yet
    v = a.view(3.0, 4.0, PIDS, 0)  # no new job CPU, but the carried second lands in this step
    assert v.cpu_share == 0.5 and v.cpu_s == 0.0
    assert a.view(3.0, 6.0, PIDS, 0).cpu_share == 0.0  # carry spent


def test_idle_machine_gives_the_job_all_or_nothing():
    a = Attributor()
    assert a.view(0.0, 0.0, PIDS, 0).cpu_share == 0.0
    assert a.view(0.5, 0.0, PIDS, 0).cpu_share == 1.0
    assert a.view(0.5, 1.0, PIDS, 0).cpu_share == 0.0  # no carry out of a step with no busy time


def test_an_exited_job_keeps_its_last_pids_and_rss():
    a = Attributor()
    a.view(1.0, 2.0, PIDS, 500)
    v = a.view(1.5, 3.0, frozenset(), 0)
    assert v.pids == PIDS and v.rss_bytes == 500 and v.cpu_share == 0.5


# -- Accountant ------------------------------------------------------------------------------------------
def test_process_attribution_counts_each_meters_job_share_times_pue():
    cpu, gpu = SetMeter("cpu"), SetMeter("gpu", share=0.25)
    acct = Accountant([cpu, gpu], lambda t0, t1: 200.0, pue=1.5, attribution="process")
    acct.baseline([1000.0, 50.0])  # energy before the run is not the run's
    acct.step(1.0, 100.0, [1000.0 + 0.4 * J_PER_KWH, 50.0 + 0.8 * J_PER_KWH], job(0.5))
    assert acct.machine_j == pytest.approx([0.4 * J_PER_KWH, 0.8 * J_PER_KWH])
    assert acct.job_j == pytest.approx([0.2 * J_PER_KWH, 0.2 * J_PER_KWH])  # CPU share 0.5, GPU its own 0.25
    assert acct.kwh("machine") == pytest.approx(1.2) and acct.kwh("job") == pytest.approx(0.4)
    assert acct.total_kwh() == pytest.approx(0.4 * 1.5)
    assert acct.kg == pytest.approx(0.4 * 1.5 * 200 / 1000)
    assert acct.mean_intensity() == pytest.approx(200.0)


def test_machine_attribution_counts_the_whole_machine():
    cpu = SetMeter("cpu")
    acct = Accountant([cpu], lambda t0, t1: 100.0, pue=1.2, attribution="machine")
    acct.baseline([0.0])
    acct.step(1.0, 0.0, [J_PER_KWH], job(0.1))
    assert acct.job_j == pytest.approx([0.1 * J_PER_KWH])  # still recorded, not counted
    assert acct.total_kwh() == pytest.approx(1.2) and acct.kg == pytest.approx(0.12)


def test_estimate_ranges_scale_the_counted_energy():
    est = SetMeter("cpu", low_factor=0.5, high_factor=2.0)
    exact = SetMeter("dram")
    acct = Accountant([est, exact], lambda t0, t1: 1000.0, pue=1.0, attribution="machine")
    acct.baseline([0.0, 0.0])
    acct.step(1.0, 0.0, [J_PER_KWH, J_PER_KWH], job(1.0))
    assert acct.kg == pytest.approx(2.0)
    assert acct.kg_low == pytest.approx(0.5 + 1.0) and acct.kg_high == pytest.approx(2.0 + 1.0)


def test_an_uncounted_meter_is_shown_but_never_added():
    psys, cpu = SetMeter("psys", counted=False), SetMeter("cpu")
    acct = Accountant([psys, cpu], lambda t0, t1: 100.0, pue=1.0, attribution="machine")
    acct.baseline([0.0, 0.0])
    acct.step(2.0, 0.0, [300.0, 100.0], job(1.0))
    assert acct.machine_j == [300.0, 100.0]
    assert acct.kwh("machine") == pytest.approx(100.0 / J_PER_KWH)
    assert acct.timeline.to_record()["watts"] == {"cpu": [50.0], "psys": [150.0]}


def test_kg_integrates_energy_times_the_intensity_of_its_step():
    """A grid that goes from 100 to 400 g/kWh at wall time 10: each step is weighted by its own intensity."""
    series = lambda wall: 100.0 if wall < 10 else 400.0  # noqa: E731
    cpu = SetMeter("cpu")
    acct = Accountant([cpu], lambda t0, t1: series(t1), pue=1.1, attribution="machine")
    acct.baseline([0.0])
    energy_kwh = [1.0, 2.0, 0.5]
    walls = [5.0, 15.0, 25.0]
    total = 0.0
    for i, (e, wall) in enumerate(zip(energy_kwh, walls)):
        total += e * J_PER_KWH
        acct.step(float(i + 1), wall, [total], job(1.0))
    expected_kg = sum(e * 1.1 * series(w) / 1000 for e, w in zip(energy_kwh, walls))
    assert acct.kg == pytest.approx(expected_kg)  # 0.11 + 0.88 + 0.22
    assert acct.mean_intensity() == pytest.approx(expected_kg * 1000 / (3.5 * 1.1))  # 1.21 kg / 3.85 kWh
    assert acct.mean_intensity() != pytest.approx(250.0)  # not the time mean of the grid


def test_no_energy_before_the_first_step_means_no_mean_intensity():
    acct = Accountant([SetMeter("cpu")], lambda t0, t1: 100.0, pue=1.0, attribution="process")
    acct.baseline([5.0])
    acct.step(1.0, 0.0, [5.0], job(1.0))
    assert acct.kg == 0.0 and acct.mean_intensity() is None


@given(st.lists(st.tuples(st.integers(0, 10**6), st.floats(0, 1), st.floats(0, 900)), max_size=30),
       st.floats(1.0, 2.0))
def test_totals_are_the_sum_of_the_steps(steps, pue):
    cis = [ci for _, _, ci in steps]
    acct = Accountant([SetMeter("cpu")], lambda t0, t1: cis[int(t1)], pue=pue, attribution="process")
    acct.baseline([0.0])
    reading = 0.0
    for i, (delta, share, _) in enumerate(steps):
        reading += delta
        acct.step(float(i + 1), float(i), [reading], job(share))
    assert acct.machine_j[0] == sum(d for d, _, _ in steps)
    assert acct.job_j[0] == pytest.approx(sum(d * s for d, s, _ in steps))
    assert acct.kg == pytest.approx(sum(d * s * pue / J_PER_KWH * ci / 1000 for d, s, ci in steps), abs=1e-15)
