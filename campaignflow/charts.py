"""The KPI report's charts: each goal's actual-to-date against its straight line, and spend against the budget.

One altair definition per chart serves every medium: `report_html` embeds it as an interactive chart in a
self-contained page (the Vega JavaScript is inlined, no CDN), and `to_png` / `to_svg` render it offline through
vl-convert for email, chat and Prefect artifacts (no browser involved).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from campaignflow.kpis import RATIOS
from campaignflow.presentation import render_page

if TYPE_CHECKING:
    import altair as alt

ACTUAL_COLOUR, PLAN_COLOUR = "#1f6feb", "#888"
WIDTH, HEIGHT = 640, 200  # the offline size; in the HTML page a chart takes the width of its column


def _line_chart(title: str, start: str, end: str, plan: tuple[float, float], plan_label: str,
                points: list[tuple[str, float | None]], unit: str) -> "alt.LayerChart":
    """A dashed plan line from (start, plan[0]) to (end, plan[1]) and the actual values to date, one per day."""
    import altair as alt

    actual_label = f"actual ({unit})"
    rows = [{"date": start, "value": plan[0], "series": plan_label}, {"date": end, "value": plan[1], "series": plan_label}]
    rows += [{"date": day, "value": value, "series": actual_label} for day, value in points if value is not None]
    colour = alt.Color("series:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=0, symbolType="stroke"),
                       scale=alt.Scale(domain=[actual_label, plan_label], range=[ACTUAL_COLOUR, PLAN_COLOUR]))
    dash = alt.StrokeDash("series:N", legend=None,
                          scale=alt.Scale(domain=[actual_label, plan_label], range=[[1, 0], [5, 4]]))
    # Days are calendar days: read and shown in UTC, so a browser west of Greenwich does not move them a day back.
    base = alt.Chart(alt.Data(values=rows)).encode(
        x=alt.X("date:T", title=None, scale=alt.Scale(type="utc", domain=[start, end]),
                axis=alt.Axis(formatType="utc", labelOverlap=True)),
        y=alt.Y("value:Q", title=unit),
        color=colour,
        tooltip=[alt.Tooltip("series:N", title="line"), alt.Tooltip("date:T", format="%Y-%m-%d", formatType="utc"),
                 alt.Tooltip("value:Q", format=",.4~g")])
    lines = base.mark_line(strokeWidth=2).encode(strokeDash=dash)
    dots = base.mark_point(filled=True, size=30).transform_filter(alt.datum.series == actual_label)
    return alt.layer(lines, dots).properties(title=title, width=WIDTH, height=HEIGHT)


def report_charts(report: dict[str, Any]) -> list["alt.LayerChart"]:
    """One chart per goal (its actual to date against its line), then spend against the budget line."""
    days = [(d["date"], d["to_date"]) for d in report["daily"]]
    charts = []
    for g in report["goals"]:
        # a rate judged against its target alone (no baseline) has a flat line at the target
        plan = (g["target"], g["target"]) if g["kpi"] in RATIOS and g["baseline"] == 0 else (g["baseline"], g["target"])
        charts.append(_line_chart(f"{g['name']}: {g['kpi']} — {g['status']}", report["start"], g["deadline"], plan,
                                  f"line to {g['target']:g} by {g['deadline']}",
                                  [(day, totals[g["kpi"]]) for day, totals in days], g["unit"]))
    b = report["budget"]
    charts.append(_line_chart(f"spend against budget — {b['status']}", report["start"], report["end"],
                              (0, b["budget"]), f"budget {b['budget']:,.0f} {report['currency']} spread evenly",
                              [(day, totals["spend"]) for day, totals in days], report["currency"]))
    return charts


def to_png(chart: "alt.TopLevelMixin", scale: float = 2.0) -> bytes:
    """The chart as a PNG (twice the pixels by default, sharp on high-density screens)."""
    import vl_convert

    return vl_convert.vegalite_to_png(chart.to_dict(), scale=scale)


def to_svg(chart: "alt.TopLevelMixin") -> str:
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_dict())


def report_html(report: dict[str, Any]) -> str:
    """The KPI report as one self-contained HTML page: the goals table, then the interactive charts."""
    import vl_convert

    specs = [chart.properties(width="container").to_dict() for chart in report_charts(report)]
    return render_page("kpis.j2", report=report, specs=specs, vega=vl_convert.javascript_bundle())
