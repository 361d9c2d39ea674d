"""Per-site groundwater analysis: trends, exceedances, control charts, flow, verdicts.

The guide's verdicts (Shenzhen "control while producing", stage 6 effect evaluation,
and stage 1 risk determination) are rules over these results; thresholds are in
`SiteConfig` so a site can agree its own with the authority.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from cloud import standards
from cloud.flow import Flow, FlowError, candidate_sources, fit_flow_wells
from cloud.labdata import LabResult
from cloud.stats import trend as tr
from leak_detection.control_chart import MIN_BASELINE, Baseline, ShewhartCusum

ROLES = ("background", "source", "edge", "downgradient", "other")
RISK_LEVELS = ("green", "yellow", "orange", "red")
RISING = {tr.INCREASING, tr.PROBABLY_INCREASING}
FALLING = {tr.DECREASING, tr.PROBABLY_DECREASING}


@dataclass
class SiteConfig:
    """What the analysis needs beyond the results: roles, facilities, thresholds."""

    wells: dict[str, tuple[float, float]] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    facilities: dict[str, tuple[float, float]] = field(default_factory=dict)
    facility_kinds: dict[str, str] = field(default_factory=dict)
    target_class: str = "III"
    consecutive_events: int = 2
    warning_fraction: float = 0.5
    sector_deg: float = 45.0
    baseline_n: int = MIN_BASELINE
    h: float = 5.0
    k: float = 1.0
    scl: float = 4.5

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SiteConfig:
        """Build from the API's JSON (wells and facilities as {name: {x, y, ...}})."""
        cfg = cls()
        for name, w in (data.get("wells") or {}).items():
            cfg.wells[name] = (float(w["x"]), float(w["y"]))
            role = w.get("role", "other")
            if role not in ROLES:
                raise ValueError(f"wells.{name}.role: {role!r} is not one of {ROLES}")
            cfg.roles[name] = role
        for name, f in (data.get("facilities") or {}).items():
            cfg.facilities[name] = (float(f["x"]), float(f["y"]))
            cfg.facility_kinds[name] = str(f.get("kind", "facility"))
        for key in ("target_class", "consecutive_events", "warning_fraction",
                    "sector_deg", "baseline_n", "h", "k", "scl"):
            if key in data:
                setattr(cfg, key, type(getattr(cfg, key))(data[key]))
        if cfg.target_class not in standards.CLASSES[:4]:
            raise ValueError(f"target_class: {cfg.target_class!r} is not I-IV")
        return cfg


def decimal_year(day: date) -> float:
    """A date as a decimal year (slopes come out per year)."""
    start = date(day.year, 1, 1)
    length = (date(day.year + 1, 1, 1) - start).days
    return day.year + (day - start).days / length


@dataclass
class SeriesAnalysis:
    """One well and constituent: trend, class, exceedance and control-chart state."""

    well: str
    constituent: str
    unit: str
    role: str
    trend: tr.Trend
    latest: LabResult
    latest_class: str | None
    target_limit: float | None
    exceeds_target: bool
    exceeds_class_iv: bool
    warning: bool
    control: str
    control_detail: dict[str, Any]
    meets_target_events: int

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {
            "well": self.well, "constituent": self.constituent, "unit": self.unit,
            "role": self.role, **self.trend.to_json(),
            "latest": self.latest.to_json(), "latest_class": self.latest_class,
            "target_limit": self.target_limit, "exceeds_target": self.exceeds_target,
            "exceeds_class_iv": self.exceeds_class_iv, "warning": self.warning,
            "control_chart": self.control, "control_detail": self.control_detail,
            "meets_target_events": self.meets_target_events,
        }


def _control_state(values: Sequence[float], censored: Sequence[bool],
                   cfg: SiteConfig) -> tuple[str, dict[str, Any]]:
    """Intrawell chart: the first `baseline_n` samples are the baseline."""
    if len(values) <= cfg.baseline_n:
        return "insufficient baseline", {"n": len(values), "needed": cfg.baseline_n + 1}
    base = list(values[:cfg.baseline_n])
    if sum(censored[:cfg.baseline_n]) > cfg.baseline_n // 2:
        return "not applicable (baseline mostly non-detect)", {}
    try:
        baseline = Baseline.of(base, cfg.baseline_n)
    except ValueError as exc:
        return "not applicable", {"reason": str(exc)}
    chart = ShewhartCusum(baseline, h=cfg.h, k=cfg.k, scl=cfg.scl)
    for v in values[cfg.baseline_n:]:
        chart.update(v)
    last = chart.points[-1]
    detail = {"baseline_mean": baseline.mean, "baseline_sd": baseline.sd,
              "z": last.z, "cusum": last.cusum, "h": cfg.h, "k": cfg.k, "scl": cfg.scl}
    return ("out of control" if chart.out_of_control else "in control"), detail


