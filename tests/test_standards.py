"""Standards tables: GB/T 14848-2017 classes and GB 36600-2018 class-2 soil values."""

import pytest

from cloud import standards

# Class III / IV limits as DOMAIN.md section 1 states them (metals mg/L, organics µg/L).
GB14848_III_IV = {
    "ammonia_n": (0.50, 1.50, "mg/L"), "cr6": (0.05, 0.10, "mg/L"),
    "pb": (0.01, 0.10, "mg/L"), "cd": (0.005, 0.01, "mg/L"), "as": (0.01, 0.05, "mg/L"),
    "ni": (0.02, 0.10, "mg/L"), "hg": (0.001, 0.002, "mg/L"),
    "benzene": (10, 120, "µg/L"), "toluene": (700, 1400, "µg/L"),
    "ethylbenzene": (300, 600, "µg/L"), "xylenes": (500, 1000, "µg/L"),
    "chloroform": (60, 300, "µg/L"), "tce": (70, 210, "µg/L"),
    "pce": (40, 300, "µg/L"), "dca_1_2": (30, 40, "µg/L"),
    "vinyl_chloride": (5, 90, "µg/L"), "tds": (1000, 2000, "mg/L"),
}

GB36600_CLASS2 = {
    "as": (60, 140), "cd": (65, 172), "cr6": (5.7, 78), "pb": (800, 2500),
    "hg": (38, 82), "ni": (900, 2000), "benzene": (4, 40), "toluene": (1200, 1200),
    "ethylbenzene": (28, 280), "tce": (2.8, 20), "pce": (53, 183),
    "dca_1_2": (5, 21), "vinyl_chloride": (0.43, 4.3), "tph_c10_c40": (4500, 9000),
}


@pytest.mark.parametrize("pid", sorted(GB14848_III_IV))
def test_groundwater_class_iii_iv_limits(pid):
    iii, iv, unit = GB14848_III_IV[pid]
    row = standards.groundwater_table()[pid]
    assert row.unit == unit
    assert (row.limit("III"), row.limit("IV")) == (iii, iv)
    assert row.limits == tuple(sorted(row.limits))  # classes only get looser
    # On the limit is still the class; just above it is the next; above IV is V.
    assert row.classify(iii, unit) == "III"
    assert row.classify(iii * 1.001, unit) == "IV"
    assert row.classify(iv * 1.001, unit) == "V"


def test_units_convert_between_mg_and_ug_per_litre():
    assert standards.convert(1.0, "mg/L", "µg/L") == pytest.approx(1000.0)
    assert standards.convert(250.0, "ug/l", "mg/L") == pytest.approx(0.25)
    assert standards.convert(5.0, "ppb", "µg/L") == pytest.approx(5.0)
    benzene = standards.groundwater_limit("BENZENE")
    assert benzene is not None
    assert benzene.limit("III", "mg/L") == pytest.approx(0.010)
    # 0.011 mg/L benzene is 11 µg/L: above class III (10 µg/L).
    assert benzene.classify(0.011, "mg/L") == "IV"
    arsenic = standards.groundwater_limit("Arsenic")
    assert arsenic is not None
    assert arsenic.classify(9.0, "µg/L") == "III"  # 0.009 mg/L
    assert arsenic.classify(60.0, "µg/L") == "V"  # 0.06 mg/L > 0.05
    with pytest.raises(standards.UnitError):
        standards.convert(1.0, "mg/L", "mg/kg")


def test_ph_classes_are_ranges():
    ph = standards.groundwater_limit("pH")
    assert ph is not None
    assert ph.classify(7.2, "pH") in {"I", "II", "III"}
    assert ph.classify(6.0, "pH") == "IV" and ph.classify(8.8, "pH") == "IV"
    assert ph.classify(5.0, "pH") == "V" and ph.classify(9.5, "pH") == "V"


@pytest.mark.parametrize("pid", sorted(GB36600_CLASS2))
def test_soil_class2_values(pid):
    screening, intervention = GB36600_CLASS2[pid]
    row = standards.soil_table()[pid]
    assert (row.unit, row.screening, row.intervention) == ("mg/kg", screening,
                                                           intervention)
    assert row.assess(screening, "mg/kg") == "below screening"
    if intervention > screening:
        assert row.assess(screening * 1.01, "mg/kg") == "above screening"
    assert row.assess(intervention * 1.01, "mg/kg") == "above intervention"
    assert row.assess(screening * 1000 * 0.5, "µg/kg") == "below screening"


def test_aliases_find_rows():
    assert standards.parameter_id("XYLENE") == "xylenes"
    assert standards.parameter_id("Trichloroethylene") == "tce"
    assert standards.parameter_id("Chromium (VI)") == "cr6"
    assert standards.parameter_id("苯") == "benzene"
    assert standards.parameter_id("conductivity") is None  # not in GB/T 14848
    assert standards.groundwater_limit("petroleum hydrocarbons") is None
    assert standards.soil_limit("TPH") is not None
