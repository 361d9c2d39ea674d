"""Node configuration: defaults here, overridden by a JSON file on the board."""

import json

MAX_DI = 8
MAX_AI = 4
MAX_RELAYS = 4
MAX_RULES = 8
FILE = "node.json"

# Wiring of a Raspberry Pi Pico (RP2040) node; docs in firmware/README.md.
DEFAULTS = {
    "unit_id": 10,
    "baudrate": 9600,
    "parity": "N",
    "uart": {"id": 0, "tx": 0, "rx": 1, "de": 2},
    "sample_ms": 10,
    "debounce_ms": 100,
    "heartbeat_ms": 1000,
    "watchdog_ms": 5000,
    "di": [{"pin": 6, "pull": "up", "invert": True},
           {"pin": 7, "pull": "up", "invert": True},
           {"pin": 8, "pull": "up", "invert": True},
           {"pin": 9, "pull": "up", "invert": True}],
    "ai": [{"pin": 26, "shunt_ohms": 150.0, "vref_mv": 3300},
           {"pin": 27, "shunt_ohms": 150.0, "vref_mv": 3300}],
    "relays": [{"pin": 14, "active_high": True}, {"pin": 15, "active_high": True}],
    "local_alarms": [{"relay": 0, "di": 0}],
    # Only the host implementation (MicroPython unix port) reads these.
    "host": {"uart": None, "inputs": "host_inputs.json",
             "outputs": "host_outputs.json"},
}

_RANGES = {"unit_id": (1, 247), "baudrate": (1200, 115200), "sample_ms": (1, 1000),
           "debounce_ms": (0, 60000), "heartbeat_ms": (100, 60000),
           "watchdog_ms": (0, 8000)}
_LISTS = {"di": MAX_DI, "ai": MAX_AI, "relays": MAX_RELAYS, "local_alarms": MAX_RULES}


def _check(key, value, cfg):
    """Why value is wrong for key ('' if it is right)."""
    if key in _RANGES:
        low, high = _RANGES[key]
        if not isinstance(value, int) or isinstance(value, bool) or not (
                low <= value <= high):
            return "must be an integer in %d..%d" % (low, high)
    elif key == "parity":
        if value not in ("N", "E", "O"):
            return 'must be "N", "E" or "O"'
    elif key in _LISTS:
        if not isinstance(value, list) or len(value) > _LISTS[key]:
            return "must be a list of at most %d" % _LISTS[key]
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                return "[%d] must be an object" % i
            if key == "local_alarms":
                why = _check_rule(item, cfg)
                if why:
                    return "[%d] %s" % (i, why)
            elif key == "ai" and not (item.get("shunt_ohms", 150.0) > 0 and
                                      item.get("vref_mv", 3300) > 0):
                return "[%d] shunt_ohms and vref_mv must be positive" % i
            elif "pin" not in item:
                return "[%d] needs pin" % i
    elif not isinstance(value, dict):
        return "must be an object"
    return ""


def _check_rule(rule, cfg):
    relay = rule.get("relay")
    if not isinstance(relay, int) or not 0 <= relay < len(cfg["relays"]):
        return "relay must name one of the %d relays" % len(cfg["relays"])
    if "di" in rule:
        if not isinstance(rule["di"], int) or not 0 <= rule["di"] < len(cfg["di"]):
            return "di must name one of the %d digital inputs" % len(cfg["di"])
        return ""
    if "ai" in rule:
        if not isinstance(rule["ai"], int) or not 0 <= rule["ai"] < len(cfg["ai"]):
            return "ai must name one of the %d analog inputs" % len(cfg["ai"])
        if ("above_ma" in rule) == ("below_ma" in rule):
            return "an ai rule needs above_ma or below_ma"
        return ""
    return "needs di or ai"


def load(path=FILE):
    """Return (config, problems): each bad or unknown key keeps its default."""
    cfg = {}
    for k, v in DEFAULTS.items():
        cfg[k] = v
    problems = []
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        return cfg, problems  # no file: the defaults are the configuration
    except ValueError as exc:
        return cfg, ["%s: not valid JSON (%s)" % (path, exc)]
    if not isinstance(data, dict):
        return cfg, ["%s: must be a JSON object" % path]
    # Lists first, so that rules are checked against the configured inputs.
    for key in sorted(data, key=lambda k: k == "local_alarms"):
        if key not in DEFAULTS:
            problems.append("%s: unknown key" % key)
            continue
        value = data[key]
        why = _check(key, value, cfg)
        if not why and isinstance(DEFAULTS[key], dict):
            # An object overrides only the keys it names.
            unknown = [k for k in value if k not in DEFAULTS[key]]
            if unknown:
                why = "unknown key %s" % unknown[0]
            else:
                merged = dict(DEFAULTS[key])
                merged.update(value)
                value = merged
        if why:
            problems.append("%s: %s" % (key, why))
        else:
            cfg[key] = value
    if "local_alarms" not in data:
        # The default rule names di 0 and relay 0; drop it if those are gone.
        if _check("local_alarms", cfg["local_alarms"], cfg):
            cfg["local_alarms"] = []
    return cfg, problems
