"""A second tank-stream generator, independent of leak_detection.evaluation.

Different code and physics from the harness: the product is a column of layers
that conduct heat to each other and to the ground (integrated step by step), the
delivered batch lands as a plume in the bottom or top layers depending on whether
it is colder or warmer, the level noise is correlated (surface waves, electronics),
there are six thermistors, and the tank is described by a calibration table.
"""

from __future__ import annotations

import math

import numpy as np

GAL_L = 3.785411784
IN_MM = 25.4

DIAMETER_MM = 2438.4
LENGTH_MM = 8106.1
THERMISTORS_MM = (150.0, 520.0, 890.0, 1260.0, 1630.0, 2000.0)
BETA = 0.00095


def segment_l(h_mm: np.ndarray) -> np.ndarray:
    """Horizontal-cylinder volume written from the half-angle form (not the harness's)."""
    r = DIAMETER_MM / 2
    h = np.clip(h_mm, 0, DIAMETER_MM)
    half_angle = np.arccos(1 - h / r)
    area = r * r * (half_angle - np.sin(half_angle) * np.cos(half_angle))
    return area * LENGTH_MM / 1e6


def calibration_table(rows: int = 97) -> tuple[list[float], list[float]]:
    """A tank chart as a vendor prints it: level every inch, volume in litres."""
    levels = np.linspace(0, DIAMETER_MM, rows)
    return [round(float(x), 2) for x in levels], [round(float(v), 2)
                                                    for v in segment_l(levels)]


def tank_toml(target_gph: float) -> str:
    """TANK.toml for this tank, with the chart as a calibration table."""
    levels, volumes = calibration_table()
    return (
        "[tank]\nname = \"indep\"\nshape = \"table\"\n"
        f"levels_mm = {levels}\nvolumes_l = {volumes}\n"
        f"thermistor_heights_mm = {list(THERMISTORS_MM)}\n"
        "[product]\nname = \"gasoline\"\nexpansion_per_c = 0.00095\n"
        f"[test]\ntarget_gph = {target_gph}\n"
    )


