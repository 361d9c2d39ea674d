"""Evaluation of the static test in the manner of the EPA procedure for tank gauges.

A stream simulator of its own (thermal relaxation after a delivery, stratified
product, shell deformation, gauge noise and resolution) makes raw streams of tight
and leaking tanks; each one goes through :func:`leak_test`, the code path of
`groundwatch leak-test`, and Pd / Pfa are counted per target rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from .static_test import (
    FAIL,
    INCONCLUSIVE,
    PASS,
    LeakTestSettings,
    StaticResult,
    leak_test,
)
from .stats import wilson_interval
from .tank import L_PER_US_GAL, MM_PER_INCH, Product, Tank, TankChart

F_TO_C = 5 / 9


@dataclass(frozen=True)
class EvalModel:
    """Parameters of the simulated tank, product, weather and gauge."""

    capacity_gal: float = 10000.0
    diameter_mm: float = 96 * MM_PER_INCH
    # Thermistors up the probe, as fractions of the diameter.
    thermistor_fractions: tuple[float, ...] = (0.08, 0.26, 0.44, 0.62, 0.80)
    expansion_per_c: float = 0.00095
    # The true coefficient of each delivered batch differs from the configured one.
    expansion_sd_fraction: float = 0.02
    ground_c: float = 15.0
    # Fill after the delivery, and before it (fractions of capacity by volume).
    fills: tuple[float, ...] = (0.5, 0.9)
    fills_before: tuple[float, ...] = (0.2, 0.5)
    offsets_f: tuple[float, ...] = (-10.0, -5.0, 0.0, 5.0, 10.0)
    # Product relaxes to the ground temperature with a time constant drawn per test,
    # shorter near the top (the manway and the shallow backfill).
    relax_h: tuple[float, float] = (10.0, 30.0)
    relax_top_fraction: float = 0.3
    # Incomplete mixing: a share of the delivered batch does not mix during the fill
    # and lies as a layer on the bottom (a cold batch) or on top (a warm one). Its
    # excess temperature passes into the rest of the column (heat kept, so the true
    # volume barely moves, but thermistors see it move) with a time constant of hours,
    # and the layer's edge spreads.
    unmixed_fraction: tuple[float, float] = (0.0, 0.6)
    layer_relax_h: tuple[float, float] = (2.0, 8.0)
    layer_edge_mm: tuple[float, float] = (20.0, 80.0)
    layer_spread_mm_per_sqrt_h: float = 25.0
    # The probe stands at one place: the batch enters at the fill pipe, and until
    # the product mixes along the tank the probe's column differs from the tank's
    # mean by a share of the mixed offset (either sign). Heat only moves along the
    # tank, so the true volume does not change; the thermistors see it relax.
    horizontal_fraction: float = 0.05
    horizontal_relax_h: tuple[float, float] = (1.0, 4.0)
    # Smooth stratification (warm on top either way), top-to-bottom difference as a
    # fraction of the mixed offset plus a base, decaying over hours.
    strat_fraction: tuple[float, float] = (0.2, 0.5)
    strat_base_c: float = 0.1
    strat_decay_h: tuple[float, float] = (3.0, 10.0)
    # A thin warm skin on the product, above the highest wet thermistor.
    skin_fraction: float = 0.03
    skin_c: tuple[float, float] = (0.0, 0.3)
    # Diurnal swing reaching the top of the product through the backfill.
    diurnal_c: float = 0.02
    # The shell and end caps deflect under the delivered load and creep back: an
    # apparent volume loss per unit fill, relaxing with a time constant of hours.
    deform_l: tuple[float, float] = (0.0, 10.0)
    deform_h: tuple[float, float] = (0.5, 3.0)
    # Magnetostrictive probe: 0.001 in level resolution, 0.1 °F temperature
    # resolution (the registers of a common ATG Modbus map), small electronic noise.
    level_resolution_mm: float = 0.001 * MM_PER_INCH
    level_noise_mm: float = 0.015
    temp_resolution_c: float = 0.1 * F_TO_C
    temp_noise_c: float = 0.005
    temp_bias_c: float = 0.05
    sample_s: float = 10.0
    delivery_min: float = 10.0
    # The stream runs this long after the delivery; the detector picks its own wait.
    stream_h: float = 16.0
    slices: int = 120

    @property
    def length_mm(self) -> float:
        """Shell length giving the nominal capacity."""
        return self.capacity_gal * L_PER_US_GAL * 1e6 / (math.pi * (self.diameter_mm / 2) ** 2)

    def tank(self) -> Tank:
        """The tank as the detector is told it."""
        chart = TankChart("horizontal_cylinder", self.diameter_mm, self.length_mm)
        heights = tuple(round(f * self.diameter_mm, 1) for f in self.thermistor_fractions)
        return Tank(chart, Product("gasoline", self.expansion_per_c), heights)

    def to_json(self) -> dict[str, Any]:
        """Parameters as plain JSON values."""
        out = asdict(self)
        out["length_mm"] = round(self.length_mm, 1)
        return out


@dataclass(frozen=True)
class Stream:
    """One simulated raw stream, as a gauge would record it."""

    t_s: np.ndarray
    level_mm: np.ndarray
    temperature_c: np.ndarray
    leak_gph: float
    fill: float
    offset_f: float


def simulate_stream(
    model: EvalModel, rng: np.random.Generator, fill: float, fill_before: float,
    offset_f: float, leak_gph: float,
) -> Stream:
    """A delivery, the wait, and the test period of one tank, sampled by the gauge."""
    chart = model.tank().chart
    d = model.diameter_mm
    capacity_l = model.capacity_gal * L_PER_US_GAL
    beta = model.expansion_per_c * (1 + model.expansion_sd_fraction * rng.standard_normal())
    t_ref = 15.0

    # Time axis: delivery ends at t = 0, the stream runs stream_h after it.
    delivery_s = model.delivery_min * 60
    t0 = -delivery_s - 600.0
    t = np.arange(t0, model.stream_h * 3600, model.sample_s)
    t_h = np.maximum(t, 0.0) / 3600

    # The delivered batch at offset from the old product (at ground temperature): a
    # share mixes in the fill, the rest lies as a layer at the bottom or the top.
    volume0_l = fill * capacity_l
    delivered_l = (fill - fill_before) * capacity_l
    old_l = volume0_l - delivered_l
    offset_c = offset_f * F_TO_C
    tg = model.ground_c + 0.3 * rng.standard_normal()
    unmixed = rng.uniform(*model.unmixed_fraction) if offset_f else 0.0
    layer_l = unmixed * delivered_l
    column_l = volume0_l - layer_l
    mixed_c = offset_c * (delivered_l - layer_l) / column_l
    layer_excess_c = offset_c - mixed_c
    level0 = float(chart.level_mm(volume0_l))
    cold = offset_c < 0
    boundary_mm = float(chart.level_mm(layer_l if cold else volume0_l - layer_l))
    layer_tau_h = rng.uniform(*model.layer_relax_h)
    edge_mm = rng.uniform(*model.layer_edge_mm)
    tau_h = rng.uniform(*model.relax_h)
    strat_c = model.strat_base_c + abs(offset_c) * (delivered_l / volume0_l) * rng.uniform(
        *model.strat_fraction)
    strat_tau_h = rng.uniform(*model.strat_decay_h)
    skin_c = rng.uniform(*model.skin_c)
    phase = rng.uniform(0, 2 * math.pi)
    horizontal_c = mixed_c * model.horizontal_fraction * rng.uniform(-1.0, 1.0)
    horizontal_h = rng.uniform(*model.horizontal_relax_h)

    def field_c(z_mm: np.ndarray) -> np.ndarray:
        """Temperature (°C) at heights z_mm (column) and times t (row)."""
        zf = (z_mm / level0)[:, None]
        tau = tau_h * (1 - model.relax_top_fraction * zf)
        # The layer's excess passes into the column: the column gains what it loses.
        left = np.exp(-t_h / layer_tau_h)[None, :]
        width = edge_mm + model.layer_spread_mm_per_sqrt_h * np.sqrt(t_h)[None, :]
        side = (boundary_mm - z_mm[:, None]) if cold else (z_mm[:, None] - boundary_mm)
        inside = 0.5 * (1 + np.tanh(side / width))
        gained = layer_excess_c * (layer_l / volume0_l) * (1 - left)
        excess = mixed_c + gained + layer_excess_c * left * inside
        relax = excess * np.exp(-t_h[None, :] / tau)
        strat = strat_c * (zf - 0.5 + 0.3 * (zf - 0.5) ** 2) * np.exp(-t_h / strat_tau_h)
        skin = skin_c * (zf > 1 - model.skin_fraction) * np.exp(-t_h / strat_tau_h)
        diurnal = model.diurnal_c * zf * np.sin(2 * np.pi * t[None, :] / 86400 + phase)
        temp = tg + relax + strat + skin + diurnal
        # Before the delivery ends the old product sits at the ground temperature;
        # during it the readings move towards the mix.
        ramp = np.clip((t + delivery_s) / delivery_s, 0, 1)[None, :]
        return np.asarray(tg + (temp - tg) * ramp)

    # Mass of product, held as reference volume per slice of the settled column.
    edges = np.linspace(0.0, level0, model.slices + 1)
    slice_l = np.diff(chart.volume_l(edges))
    mid = (edges[:-1] + edges[1:]) / 2
    temps = field_c(mid)
    ref_l = slice_l / np.exp(beta * (temps[:, -1] - t_ref))
    volume_l = np.sum(ref_l[:, None] * np.exp(beta * (temps - t_ref)), axis=0)

    # Delivery: before it only fill_before was in the tank; the leak runs throughout.
    ramp = np.clip((t + delivery_s) / delivery_s, 0, 1)
    volume_l = volume_l * (fill_before / fill + (1 - fill_before / fill) * ramp)
    volume_l -= leak_gph * L_PER_US_GAL * (t - t0) / 3600
    deform_l = rng.uniform(*model.deform_l) * fill
    deform_h = rng.uniform(*model.deform_h)
    volume_l -= deform_l * (1 - np.exp(-t_h / deform_h)) * (t >= 0)

    # The gauge: level with noise at 0.001 in, thermistors with bias, noise, resolution.
    level = chart.level_mm(volume_l) + model.level_noise_mm * rng.standard_normal(len(t))
    level = np.round(level / model.level_resolution_mm) * model.level_resolution_mm
    heights = np.asarray(model.thermistor_fractions) * d
    readings = field_c(heights)
    readings += horizontal_c * np.exp(-t_h / horizontal_h)[None, :] * (t >= 0)[None, :]
    readings += model.temp_bias_c * rng.standard_normal(len(heights))[:, None]
    readings += model.temp_noise_c * rng.standard_normal(readings.shape)
    readings = np.round(readings / model.temp_resolution_c) * model.temp_resolution_c
    return Stream(t, level, readings.T, leak_gph, fill, offset_f)


@dataclass
class TargetResult:
    """Pd and Pfa at one target rate."""

    target_gph: float
    threshold_gph: float
    n_tests: int
    n_leak: int
    n_tight: int
    pd: float
    pd_wilson95: tuple[float, float]
    pfa: float
    pfa_wilson95: tuple[float, float]
    inconclusive_tight: int
    inconclusive_leak: int
    tight_rate_mean_gph: float
    tight_rate_sd_gph: float
    leak_rate_mean_gph: float
    leak_rate_sd_gph: float
    by_condition: list[dict[str, Any]] = field(default_factory=list)


def _settings_for(target_gph: float, model: EvalModel,
                  base: LeakTestSettings | None = None) -> LeakTestSettings:
    return replace(base or LeakTestSettings(), target_gph=target_gph)


def evaluate(
    model: EvalModel, n_per_condition: int = 200, targets: tuple[float, ...] = (0.1, 0.2),
    seed: int = 20260501, settings: LeakTestSettings | None = None,
) -> list[TargetResult]:
    """Run the evaluation: per fill and offset, n tight and n leaking tests per target.

    `settings` (its target aside) replaces the detector's defaults.
    """
    tank = model.tank()
    root = np.random.SeedSequence(seed)
    rows: dict[float, dict[str, list[Any]]] = {
        r: {"tight": [], "leak": [], "cond": []} for r in targets}
    conditions = [(fill, before, off) for fill, before in zip(model.fills, model.fills_before)
                  for off in model.offsets_f]
    streams_seq = root.spawn(len(conditions))
    for (fill, before, off), seq in zip(conditions, streams_seq):
        rng = np.random.default_rng(seq)
        tight = [simulate_stream(model, rng, fill, before, off, 0.0)
                 for _ in range(n_per_condition)]
        for target in targets:
            target_settings = _settings_for(target, model, settings)
            leaks = [simulate_stream(model, rng, fill, before, off, target)
                     for _ in range(n_per_condition)]
            res_t = [leak_test(s.t_s, s.level_mm, s.temperature_c, tank,
                               target_settings) for s in tight]
            res_l = [leak_test(s.t_s, s.level_mm, s.temperature_c, tank,
                               target_settings) for s in leaks]
            rows[target]["tight"].extend(res_t)
            rows[target]["leak"].extend(res_l)
            rows[target]["cond"].append({
                "fill": fill, "offset_f": off,
                "pd": sum(r.verdict == FAIL for r in res_l) / len(res_l),
                "pfa": sum(r.verdict != PASS for r in res_t) / len(res_t),
                "tight_rate_mean_gph": round(float(np.mean([r.rate_gph for r in res_t])), 4),
                "leak_rate_mean_gph": round(float(np.mean([r.rate_gph for r in res_l])), 4),
            })
    out = []
    for target in targets:
        tight_res: list[StaticResult] = rows[target]["tight"]
        leak_res: list[StaticResult] = rows[target]["leak"]
        detected = sum(r.verdict == FAIL for r in leak_res)
        # Anything but a pass on a tight tank costs a retest: counted as a false alarm.
        false_alarms = sum(r.verdict != PASS for r in tight_res)
        tr = np.array([r.rate_gph for r in tight_res])
        lr = np.array([r.rate_gph for r in leak_res])
        out.append(TargetResult(
            target_gph=target,
            threshold_gph=_settings_for(target, model, settings).threshold_gph,
            n_tests=len(tight_res) + len(leak_res), n_leak=len(leak_res),
            n_tight=len(tight_res), pd=detected / len(leak_res),
            pd_wilson95=wilson_interval(detected, len(leak_res)),
            pfa=false_alarms / len(tight_res),
            pfa_wilson95=wilson_interval(false_alarms, len(tight_res)),
            inconclusive_tight=sum(r.verdict == INCONCLUSIVE for r in tight_res),
            inconclusive_leak=sum(r.verdict == INCONCLUSIVE for r in leak_res),
            tight_rate_mean_gph=float(np.nanmean(tr)), tight_rate_sd_gph=float(np.nanstd(tr)),
            leak_rate_mean_gph=float(np.nanmean(lr)), leak_rate_sd_gph=float(np.nanstd(lr)),
            by_condition=rows[target]["cond"],
        ))
    return out


def report(model: EvalModel, results: list[TargetResult], n_per_condition: int,
           seed: int) -> dict[str, Any]:
    """The JSON document `groundwatch leak-eval --json` prints."""
    def rnd(x: Any) -> Any:
        if isinstance(x, float):
            return round(x, 5)
        if isinstance(x, tuple):
            return [rnd(v) for v in x]
        if isinstance(x, list):
            return [rnd(v) for v in x]
        if isinstance(x, dict):
            return {k: rnd(v) for k, v in x.items()}
        return x

    settings = _settings_for(results[0].target_gph, model) if results else LeakTestSettings()
    return {
        "model": model.to_json(),
        "detector": {k: v for k, v in asdict(replace(settings)).items()
                     if k != "target_gph"},
        "n_per_condition": n_per_condition,
        "seed": seed,
        "targets": [rnd(asdict(r)) for r in results],
    }
