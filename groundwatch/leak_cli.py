"""`groundwatch leak-test` and `leak-eval`: tank files, stream CSVs, JSON reports."""

from __future__ import annotations

import csv
import math
import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from drivers.errors import ConfigError
from leak_detection.static_test import StaticResult, LeakTestSettings, leak_test
from leak_detection.tank import PRODUCTS, SHAPES, Product, Tank, TankChart

TANK_KEYS = {"name", "shape", "diameter_mm", "length_mm", "levels_mm", "volumes_l",
             "thermistor_heights_mm"}
PRODUCT_KEYS = {"name", "expansion_per_c", "reference_c"}
TEST_KEYS = {"target_gph", "threshold_fraction", "delivery_settle_h",
             "dispensing_settle_h", "min_test_h", "max_test_h", "event_l",
             "settled_at_start", "max_settle_h", "settle_check_h", "settle_step_h",
             "max_temperature_rate_c_per_h", "max_gradient_rate_c_per_h"}


def _number(source: str, path: str, value: Any, positive: bool = True) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(source, path, f"expected a number, got {value!r}")
    if positive and not value > 0:
        raise ConfigError(source, path, "must be positive")
    return float(value)


def _table(source: str, doc: dict[str, Any], key: str, allowed: set[str],
           required: bool = True) -> dict[str, Any]:
    table = doc.get(key)
    if table is None and not required:
        return {}
    if not isinstance(table, dict):
        raise ConfigError(source, key, "missing table" if table is None
                          else "must be a table")
    for k in table:
        if k not in allowed:
            raise ConfigError(source, f"{key}.{k}", "unknown key")
    return table


def tank_from_dict(doc: dict[str, Any], source: str) -> tuple[Tank, LeakTestSettings]:
    """The tank and test settings of a TANK.toml document; errors name the key."""
    for k in doc:
        if k not in ("tank", "product", "test"):
            raise ConfigError(source, k, "unknown key (have: tank, product, test)")
    t = _table(source, doc, "tank", TANK_KEYS)
    shape = t.get("shape")
    if shape not in SHAPES:
        raise ConfigError(source, "tank.shape", f"must be one of {', '.join(SHAPES)}")
    kw: dict[str, Any] = {"shape": shape}
    if shape == "table":
        for key in ("levels_mm", "volumes_l"):
            rows = t.get(key)
            if not isinstance(rows, list) or len(rows) < 2:
                raise ConfigError(source, f"tank.{key}", "needs a list of at least two "
                                  "numbers")
            kw["table_level_mm" if key == "levels_mm" else "table_volume_l"] = tuple(
                _number(source, f"tank.{key}[{i}]", v, positive=False)
                for i, v in enumerate(rows))
    else:
        kw["diameter_mm"] = _number(source, "tank.diameter_mm", t.get("diameter_mm"))
        if shape == "horizontal_cylinder":
            kw["length_mm"] = _number(source, "tank.length_mm", t.get("length_mm"))
    try:
        chart = TankChart(**kw)
    except ValueError as exc:
        raise ConfigError(source, "tank", str(exc)) from None
    heights = t.get("thermistor_heights_mm", [])
    if not isinstance(heights, list):
        raise ConfigError(source, "tank.thermistor_heights_mm", "must be a list")
    thermistors = tuple(_number(source, f"tank.thermistor_heights_mm[{i}]", v,
                                positive=False) for i, v in enumerate(heights))

    p = _table(source, doc, "product", PRODUCT_KEYS)
    name = p.get("name", "product")
    if not isinstance(name, str):
        raise ConfigError(source, "product.name", "must be a string")
    if "expansion_per_c" in p:
        beta = _number(source, "product.expansion_per_c", p["expansion_per_c"])
    elif name in PRODUCTS:
        beta = PRODUCTS[name].expansion_per_c
    else:
        raise ConfigError(source, "product.expansion_per_c",
                          f"required for product {name!r} (known: "
                          f"{', '.join(sorted(PRODUCTS))})")
    ref = _number(source, "product.reference_c", p.get("reference_c", 15.0),
                  positive=False)
    product = Product(name, beta, ref)

    s = _table(source, doc, "test", TEST_KEYS, required=False)
    hours = {"delivery_settle_h": "delivery_settle_s",
             "dispensing_settle_h": "dispensing_settle_s",
             "min_test_h": "min_test_s", "max_test_h": "max_test_s",
             "max_settle_h": "max_settle_s", "settle_check_h": "settle_check_s",
             "settle_step_h": "settle_step_s"}
    skw: dict[str, Any] = {}
    for key, value in s.items():
        if key == "settled_at_start":
            if not isinstance(value, bool):
                raise ConfigError(source, "test.settled_at_start", "must be true/false")
            skw[key] = value
        elif key in hours:
            skw[hours[key]] = _number(source, f"test.{key}", value, positive=False) * 3600
        else:
            skw[key] = _number(source, f"test.{key}", value)
    settings = LeakTestSettings(**skw)
    if settings.min_test_s > settings.max_test_s:
        raise ConfigError(source, "test.min_test_h", "longer than test.max_test_h")
    return Tank(chart, product, thermistors), settings


