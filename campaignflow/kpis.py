"""KPI math over daily metric rows (pandas), and where each goal stands.

The totals are summed; every ratio KPI is computed from summed totals (never
averaged across days), so a day with few clicks weighs what it should.
"""

from __future__ import annotations

import datetime as dt
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


def with_ratios(frame: "pd.DataFrame") -> "pd.DataFrame":
    """Add the ratio KPI columns to a frame of totals (a zero denominator gives NaN, not inf)."""
    out = frame.copy()
    for name, (num, den, mult) in RATIOS.items():
        denominator = out[den].where(out[den] != 0)
        out[name] = out[num] / denominator * mult
    return out


def daily(rows: "pd.DataFrame") -> "pd.DataFrame":
    """Per-day totals and ratios."""
    import pandas as pd

    if rows.empty:
        return pd.DataFrame(columns=["date", *KPI_NAMES])
    per_day = rows.groupby("date", as_index=False)[list(TOTALS)].sum().sort_values("date")
    return with_ratios(per_day)


def to_date(rows: "pd.DataFrame") -> dict[str, float]:
    import pandas as pd

    totals = pd.DataFrame([{k: float(rows[k].sum()) if not rows.empty else 0.0 for k in TOTALS}])
    return {k: float(v) for k, v in with_ratios(totals).iloc[0].items()}


def goal_status(kpi: str, target: float, baseline: float, start: dt.date, deadline: dt.date,
                actual: float, as_of: dt.date) -> dict[str, Any]:
    """Where a goal stands against the straight line from baseline at start to target at deadline."""
    span = max((deadline - start).days, 1)
    elapsed = min(max((as_of - start).days + 1, 0), span)
    expected = baseline + (target - baseline) * elapsed / span
    if actual != actual:  # NaN: nothing to compute the ratio from yet
        state = "no data"
    elif kpi in LOWER_IS_BETTER:
        state = "on track" if actual <= max(expected, target) else "off track"
    elif kpi in RATIOS:
        state = "on track" if actual >= target else "off track"
    else:
        state = "on track" if actual >= expected * 0.9 else "off track"
    progress = None if actual != actual or target == baseline else (actual - baseline) / (target - baseline) * 100
    return {"kpi": kpi, "target": target, "actual": actual, "expected_to_date": expected if kpi in TOTALS else target,
            "progress_pct": progress, "status": state}
