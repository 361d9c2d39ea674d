"""`groundwatch trend` and `groundwatch flow` on CSV files, in and out of process."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from groundwatch.cli import main

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "gw_site"

# Unified Guidance (USEPA 2009) example 17-7, sodium (ppm) against 2-digit years.
SODIUM = [(89.6, 56), (90.1, 53), (90.8, 51), (91.1, 55), (92.1, 52), (93.1, 60),
          (94.1, 62), (95.6, 59), (96.1, 61), (96.3, 63)]


def _sodium_csv(tmp_path: Path) -> Path:
    path = tmp_path / "sodium.csv"
    lines = ["well,constituent,date,result,units"]
    lines += [f"W-1,sodium,{t},{v},ppm" for t, v in SODIUM]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_trend_cli_reproduces_the_sodium_example(tmp_path, capsys):
    path = _sodium_csv(tmp_path)
    assert main(["trend", str(path), "--decimal-years", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["s"], out["var_s"]) == (10, 25, 125.0)
    assert out["z"] == pytest.approx(2.1466, abs=1e-4)
    assert out["p"] == pytest.approx(0.0318, abs=1e-4)
    assert out["sen_slope"] == pytest.approx(1.3333, abs=1e-4)
    assert out["sen_ci"] == pytest.approx([0.3992083, 2.3333333], abs=1e-6)
    assert out["trend"] == "Increasing"


def test_trend_cli_as_a_process(tmp_path):
    path = _sodium_csv(tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "groundwatch", "trend", str(path), "--well", "W-1",
         "--constituent", "sodium", "--decimal-years"],
        capture_output=True, text=True, timeout=60, check=True)
    assert "Increasing" in proc.stdout
    assert "S = 25, Var(S) = 125, z = 2.1466, p = 0.0318" in proc.stdout
    assert "Sen slope = 1.3333 ppm/yr" in proc.stdout


def test_trend_cli_on_the_example_site(capsys):
    assert main(["trend", str(EXAMPLE / "WellData.csv"), "--well", "MW-3",
                 "--constituent", "BENZENE", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # Six non-detects (<1 µg/L) then six rising detects: 6*6 + 15 pairs up, ND ties.
    assert out["n"] == 12 and out["n_censored"] == 6
    assert out["s"] == 36 + 15
    assert out["trend"] == "Increasing" and out["sen_slope"] > 0


def test_trend_cli_needs_a_well_when_there_are_several(capsys):
    assert main(["trend", str(EXAMPLE / "WellData.csv")]) == 1
    assert "choose one with --well" in capsys.readouterr().err


def test_flow_cli(tmp_path, capsys):
    # Heads on the plane 20 - 0.01 x + 0.01 y: downhill is toward (0.01, -0.01),
    # south-east, azimuth 135 degrees, gradient 0.01 * sqrt(2).
    path = tmp_path / "heads.csv"
    wells = [("A", 0, 0), ("B", 100, 0), ("C", 0, 100), ("D", 100, 100), ("E", 50, 20)]
    rows = [f"{w},{x},{y},{20 - 0.01 * x + 0.01 * y}" for w, x, y in wells]
    path.write_text("well,x,y,head\n" + "\n".join(rows) + "\n")
    assert main(["flow", str(path), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["direction_deg"] == pytest.approx(135.0)
    assert out["gradient"] == pytest.approx(0.01 * math.sqrt(2))
    assert out["r2"] == pytest.approx(1.0)
    assert main(["flow", str(path)]) == 0
    assert "flows toward 135.0 deg from north" in capsys.readouterr().out


def test_flow_cli_collinear_wells_fail_with_one_line(tmp_path, capsys):
    path = tmp_path / "heads.csv"
    path.write_text("well,x,y,head\nA,0,0,10\nB,50,50,9.5\nC,100,100,9\n")
    assert main(["flow", str(path)]) == 1
    err = capsys.readouterr().err
    assert "collinear" in err and len(err.strip().splitlines()) == 1


def test_flow_cli_on_the_shipped_heads_file(capsys):
    heads = Path(__file__).parents[1] / "groundwatch" / "examples" / "heads.csv"
    assert main(["flow", str(heads), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    # The file's heads lie on 50 - 0.004 x - 0.003 y: water runs down the gradient,
    # toward +x (east) and +y (north) in the ratio 4 : 3.
    assert out["direction_deg"] == pytest.approx(math.degrees(math.atan2(0.004, 0.003)),
                                                 abs=0.01)
    assert out["gradient"] == pytest.approx(0.005, rel=1e-3) and out["r2"] > 0.999
