"""The groundwater subcommands of the CLI: trend and flow of CSV files."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from cloud.labdata import LabDataError, LabResult, parse_results


class UsageError(ValueError):
    """The file or options do not say which series to analyse."""


def _decimal_year_rows(text: str) -> list[tuple[str, str, float, float, bool, str]]:
    """Rows of a lab CSV whose date column holds decimal years (as the Guidance's)."""
    from cloud.labdata import _COLUMNS, _header_map, parse_result

    reader = csv.DictReader(text.splitlines())
    cols = _header_map(reader.fieldnames, _COLUMNS, ("date", "result"))
    rows = []
    for line, row in enumerate(reader, start=2):
        parsed = parse_result(row[cols["result"]] or "")
        if parsed is None:
            continue
        try:
            t = float(row[cols["date"]])
        except ValueError:
            raise LabDataError(f"line {line}: {row[cols['date']]!r} is not a decimal "
                               "year") from None
        rows.append((row.get(cols.get("well", ""), "") or "",
                     row.get(cols.get("constituent", ""), "") or "", t, *parsed,
                     row.get(cols.get("unit", ""), "") or ""))
    return rows


def _pick(values: set[str], given: str | None, what: str) -> str:
    if given is not None:
        if given not in values:
            raise UsageError(f"no {what} {given!r} in the file; it has "
                             f"{', '.join(sorted(values))}")
        return given
    if len(values) != 1:
        raise UsageError(f"the file has {len(values)} {what}s "
                         f"({', '.join(sorted(values))}): choose one with --{what}")
    return next(iter(values))


def trend_of_file(path: str, well: str | None, constituent: str | None,
                  decimal_years: bool = False) -> dict[str, Any]:
    """Mann-Kendall, Sen's slope (per year) and trend class of one series of a file."""
    from cloud.groundwater import decimal_year
    from cloud.stats.trend import trend

    text = Path(path).read_text(encoding="utf-8-sig")
    if decimal_years:
        rows = _decimal_year_rows(text)
        w = _pick({r[0] for r in rows}, well, "well")
        c = _pick({r[1] for r in rows}, constituent, "constituent")
        mine = [r for r in rows if r[0] == w and r[1] == c]
        t, x, cens = [r[2] for r in mine], [r[3] for r in mine], [r[4] for r in mine]
        unit = mine[-1][5] if mine else ""
    else:
        results: list[LabResult] = [r for r in parse_results(text) if not r.is_level]
        w = _pick({r.well for r in results}, well, "well")
        c = _pick({r.constituent for r in results if r.well == w}, constituent,
                  "constituent")
        series = sorted((r for r in results if r.well == w and r.constituent == c),
                        key=lambda r: r.sampled)
        t = [decimal_year(r.sampled) for r in series]
        x = [r.value for r in series]
        cens = [r.censored for r in series]
        unit = series[-1].unit if series else ""
    result = trend(t, x, cens)
    return {"well": w, "constituent": c, "unit": unit, **result.to_json(),
            "slope_unit": f"{unit}/yr" if unit else "per yr"}


def flow_of_file(path: str) -> dict[str, Any]:
    """Gradient, flow azimuth and fit quality of heads in a CSV (well, x, y, head)."""
    from cloud.flow import fit_flow

    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        names = {(n or "").strip().lower(): n for n in reader.fieldnames or []}
        missing = [c for c in ("well", "x", "y", "head") if c not in names]
        if missing:
            raise UsageError(f"{path}: missing column(s) {', '.join(missing)}")
        rows = [(r[names["well"]], float(r[names["x"]]), float(r[names["y"]]),
                 float(r[names["head"]])) for r in reader if r[names["head"]].strip()]
    flow = fit_flow([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
    return {"wells": [r[0] for r in rows], **flow.to_json()}


def format_trend(out: dict[str, Any]) -> str:
    """One human-readable paragraph of a trend result."""
    ci = out["sen_ci"]
    lines = [
        f"{out['well']} {out['constituent']}: {out['trend']} "
        f"(n = {out['n']}, {out['n_censored']} non-detect)",
        f"  Mann-Kendall S = {out['s']}, Var(S) = {out['var_s']:g}, "
        f"z = {out['z']:.4f}, p = {out['p']:.4f} (two-sided, normal approximation)"
        + (f", exact p = {out['p_exact']:.4f}" if out["p_exact"] is not None else ""),
    ]
    if out["sen_slope"] is not None:
        lines.append(f"  Sen slope = {out['sen_slope']:.4f} {out['slope_unit']}, "
                     f"95% CI [{ci[0]:.4f}, {ci[1]:.4f}]")
    return "\n".join(lines)


def format_flow(out: dict[str, Any]) -> str:
    """One line of a flow result."""
    r2 = "exact fit (3 wells)" if out["r2"] is None else f"R2 = {out['r2']:.4f}"
    return (f"{out['n_wells']} wells: gradient {out['gradient']:.5f}, flows toward "
            f"{out['direction_deg']:.1f} deg from north, {r2}")


def dumps(out: dict[str, Any]) -> str:
    """JSON text of a result (NaN as null)."""
    from cloud.groundwater import finite

    return json.dumps(finite(out), ensure_ascii=False)
