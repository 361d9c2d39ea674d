"""Static leak test: quiet periods, the rate and its interval, verdicts, continuous
test and sudden loss, on streams built here with known rates."""

import numpy as np
import pytest

from leak_detection.static_test import (
    SuddenLossDetector,
    LeakTestSettings,
    continuous_test,
    leak_test,
    movements,
    quiet_windows,
    rate_fit,
)
from leak_detection.tank import L_PER_US_GAL, Product, Tank, TankChart

# Upright tank, 1 m^2: 1 mm of level is 1 L.
TANK = Tank(TankChart("vertical_cylinder", 2000 / np.sqrt(np.pi)), Product("diesel", 0.00083),
            (100.0, 500.0, 900.0))


def quiet_stream(rng, hours, rate_l_h, sample_s=10.0, noise_mm=0.01, level_mm=1000.0):
    t = np.arange(0, hours * 3600, sample_s)
    level = level_mm - rate_l_h * t / 3600 + noise_mm * rng.standard_normal(len(t))
    temps = np.full((len(t), 3), 15.0)
    return t, level, temps


def test_rate_of_a_known_leak_with_its_interval():
    rng = np.random.default_rng(1)
    rate_l_h = 0.2 * L_PER_US_GAL
    t, level, temps = quiet_stream(rng, 2, rate_l_h)
    res = leak_test(t, level, temps, TANK, LeakTestSettings(target_gph=0.2))
    assert res.rate_gph == pytest.approx(0.2, abs=0.005)
    assert res.lower_gph < 0.2 < res.upper_gph
    assert res.verdict == "fail" and res.threshold_gph == pytest.approx(0.1)


def test_tight_tank_passes_and_thermal_expansion_is_compensated():
    rng = np.random.default_rng(2)
    t, level, temps = quiet_stream(rng, 2, 0.0)
    # Product cooling 0.1 °C/h: the level falls as if leaking 0.083 L/h per 1000 L.
    cooling = 15.0 - 0.1 * t / 3600
    temps = np.repeat(cooling[:, None], 3, axis=1)
    level = 1000.0 * (1 + 0.00083 * (cooling - 15.0)) + 0.01 * rng.standard_normal(len(t))
    res = leak_test(t, level, temps, TANK, LeakTestSettings(target_gph=0.2))
    assert res.verdict == "pass"
    assert abs(res.rate_gph) < 0.01
    assert res.thermal_rate_l_per_h == pytest.approx(0.083, abs=0.005)


def test_interval_widens_with_correlated_noise():
    # AR(1) noise with rho = 0.9: the interval must cover the true rate about 95% of
    # the time, which an independent-noise interval would not.
    rng = np.random.default_rng(3)
    covered = 0
    trials = 200
    for _ in range(trials):
        n = 720
        e = rng.standard_normal(n) * 0.05
        ar = np.empty(n)
        acc = 0.0
        for i in range(n):
            acc = 0.9 * acc + e[i]
            ar[i] = acc
        t = np.arange(n) * 10.0
        rate, lo, hi, n_eff, r1 = rate_fit(t, 1000 - 0.5 * t / 3600 + ar, 0.95)
        covered += lo <= 0.5 <= hi
        assert 0.8 < r1 < 0.97 and n_eff < n / 5
    assert 0.89 <= covered / trials <= 0.99


def test_movements_and_settling():
    rng = np.random.default_rng(4)
    t, level, temps = quiet_stream(rng, 14, 0.0)
    # Dispensing 40 L over 5 minutes at 1 h, a 2000 L delivery at 3 h.
    level -= np.clip((t - 3600) / 300, 0, 1) * 40
    level += np.clip((t - 3 * 3600) / 900, 0, 1) * 2000
    settings = LeakTestSettings(max_test_s=7200)
    moves = movements(t, level, settings)
    assert [m[2] for m in moves] == ["dispensing", "delivery"]
    assert moves[0][0] == pytest.approx(3600, abs=180)
    assert moves[1][1] == pytest.approx(3 * 3600 + 900, abs=180)
    windows = quiet_windows(t, level, settings)
    # Before the dispensing: too short; between: cut by the delivery 1.5 h after the
    # dispensing settles; after the delivery: 8 h of settling, then a 2 h test.
    assert [w.after for w in windows] == ["dispensing", "delivery"]
    assert windows[1].start_s == pytest.approx(moves[1][1] + 8 * 3600)
    assert windows[1].end_s - windows[1].start_s == pytest.approx(7200)
    res = leak_test(t, level, temps, TANK, settings)
    assert res.start_s == pytest.approx(windows[0].start_s)


