"""`groundwatch demo` runs the whole site and exits 0 only when data flowed."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.hil


@pytest.mark.parametrize("broker", ["embedded", "mosquitto"])
def test_demo_short_run_flows_end_to_end(tmp_path, broker):
    work = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "groundwatch", "demo", "--duration", "25",
         "--workdir", str(work), "--broker", broker],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "data flowed end to end" in proc.stdout
    summary = json.loads(proc.stdout[proc.stdout.index("{"): proc.stdout.rindex("}") + 1])
    synced = summary["devices_with_synced_readings"]
    assert set(synced) == {"tank1", "cable1", "relay1", "mw1", "mw2"}
    assert all(n > 0 for n in synced.values())
    # The leak is scripted at a third of the run: the alarm went through to the cloud.
    assert summary["alarms_raised"] == ["trench-leak"]
    assert summary["readings_synced"] <= summary["readings_stored_at_gateway"]
    assert (work / "site.toml").exists() and (work / "gateway" / "gateway.sqlite").exists()
