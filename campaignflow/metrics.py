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


def upsert(s: Session, rows: Iterable[dict]) -> int:
    """Insert or overwrite rows given as dicts on the natural key; returns how many rows were written."""
    def as_tuple(row: dict) -> tuple:
        return tuple(str(row["date"]) if c == "date" else row.get(c, "" if c in NATURAL_KEY or c in (
            "platform_campaign_name", "currency") else None if c == "campaign_id" else 0) for c in COLUMNS)

    return upsert_tuples(s, [[as_tuple(r) for r in rows]])


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


def unmapped(s: Session, source: str | None = None) -> list[tuple[str, str, str, int]]:
    """Platform campaigns whose rows no campaign claims: (source, platform campaign, its name, rows)."""
    t = m.MetricDaily
    query = (select(t.source, t.platform_campaign, func.max(t.platform_campaign_name), func.count())
             .where(t.campaign_id.is_(None)).group_by(t.source, t.platform_campaign)
             .order_by(t.source, t.platform_campaign))
    if source:
        query = query.where(t.source == source)
    return [tuple(r) for r in s.exec(query).all()]
