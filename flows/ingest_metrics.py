"""Ingest one metric source (Google Ads, Meta, GA4 or CSV) and check the goals of the campaigns it feeds.

Reads the source's window (the cursor minus its look-back days, up to today;
or --since/--until), upserts the rows on their natural key in one
transaction, moves the cursor, then judges each campaign's goals and writes
a `kpi.off_track` audit event for any goal behind its line (the notifier
turns it into a chat message). Runs of one platform share a global
concurrency limit and a request-rate limit (see tasks/ingest.py).

Run it now:         campaignflow ingest meta-main [--since 2027-01-01] [--until 2027-01-31]
On a schedule:      python -m deployments.ingest   (one deployment per source, cron from the spec)
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from campaignflow.presentation import markdown_table
from tasks.ingest import campaigns_fed_by, check_goals, ingest_source


@flow(name="ingest-metrics", flow_run_name="ingest-{source}", log_prints=False)
def ingest_metrics(source: str, since: dt.date | None = None, until: dt.date | None = None,
                   trigger: str = "schedule") -> dict:
    result = ingest_source(source, since, until, trigger)
    campaigns = campaigns_fed_by(source)
    goals = [check_goals(c) for c in campaigns]
    lines = [f"# Ingested {source}", "", result.summary() + ".", "",
             f"Window {result.since or 'all'} to {result.until or 'all'}; cursor now {result.cursor}; "
             f"{result.requests} request(s), {result.retries} retried."]
    lines += [f"**Warning**: {w}" for w in result.warnings]
    if result.unmapped:
        lines += ["", "## Unmapped platform campaigns", "",
                  markdown_table(["platform campaign", "name", "rows"], [row[1:] for row in result.unmapped])]
    for g in goals:
        if g["off_track"]:
            lines += ["", f"**{g['campaign']}**: off track as of {g['as_of']}: {', '.join(g['off_track'])}"]
    create_markdown_artifact(markdown="\n".join(lines), key=f"ingest-{source}".lower().replace("_", "-"),
                             description=result.summary())
    return {"source": source, "rows_written": result.rows_written, "unmapped_rows": result.unmapped_rows,
            "since": str(result.since), "until": str(result.until), "cursor": str(result.cursor),
            "unmapped": result.unmapped, "warnings": result.warnings, "goals": goals}


if __name__ == "__main__":
    import sys

    print(ingest_metrics(sys.argv[1], trigger="cli"))
