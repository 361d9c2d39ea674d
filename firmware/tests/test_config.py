"""Configuration: defaults in the code, a JSON file overrides key by key."""

import json

from node import config

PATH = "/tmp/groundwatch_node_test.json"


def write(data):
    with open(PATH, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))


def test_no_file_means_the_defaults():
    cfg, problems = config.load("/nonexistent/node.json")
    assert problems == []
    assert cfg["unit_id"] == 10 and cfg["debounce_ms"] == 100
    assert cfg["local_alarms"] == [{"relay": 0, "di": 0}]


def test_a_file_overrides_what_it_names():
    write({"unit_id": 3, "debounce_ms": 250, "host": {"uart": "/dev/pts/9"}})
    cfg, problems = config.load(PATH)
    assert problems == []
    assert cfg["unit_id"] == 3 and cfg["debounce_ms"] == 250
    assert cfg["heartbeat_ms"] == 1000
    # an object overrides only its own keys
    assert cfg["host"]["uart"] == "/dev/pts/9"
    assert cfg["host"]["inputs"] == "host_inputs.json"


def test_bad_and_unknown_keys_keep_their_defaults_and_are_reported():
    write({"unit_id": 900, "parity": "X", "colour": 1, "baudrate": 19200,
           "uart": {"id": 1, "speed": 3}})
    cfg, problems = config.load(PATH)
    assert cfg["unit_id"] == 10 and cfg["parity"] == "N" and cfg["baudrate"] == 19200
    assert cfg["uart"]["id"] == 0
    assert len(problems) == 4, problems
    text = " ".join(problems)
    assert "unit_id" in text and "parity" in text and "colour" in text
    assert "speed" in text


def test_rules_are_checked_against_the_configured_inputs():
    write({"relays": [{"pin": 3}], "local_alarms": [{"relay": 1, "di": 0}]})
    cfg, problems = config.load(PATH)
    assert cfg["local_alarms"] == [{"relay": 0, "di": 0}]
    assert len(problems) == 1 and "relay" in problems[0]
    write({"ai": [], "local_alarms": [{"relay": 0, "ai": 0, "above_ma": 18}]})
    cfg, problems = config.load(PATH)
    assert len(problems) == 1 and "ai" in problems[0]
    write({"local_alarms": [{"relay": 0, "ai": 0}]})
    assert "above_ma" in config.load(PATH)[1][0]


def test_the_default_rule_goes_if_its_input_does():
    write({"di": []})
    cfg, problems = config.load(PATH)
    assert problems == [] and cfg["local_alarms"] == []


def test_broken_json_is_reported_and_the_defaults_run():
    write("{not json")
    cfg, problems = config.load(PATH)
    assert cfg["unit_id"] == 10
    assert len(problems) == 1 and "JSON" in problems[0]
