"""Site configuration: the example is valid; every error names its key path, exit 2."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from drivers.errors import ConfigError
from edge.config import load_config, parse_config

EXAMPLE = Path(__file__).parents[1] / "groundwatch" / "examples" / "site.toml"


def example() -> dict:
    return tomllib.loads(EXAMPLE.read_text())


def test_example_site_is_valid():
    cfg = load_config(EXAMPLE)
    assert cfg.site.id == "sz-demo-01"
    assert [d.name for _, d in cfg.devices()] == ["tank1", "cable1", "relay1", "mw1", "mw2"]
    assert cfg.maps["mw1"].ranges["conductivity_us_cm"] == (100.0, 5000.0)


def _mutate(path: list, value):
    doc = example()
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (["buses", 0, "devices", 1, "unit_id"], 300, "buses[0].devices[1].unit_id"),
        (["buses", 1, "parity"], "X", "buses[1].parity"),
        (["buses", 0, "devices", 0, "profile"], "no_such", "buses[0].devices[0].profile"),
        (["buses", 0, "devices", 2, "poll_interval_s"], -1, "poll_interval_s"),
        (["alarms", 0, "point"], "cable1.nothing", "alarms[0].point"),
        (["alarms", 2, "setpoint"], KeyError, "alarms[2]"),
        (["alarms", 0, "relays"], ["siren"], "alarms[0].relays[0]"),
        (["relays", "horn", "point"], "input_1", "relays.horn.point"),
        (["uplink", "broker_url"], "http://x", "uplink"),
        (["site", "id"], "bad id!", "site.id"),
        (["gateway", "colour"], "red", "gateway.colour"),
        (["buses", 1, "devices", 1, "points"], ["depth"], "buses[1].devices[1].points"),
    ],
)
def test_errors_name_the_key_path(path, value, expected):
    with pytest.raises(ConfigError) as err:
        parse_config(_mutate(path, value), "site.toml", EXAMPLE.parent)
    assert expected in str(err.value)


def test_a_misspelt_key_is_named_not_the_key_it_hides():
    doc = example()
    device = doc["buses"][0]["devices"][1]
    device["unitid"] = device.pop("unit_id")
    with pytest.raises(ConfigError) as err:
        parse_config(doc, "site.toml", EXAMPLE.parent)
    assert "buses[0].devices[1].unitid: unknown key" in str(err.value)


def test_cli_exits_2_with_the_key_path(tmp_path):
    bad = tmp_path / "site.toml"
    bad.write_text(EXAMPLE.read_text().replace("unit_id = 2", "unit_id = 999", 1))
    exe = shutil.which("groundwatch") or sys.executable
    cmd = [exe] if exe.endswith("groundwatch") else [exe, "-m", "groundwatch"]
    proc = subprocess.run(cmd + ["check", "--config", str(bad)], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    assert "buses[0].devices[1].unit_id" in proc.stderr
    assert proc.stderr.count("\n") == 1  # one line, no traceback
