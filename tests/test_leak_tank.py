"""Tank charts over arrays, calibration tables, thermistor weights, compensation."""

import math

import numpy as np
import pytest

from leak_detection.tank import (
    Product,
    TankChart,
    average_temperature_c,
    compensated_volume_l,
    thermistor_weights,
    us_gal,
)
from leak_detection.tank_chart import horizontal_cylinder_volume_l


def test_horizontal_chart_matches_the_scalar_chart_and_inverts():
    chart = TankChart("horizontal_cylinder", 2400, 6000)
    levels = np.array([0.0, 1.0, 300.0, 1200.0, 2100.0, 2400.0, 2600.0])
    expected = [horizontal_cylinder_volume_l(h, 2400, 6000) for h in levels]
    assert chart.volume_l(levels) == pytest.approx(expected)
    assert chart.volume_l(1200.0) == pytest.approx(math.pi * 1.2**2 * 6 * 1000 / 2)
    back = chart.level_mm(chart.volume_l(levels[1:-1]))
    assert back == pytest.approx(levels[1:-1], abs=0.2)


def test_vertical_cylinder_and_gallons():
    chart = TankChart("vertical_cylinder", 2000)
    assert chart.volume_l(1000.0) == pytest.approx(math.pi * 1000)
    assert chart.level_mm(math.pi * 1000) == pytest.approx(1000.0)
    assert us_gal(3.785411784) == pytest.approx(1.0)


def test_calibration_table_interpolates_and_is_checked():
    chart = TankChart("table", table_level_mm=(0, 100, 200), table_volume_l=(0, 50, 150))
    assert chart.volume_l([50, 150, 250]) == pytest.approx([25, 100, 150])
    assert chart.level_mm(100.0) == pytest.approx(150.0, abs=0.02)
    with pytest.raises(ValueError):
        TankChart("table", table_level_mm=(0, 200, 100), table_volume_l=(0, 1, 2))
    with pytest.raises(ValueError):
        TankChart("sphere", 1000)


def test_weights_give_the_volume_average_of_a_linear_profile():
    # Upright cylinder, thermistors at 100..900 mm, level 1000 mm: a profile linear
    # in height between the thermistors, constant beyond them.
    chart = TankChart("vertical_cylinder", 1000)
    heights = [100.0, 300.0, 500.0, 700.0, 900.0, 1200.0]
    w = thermistor_weights(chart, heights, 1000.0, slices=2000)
    assert w[-1] == 0.0  # above the product
    assert w.sum() == pytest.approx(1.0)
    temps = np.array([10.0, 12.0, 14.0, 16.0, 18.0, 99.0])
    z = np.linspace(0, 1000, 100001)
    profile = np.interp(z, heights[:-1], temps[:-1])
    assert float(temps @ w) == pytest.approx(profile.mean(), abs=1e-3)


def test_weights_follow_the_horizontal_cylinder_shape():
    # The middle of a horizontal cylinder holds more product per mm than its bottom.
    chart = TankChart("horizontal_cylinder", 2400, 6000)
    w = thermistor_weights(chart, [200.0, 1200.0, 2200.0], 2399.0)
    assert w[1] > w[0] and w[0] == pytest.approx(w[2], rel=1e-2)
    assert thermistor_weights(chart, [200.0, 1200.0], 100.0).tolist() == [1.0, 0.0]


def test_compensation_removes_thermal_expansion():
    gasoline = Product("gasoline", 0.00095, 15.0)
    temps = np.array([[15.0, 15.0], [25.0, 25.0]])
    avg = average_temperature_c(temps, np.array([0.5, 0.5]))
    warm = 10000 * (1 + 0.00095 * 10)
    out = compensated_volume_l(np.array([10000.0, warm]), avg, gasoline)
    assert out[0] == 10000.0
    # First-order compensation: exact up to (beta dT)^2.
    assert out[1] == pytest.approx(10000.0, abs=10000 * (0.00095 * 10) ** 2 * 1.01)
