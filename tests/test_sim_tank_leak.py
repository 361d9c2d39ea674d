"""The simulated tank's leak, thermal expansion and configurable quiet hours."""

from __future__ import annotations

import pytest

from drivers.errors import ConfigError
from drivers.profile import load_profile
from groundwatch.sim.models import TankModel, create_model
from leak_detection.tank_chart import horizontal_cylinder_volume_l

GAL_L = 3.785411784


def volume(model: TankModel, sim_s: float) -> float:
    return horizontal_cylinder_volume_l(model.level_mm_at(sim_s), 2400, 6000)


def test_leak_takes_its_rate_out_of_the_tank_between_refills():
    tight, leaking = TankModel(), TankModel(leak_gph=0.5)
    # Night (no dispensing): 2 a.m. to 6 a.m. of the second day.
    for a, b in ((26 * 3600.0, 30 * 3600.0), (0.0, 6 * 3600.0)):
        lost = (volume(tight, b) - volume(tight, a)) - (volume(leaking, b) -
                                                        volume(leaking, a))
        assert lost == pytest.approx(0.5 * GAL_L * (b - a) / 3600, rel=1e-4)
    # The refill on the second evening tops the loss up.
    after = 44 * 3600.0 + 1200 + 1
    assert volume(leaking, after) == pytest.approx(
        volume(tight, after) - 0.5 * GAL_L / 3600, abs=0.01)
    late = TankModel(leak_gph=0.5, leak_from_s=3 * 3600.0)
    assert late.level_mm_at(2 * 3600.0) == pytest.approx(tight.level_mm_at(2 * 3600.0))


def test_expansion_moves_the_level_with_the_temperature():
    model = TankModel(expansion=True)
    plain = TankModel()
    for sim_s in (3 * 3600.0, 16 * 3600.0, 26 * 3600.0):
        expected = volume(plain, sim_s) * (
            1 + 0.00095 * (model.temperature_c_at(sim_s) - 15.0))
        assert volume(model, sim_s) == pytest.approx(expected, rel=1e-7)


def test_dispensing_hours_leave_the_rest_of_the_day_quiet():
    model = TankModel(dispense_from_h=0.0, dispense_to_h=6.0)
    assert model.level_mm_at(0.0) > model.level_mm_at(6 * 3600.0) + 70
    assert model.level_mm_at(6 * 3600.0) == model.level_mm_at(23 * 3600.0)
    with pytest.raises(ConfigError) as exc:
        create_model("t", {"model": "tank", "dispense_from_h": 8.0,
                           "dispense_to_h": 6.0}, load_profile("tank_gauge"), "s.toml")
    assert exc.value.path == "simulation.t.dispense_from_h"
    assert create_model("t", {"model": "tank", "leak_gph": 0.5, "expansion": True},
                        load_profile("tank_gauge"), "s.toml").leak_gph == 0.5