def _meets(result: LabResult, limit: float | None) -> bool | None:
    """Whether a result meets a limit; a non-detect above it cannot tell."""
    if limit is None:
        return None
    if result.censored:
        return True if result.value <= limit else None
    return result.value <= limit


def analyse_series(
    well: str, constituent: str, results: Sequence[LabResult], cfg: SiteConfig,
) -> SeriesAnalysis:
    """Analyse one well-constituent series (results of any order, one unit)."""
    rows = sorted(results, key=lambda r: r.sampled)
    t = [decimal_year(r.sampled) for r in rows]
    values = [r.value for r in rows]
    censored = [r.censored for r in rows]
    result = tr.trend(t, values, censored)
    latest = rows[-1]
    row = standards.groundwater_limit(constituent)
    unit = latest.unit
    latest_class = limit = iv = None
    if row is not None and row.ph_ranges is None and standards.is_concentration(unit):
        limit = row.limit(cfg.target_class, unit)
        iv = row.limit("IV", unit)
        latest_class = row.classify(latest.value, unit)
        if latest.censored and latest_class != "I":
            latest_class = f"<={latest_class}"
    detected = not latest.censored
    exceeds = bool(limit is not None and detected and latest.value > limit)
    exceeds_iv = bool(iv is not None and detected and latest.value > iv)
    warning = bool(limit is not None and detected
                   and latest.value >= cfg.warning_fraction * limit)
    control, detail = _control_state(values, censored, cfg)
    run = 0
    for r in reversed(rows):
        if _meets(r, limit) is not True:
            break
        run += 1
    return SeriesAnalysis(well, constituent, unit, cfg.roles.get(well, "other"),
                          result, latest, latest_class, limit, exceeds, exceeds_iv,
                          warning, control, detail, run)


def group_results(
    results: Iterable[LabResult],
) -> dict[tuple[str, str], list[LabResult]]:
    """Concentration results by (well, constituent); levels and soil are left out."""
    out: dict[tuple[str, str], list[LabResult]] = defaultdict(list)
    for r in results:
        if not r.is_level and not standards.is_soil_unit(r.unit):
            out[(r.well, r.constituent)].append(r)
    return dict(out)


def flow_by_event(
    results: Iterable[LabResult], wells: Mapping[str, tuple[float, float]],
) -> list[dict[str, Any]]:
    """Fitted flow of every sampling date with heads at three or more located wells."""
    heads: dict[date, dict[str, float]] = defaultdict(dict)
    for r in results:
        if r.is_level and r.well in wells:
            heads[r.sampled][r.well] = r.value
    out = []
    for day in sorted(heads):
        try:
            flow = fit_flow_wells(heads[day], wells)
        except FlowError:
            continue
        out.append({"date": day.isoformat(), **flow.to_json()})
    return out


def _verdicts(series: list[SeriesAnalysis], cfg: SiteConfig) -> dict[str, Any]:
    """Effect evaluation per well and for the site (guide stage 6)."""
    per_well: dict[str, dict[str, Any]] = {}
    for well in sorted({s.well for s in series}):
        mine = [s for s in series if s.well == well]
        rising = [s.constituent for s in mine if s.trend.trend in RISING]
        judged = [s for s in mine if s.trend.trend != tr.INSUFFICIENT]
        tabled = [s for s in mine if s.target_limit is not None]
        # Impacted: not meeting the target class in the last consecutive events.
        impacted = [s for s in tabled if s.meets_target_events < cfg.consecutive_events]
        falling = [s.constituent for s in impacted if s.trend.trend in FALLING
                   and s.trend.sen_slope is not None and s.trend.sen_slope < 0]
        per_well[well] = {
            "role": cfg.roles.get(well, "other"),
            "near_term_contained": None if not judged else not rising,
            "rising": rising,
            "mid_term_falling": None if not impacted else len(falling) == len(impacted),
            "falling": falling,
            "long_term_meets_target": None if not tabled else not impacted,
            "not_meeting_target": [s.constituent for s in impacted],
        }
    watched = [w for w, v in per_well.items() if v["role"] in ("edge", "downgradient")]
    contained = [per_well[w]["near_term_contained"] for w in watched]
    impacted_wells = [w for w, v in per_well.items() if v["not_meeting_target"]]
    return {
        "target_class": cfg.target_class,
        "consecutive_events": cfg.consecutive_events,
        "wells": per_well,
        "site": {
            "near_term_contained": (None if not watched or None in contained
                                    else all(contained)),
            "edge_and_downgradient_wells": sorted(watched),
            "mid_term_falling": (None if not impacted_wells else all(
                per_well[w]["mid_term_falling"] for w in impacted_wells)),
            "impacted_wells": sorted(impacted_wells),
            "long_term_meets_target": (None if not per_well else all(
                v["long_term_meets_target"] is not False for v in per_well.values())),
        },
    }


