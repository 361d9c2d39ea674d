"""Lab results and well coordinates from CSV, in the layout labs and tools use.

One row per result: well, constituent, date, result, units (and optional flags and
detection limit). The column names of the GWSDAT layout (WellName, Constituent,
SampleDate, Result, Units, Flags; WellName, XCoord, YCoord) are understood, as are
plain lower-case names. A result "ND<0.5" or "<5" is a non-detect kept with its
detection limit; an empty result is a sample not taken and is skipped.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

# Excel's 1900 date system counts days from 1899-12-30 (it keeps the fictitious
# 1900-02-29, so this origin is right for every serial after February 1900).
EXCEL_EPOCH = date(1899, 12, 30)
LEVEL_UNITS = {"level", "m", "masl", "m asl", "ft", "mbgs", "m bgs"}
LEVEL_NAMES = {"gw", "water level", "groundwater level", "head", "gw level",
               "water elevation", "groundwater elevation"}

_COLUMNS = {
    "well": ("wellname", "well", "well_id", "location", "sample_point", "site_id"),
    "constituent": ("constituent", "parameter", "analyte", "chemical", "compound"),
    "date": ("sampledate", "sample_date", "date", "sampled", "datetime", "time"),
    "result": ("result", "value", "concentration", "reading"),
    "unit": ("units", "unit"),
    "flags": ("flags", "flag", "qualifier"),
    "detection_limit": ("detection_limit", "dl", "rl", "reporting_limit", "mdl"),
}
_COORDS = {
    "well": ("wellname", "well", "well_id", "location"),
    "x": ("xcoord", "x", "easting"),
    "y": ("ycoord", "y", "northing"),
    "aquifer": ("aquifer",),
    "unit": ("coordunits", "coord_units", "units"),
}
_ND = re.compile(r"^\s*(?:nd|n\.d\.|bdl|u)?\s*<\s*([0-9.eE+-]+)\s*$", re.IGNORECASE)


class LabDataError(ValueError):
    """A lab file cannot be read; the message names the row and column."""


@dataclass(frozen=True, slots=True)
class LabResult:
    """One result: a value, or a non-detect below `detection_limit` (value = limit)."""

    well: str
    constituent: str
    sampled: date
    value: float
    censored: bool
    detection_limit: float | None
    unit: str
    flags: str = ""

    @property
    def is_level(self) -> bool:
        """Whether this row is a groundwater level (head), not a concentration."""
        return (self.constituent.strip().lower() in LEVEL_NAMES
                or self.unit.strip().lower() in LEVEL_UNITS)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict with the date as ISO text."""
        out = asdict(self)
        out["sampled"] = self.sampled.isoformat()
        return out


@dataclass(frozen=True, slots=True)
class WellLocation:
    """A well's position on the site grid (metres unless `unit` says otherwise)."""

    well: str
    x: float
    y: float
    aquifer: str = ""
    unit: str = "metres"


def parse_result(text: str) -> tuple[float, bool] | None:
    """("12.5") -> (12.5, False); ("ND<0.50") -> (0.5, True); ("") -> None."""
    text = text.strip()
    if not text:
        return None
    match = _ND.match(text)
    if match:
        return float(match.group(1)), True
    return float(text), False


def parse_date(text: str) -> date:
    """An ISO date or date-time, YYYY/MM/DD, or an Excel serial day number."""
    text = text.strip()
    try:
        serial = float(text)
    except ValueError:
        pass
    else:
        if not 1 <= serial < 2_958_466:  # 9999-12-31
            raise ValueError(f"{text!r} is not an Excel serial date")
        return EXCEL_EPOCH + timedelta(days=int(serial))
    for fmt in ("%Y/%m/%d", "%d.%m.%Y"):
        try:
            return datetime.strptime(text, fmt).date()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).date()
    except ValueError:
        raise ValueError(f"{text!r} is not a date (ISO, YYYY/MM/DD or Excel serial)") \
            from None


def _header_map(fieldnames: Sequence[str] | None, wanted: dict[str, tuple[str, ...]],
                required: tuple[str, ...]) -> dict[str, str]:
    names = {(f or "").strip().lower().replace(".", "_"): f for f in fieldnames or []}
    out = {}
    for key, options in wanted.items():
        for option in options:
            if option in names:
                out[key] = names[option]
                break
    missing = [k for k in required if k not in out]
    if missing:
        raise LabDataError(f"missing column(s) {', '.join(missing)}; have "
                           f"{', '.join(fieldnames or [])}")
    return out


def _text_of(source: str | Path | io.TextIOBase) -> str:
    if isinstance(source, io.TextIOBase):
        return source.read()
    return Path(source).read_text(encoding="utf-8-sig")


def read_results(source: str | Path | io.TextIOBase) -> list[LabResult]:
    """Read lab results from a CSV file (path) or text stream."""
    return parse_results(_text_of(source))


def parse_results(text: str) -> list[LabResult]:
    """Parse lab-results CSV text; blank results (not sampled) are skipped."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    cols = _header_map(reader.fieldnames, _COLUMNS,
                       ("well", "constituent", "date", "result"))
    out = []
    for line, row in enumerate(reader, start=2):
        def get(key: str) -> str:
            return (row.get(cols[key]) or "").strip() if key in cols else ""

        try:
            parsed = parse_result(get("result"))
            if parsed is None:
                continue
            value, censored = parsed
            dl_text = get("detection_limit")
            if get("result").strip().upper() == "ND" and dl_text:
                value, censored = float(dl_text), True
            sampled = parse_date(get("date"))
        except ValueError as exc:
            raise LabDataError(f"line {line}: {exc}") from None
        well, constituent = get("well"), get("constituent")
        if not well or not constituent:
            raise LabDataError(f"line {line}: well and constituent are required")
        out.append(LabResult(
            well=well, constituent=constituent, sampled=sampled, value=value,
            censored=censored, detection_limit=value if censored else (
                float(dl_text) if dl_text else None),
            unit=get("unit"), flags=get("flags"),
        ))
    return out


def read_wells(source: str | Path | io.TextIOBase) -> list[WellLocation]:
    """Read well coordinates (well, x, y; GWSDAT: WellName, XCoord, YCoord)."""
    return parse_wells(_text_of(source))


def parse_wells(text: str) -> list[WellLocation]:
    """Parse well-coordinates CSV text; a unit given on the first row applies to all."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    cols = _header_map(reader.fieldnames, _COORDS, ("well", "x", "y"))
    out = []
    unit = "metres"
    for line, row in enumerate(reader, start=2):
        def get(key: str) -> str:
            return (row.get(cols[key]) or "").strip() if key in cols else ""

        unit = get("unit") or unit
        try:
            out.append(WellLocation(get("well"), float(get("x")), float(get("y")),
                                    get("aquifer"), unit))
        except ValueError as exc:
            raise LabDataError(f"line {line}: {exc}") from None
    return out
