"""ingest, kpis: metric ingestion from ad and analytics platforms, and KPIs against goals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer

from campaignflow.app.commands import app, console, print_json
from campaignflow.errors import UserError


def _date(value: Optional[str], option: str) -> Optional[dt.date]:
    if value is None:
        return None
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise UserError(f"{option} {value!r} is not a date; write it as YYYY-MM-DD, e.g. 2027-01-31") from None


@app.command()
def ingest(
    source: str = typer.Argument(..., help="A metric source named in a registered campaign's `measurement.sources`."),
    since: Optional[str] = typer.Option(None, "--since", help="First day to read (YYYY-MM-DD); default: the cursor "
                                                              "minus the source's look-back days."),
    until: Optional[str] = typer.Option(None, "--until", help="Last day to read (YYYY-MM-DD); default: today."),
    local: bool = typer.Option(False, "--local", help="Run in this process without Prefect (no flow run, no limits)."),
) -> None:
    """Read a metric source now (as the scheduled flow would), with a progress bar; list unmapped campaigns."""
    first, last = _date(since, "--since"), _date(until, "--until")
    if first and last and first > last:
        raise UserError(f"--since {first} is after --until {last}; swap them")
    out = console()
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                  TextColumn("{task.fields[rows]} rows  {task.fields[part]}"), TimeElapsedColumn(),
                  console=out, transient=False) as bar:
        task_id = bar.add_task(f"ingest {source}", total=None, rows="0", part="")

        def on_progress(event) -> None:  # noqa: ANN001
            bar.update(task_id, total=event.total, completed=event.done, rows=f"{event.rows:,}", part=event.part)
            if event.note:  # a retry or a wait: said as a line, so the bar never looks frozen
                bar.console.print(event.note, markup=False)

        if local:
            from campaignflow import ingest as core

            result = core.run_source(source, first, last, progress=on_progress)
            summary = {"rows_written": result.rows_written, "unmapped_rows": result.unmapped_rows,
                       "warnings": result.warnings,
                       "since": str(result.since), "until": str(result.until), "cursor": str(result.cursor),
                       "unmapped": result.unmapped, "goals": _check_goals(source)}
        else:
            summary = _run_flow(source, first, last, on_progress, out)
    _print_summary(source, summary, out)


def _run_flow(source: str, since, until, on_progress, out) -> dict:  # noqa: ANN001
    import logging

    from campaignflow.app.commands.running import connect_prefect, quiet_prefect_console

    connect_prefect(out)
    from prefect.logging.handlers import PrefectConsoleHandler

    from flows.ingest_metrics import ingest_metrics
    from tasks import ingest as ingest_tasks

    quiet_prefect_console()
    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler):
            handler.setLevel(logging.CRITICAL)  # a failed source is explained below, without Prefect's traceback
    ingest_tasks.progress_listeners.append(on_progress)
    try:
        return ingest_metrics(source, since, until, trigger="cli")
    finally:
        ingest_tasks.progress_listeners.remove(on_progress)


def _check_goals(source: str) -> list[dict]:
    from campaignflow import db, ingest, metrics

    goals = []
    with db.session(write=True) as s:
        for campaign_id in sorted({r.campaign_id for r in ingest.source_config(s, source).rules}):
            report = metrics.campaign_report(s, campaign_id)
            metrics.flag_off_track(s, campaign_id, report)
            goals.append({"campaign": campaign_id, "as_of": report["as_of"],
                          "off_track": [g["name"] for g in report["goals"] if g["status"] == "off track"]})
    return goals


def _print_summary(source: str, summary: dict, out) -> None:  # noqa: ANN001
    window = "every row" if summary["since"] == "None" else f"{summary['since']} to {summary['until']}"
    out.print(f"{source}: {summary['rows_written']:,} rows written ({window}); cursor at {summary['cursor']}.")
    for warning in summary.get("warnings", []):
        out.print(f"warning: {warning}", markup=False)
    if summary["unmapped"]:
        out.print(f"{summary['unmapped_rows']:,} rows belong to no campaign in this run (kept; claim them with "
                  f"`campaigns:` or `campaign_match:` on the source):")
        for _, pc, name, n in summary["unmapped"]:
            out.print(f"  {pc:<24} {name:<40} {n:>8,} rows", markup=False)
    for g in summary["goals"]:
        if g["off_track"]:
            out.print(f"{g['campaign']}: OFF TRACK as of {g['as_of']}: {', '.join(g['off_track'])} "
                      f"(`campaignflow kpis {g['campaign']}`)")


@app.command()
def kpis(
    campaign: str = typer.Argument(..., help="The campaign id."),
    as_json: bool = typer.Option(False, "--json", help="Print the whole report as JSON."),
    as_of: Optional[str] = typer.Option(None, "--as-of", help="Judge the goals as of this day (YYYY-MM-DD); "
                                                              "default: the last day with data."),
    days: int = typer.Option(14, "--days", min=0, help="How many recent days to list."),
    html: Optional[Path] = typer.Option(None, "--html", help="Also write charts (each goal against its line, "
                                                             "spend against budget) to this HTML file."),
) -> None:
    """KPIs per day and to date, budget pacing, and each goal against its straight line."""
    from campaignflow import db, metrics

    with db.session() as s:
        report = metrics.campaign_report(s, campaign, _date(as_of, "--as-of"))
    if html is not None:
        from campaignflow.charts import report_html

        try:
            html.write_text(report_html(report), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"--html {html}: cannot write it ({exc.strerror}); pick a writable path") from None
    if as_json:
        print_json(report)
        return
    _print_report(report, days)
    if html is not None:
        console().print(f"charts: {html}")


def _fmt(value, digits: int = 2) -> str:  # noqa: ANN001
    if value is None:
        return "—"
    return f"{value:,.{digits}f}" if abs(value) < 1000 and value != int(value) else f"{value:,.0f}"


def _count(value, what: str = "") -> str:  # noqa: ANN001
    """A total that no source reports (None) says so, instead of passing for 0."""
    return f"{what} not reported".strip() if value is None else f"{value:,.0f} {what}".strip()


def _print_report(r: dict, days: int) -> None:
    from rich.table import Table

    out = console()
    if not out.is_terminal:
        out.width = 160  # piped or captured: no terminal width to respect, keep the table columns whole
    cur = r["currency"]
    out.print(f"[bold]{r['name']}[/bold] ({r['campaign']}): as of {r['as_of']}, data "
              f"{r['data_from'] or '—'} to {r['data_through'] or '—'}")
    goals = Table("goal", "KPI", "actual", "expected by now", "target", "deadline", "progress", "status",
                  title="Goals", title_justify="left")
    for g in r["goals"]:
        style = {"off track": "bold red", "met": "green", "on track": "green"}.get(g["status"], "")
        goals.add_row(g["name"], g["kpi"], _fmt(g["actual"]), _fmt(g["expected"]), f"{g['target']:g} {g['unit']}",
                      g["deadline"], "—" if g["progress_pct"] is None else f"{g['progress_pct']:.0f} %",
                      f"[{style}]{g['status']}[/{style}]" if style else g["status"])
    out.print(goals)
    b = r["budget"]
    pace = "—" if b["pace_pct"] is None else f"{b['pace_pct']:.0f} %"
    out.print(f"Budget: spent {_fmt(b['spend'])} {cur} of a budget-to-date of {_fmt(b['budget_to_date'])} {cur} "
              f"({pace}, {b['status']}); {_fmt(b['remaining'])} {cur} left of {_fmt(b['budget'])} {cur}.")
    t = r["to_date"]
    spend = "spend not reported" if t["spend"] is None else f"spend {_fmt(t['spend'])} {cur}"
    out.print(f"To date: {_count(t['impressions'], 'impressions')}, {_count(t['clicks'], 'clicks')}, {spend}, "
              f"{_count(t['conversions'], 'conversions')}; CTR {_fmt(t['ctr'])} %, CPC {_fmt(t['cpc'])}, CPM {_fmt(t['cpm'])}, "
              f"CPA {_fmt(t['cpa'])}, ROAS {_fmt(t['roas'])}, conversion rate {_fmt(t['conversion_rate'])} %")
    if days and r["daily"]:
        table = Table("date", "impr.", "clicks", "spend", "conv.", "CTR %", "CPC", "CPA", "CPA to date",
                      title=f"Last {min(days, len(r['daily']))} days", title_justify="left")
        for d in r["daily"][-days:]:
            table.add_row(d["date"], _count(d["impressions"]), _count(d["clicks"]), _fmt(d["spend"]),
                          _fmt(d["conversions"]), _fmt(d["ctr"]), _fmt(d["cpc"]), _fmt(d["cpa"]),
                          _fmt(d["to_date"]["cpa"]))
        out.print(table)
    for x in r["sources"]:
        run = x["last_run"] or {}
        state = run.get("status", "never run") + (f": {run['error']}" if run.get("error") else "") \
            + "".join(f"; warning: {w}" for w in (run.get("warnings") or "").splitlines())
        out.print(f"source {x['name']} ({x['kind']} {x['account']}): data through {x['data_through'] or '—'}; "
                  f"last run {state}", markup=False)
    for u in r["unmapped"]:
        out.print(f"unmapped: {u['source']} {u['platform_campaign']} {u['name']!r} ({u['rows']} rows)", markup=False)
    for w in r["warnings"]:
        out.print(f"[yellow]warning:[/yellow] {w}")