def _risk(series: list[SeriesAnalysis], quick_screens: Sequence[Mapping[str, Any]],
          incidents: Sequence[Mapping[str, Any]], active_alarms: Sequence[str],
          cfg: SiteConfig) -> dict[str, Any]:
    """Site risk status with its reasons (guide stage 1, risk determination)."""
    reasons: list[dict[str, Any]] = []

    def add(level: str, situation: str, text: str, **evidence: Any) -> None:
        reasons.append({"level": level, "situation": situation, "reason": text,
                        "evidence": evidence})

    for s in series:
        where = {"well": s.well, "constituent": s.constituent}
        if s.exceeds_class_iv:
            add("red", "monitoring_data", f"{s.well} {s.constituent} above class IV",
                value=s.latest.value, unit=s.unit, **where)
        elif s.exceeds_target:
            add("orange", "monitoring_data",
                f"{s.well} {s.constituent} above class {cfg.target_class}",
                value=s.latest.value, unit=s.unit, **where)
        elif s.warning:
            add("yellow", "monitoring_data",
                f"{s.well} {s.constituent} at or above {cfg.warning_fraction:g} of "
                f"class {cfg.target_class}", value=s.latest.value, unit=s.unit, **where)
        if s.trend.trend == tr.INCREASING and s.role in ("edge", "downgradient"):
            add("orange", "monitoring_data",
                f"{s.well} {s.constituent} Increasing at a {s.role} well", **where)
        elif s.trend.trend in RISING:
            add("yellow", "monitoring_data",
                f"{s.well} {s.constituent} {s.trend.trend}", **where)
        if s.control == "out of control":
            add("orange", "monitoring_data",
                f"{s.well} {s.constituent} control chart out of control", **where)
    for q in quick_screens:
        if q.get("abnormal"):
            add("orange", "quick_screen",
                f"quick screen {q.get('kind', '')} at {q.get('location', '?')} "
                "abnormal",
                **{k: q.get(k) for k in ("ts", "value", "unit", "threshold")})
    for inc in incidents:
        level = "red" if inc.get("severity") in ("major", "red") else "orange"
        add(level, "incident", f"incident: {inc.get('title', '')}",
            ts=inc.get("ts"), kind=inc.get("kind"))
    for alarm in active_alarms:
        add("red", "leak_alarm", f"active alarm {alarm}", alarm=alarm)
    level = max((r["level"] for r in reasons), key=RISK_LEVELS.index, default="green")
    reasons.sort(key=lambda r: -RISK_LEVELS.index(r["level"]))
    return {"status": level, "reasons": reasons}


def analyse_site(
    results: Sequence[LabResult], cfg: SiteConfig,
    quick_screens: Sequence[Mapping[str, Any]] = (),
    incidents: Sequence[Mapping[str, Any]] = (),
    active_alarms: Sequence[str] = (),
) -> dict[str, Any]:
    """The whole site: per-series analysis, flow, candidate sources, verdicts, risk."""
    series = [analyse_series(w, c, rows, cfg)
              for (w, c), rows in sorted(group_results(results).items())]
    flows = flow_by_event(results, cfg.wells)
    latest_flow = flows[-1] if flows else None
    sources: dict[str, list[dict[str, Any]]] = {}
    if latest_flow is not None and cfg.facilities:
        flow = Flow(latest_flow["a"], latest_flow["b"], latest_flow["c"],
                    latest_flow["gradient"], latest_flow["direction_deg"],
                    latest_flow["r2"], latest_flow["n_wells"])
        for well in sorted({s.well for s in series if s.trend.trend in RISING}):
            if well in cfg.wells:
                sources[well] = [
                    {"facility": b.facility, "kind": cfg.facility_kinds.get(b.facility),
                     "distance": round(b.distance, 3),
                     "off_axis_deg": round(b.off_axis_deg, 2)}
                    for b in candidate_sources(flow, well, cfg.wells, cfg.facilities,
                                               cfg.sector_deg)]
    verdicts = _verdicts(series, cfg)
    risk = _risk(series, quick_screens, incidents, active_alarms, cfg)
    verdicts["caveats"] = risk["caveats"] = caveats(cfg)
    return {
        "series": [s.to_json() for s in series],
        "flow": latest_flow,
        "flow_by_event": flows,
        "candidate_sources": sources,
        "verdicts": verdicts,
        "risk": risk,
    }


def caveats(cfg: SiteConfig) -> list[str]:
    """What the verdicts rest on that is not checked: class I or II limits."""
    if cfg.target_class in ("I", "II"):
        return [f"target class {cfg.target_class}: the GB/T 14848 class I and II "
                "limits are not cross-checked against the printed standard "
                "(groundwatch/data/standards/SOURCE.md)"]
    return []


def finite(value: Any) -> Any:
    """Replace NaN and infinities (not JSON) by None, recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value
