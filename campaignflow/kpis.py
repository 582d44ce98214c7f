"""KPI math over daily metric rows (pandas), pacing, and where each goal stands.

Every ratio KPI is computed from summed totals (never averaged across days),
so a day with few clicks weighs what it should. A measure no source reports
(NULL in the store, NaN here) stays unknown: it is never summed as 0, and
the ratios built on it are unknown too. A goal is judged against the
straight line from its baseline at the campaign start to its target at its
deadline; spend against the media budget spread evenly over the campaign.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

TOTALS = ("impressions", "clicks", "spend", "conversions", "conversion_value")
# ratio KPI -> (numerator, denominator, multiplier)
RATIOS: dict[str, tuple[str, str, float]] = {
    "ctr": ("clicks", "impressions", 100.0),
    "cpc": ("spend", "clicks", 1.0),
    "cpm": ("spend", "impressions", 1000.0),
    "cpa": ("spend", "conversions", 1.0),
    "roas": ("conversion_value", "spend", 1.0),
    "conversion_rate": ("conversions", "clicks", 100.0),
}
KPI_NAMES = TOTALS + tuple(RATIOS)
LOWER_IS_BETTER = {"cpc", "cpm", "cpa"}
TOLERANCE = 0.10  # within 10 % of the line is on track
MIN_DAYS = 3  # fewer days of a campaign than this: too early to call a goal off track
BUDGET_BAND = (0.8, 1.1)  # spend/budget-to-date outside this band is off pace


def with_ratios(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Add the ratio KPI columns to a frame of totals (a zero denominator gives NaN, not inf)."""
    out = frame.copy()
    for name, (num, den, mult) in RATIOS.items():
        denominator = out[den].where(out[den] != 0)
        out[name] = out[num] / denominator * mult
    return out


def daily(rows: "pd.DataFrame") -> "pd.DataFrame":
    """Per-day totals and ratios, in date order."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=["date", *KPI_NAMES])
    per_day = rows.groupby("date", as_index=False)[list(TOTALS)].sum(min_count=1).sort_values("date")
    return with_ratios(per_day).reset_index(drop=True)


def cumulative(rows: "pd.DataFrame") -> "pd.DataFrame":
    """Running totals and the ratios of the running totals: each day's KPIs to date."""
    per_day = daily(rows)
    if per_day.empty:
        return per_day
    running = per_day[["date"]].copy()
    for c in TOTALS:
        running[c] = per_day[c].astype(float).cumsum().ffill()  # a day without the measure keeps the total
    return with_ratios(running)


def to_date(rows: "pd.DataFrame") -> dict[str, float]:
    import pandas as pd

    totals = pd.DataFrame([{k: float(rows[k].sum(min_count=1)) if not rows.empty else 0.0 for k in TOTALS}])
    return {k: float(v) for k, v in with_ratios(totals).iloc[0].items()}


def not_reported(kpi: str, totals: dict[str, float]) -> bool:
    """Is the KPI unknown because a measure it is built from is reported by no source (NaN)?"""
    inputs = (kpi,) if kpi in TOTALS else RATIOS[kpi][:2]
    return any(isinstance(totals.get(k), float) and math.isnan(totals[k]) for k in inputs)


def _fraction(start: dt.date, end: dt.date, as_of: dt.date) -> tuple[float, int]:
    """How far along [start, end] `as_of` is (0..1, days counted inclusively), and the days elapsed."""
    span = max((end - start).days + 1, 1)
    elapsed = min(max((as_of - start).days + 1, 0), span)
    return elapsed / span, elapsed


def expected_on_line(kpi: str, target: float, baseline: float, start: dt.date, deadline: dt.date,
                     as_of: dt.date) -> float:
    """The value the straight line from baseline (at start) to target (at the deadline) has reached by `as_of`."""
    if kpi in RATIOS and baseline == 0:
        return target  # a rate has no meaningful zero to climb from: it is judged against the target itself
    fraction, _ = _fraction(start, deadline, as_of)
    return baseline + (target - baseline) * fraction


def goal_status(kpi: str, target: float, baseline: float, start: dt.date, deadline: dt.date,
                actual: float, as_of: dt.date) -> dict[str, Any]:
    """Where a goal stands against its straight line: on track, off track, met, too early, or no data."""
    expected = expected_on_line(kpi, target, baseline, start, deadline, as_of)
    _, elapsed = _fraction(start, deadline, as_of)
    lower = kpi in LOWER_IS_BETTER
    if actual is None or (isinstance(actual, float) and math.isnan(actual)):
        state = "no data"
    elif (actual <= target) if lower else (actual >= target and kpi in TOTALS):
        state = "met" if kpi in TOTALS or as_of >= deadline else "on track"
    else:
        behind = actual > expected * (1 + TOLERANCE) if lower else actual < expected * (1 - TOLERANCE)
        state = "on track" if not behind else "too early" if elapsed < MIN_DAYS else "off track"
    nan = actual is None or (isinstance(actual, float) and math.isnan(actual))
    progress = None if nan or target == baseline else (actual - baseline) / (target - baseline) * 100
    gap = None if nan or not expected else (actual - expected) / abs(expected) * 100
    return {"kpi": kpi, "target": target, "baseline": baseline, "deadline": deadline.isoformat(),
            "actual": None if nan else actual, "expected": expected, "expected_to_date": expected,
            "gap_pct": gap, "progress_pct": progress, "status": state, "lower_is_better": lower}


