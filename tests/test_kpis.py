"""KPI math, pacing, goals against their straight line, off-track events, and the measurement step."""

from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pytest
from sqlmodel import select

from campaignflow import charts, db, kpis, metrics
from campaignflow import models as m
from ingest_helpers import measure, register, start_of

D = dt.date(2027, 3, 1)


def frame(*days: tuple) -> pd.DataFrame:
    return pd.DataFrame([dict(zip(("date", *kpis.TOTALS), d)) for d in days])


def test_ratios_come_from_summed_totals_not_averaged_days():
    rows = frame((D, 1000, 10, 50.0, 1, 0.0), (D + dt.timedelta(days=1), 10, 10, 10.0, 0, 0.0))
    total = kpis.to_date(rows)
    assert total["ctr"] == pytest.approx(20 / 1010 * 100)  # averaging days would say 50.5 %
    assert total["cpa"] == 60 and total["cpm"] == pytest.approx(60 / 1010 * 1000)
    assert math.isnan(total["roas"]) is False and total["roas"] == 0
    per_day = kpis.daily(rows)
    assert math.isnan(per_day.at[1, "cpa"]), "no conversions: no CPA, not infinity"
    running = kpis.cumulative(rows)
    assert running.at[1, "spend"] == 60 and running.at[1, "cpa"] == 60


def test_goal_against_its_straight_line():
    start, deadline = D, D + dt.timedelta(days=99)  # 100 days
    halfway = D + dt.timedelta(days=49)
    on = kpis.goal_status("conversions", 600, 0, start, deadline, 290, halfway)
    assert on["expected"] == pytest.approx(300) and on["status"] == "on track"
    off = kpis.goal_status("conversions", 600, 0, start, deadline, 200, halfway)
    assert off["status"] == "off track" and off["gap_pct"] == pytest.approx(-33.33, abs=0.01)
    assert kpis.goal_status("conversions", 600, 0, start, deadline, 610, halfway)["status"] == "met"
    assert kpis.goal_status("conversions", 600, 0, start, deadline, 0, D + dt.timedelta(days=1))["status"] == "too early"
    # CPA from 60 down to 45: halfway the line is at 52.5; lower is better.
    cpa = kpis.goal_status("cpa", 45, 60, start, deadline, 61, halfway)
    assert cpa["expected"] == pytest.approx(52.5) and cpa["status"] == "off track"
    assert kpis.goal_status("cpa", 45, 60, start, deadline, 50, halfway)["status"] == "on track"
    assert kpis.goal_status("cpa", 45, 60, start, deadline, float("nan"), halfway)["status"] == "no data"
    # a rate with no baseline is judged against its target
    assert kpis.goal_status("ctr", 1.0, 0, start, deadline, 0.5, halfway)["status"] == "off track"


def test_budget_pacing():
    pace = kpis.budget_pacing(10_000, 6_000, D, D + dt.timedelta(days=9), D + dt.timedelta(days=4))
    assert pace["budget_to_date"] == 5_000 and pace["pace_pct"] == pytest.approx(120) and pace["status"] == "overspending"
    assert kpis.budget_pacing(10_000, 2_000, D, D + dt.timedelta(days=9), D + dt.timedelta(days=4))["status"] == "underspending"
    assert kpis.budget_pacing(10_000, 0, D, D + dt.timedelta(days=9), D - dt.timedelta(days=1))["status"] == "not started"


def write_export(path, start: dt.date, n: int, conversions_per_day: int, spend: float = 300.0) -> None:
    lines = ["date,campaign,ad_group,ad,impressions,clicks,spend,conversions,conversion_value,currency"]
    for i in range(n):
        d = start + dt.timedelta(days=i)
        lines.append(f"{d},NW-Webinar-Q1-Awareness,aw,a,6000,50,{spend},{conversions_per_day},0,EUR")
        lines.append(f"{d},NW-Brand-AlwaysOn,brand,b,2000,10,50,0,0,EUR")
    path.write_text("\n".join(lines) + "\n")


def register_webinar(tmp_path, conversions_per_day: int, n: int = 20) -> tuple[str, dt.date]:
    export = tmp_path / "li.csv"
    data = register([{"name": "li", "kind": "csv", "path": export.name, "account": "nw-li",
                      "campaigns": ["NW-Webinar-Q1-Awareness"]}], campaign_id="northwind", spec_dir=tmp_path)
    write_export(export, start_of(data), n, conversions_per_day)
    return "northwind", start_of(data)


