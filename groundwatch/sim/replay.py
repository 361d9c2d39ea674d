"""Parsers for the recorded field data the simulators replay (groundwatch/data/*/)."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import NamedTuple

log = logging.getLogger(__name__)

FEET_TO_M = 0.3048

AQUATROLL_FILE = "data/aquatroll100-15min/example_InSituInc_Aquatroll.csv"
WELL_LEVEL_FILE = "data/ugs-well-hourly/ag14a_2016-08-02.csv"

_AQUATROLL_HEADER = "Date and Time;Seconds"
_WELL_HEADER = ["Date", "Time", "Feet", "Volts"]


class AquaTrollRecord(NamedTuple):
    """One 15-minute Aqua TROLL 100 record, timed by the logger's elapsed seconds."""

    elapsed_s: float
    specific_conductivity_us_cm: float
    temperature_c: float


class WellLevelRecord(NamedTuple):
    """One hourly transducer record: seconds since the first record, level in metres."""

    elapsed_s: float
    level_m: float


def _package_file(relative: str) -> Traversable:
    """A data file shipped inside the groundwatch package."""
    return resources.files("groundwatch").joinpath(relative)


def _number(text: str, what: str, where: str) -> float:
    """Parse a finite float or raise ValueError naming the place."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{where}: {what} {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{where}: {what} {text.strip()!r} is not finite")
    return value


def _data_lines(lines: list[str], first: int) -> list[tuple[int, str]]:
    """(1-based line number, text) of the data rows; blank lines only at the end."""
    end = len(lines)
    while end > first and not lines[end - 1].strip():
        end -= 1
    return [(n + 1, lines[n]) for n in range(first, end)]


def parse_aquatroll(text: str, source: str = "<aquatroll>") -> list[AquaTrollRecord]:
    """Parse a Win-Situ Aqua TROLL export (';'-separated, header block first)."""
    lines = text.splitlines()
    header_at = next(
        (i for i, line in enumerate(lines) if line.startswith(_AQUATROLL_HEADER)), None
    )
    if header_at is None:
        raise ValueError(f"{source}: no {_AQUATROLL_HEADER!r} header row")
    where = f"{source}:{header_at + 1}"
    columns = [c.strip() for c in lines[header_at].split(";")]

    def column(prefix: str) -> int:
        for i, name in enumerate(columns):
            if name.startswith(prefix):
                return i
        raise ValueError(f"{where}: header has no {prefix!r} column")

    col_s = column("Seconds")
    col_temp = column("Temperature (C)")
    col_spc = column("Specific Conductivity")

    expected: int | None = None
    for line in lines[:header_at]:
        key, _, rest = line.partition(";")
        if key.strip() == "Record Count":
            expected = int(_number(rest.split(";")[0], "record count", source))

    records: list[AquaTrollRecord] = []
    for lineno, line in _data_lines(lines, header_at + 1):
        where = f"{source}:{lineno}"
        fields = line.split(";")
        if len(fields) != len(columns):
            raise ValueError(
                f"{where}: {len(fields)} fields, the header has {len(columns)}"
            )
        try:
            datetime.strptime(fields[0].strip(), "%d.%m.%Y %H:%M:%S")
        except ValueError:
            raise ValueError(f"{where}: bad date {fields[0]!r}") from None
        record = AquaTrollRecord(
            _number(fields[col_s], "elapsed seconds", where),
            _number(fields[col_spc], "specific conductivity", where),
            _number(fields[col_temp], "temperature", where),
        )
        if records and record.elapsed_s <= records[-1].elapsed_s:
            raise ValueError(f"{where}: elapsed seconds do not increase")
        records.append(record)
    if not records:
        raise ValueError(f"{source}: no records after the header row")
    if expected is not None and expected != len(records):
        raise ValueError(
            f"{source}: Record Count says {expected}, found {len(records)} records"
        )
    return records


def parse_well_log(text: str, source: str = "<well log>") -> list[WellLevelRecord]:
    """Parse a UGS transducer log (site line, `Date, Time, Feet, Volts`, rows)."""
    lines = text.splitlines()
    if len(lines) < 2:
        raise ValueError(f"{source}: too short for a site line and a header")
    header = [c.strip() for c in lines[1].split(",")]
    if header != _WELL_HEADER:
        raise ValueError(f"{source}:2: header is {header}, expected {_WELL_HEADER}")
    records: list[WellLevelRecord] = []
    start: datetime | None = None
    for lineno, line in _data_lines(lines, 2):
        where = f"{source}:{lineno}"
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != len(_WELL_HEADER):
            raise ValueError(f"{where}: {len(fields)} fields, expected 4")
        try:
            stamp = datetime.strptime(f"{fields[0]} {fields[1]}", "%m/%d/%y %H:%M:%S")
        except ValueError:
            raise ValueError(
                f"{where}: bad date/time {fields[0]!r} {fields[1]!r}"
            ) from None
        level_ft = _number(fields[2], "level (ft)", where)
        _number(fields[3], "battery voltage", where)
        start = start or stamp
        elapsed_s = (stamp - start).total_seconds()
        if records and elapsed_s <= records[-1].elapsed_s:
            raise ValueError(f"{where}: time does not increase")
        records.append(WellLevelRecord(elapsed_s, level_ft * FEET_TO_M))
    if not records:
        raise ValueError(f"{source}: no records")
    return records


def _read(path: Path | Traversable) -> str:
    """A recorded file's text (the loggers write ISO-8859-1)."""
    return path.read_bytes().decode("latin-1")


@cache
def _load_aquatroll_default() -> tuple[AquaTrollRecord, ...]:
    path = _package_file(AQUATROLL_FILE)
    records = tuple(parse_aquatroll(_read(path), str(path)))
    log.debug("loaded %d Aqua TROLL records from %s", len(records), path)
    return records


@cache
def _load_well_level_default() -> tuple[WellLevelRecord, ...]:
    path = _package_file(WELL_LEVEL_FILE)
    records = tuple(parse_well_log(_read(path), str(path)))
    log.debug("loaded %d well-level records from %s", len(records), path)
    return records


def load_aquatroll(path: str | Path | None = None) -> tuple[AquaTrollRecord, ...]:
    """Records of the shipped Aqua TROLL export, or of the file at `path`."""
    if path is None:
        return _load_aquatroll_default()
    return tuple(parse_aquatroll(_read(Path(path)), str(path)))


def load_well_level(path: str | Path | None = None) -> tuple[WellLevelRecord, ...]:
    """Records of the shipped UGS hourly well log, or of the file at `path`."""
    if path is None:
        return _load_well_level_default()
    return tuple(parse_well_log(_read(Path(path)), str(path)))