def generate(rng: np.random.Generator, fill: float, offset_f: float,
             leak_gph: float, sample_s: float = 10.0, wait_h: float = 9.0,
             test_h: float = 7.0, plume_fraction: float = 0.4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(t_s, level_mm, temperatures (n, 6)) from before a delivery to the test's end.

    The tank stays quiet wait_h + test_h (16 h) after the delivery; the detector
    chooses its own wait and test window inside that.
    """
    n_layers = 16
    capacity_l = float(segment_l(np.array([DIAMETER_MM]))[0])
    grid = np.linspace(0, DIAMETER_MM, 4001)
    vol_grid = segment_l(grid)
    level_settled = float(np.interp(fill * capacity_l, vol_grid, grid))
    edges = np.linspace(0, level_settled, n_layers + 1)
    layer_l = np.diff(segment_l(edges))
    z_mid = (edges[1:] + edges[:-1]) / 2

    # Initial temperatures: old product at ground temperature, the delivered batch
    # (a fraction of the column) sits in the bottom layers if colder, on top if warmer.
    ground_c = 12.0 + 6.0 * rng.random()
    before = fill * rng.uniform(0.3, 0.6)
    share = (fill - before) / fill
    offset_c = offset_f * 5 / 9
    temps = np.full(n_layers, ground_c) + 0.2 * rng.standard_normal()
    # The drop-tube jet mixes most of the batch into the column during the fill
    # (mixed); the rest stays as a plume in the bottom layers if colder, on top if
    # warmer. plume_fraction = 1 would be a batch that did not mix at all.
    mixed = 1 - plume_fraction * rng.uniform(0.5, 1.0)
    n_plume = max(1, round(share * n_layers))
    plume = slice(0, n_plume) if offset_c < 0 else slice(n_layers - n_plume, n_layers)
    temps[plume] += offset_c * (1 - mixed)
    temps += offset_c * share * mixed

    # Heat exchange: neighbours (convection-enhanced conduction), and ground through
    # the shell, stronger for layers near the bottom and the top of the tank.
    k_mix_per_h = rng.uniform(0.05, 0.2)
    k_ground_per_h = rng.uniform(0.02, 0.06) * (1 + 0.8 * np.abs(z_mid / DIAMETER_MM - 0.5))
    beta = BETA * (1 + 0.02 * rng.standard_normal())

    # dT/dt = A (T - ground) with A symmetric: solved exactly through its eigenvectors.
    t = np.arange(-1800.0, (wait_h + test_h) * 3600, sample_s)
    lap = np.diag(np.full(n_layers, -2.0)) + np.eye(n_layers, k=1) + np.eye(n_layers, k=-1)
    lap[0, 0] = lap[-1, -1] = -1.0
    a = k_mix_per_h * lap - np.diag(k_ground_per_h)
    eigval, eigvec = np.linalg.eigh(a)
    coeff = eigvec.T @ (temps - ground_c)
    t_h = np.maximum(t, 0.0) / 3600
    layer_t = ground_c + (eigvec @ (coeff[:, None] * np.exp(eigval[:, None] * t_h))).T
    layer_t[t < 0] = ground_c
    n = len(t)

    # Mass: the reference volume of each layer fixed at the settled temperature.
    ref = layer_l / (1 + beta * (temps - 15.0))
    volume = np.sum(ref * (1 + beta * (layer_t - 15.0)), axis=1)
    volume = np.where(t < 0, volume * before / fill, volume)
    # The delivery happens over the last 20 minutes before t = 0.
    filling = (t >= -1200) & (t < 0)
    frac = np.clip((t + 1200) / 1200, 0, 1)
    volume = np.where(filling, volume * (before + (fill - before) * frac) / before
                      * (before / fill), volume)
    volume = volume - leak_gph * GAL_L * (t - t[0]) / 3600
    level = np.interp(volume, vol_grid, grid)

    # Correlated level noise, then the gauge's 0.001 in resolution.
    kernel = 0.6 ** np.arange(40)
    noise = np.convolve(0.02 * math.sqrt(1 - 0.36) * rng.standard_normal(n), kernel)[:n]
    level = np.round((level + noise) / (0.001 * IN_MM)) * (0.001 * IN_MM)

    # Thermistors read the layer they sit in (or the ullage air above the product).
    idx = np.clip(np.searchsorted(edges, THERMISTORS_MM) - 1, 0, n_layers - 1)
    reads = layer_t[:, idx].copy()
    dry = np.asarray(THERMISTORS_MM) > level_settled
    reads[:, dry] = ground_c + 3.0 * np.sin(2 * np.pi * t / 86400)[:, None]
    reads += 0.04 * rng.standard_normal(len(THERMISTORS_MM))
    reads += 0.004 * rng.standard_normal(reads.shape)
    resolution_c = 0.01 * 5 / 9  # 0.01 °F
    reads = np.round(reads / resolution_c) * resolution_c
    return t, level, reads


def evaluate(n_per_condition: int, targets: tuple[float, ...] = (0.1, 0.2),
             **generate_kw: float) -> dict[str, dict]:
    """Pd and Pfa of streams from this generator through `leak-test`'s code (CSV
    written and read), per target: 2 fills x 5 offsets x n tight and n leaking."""
    import tempfile
    from datetime import datetime, timezone
    from pathlib import Path

    from groundwatch.leak_cli import run_leak_test, write_stream
    from leak_detection.stats import wilson_interval

    start = datetime(2026, 4, 1, 18, 0, tzinfo=timezone.utc)
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        tank, csv = Path(tmp) / "tank.toml", Path(tmp) / "stream.csv"
        for target in targets:
            tank.write_text(tank_toml(target))
            rng = np.random.default_rng(int(target * 1000) + 7)
            res: dict[str, list[dict]] = {"tight": [], "leak": []}
            for fill in (0.5, 0.9):
                for offset in (-10.0, -5.0, 0.0, 5.0, 10.0):
                    for kind, rate in (("tight", 0.0), ("leak", target)):
                        for _ in range(n_per_condition):
                            t, level, temps = generate(rng, fill, offset, rate,
                                                       **generate_kw)
                            write_stream(csv, t, level, temps, start)
                            res[kind].append(run_leak_test(csv, tank))
            detected = sum(r["verdict"] == "fail" for r in res["leak"])
            false_alarms = sum(r["verdict"] != "pass" for r in res["tight"])
            rates = [r["rate_gph"] for r in res["tight"] if r["rate_gph"] is not None]
            out[str(target)] = {
                "n_leak": len(res["leak"]), "n_tight": len(res["tight"]),
                "pd": detected / len(res["leak"]),
                "pd_wilson95": wilson_interval(detected, len(res["leak"])),
                "pfa": false_alarms / len(res["tight"]),
                "pfa_wilson95": wilson_interval(false_alarms, len(res["tight"])),
                "inconclusive_tight": sum(r["verdict"] == "inconclusive"
                                          for r in res["tight"]),
                "tight_rate_sd_gph": float(np.std(rates)),
            }
    return out


if __name__ == "__main__":
    # python tests/leak_streams.py [N] [plume_fraction]: the figures of
    # docs/leak_detection.md (N = 40: 400 + 400 streams per target, ~2 min).
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    kw = {"plume_fraction": float(sys.argv[2])} if len(sys.argv) > 2 else {}
    print(json.dumps(evaluate(n, **kw), indent=1))