def test_measurement_step_reports_flags_off_track_once_per_day(home, tmp_path):
    campaign, start = register_webinar(tmp_path, conversions_per_day=2)
    step = measure(campaign)
    assert "20 day(s) of metrics" in step.summary and "OFF TRACK: registrations" in step.summary
    assert "## Unmapped platform campaigns" in step.markdown and "NW-Brand-AlwaysOn" in step.markdown
    assert "Budget pacing" in step.markdown
    measure(campaign)  # the same day again: no second notification
    with db.session() as s:
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "kpi.off_track")).all()
    assert sorted(e.subject for e in events) == ["cost-per-registration", "registrations"]  # CPA 150 vs ~59
    detail = next(e.detail for e in events if e.subject == "registrations")
    assert detail["goal"] == "registrations" and detail["kpi"] == "conversions" and detail["actual"] == 40
    assert detail["target"] == 600 and detail["expected"] > 40 and detail["as_of"] == str(start + dt.timedelta(days=19))


def test_measurement_on_track_writes_no_event(home, tmp_path):
    campaign, _ = register_webinar(tmp_path, conversions_per_day=20)
    step = measure(campaign)
    with db.session() as s:
        report = metrics.campaign_report(s, campaign)
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "kpi.off_track")).all()
    assert events == [] and "all goals on track" in step.summary
    goals = {g["name"]: g for g in report["goals"]}
    assert goals["registrations"]["status"] == "on track"
    assert goals["cost-per-registration"]["actual"] == pytest.approx(15.0)
    assert report["budget"]["spend"] == 6000 and report["unmapped"][0]["platform_campaign"] == "NW-Brand-AlwaysOn"
    json.dumps(report)  # serialisable as is


def test_measurement_with_an_unreadable_source_still_reports(home, tmp_path, monkeypatch):
    monkeypatch.delenv("CAMPAIGNFLOW_META_ACCESS_TOKEN", raising=False)
    data = register([{"name": "fb", "kind": "meta", "account": "act_42", "base_url": "http://127.0.0.1:9/v25.0"}])
    step = measure(data["id"])
    assert "not refreshed: fb" in step.summary
    assert "no access_token for meta" in step.markdown
    with db.session() as s:
        run = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "ingest.failed")).one()
    assert run.subject == "fb"


def chart_specs(page: str) -> list[dict]:
    """The Vega-Lite specs a KPI page embeds, in page order."""
    import re

    return [json.loads(spec) for spec in re.findall(r'<script type="application/json" id="spec-\d+">(.*?)</script>', page)]


def measured_report(tmp_path) -> tuple[dict, dt.date]:
    """The KPI report of a campaign 20 days in, off track, after the measurement step has read its export."""
    campaign, start = register_webinar(tmp_path, conversions_per_day=2)
    measure(campaign)
    with db.session() as s:
        return metrics.campaign_report(s, campaign), start


def test_kpi_page_shows_the_table_and_one_titled_chart_per_goal_and_the_budget(home, tmp_path):
    report, start = measured_report(tmp_path)
    page = charts.report_html(report)
    assert "<h1>Northwind" in page and f"As of {start + dt.timedelta(days=19)}; data {start} to" in page
    assert "<td>registrations</td><td>conversions</td><td>40.00</td>" in page and "<td>off track</td>" in page
    assert "cdn" not in page.lower() and "vegaEmbed" in page  # the Vega JavaScript is inlined: works offline
    specs = chart_specs(page)
    assert [spec["title"] for spec in specs] == ["registrations: conversions — off track",
                                                 "cost-per-registration: cpa — off track",
                                                 "spend against budget — overspending"]
    registrations = specs[0]["data"]["values"]
    actual = [row for row in registrations if row["series"] == "actual (registrations)"]
    assert [row["value"] for row in actual] == [2.0 * (day + 1) for day in range(20)]  # the running total, per day
    assert {"date": str(start), "value": 0.0, "series": f"line to 600 by {report['goals'][0]['deadline']}"} in registrations


def test_a_chart_renders_offline_to_png_and_svg(home, tmp_path):
    chart = charts.report_charts(measured_report(tmp_path)[0])[0]
    assert charts.to_png(chart).startswith(b"\x89PNG\r\n\x1a\n")
    svg = charts.to_svg(chart)
    assert svg.startswith("<svg") and "registrations: conversions — off track" in svg


@pytest.mark.parametrize("width", [390, 1280])
def test_kpi_page_draws_its_charts_in_a_browser(home, tmp_path, browser, width):
    page_file = tmp_path / "kpis.html"
    page_file.write_text(charts.report_html(measured_report(tmp_path)[0]), encoding="utf-8")
    context = browser.new_context(viewport={"width": width, "height": 900}, timezone_id="America/New_York")
    page, errors = context.new_page(), []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(page_file.as_uri())
    page.wait_for_function("document.querySelectorAll('figure.chart svg.marks').length === 3")
    assert errors == []
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # nothing spills off a phone's screen
    first = page.locator("figure.chart").first.inner_text()
    assert "registrations: conversions — off track" in first and "line to 600 by" in first
    context.close()
