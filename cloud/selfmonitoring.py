"""Self-monitoring schedule of soil and groundwater (HJ 1209-2021) and the yearly
self-monitoring summary of a site's results against the standards.

The monitoring objects come from the site's groundwater configuration: wells (with
the unit they watch), soil points (surface or deep, with their unit), facilities
(concealed or not), and whether a groundwater-sensitive area lies within 1 km.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from cloud import standards
from cloud.labdata import LabResult

# HJ 1209-2021 frequencies, in months between samplings: surface soil yearly, deep
# soil every 3 years; groundwater half-yearly at units with concealed facilities
# (buried tanks, pipes, pits), yearly elsewhere; quarterly / half-yearly when a
# groundwater-sensitive area lies within 1 km.
SURFACE_SOIL_MONTHS = 12
DEEP_SOIL_MONTHS = 36
GW_CONCEALED_MONTHS = 6
GW_OTHER_MONTHS = 12
GW_CONCEALED_SENSITIVE_MONTHS = 3
GW_OTHER_SENSITIVE_MONTHS = 6

# Facility kinds taken as concealed (below ground, not seen in an inspection) when a
# facility does not say `concealed` itself.
CONCEALED_WORDS = ("buried", "underground", "pipe", "trench", "pit", "sump", "sewer",
                   "埋地", "地下", "管道", "管线", "坑")

OBJECTS = ("surface_soil", "deep_soil", "groundwater")


class SelfMonitoringError(ValueError):
    """The self-monitoring part of a site configuration is wrong (names the key)."""


@dataclass(frozen=True, slots=True)
class MonitoringObject:
    """One sampling location with what HJ 1209 asks of it."""

    location: str
    kind: str  # surface_soil, deep_soil, groundwater
    unit: str | None
    concealed: bool
    background: bool
    interval_months: int


def is_concealed(facility: Mapping[str, Any]) -> bool:
    """A facility's own `concealed`, else whether its kind names a buried one."""
    if "concealed" in facility:
        return bool(facility["concealed"])
    kind = str(facility.get("kind", "")).lower()
    return any(word in kind for word in CONCEALED_WORDS)


def groundwater_months(concealed: bool, sensitive: bool) -> int:
    """Months between groundwater samplings at a unit."""
    if sensitive:
        return GW_CONCEALED_SENSITIVE_MONTHS if concealed else GW_OTHER_SENSITIVE_MONTHS
    return GW_CONCEALED_MONTHS if concealed else GW_OTHER_MONTHS


def monitoring_objects(body: Mapping[str, Any]) -> list[MonitoringObject]:
    """The site's monitoring objects from its groundwater configuration.

    A well's `unit` names the facility it watches; a background well (role
    background) and a well without a unit are sampled at the non-concealed rate.
    """
    facilities = body.get("facilities") or {}
    sensitive = bool(body.get("sensitive_area_within_1km", False))
    out = []

    def unit_of(path: str, item: Mapping[str, Any]) -> tuple[str | None, bool]:
        unit = item.get("unit")
        if unit is None:
            return None, False
        if unit not in facilities:
            raise SelfMonitoringError(f"{path}.unit: no facility {unit!r}")
        return str(unit), is_concealed(facilities[unit])

    for name, well in sorted((body.get("wells") or {}).items()):
        unit, concealed = unit_of(f"wells.{name}", well)
        background = well.get("role") == "background"
        if background:
            concealed = False
        out.append(MonitoringObject(name, "groundwater", unit, concealed, background,
                                    groundwater_months(concealed, sensitive)))
    for name, point in sorted((body.get("soil_points") or {}).items()):
        depth = point.get("depth", "surface")
        if depth not in ("surface", "deep"):
            raise SelfMonitoringError(
                f"soil_points.{name}.depth: {depth!r} is not surface or deep")
        unit, concealed = unit_of(f"soil_points.{name}", point)
        months = SURFACE_SOIL_MONTHS if depth == "surface" else DEEP_SOIL_MONTHS
        out.append(MonitoringObject(name, f"{depth}_soil", unit, concealed, False,
                                    months))
    return out


def add_months(day: date, months: int) -> date:
    """The same day `months` later, or the month's last day if it has fewer."""
    y, m = divmod(day.month - 1 + months, 12)
    year, month = day.year + y, m + 1
    for d in (day.day, 30, 29, 28):
        try:
            return date(year, month, min(day.day, d))
        except ValueError:
            continue
    raise AssertionError("unreachable")


def last_sampled(results: Iterable[LabResult]) -> dict[str, date]:
    """The last sampling date of each location (a water level alone is not one)."""
    out: dict[str, date] = {}
    for r in results:
        if not r.is_level and (r.well not in out or r.sampled > out[r.well]):
            out[r.well] = r.sampled
    return out


def check_config(body: Mapping[str, Any]) -> None:
    """Raise SelfMonitoringError for a wrong self-monitoring part of a configuration."""
    schedule(body, [], date(2000, 1, 1))


