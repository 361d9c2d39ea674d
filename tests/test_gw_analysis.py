"""Lab import, flow and tracing, and the site verdicts on the example site."""

import json
import math
from datetime import date
from pathlib import Path

import pytest

from cloud import flow, groundwater, labdata

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "gw_site"


def test_results_parse_non_detects_blanks_and_excel_dates():
    text = ("WellName,Constituent,SampleDate,Result,Units,Flags\n"
            "MW-01,BENZENE,37560,78,ug/l,\n"
            "MW-03,BENZENE,37560,ND<10,ug/l,\n"
            "MW-03,XYLENE,37656,ND<0.50,ug/l,\n"
            "MW-04,TOLUENE,37656,,ug/l,\n"
            "MW-01,GW,37560,92.23,Level,\n")
    rows = labdata.parse_results(text)
    assert len(rows) == 4  # the blank result was not sampled
    assert rows[0].sampled == date(2002, 10, 31)  # Excel 1900 system serial 37560
    assert (rows[0].value, rows[0].censored) == (78.0, False)
    assert (rows[1].value, rows[1].censored, rows[1].detection_limit) == (10, True, 10)
    assert rows[2].detection_limit == 0.5 and rows[2].sampled == date(2003, 2, 4)
    assert rows[3].is_level and not rows[0].is_level


def test_results_plain_layout_and_errors():
    rows = labdata.parse_results(
        "well,constituent,date,result,units\nA,arsenic,2024-05-01,<5,µg/L\n")
    assert rows[0].censored and rows[0].value == 5 and rows[0].unit == "µg/L"
    with pytest.raises(labdata.LabDataError, match="line 2"):
        labdata.parse_results("well,constituent,date,result\nA,As,yesterday,1\n")
    with pytest.raises(labdata.LabDataError, match="missing column"):
        labdata.parse_results("well,date,result\nA,2024-01-01,1\n")


def test_example_site_files_load():
    rows = labdata.read_results(EXAMPLE / "WellData.csv")
    wells = labdata.read_wells(EXAMPLE / "WellCoords.csv")
    assert len(wells) == 8 and all(w.unit == "metres" for w in wells)
    # 12 events x 8 wells x 3 rows, less MW-7's two unsampled TCE results.
    assert len(rows) == 12 * 8 * 3 - 2
    assert min(r.sampled for r in rows) == date(2021, 1, 15)
    assert max(r.sampled for r in rows) == date(2023, 10, 15)


def test_plane_fit_three_wells_and_least_squares():
    # Three wells, exact: head falls 1 m per 100 m to the south -> flows 180.
    f3 = flow.fit_flow([0, 100, 0], [0, 0, 100], [10, 10, 11])
    assert f3.direction_deg == pytest.approx(180.0) and f3.r2 is None
    assert f3.gradient == pytest.approx(0.01)
    # Five wells with a 1 cm misfit: least squares, R2 just below 1.
    xs, ys = [0, 100, 0, 100, 50], [0, 0, 100, 100, 50]
    hs = [10 - 0.01 * x for x in xs]
    hs[4] += 0.01
    f5 = flow.fit_flow(xs, ys, hs)
    assert f5.direction_deg == pytest.approx(90.0, abs=0.01)
    assert 0.99 < f5.r2 < 1.0
    with pytest.raises(flow.FlowError, match="3 or more"):
        flow.fit_flow([0, 1], [0, 1], [1, 2])


def test_downgradient_and_candidate_sources():
    f = flow.fit_flow([0, 100, 0], [0, 0, 100], [10, 9, 10])  # flows east (90)
    wells = {"E": (100.0, 5.0), "W": (-100.0, 0.0), "N": (0.0, 100.0)}
    facilities = {"tank": (0.0, 0.0), "pool": (200.0, 0.0)}
    down = flow.downgradient_wells(f, facilities, wells)
    assert [b.well for b in down["tank"]] == ["E"]
    assert down["pool"] == []
    sources = flow.candidate_sources(f, "E", wells, facilities)
    assert [b.facility for b in sources] == ["tank"]
    assert sources[0].off_axis_deg == pytest.approx(math.degrees(math.atan2(5, 100)))


def _example_analysis(**kwargs):
    rows = labdata.read_results(EXAMPLE / "WellData.csv")
    cfg = groundwater.SiteConfig.from_json(json.loads((EXAMPLE / "site.json")
                                                      .read_text()))
    return groundwater.analyse_site(rows, cfg, **kwargs)


def test_example_site_trends_flow_sources_and_verdicts():
    out = _example_analysis()
    classes = {(s["well"], s["constituent"]): s["trend"] for s in out["series"]}
    # As designed (README of the example): a rising well, two remediated ones.
    assert classes[("MW-3", "BENZENE")] == "Increasing"
    assert classes[("MW-2", "BENZENE")] == "Decreasing"
    assert classes[("MW-4", "TCE")] == "Decreasing"
    assert classes[("MW-1", "BENZENE")] in {"Stable", "No Trend"}
    # Heads were built on 50 - 0.004 x - 0.003 y: toward 53.13 deg, gradient 0.005.
    assert out["flow"]["direction_deg"] == pytest.approx(
        math.degrees(math.atan2(0.004, 0.003)), abs=5)
    assert out["flow"]["gradient"] == pytest.approx(0.005, rel=0.1)
    assert out["flow"]["r2"] > 0.95
    assert [s["facility"] for s in out["candidate_sources"]["MW-3"]] == ["T1"]
    verdicts = out["verdicts"]
    assert verdicts["wells"]["MW-3"]["near_term_contained"] is False
    assert verdicts["wells"]["MW-4"]["mid_term_falling"] is True
    assert verdicts["wells"]["MW-4"]["long_term_meets_target"] is False
    assert verdicts["wells"]["MW-1"]["long_term_meets_target"] is True
    assert verdicts["site"]["near_term_contained"] is False
    assert verdicts["site"]["impacted_wells"] == ["MW-2", "MW-3", "MW-4"]
    risk = out["risk"]
    assert risk["status"] == "orange"
    assert any("MW-3 BENZENE above class III" == r["reason"] for r in risk["reasons"])


def test_risk_status_rises_with_incidents_and_alarms():
    out = _example_analysis(
        quick_screens=[{"kind": "PID", "location": "T1 tube", "value": 620,
                        "unit": "ppm", "threshold": 500, "abnormal": True}],
        incidents=[{"title": "diesel spill at the loading bay", "severity": "major"}],
        active_alarms=["trench-leak"],
    )
    situations = {r["situation"] for r in out["risk"]["reasons"]}
    assert out["risk"]["status"] == "red"
    assert {"quick_screen", "incident", "leak_alarm", "monitoring_data"} <= situations
    assert out["risk"]["reasons"][0]["level"] == "red"


def test_control_chart_state_in_the_analysis():
    base = [10.0, 12.0, 11.0, 9.0, 10.5, 11.5, 9.5, 10.0]
    rows = [labdata.LabResult("W", "arsenic", date(2020 + i // 4, 1 + 3 * (i % 4), 1),
                              v, False, None, "µg/L")
            for i, v in enumerate(base + [10.0, 30.0])]
    cfg = groundwater.SiteConfig()
    series = groundwater.analyse_series("W", "arsenic", rows, cfg)
    assert series.control == "out of control"  # 30 is far above SCL = 4.5 sds
    assert series.control_detail["z"] > 4.5
    # 30 µg/L = 0.03 mg/L: above class III (0.01 mg/L), within class IV (0.05).
    assert series.latest_class == "IV"
    assert series.exceeds_target and not series.exceeds_class_iv
