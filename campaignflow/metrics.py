"""Metric rows in the store: the fast upsert on the natural key, and reads for KPIs and listings.

The upsert is a prepared `INSERT ... ON CONFLICT (natural key) DO UPDATE`
run with the driver's executemany over chunks of plain tuples: no ORM
object per row, so a million rows stream through in seconds and re-reading
a day overwrites it instead of adding a second copy.
"""

from __future__ import annotations

from typing import Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from campaignflow import models as m

NATURAL_KEY = ("date", "source", "account", "platform_campaign", "ad_group", "ad")
# Column order of the tuples `upsert_tuples` takes.
COLUMNS = (*NATURAL_KEY, "platform_campaign_name", "campaign_id", "impressions", "clicks", "spend", "conversions",
           "conversion_value", "currency")
VALUES = COLUMNS[len(NATURAL_KEY):]
TOTALS = ("impressions", "clicks", "spend", "conversions", "conversion_value")


def upsert_sql(dialect: str) -> str:
    mark = "%s" if dialect == "postgresql" else "?"
    updates = ", ".join(f"{c} = excluded.{c}" for c in VALUES)
    return (f"INSERT INTO metricdaily ({', '.join(COLUMNS)}) VALUES ({', '.join([mark] * len(COLUMNS))}) "
            f"ON CONFLICT ({', '.join(NATURAL_KEY)}) DO UPDATE SET {updates}")


def upsert_tuples(s: Session, chunks: Iterable[list[tuple]]) -> int:
    """Write chunks of COLUMNS-ordered tuples (dates as ISO text) in the session's transaction."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        return _upsert_postgresql(conn.connection.driver_connection, chunks)
    sql = upsert_sql(conn.dialect.name)
    cursor = conn.connection.driver_connection.cursor()
    written = 0
    try:
        for chunk in chunks:
            if chunk:
                cursor.executemany(sql, chunk)
                written += len(chunk)
    finally:
        cursor.close()
    return written


def _upsert_postgresql(dbapi, chunks: Iterable[list[tuple]]) -> int:  # noqa: ANN001
    """PostgreSQL: COPY into a staging table, then one INSERT ... SELECT ... ON CONFLICT into metricdaily.

    COPY is several times faster than row-by-row inserts; DISTINCT ON keeps the last copy of a key
    the platform sent twice (one statement may not update a row twice).
    """
    cols = ", ".join(COLUMNS)
    key = ", ".join(NATURAL_KEY)
    updates = ", ".join(f"{c} = excluded.{c}" for c in VALUES)
    written = 0
    with dbapi.cursor() as cur:
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS metricdaily_stage "
                    "(LIKE metricdaily INCLUDING DEFAULTS EXCLUDING CONSTRAINTS) ON COMMIT DELETE ROWS")
        cur.execute("ALTER TABLE metricdaily_stage ALTER COLUMN id DROP NOT NULL")
        cur.execute("TRUNCATE metricdaily_stage")
        with cur.copy(f"COPY metricdaily_stage ({cols}, id) FROM STDIN") as copy:
            for chunk in chunks:
                for row in chunk:
                    written += 1
                    copy.write_row((*row, written))
        cur.execute(f"INSERT INTO metricdaily ({cols}) SELECT DISTINCT ON ({key}) {cols} FROM metricdaily_stage "
                    f"ORDER BY {key}, id DESC ON CONFLICT ({key}) DO UPDATE SET {updates}")
    return written



def campaign_rows(s: Session, campaign_id: str):  # -> pd.DataFrame
    """The campaign's daily rows (date, totals, source), summed over ads: the input of the KPI math."""
    import pandas as pd

    t = m.MetricDaily
    query = (select(t.date, t.source, *(func.sum(getattr(t, c)) for c in TOTALS))
             .where(t.campaign_id == campaign_id).group_by(t.date, t.source).order_by(t.date))
    frame = pd.DataFrame(s.exec(query).all(), columns=["date", "source", *TOTALS])
    for c in TOTALS:
        frame[c] = frame[c].astype(float)
    return frame


def currencies(s: Session, campaign_id: str) -> list[str]:
    t = m.MetricDaily
    return [c for c in s.exec(select(t.currency).where(t.campaign_id == campaign_id).distinct()).all() if c]


def last_day(s: Session, source: str, account: str):  # -> dt.date | None
    """The last day a source account has rows for (its cursor may be later: a read of days without data)."""
    t = m.MetricDaily
    return s.exec(select(func.max(t.date)).where(t.source == source, t.account == account)).one()


