"""Streams from a second, independent generator classified by `groundwatch leak-test`.

The generator (tests/leak_streams.py) shares no code with the evaluation harness;
its tank is given to leak-test as a calibration table. Pd and Pfa are pooled over
both fills and five delivery temperature offsets, as in the harness.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pytest

from groundwatch.cli import main
from groundwatch.leak_cli import write_stream
from leak_detection.stats import wilson_interval

sys.path.insert(0, str(Path(__file__).parent))
import leak_streams  # noqa: E402

START = datetime(2026, 4, 1, 18, 0, tzinfo=timezone.utc)
FILLS = (0.5, 0.9)
OFFSETS_F = (-10.0, -5.0, 0.0, 5.0, 10.0)


def classify(tmp: Path, target_gph: float, n_per_condition: int, seed: int,
             capsys: pytest.CaptureFixture[str]) -> dict[str, list[dict]]:
    """Write tight and leaking streams as CSV, run leak-test --json on each."""
    tank = tmp / "tank.toml"
    tank.write_text(leak_streams.tank_toml(target_gph))
    rng = np.random.default_rng(seed)
    out: dict[str, list[dict]] = {"tight": [], "leak": []}
    for fill in FILLS:
        for offset in OFFSETS_F:
            for kind, rate in (("tight", 0.0), ("leak", target_gph)):
                for i in range(n_per_condition):
                    t, level, temps = leak_streams.generate(rng, fill, offset, rate)
                    csv = tmp / f"s_{kind}_{fill}_{offset}_{i}.csv"
                    write_stream(csv, t, level, temps, START)
                    capsys.readouterr()
                    assert main(["leak-test", str(csv), "--tank", str(tank),
                                 "--json"]) == 0
                    out[kind].append(json.loads(capsys.readouterr().out))
                    csv.unlink()
    return out


@pytest.mark.parametrize(("target_gph", "n_per_condition"), [(0.1, 8), (0.2, 4)])
def test_independent_streams_meet_pd_pfa(tmp_path, capsys, target_gph, n_per_condition):
    res = classify(tmp_path, target_gph, n_per_condition, seed=int(target_gph * 1000),
                   capsys=capsys)
    n_leak, n_tight = len(res["leak"]), len(res["tight"])
    detected = sum(r["verdict"] == "fail" for r in res["leak"])
    false_alarms = sum(r["verdict"] != "pass" for r in res["tight"])
    pd, pfa = detected / n_leak, false_alarms / n_tight
    pd_lo, pd_hi = wilson_interval(detected, n_leak)
    pfa_lo, pfa_hi = wilson_interval(false_alarms, n_tight)
    # The goal is inside both 95% intervals or beaten outright, and the point
    # estimates meet it.
    assert pd >= 0.95 and pd_hi >= 0.95, (pd, pd_lo, pd_hi)
    assert pfa <= 0.05 and pfa_lo <= 0.05, (pfa, pfa_lo, pfa_hi)
    assert all(r["threshold_gph"] == pytest.approx(target_gph / 2) for r in res["tight"])


def test_leak_test_runs_as_a_process(tmp_path):
    tank = tmp_path / "tank.toml"
    tank.write_text(leak_streams.tank_toml(0.2))
    t, level, temps = leak_streams.generate(np.random.default_rng(11), 0.9, 5.0, 0.4)
    csv = tmp_path / "stream.csv"
    write_stream(csv, t, level, temps, START)
    proc = subprocess.run(
        [sys.executable, "-m", "groundwatch", "leak-test", str(csv), "--tank", str(tank),
         "--json"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    for key in ("rate_l_per_h", "rate_gph", "lower_gph", "upper_gph", "threshold_gph",
                "verdict"):
        assert key in out
    assert out["verdict"] == "fail"
    assert out["rate_l_per_h"] == pytest.approx(out["rate_gph"] * 3.785411784, rel=1e-4)
    assert out["lower_gph"] < 0.4 < out["upper_gph"] or abs(out["rate_gph"] - 0.4) < 0.08
