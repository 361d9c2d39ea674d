"""Tank charts against closed-form volumes."""

import math

import pytest

from leak_detection.tank_chart import (
    horizontal_cylinder_volume_l,
    vertical_cylinder_volume_l,
)


def test_horizontal_cylinder_empty_half_full():
    full = math.pi * 1.2**2 * 6.0 * 1000  # 2.4 m x 6 m, litres
    assert horizontal_cylinder_volume_l(0, 2400, 6000) == 0.0
    assert horizontal_cylinder_volume_l(1200, 2400, 6000) == pytest.approx(full / 2)
    assert horizontal_cylinder_volume_l(2400, 2400, 6000) == pytest.approx(full)
    # Symmetry: the segment below h and the space above D - h hold the same volume.
    assert horizontal_cylinder_volume_l(300, 2400, 6000) == pytest.approx(
        full - horizontal_cylinder_volume_l(2100, 2400, 6000))


def test_vertical_cylinder():
    assert vertical_cylinder_volume_l(1000, 2000) == pytest.approx(math.pi * 1000)