def load_tank(path: str | Path) -> tuple[Tank, LeakTestSettings]:
    """Read TANK.toml."""
    source = str(path)
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, "", f"not valid TOML: {exc}") from None
    return tank_from_dict(doc, source)


def _parse_time_s(text: str) -> float:
    ts = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return ts.timestamp()


def read_stream(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """A stream CSV: time (ISO 8601), level_mm, then one or more temperature columns."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    if not rows:
        raise ValueError(f"{path}: empty file")
    header = [h.strip() for h in rows[0]]
    if len(header) < 3 or header[0] != "time" or header[1] != "level_mm":
        raise ValueError(f"{path}: header must be time,level_mm,<temperature columns>, "
                         f"got {','.join(header)}")
    t, level, temps = [], [], []
    for lineno, row in enumerate(rows[1:], start=2):
        if not row or not any(c.strip() for c in row):
            continue
        if len(row) != len(header):
            raise ValueError(f"{path}:{lineno}: {len(row)} columns, header has "
                             f"{len(header)}")
        try:
            t.append(_parse_time_s(row[0]))
        except ValueError:
            raise ValueError(f"{path}:{lineno}: time {row[0]!r} is not ISO 8601") from None

        def num(cell: str) -> float:
            cell = cell.strip()
            if not cell:
                return math.nan
            try:
                return float(cell)
            except ValueError:
                raise ValueError(f"{path}:{lineno}: {cell!r} is not a number") from None
        level.append(num(row[1]))
        temps.append([num(c) for c in row[2:]])
    if not t:
        raise ValueError(f"{path}: no data rows")
    t_arr = np.asarray(t)
    return t_arr - t_arr[0], np.asarray(level), np.asarray(temps), header[2:]


def run_leak_test(stream: str | Path, tank_file: str | Path) -> dict[str, Any]:
    """The static test on a recorded stream, as JSON values."""
    tank, settings = load_tank(tank_file)
    t_s, level_mm, temps, columns = read_stream(stream)
    if temps.shape[1] > 1 and len(tank.thermistor_mm) != temps.shape[1]:
        raise ConfigError(str(tank_file), "tank.thermistor_heights_mm",
                          f"{len(tank.thermistor_mm)} heights for {temps.shape[1]} "
                          f"temperature columns ({', '.join(columns)})")
    result: StaticResult = leak_test(t_s, level_mm, temps, tank, settings)
    out = result.to_json()
    out["window_h"] = None if math.isnan(result.start_s) else round(
        (result.end_s - result.start_s) / 3600, 3)
    out["stream"] = str(stream)
    out["tank"] = str(tank_file)
    return out


def format_result(out: dict[str, Any]) -> str:
    """One line for people."""
    if out.get("rate_gph") is None:
        return f"{out['verdict']}: {out['reason']}"
    return (f"{out['verdict']}: leak rate {out['rate_gph']:.4f} gal/h "
            f"({out['rate_l_per_h']:.4f} L/h), 95% interval {out['lower_gph']:.4f} .. "
            f"{out['upper_gph']:.4f} gal/h, threshold {out['threshold_gph']:.4f} gal/h; "
            f"{out['window_h']} h of quiet from {out['start_s'] / 3600:.2f} h "
            f"({out['reason']})")


def run_leak_eval(n_per_condition: int, seed: int) -> dict[str, Any]:
    """The evaluation harness's JSON report."""
    from leak_detection.evaluation import EvalModel, evaluate, report

    model = EvalModel()
    results = evaluate(model, n_per_condition=n_per_condition, seed=seed)
    return report(model, results, n_per_condition, seed)


def format_eval(doc: dict[str, Any]) -> list[str]:
    """Lines for people."""
    lines = []
    for r in doc["targets"]:
        lines.append(
            f"target {r['target_gph']} gal/h (threshold {r['threshold_gph']}): "
            f"Pd {r['pd']:.4f} [{r['pd_wilson95'][0]:.4f}, {r['pd_wilson95'][1]:.4f}], "
            f"Pfa {r['pfa']:.4f} [{r['pfa_wilson95'][0]:.4f}, "
            f"{r['pfa_wilson95'][1]:.4f}], {r['n_tests']} tests")
    return lines


def write_stream(path: str | Path, t_s: np.ndarray, level_mm: np.ndarray,
                 temperature_c: np.ndarray, start: datetime) -> None:
    """Write a stream CSV as `leak-test` reads it (UTC times to the second, level to
    0.0001 mm, temperatures to 0.001 °C)."""
    temps = np.asarray(temperature_c)
    if temps.ndim == 1:
        temps = temps[:, None]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["time", "level_mm"] + [f"t{i + 1}_c" for i in range(temps.shape[1])])
        t0_s = start.timestamp()
        stamps = np.datetime_as_string(
            (np.round((t0_s + np.asarray(t_s)) * 1000)).astype("datetime64[ms]"),
            unit="s", timezone="UTC")
        for i, stamp in enumerate(stamps):
            w.writerow([stamp, f"{level_mm[i]:.4f}"] + [f"{x:.3f}" for x in temps[i]])