def test_no_quiet_period_is_inconclusive():
    rng = np.random.default_rng(5)
    t, level, temps = quiet_stream(rng, 0.5, 0.0)
    res = leak_test(t, level, temps, TANK, LeakTestSettings())
    assert res.verdict == "inconclusive" and "no settled quiet period" in res.reason
    not_settled = leak_test(t, level, temps, TANK, LeakTestSettings(settled_at_start=False))
    assert not_settled.verdict == "inconclusive"


def test_noisy_data_is_inconclusive_not_pass():
    rng = np.random.default_rng(6)
    t, level, temps = quiet_stream(rng, 1.2, 0.0, sample_s=60, noise_mm=3.0)
    res = leak_test(t, level, temps, TANK, LeakTestSettings(target_gph=0.1, event_l=50))
    assert res.upper_gph > 0.1
    assert res.verdict in ("inconclusive", "fail")


def test_continuous_test_accumulates_quiet_periods():
    rng = np.random.default_rng(7)
    periods = []
    for _ in range(12):
        t, level, temps = quiet_stream(rng, 2, 0.2 * L_PER_US_GAL, noise_mm=0.05)
        periods.append(leak_test(t, level, temps, TANK, LeakTestSettings(target_gph=0.2)))
    res = continuous_test(periods, target_gph=0.2)
    assert res.verdict == "fail" and res.n_periods == 12 and res.quiet_h == pytest.approx(24, abs=0.1)
    assert res.lower_gph < 0.2 < res.upper_gph
    few = continuous_test(periods[:2], target_gph=0.2)
    assert few.verdict == "inconclusive"


def test_sudden_loss_alarms_within_minutes_and_not_on_drift():
    det = SuddenLossDetector(threshold_l=20.0, window_s=600)
    v = 10000.0
    started = None
    for i in range(3600):
        # 0.5 L/h drift for 30 min, then a 300 L/h leak.
        v -= (0.5 if i < 1800 else 300.0) / 3600
        if det.update(float(i), v, quiet=True) is True:
            started = i
    assert started is not None and 1800 < started < 1800 + 300
    idle = SuddenLossDetector(threshold_l=20.0)
    assert all(idle.update(float(i), 10000.0 - i, quiet=False) is None
               for i in range(600))


def layered_stream(rng, layer_tau_h, hours=20.0, sample_s=30.0):
    """A delivery at 0 h leaves a cold bottom layer around the lowest thermistor
    whose excess passes into the column: the thermistors' rates disagree."""
    t = np.arange(-3600.0, hours * 3600, sample_s)
    th = np.maximum(t, 0) / 3600
    noise = 0.005 * rng.standard_normal(len(t))
    level = 1000.0 + np.clip((t + 900) / 900, 0, 1) * 400 + noise
    excess = -3.0 * np.exp(-th / layer_tau_h) * (t >= 0)
    temps = np.column_stack([15 + excess, 15 - excess / 10, 15 - excess / 10])
    return t, level, np.round(temps / 0.0556) * 0.0556


def test_wait_after_a_delivery_lengthens_while_thermistors_disagree():
    rng = np.random.default_rng(8)
    settings = LeakTestSettings(target_gph=0.2)
    quick = leak_test(*layered_stream(rng, 1.0), TANK, settings)
    # A layer relaxing in 1 h is settled by the fixed 8 h wait.
    assert quick.verdict == "pass"
    assert quick.start_s == pytest.approx(8 * 3600, abs=600)
    # One relaxing in 6 h still moves 3 °C / 6 h * exp(-8/6) = 0.13 °C/h at 8 h
    # (above the 0.07 °C/h rule): the test waits until the rates agree.
    slow = leak_test(*layered_stream(rng, 6.0), TANK, settings)
    expected_h = 6.0 * np.log(3.0 / 6.0 / 0.07)  # rate falls to the limit: 8.7 h
    assert slow.verdict == "pass"
    assert expected_h < slow.start_s / 3600 < expected_h + 2.5 + 0.5
    # A stream that ends before the layer settles is inconclusive, saying why.
    short = leak_test(*layered_stream(rng, 12.0, hours=12.0), TANK, settings)
    assert short.verdict == "inconclusive" and "not settled" in short.reason