def schedule(body: Mapping[str, Any], results: Sequence[LabResult],
             today: date) -> dict[str, Any]:
    """Due dates and overdue items of every monitoring object on `today`.

    A location never sampled is due from the configured `self_monitoring_start`
    (overdue once it passed), or at once when there is none.
    """
    objects = monitoring_objects(body)
    last = last_sampled(results)
    start_text = body.get("self_monitoring_start")
    try:
        start = date.fromisoformat(str(start_text)) if start_text else None
    except ValueError:
        raise SelfMonitoringError(
            f"self_monitoring_start: {start_text!r} is not a date") from None
    items = []
    for obj in objects:
        sampled = last.get(obj.location)
        due = add_months(sampled, obj.interval_months) if sampled else start
        overdue = due is None or today > due
        items.append({
            "location": obj.location, "object": obj.kind, "unit": obj.unit,
            "concealed": obj.concealed, "background": obj.background,
            "interval_months": obj.interval_months,
            "last_sampled": sampled.isoformat() if sampled else None,
            "due": due.isoformat() if due else None,
            "overdue": overdue,
            "days_overdue": (today - due).days if due and overdue else None,
        })
    issues = []
    wells = [o for o in objects if o.kind == "groundwater"]
    if wells and not any(o.background for o in wells):
        issues.append("no background well (role background): HJ 1209 asks for at "
                      "least one upgradient background well")
    for kind in OBJECTS:
        if not any(o.kind == kind for o in objects):
            issues.append(f"no {kind.replace('_', ' ')} monitoring point configured")
    return {
        "as_of": today.isoformat(),
        "sensitive_area_within_1km": bool(body.get("sensitive_area_within_1km")),
        "objects": items,
        "overdue": [i["location"] for i in items if i["overdue"]],
        "issues": issues,
    }


def _matrix(unit: str) -> str | None:
    if standards.is_soil_unit(unit):
        return "soil"
    return "water" if standards.is_concentration(unit) else None


def yearly_summary(body: Mapping[str, Any], results: Sequence[LabResult],
                   year: int) -> dict[str, Any]:
    """Per location and constituent in `year`: n, max, class and exceedances.

    Water against GB/T 14848 (the class of the maximum, exceedances of the target
    class); soil against GB 36600 class-2 land (exceedances of the screening value).
    A non-detect counts in n, never as an exceedance, and is the maximum only when
    nothing was detected.
    """
    target = str(body.get("target_class", "III"))
    objects = {o.location: o for o in monitoring_objects(body)}
    groups: dict[tuple[str, str, str], list[LabResult]] = defaultdict(list)
    for r in results:
        if r.sampled.year == year and not r.is_level:
            groups[(r.well, r.constituent, r.unit)].append(r)
    rows = []
    for (location, constituent, unit), rs in sorted(groups.items()):
        detects = [r for r in rs if not r.censored]
        top = max(detects or rs, key=lambda r: r.value)
        obj = objects.get(location)
        row: dict[str, Any] = {
            "location": location,
            "object": obj.kind if obj else None,
            "constituent": constituent, "unit": unit, "n": len(rs),
            "n_detected": len(detects), "max": top.value,
            "max_censored": top.censored, "max_date": top.sampled.isoformat(),
            "standard": None, "class": None, "limit": None, "exceedances": None,
            "limit_checked": None, "class_checked": None,
        }
        matrix = _matrix(unit)
        water = standards.groundwater_limit(constituent) if matrix == "water" else None
        soil = standards.soil_limit(constituent) if matrix == "soil" else None
        if water is not None and water.ph_ranges is None:
            limit = water.limit(target, unit)
            cls = water.classify(top.value, unit)
            row.update(
                standard=f"GB/T 14848-2017 class {target}", limit=limit,
                **{"class": f"<={cls}" if top.censored else cls},
                exceedances=sum(r.value > limit for r in detects),
                # Classes I and II limits are not cross-checked (SOURCE.md): a class
                # I or II result says "III or better" for certain, not which of them.
                limit_checked=target in water.checked,
                class_checked=cls not in ("I", "II"))
        elif soil is not None:
            row.update(
                standard="GB 36600-2018 class-2 screening",
                limit=standards.convert(soil.screening, soil.unit, unit),
                **{"class": soil.assess(top.value, unit)},
                exceedances=sum(soil.assess(r.value, unit) != "below screening"
                                for r in detects),
                limit_checked=soil.checked)
        rows.append(row)
    exceeding = sorted({(r["location"], r["constituent"]) for r in rows
                        if r["exceedances"]})
    return {
        "year": year, "target_class": target, "rows": rows,
        "exceedances": [{"location": w, "constituent": c} for w, c in exceeding],
    }


CSV_COLUMNS = ("location", "object", "constituent", "unit", "n", "n_detected", "max",
               "max_censored", "max_date", "standard", "limit", "class",
               "exceedances", "limit_checked", "class_checked")


def summary_csv(site: str, summary: Mapping[str, Any]) -> str:
    """The yearly summary as CSV, one row per location and constituent."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("site", "year", *CSV_COLUMNS))
    for row in summary["rows"]:
        writer.writerow([site, summary["year"],
                         *("" if row.get(c) is None else row[c] for c in CSV_COLUMNS)])
    return out.getvalue()