def unmapped(s: Session, source: str | None = None) -> list[tuple[str, str, str, int]]:
    """Platform campaigns whose rows no campaign claims: (source, platform campaign, its name, rows)."""
    t = m.MetricDaily
    query = (select(t.source, t.platform_campaign, func.max(t.platform_campaign_name), func.count())
             .where(t.campaign_id.is_(None)).group_by(t.source, t.platform_campaign)
             .order_by(t.source, t.platform_campaign))
    if source:
        query = query.where(t.source == source)
    return [tuple(r) for r in s.exec(query).all()]


# -- a campaign's KPIs, goals and pacing --------------------------------------------------------

def campaign_report(s: Session, campaign_id: str, as_of=None) -> dict:  # noqa: ANN001
    """Everything `campaignflow kpis` and the measurement step show: KPIs per day and to date, goals, pacing."""
    import datetime as dt

    from campaignflow import kpis
    from campaignflow.models_ingest import IngestionRun
    from campaignflow.store import campaign_spec, get_campaign

    campaign = get_campaign(s, campaign_id)
    spec = campaign_spec(campaign)
    frame = campaign_rows(s, campaign_id)
    last_with_data = frame["date"].max() if not frame.empty else None
    as_of = as_of or last_with_data or min(dt.date.today(), spec.end)
    upto = frame[frame["date"] <= as_of] if not frame.empty else frame
    totals = kpis.to_date(upto)
    goals = []
    for g in spec.goals:
        status = kpis.goal_status(g.kpi, g.target, g.baseline, spec.start, g.deadline, totals[g.kpi], as_of)
        if not upto.empty and kpis.not_reported(g.kpi, totals):
            status["status"] = "not reported"  # rows came in, but no source reports what this goal counts
        goals.append({"name": g.name, "unit": g.unit, **status})
    media = sum(b.amount for b in spec.budget if b.category == "media") or spec.budget_total()
    per_day = kpis.daily(upto)
    running = kpis.cumulative(upto)
    daily_rows = [{"date": d.isoformat(), **{k: per_day.at[i, k] for k in kpis.KPI_NAMES},
                   "to_date": {k: running.at[i, k] for k in kpis.KPI_NAMES}} for i, d in enumerate(per_day["date"])]
    sources = []
    names = [x.name for x in spec.measurement.sources]
    for x in spec.measurement.sources:
        through = last_day(s, x.name, x.account)
        last = s.exec(select(IngestionRun).where(IngestionRun.source == x.name)
                      .order_by(IngestionRun.id.desc()).limit(1)).first()
        sources.append({"name": x.name, "kind": x.kind, "account": x.account,
                        "data_through": through.isoformat() if through else None,
                        "last_run": None if last is None else {"status": last.status, "at": last.finished_at.isoformat(),
                                                               "rows": last.rows_written, "error": last.error,
                                                               "warnings": last.warnings}})
    found = currencies(s, campaign_id)
    warnings = [f"rows in {c} are summed as if they were {spec.currency}; convert them at the source"
                for c in found if c != spec.currency]
    return kpis.clean({
        "campaign": campaign_id, "name": spec.name, "currency": spec.currency, "as_of": as_of.isoformat(),
        "start": spec.start.isoformat(), "end": spec.end.isoformat(),
        "data_from": frame["date"].min().isoformat() if last_with_data else None,
        "data_through": last_with_data.isoformat() if last_with_data else None,
        "days_with_data": int(per_day.shape[0]),
        "to_date": totals, "goals": goals,
        "budget": kpis.budget_pacing(media, totals["spend"], spec.start, spec.end, as_of),
        "daily": daily_rows, "sources": sources,
        "unmapped": [{"source": src, "platform_campaign": pc, "name": name, "rows": n}
                     for src, pc, name, n in unmapped(s) if src in names],
        "warnings": warnings,
    })


def flag_off_track(s: Session, campaign_id: str, report: dict) -> list[str]:
    """Write one `kpi.off_track` audit event per off-track goal per as-of day (the notifier turns it into a chat
    message for the campaign manager); repeating the check the same day writes nothing new."""
    from campaignflow.store import audit

    flagged = []
    for goal in report["goals"]:
        if goal["status"] != "off track":
            continue
        seen = s.exec(select(m.AuditEvent.detail).where(
            m.AuditEvent.campaign_id == campaign_id, m.AuditEvent.action == "kpi.off_track",
            m.AuditEvent.subject == goal["name"])).all()
        if any((d or {}).get("as_of") == report["as_of"] for d in seen):
            continue
        audit(s, campaign_id, "kpi.off_track", goal["name"], goal=goal["name"], kpi=goal["kpi"],
              actual=round(goal["actual"], 2), expected=round(goal["expected"], 2), target=goal["target"], unit=goal["unit"],
              deadline=goal["deadline"], as_of=report["as_of"])
        flagged.append(goal["name"])
    return flagged