def budget_pacing(budget: float, spend: float, start: dt.date, end: dt.date, as_of: dt.date) -> dict[str, Any]:
    """Spend against the budget spread evenly from start to end (the budget-to-date)."""
    fraction, elapsed = _fraction(start, end, as_of)
    to_date_budget = budget * fraction
    pace = spend / to_date_budget if to_date_budget and not math.isnan(spend) else None
    if math.isnan(spend):
        state = "spend not reported"
    elif pace is None:
        state = "not started"
    elif pace > BUDGET_BAND[1]:
        state = "overspending"
    elif pace < BUDGET_BAND[0] and elapsed >= MIN_DAYS:
        state = "underspending"
    else:
        state = "on pace"
    return {"budget": budget, "budget_to_date": to_date_budget, "spend": spend,
            "pace_pct": None if pace is None else pace * 100, "remaining": budget - spend, "status": state}


def clean(value: Any) -> Any:
    """NaN to None, recursively, so reports serialise to JSON."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean(v) for v in value]
    return value


# -- charts: a report as a self-contained HTML page (inline SVG, no plotting library) ------------

def _svg_chart(title: str, start: dt.date, end: dt.date, plan: tuple[float, float], points: list[tuple[dt.date, float]],
               unit: str, plan_label: str) -> str:
    width, height, left, right, top, bottom = 640, 240, 60, 16, 28, 36
    values = [v for _, v in points] + list(plan)
    top_value = max([v for v in values if v is not None] + [1e-9]) * 1.1
    span = max((end - start).days, 1)

    def x(d: dt.date) -> float:
        return left + (width - left - right) * min(max((d - start).days, 0), span) / span

    def y(v: float) -> float:
        return top + (height - top - bottom) * (1 - v / top_value)

    actual = " ".join(f"{x(d):.1f},{y(v):.1f}" for d, v in points if v is not None)
    dots = "".join(f'<circle cx="{x(d):.1f}" cy="{y(v):.1f}" r="2"/>' for d, v in points[-1:] if v is not None)
    ticks = "".join(f'<text x="{left - 6}" y="{y(top_value * f / 1.1) + 4:.1f}" text-anchor="end">{top_value * f / 1.1:,.4g}</text>'
                    for f in (0, 0.5, 1.0))
    return (f'<figure><figcaption>{_html(title)}</figcaption>'
            f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" font-size="11" font-family="sans-serif">'
            f'<line x1="{left}" y1="{y(0):.1f}" x2="{width - right}" y2="{y(0):.1f}" stroke="#999"/>'
            f'<line x1="{left}" y1="{top}" x2="{left}" y2="{y(0):.1f}" stroke="#999"/>{ticks}'
            f'<text x="{left}" y="{height - 12}">{start}</text><text x="{width - right}" y="{height - 12}" text-anchor="end">{end}</text>'
            f'<line x1="{x(start):.1f}" y1="{y(plan[0]):.1f}" x2="{x(end):.1f}" y2="{y(plan[1]):.1f}" stroke="#888" '
            f'stroke-dasharray="5,4"><title>{_html(plan_label)}</title></line>'
            f'<polyline fill="none" stroke="#1f6feb" stroke-width="2" points="{actual}"/><g fill="#1f6feb">{dots}</g>'
            f'<text x="{width - right}" y="{top - 10}" text-anchor="end" fill="#555">dashed: {_html(plan_label)}; '
            f'blue: actual ({_html(unit)})</text></svg></figure>')


def _num(value: float | None) -> str:
    return "—" if value is None else f"{value:,.2f}"


def _html(text: Any) -> str:
    import html

    return html.escape(str(text))


def report_html(report: dict[str, Any]) -> str:
    """Each goal's actual-to-date against its straight line, and spend against the budget line, as one HTML page."""
    start, end = dt.date.fromisoformat(report["start"]), dt.date.fromisoformat(report["end"])
    days = [(dt.date.fromisoformat(d["date"]), d["to_date"]) for d in report["daily"]]
    charts = []
    for g in report["goals"]:
        deadline = dt.date.fromisoformat(g["deadline"])
        plan = (g["target"], g["target"]) if g["kpi"] in RATIOS and g["baseline"] == 0 else (g["baseline"], g["target"])
        charts.append(_svg_chart(f"{g['name']}: {g['kpi']} — {g['status']}", start, deadline, plan,
                                 [(d, t[g["kpi"]]) for d, t in days], g["unit"],
                                 f"line to {g['target']:g} by {deadline}"))
    b = report["budget"]
    charts.append(_svg_chart(f"spend against budget — {b['status']}", start, end, (0, b["budget"]),
                             [(d, t["spend"]) for d, t in days], report["currency"],
                             f"budget {b['budget']:,.0f} {report['currency']} spread evenly"))
    rows = "".join(f"<tr><td>{_html(g['name'])}</td><td>{_html(g['kpi'])}</td><td>{_num(g['actual'])}</td>"
                   f"<td>{g['expected']:,.2f}</td><td>{g['target']:g} {_html(g['unit'])}</td><td>{_html(g['status'])}</td></tr>"
                   for g in report["goals"])
    return ("<!doctype html><html><head><meta charset='utf-8'><title>KPIs: " + _html(report["name"]) + "</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:left}"
            "figure{margin:1em 0}figcaption{font-weight:bold}</style></head><body>"
            f"<h1>{_html(report['name'])}</h1><p>As of {report['as_of']}; data {report['data_from'] or '—'} to "
            f"{report['data_through'] or '—'}.</p><table><tr><th>goal</th><th>KPI</th><th>actual</th><th>expected by now</th>"
            f"<th>target</th><th>status</th></tr>{rows}</table>" + "".join(charts) + "</body></html>")
