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
            "actual": None if nan else actual, "expected": expected,
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
