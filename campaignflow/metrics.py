"""Metric rows into the store: read CSV exports, map them to campaigns, upsert on the natural key."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from sqlalchemy import func
from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.errors import UserError
from campaignflow.spec import MeasurementSource

NATURAL_KEY = ("date", "source", "account", "platform_campaign", "ad_group", "ad")
VALUES = ("campaign_id", "impressions", "clicks", "spend", "conversions", "conversion_value", "currency")
CSV_COLUMNS = {"date": "date", "campaign": "platform_campaign", "ad_group": "ad_group", "ad": "ad",
               "impressions": "impressions", "clicks": "clicks", "spend": "spend", "conversions": "conversions",
               "conversion_value": "conversion_value", "currency": "currency"}
REQUIRED_CSV = ("date", "campaign", "impressions", "clicks", "spend")


def read_csv_source(source: MeasurementSource, base_dir: Path, campaign_id: str, currency: str) -> list[dict]:
    """Rows of a CSV source (a file or every *.csv in a folder) in the store's shape."""
    import pandas as pd

    path = Path(source.path)
    path = path if path.is_absolute() else base_dir / path
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    if not files or not all(f.is_file() for f in files):
        raise UserError(f"measurement source {source.name!r}: no CSV file at {path}; fix `path` in the spec")
    rows: list[dict] = []
    for file in files:
        frame = pd.read_csv(file, dtype=str, keep_default_na=False)
        rename = {source.columns.get(ours, ours): ours for ours in CSV_COLUMNS}
        frame = frame.rename(columns=rename)
        missing = [c for c in REQUIRED_CSV if c not in frame.columns]
        if missing:
            raise UserError(f"measurement source {source.name!r}: {file.name} has no column(s) {', '.join(missing)}; "
                            f"map them with `columns:` in the spec (our name: their name)")
        for i, raw in enumerate(frame.to_dict("records"), start=2):
            try:
                row = {
                    "date": pd.Timestamp(raw["date"]).date(), "source": source.name, "account": source.account,
                    "platform_campaign": raw["campaign"], "ad_group": raw.get("ad_group", ""), "ad": raw.get("ad", ""),
                    "impressions": int(float(raw["impressions"] or 0)), "clicks": int(float(raw["clicks"] or 0)),
                    "spend": float(raw["spend"] or 0), "conversions": float(raw.get("conversions") or 0),
                    "conversion_value": float(raw.get("conversion_value") or 0),
                    "currency": raw.get("currency") or currency,
                }
            except (ValueError, TypeError) as exc:
                raise UserError(f"measurement source {source.name!r}: {file.name} line {i}: {exc}") from None
            mapped = not source.campaigns or row["platform_campaign"] in source.campaigns
            row["campaign_id"] = campaign_id if mapped else None
            rows.append(row)
    return rows


def upsert(s: Session, rows: Iterable[dict]) -> int:
    """Insert or overwrite rows on the natural key; returns how many rows were written."""
    table = m.MetricDaily.__table__
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    batch = list(rows)
    if not batch:
        return 0
    stmt = insert(table)
    stmt = stmt.on_conflict_do_update(index_elements=list(NATURAL_KEY),
                                      set_={c: getattr(stmt.excluded, c) for c in VALUES})
    s.execute(stmt, batch)
    return len(batch)


def campaign_rows(s: Session, campaign_id: str):  # -> pd.DataFrame
    import pandas as pd

    cols = ["date", *VALUES[1:6]]
    result = s.exec(select(*(getattr(m.MetricDaily, c) for c in cols)).where(m.MetricDaily.campaign_id == campaign_id))
    return pd.DataFrame(result.all(), columns=cols)


def unmapped(s: Session, source: str | None = None) -> list[tuple[str, str, int]]:
    """Platform campaigns whose rows no campaign claims: (source, platform campaign, rows)."""
    query = (select(m.MetricDaily.source, m.MetricDaily.platform_campaign, func.count())
             .where(m.MetricDaily.campaign_id.is_(None))
             .group_by(m.MetricDaily.source, m.MetricDaily.platform_campaign))
    if source:
        query = query.where(m.MetricDaily.source == source)
    return [tuple(r) for r in s.exec(query).all()]
