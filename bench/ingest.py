"""Ingestion speed: 1,000,000 daily metric rows through the real ingestion path vs a raw sqlite3 executemany.

    .venv/bin/python bench/ingest.py [--rows 1000000] [--pg-rows 200000] [--no-pg]

The real path is `campaignflow.ingest.run_source`: plan from the cursor, a
connector's pages mapped to campaigns and spooled, then one transaction of
prepared INSERT ... ON CONFLICT DO UPDATE on the natural key, the cursor and
the run record, into the migrated store. The connector is synthetic (pages
built in memory, 5,000 rows each) so the figure is the ingestion machinery,
not a network. The baseline is a plain `sqlite3.executemany` INSERT of the
same rows into an equivalent table (same columns, unique key and index) in
the same run. Then the last 28 days are re-ingested with revised numbers and
the duplicates counted. Peak RSS is the process maximum (rows are streamed,
never all held). Prints a JSON line last. Targets: ratio >= 0.5, 0 duplicates,
peak RSS <= 500 MB.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from campaignflow import connectors, db, ingest  # noqa: E402
from campaignflow.connectors.base import (Connector, Http, MappingRule, MetricRow, Part, SourceConfig,  # noqa: E402
                                          SourceOptions)
from campaignflow.metrics import COLUMNS, NATURAL_KEY  # noqa: E402

ADS = 4_000  # 4,000 ads in 400 ad groups in 40 campaigns; 250 days of them make 1,000,000 rows
PAGE = 5_000
FIRST_DAY = dt.date(2026, 1, 1)


class SyntheticConnector(Connector):
    """Pages like an ad platform's, built in memory; `revision` changes the numbers (a platform's restatement)."""

    kind = "bench"
    options = SourceOptions(summary="synthetic rows", account_label="any", lookback_days=28)
    limits = None  # built in memory: no platform to throttle
    slice_days = 7
    revision = 0

    def pages(self, part: Part):
        day = part.since
        page: list[MetricRow] = []
        while day <= part.until:
            iso = day.isoformat()
            n = day.toordinal()
            for ad in range(ADS):
                campaign = ad // 100
                clicks = (n * 7 + ad) % 50 + self.revision
                page.append(MetricRow(iso, "1234567890", f"c{campaign}", f"g{ad // 10}", f"a{ad}", f"Campaign {campaign}",
                                      clicks * 40, clicks, clicks * 0.85, clicks // 10, clicks * 1.5, "EUR"))
                if len(page) == PAGE:
                    yield page
                    page = []
            day += dt.timedelta(days=1)
        if page:
            yield page


def rows_for_raw(since: dt.date, days: int, mapping: dict[str, str | None]):
    """The same rows as the connector, in the store's column order, for the raw baseline."""
    c = SyntheticConnector(SourceConfig("bench", "bench"), {}, Http("bench", "bench"))
    part = Part(since, since + dt.timedelta(days=days - 1))
    for page in c.pages(part):
        yield [(d, "bench", acc, pc, g, a, name, mapping[pc], imp, cl, sp, cv, val, cur)
               for (d, acc, pc, g, a, name, imp, cl, sp, cv, val, cur) in page]


def config(days: int) -> SourceConfig:
    claims = frozenset(f"c{i}" for i in range(30))  # 30 of 40 platform campaigns belong to the campaign
    return SourceConfig(name="bench", kind="bench", account="1234567890", first_day=FIRST_DAY,
                        rules=[MappingRule("bench-campaign", claims)])


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_sqlite(path: Path, n_days: int, mapping) -> float:  # noqa: ANN001
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("""CREATE TABLE metricdaily (id INTEGER PRIMARY KEY, date DATE NOT NULL, source VARCHAR NOT NULL,
        account VARCHAR NOT NULL, platform_campaign VARCHAR NOT NULL, ad_group VARCHAR NOT NULL, ad VARCHAR NOT NULL,
        platform_campaign_name VARCHAR NOT NULL, campaign_id VARCHAR, impressions INTEGER,
        clicks INTEGER, spend FLOAT, conversions FLOAT, conversion_value FLOAT,
        currency VARCHAR NOT NULL, CONSTRAINT uq UNIQUE (date, source, account, platform_campaign, ad_group, ad))""")
    conn.execute("CREATE INDEX ix_campaign_date ON metricdaily (campaign_id, date)")
    sql = f"INSERT INTO metricdaily ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
    started = time.perf_counter()
    conn.execute("BEGIN")
    for chunk in rows_for_raw(FIRST_DAY, n_days, mapping):
        conn.executemany(sql, chunk)
    conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return elapsed


def raw_postgres(url: str, n_days: int, mapping) -> float:  # noqa: ANN001
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as conn:
        conn.execute("""CREATE TABLE raw_metricdaily (id SERIAL PRIMARY KEY, date DATE NOT NULL, source VARCHAR NOT NULL,
            account VARCHAR NOT NULL, platform_campaign VARCHAR NOT NULL, ad_group VARCHAR NOT NULL, ad VARCHAR NOT NULL,
            platform_campaign_name VARCHAR NOT NULL, campaign_id VARCHAR, impressions INTEGER,
            clicks INTEGER, spend FLOAT, conversions FLOAT, conversion_value FLOAT,
            currency VARCHAR NOT NULL, UNIQUE (date, source, account, platform_campaign, ad_group, ad))""")
        conn.execute("CREATE INDEX ix_raw_campaign_date ON raw_metricdaily (campaign_id, date)")
        conn.commit()
        sql = f"INSERT INTO raw_metricdaily ({', '.join(COLUMNS)}) VALUES ({', '.join(['%s'] * len(COLUMNS))})"
        started = time.perf_counter()
        with conn.cursor() as cur:
            for chunk in rows_for_raw(FIRST_DAY, n_days, mapping):
                cur.executemany(sql, chunk)
        conn.commit()
        return time.perf_counter() - started


def duplicates(url: str) -> tuple[int, int]:
    from sqlalchemy import text

    key = ", ".join(NATURAL_KEY)
    with db.engine(url).connect() as conn:
        total = conn.execute(text("SELECT COUNT(*) FROM metricdaily")).scalar_one()
        distinct = conn.execute(text(f"SELECT COUNT(*) FROM (SELECT DISTINCT {key} FROM metricdaily) AS k")).scalar_one()
    return total, total - distinct


def real_path(url: str, n_days: int, revision_days: int) -> dict:
    cfg = config(n_days)
    until = FIRST_DAY + dt.timedelta(days=n_days - 1)
    db.engine(url)  # migrations are setup, not ingestion
    SyntheticConnector.revision = 0
    started = time.perf_counter()
    first = ingest.run_source(cfg, FIRST_DAY, until, url=url, credentials={}, trigger="bench")
    real = time.perf_counter() - started
    SyntheticConnector.revision = 3
    started = time.perf_counter()
    again = ingest.run_source(cfg, until - dt.timedelta(days=revision_days - 1), until, url=url, credentials={},
                              trigger="bench")
    reingest = time.perf_counter() - started
    total, dups = duplicates(url)
    return {"rows": first.rows_written, "seconds": real, "reingest_rows": again.rows_written,
            "reingest_seconds": reingest, "total_rows": total, "duplicates": dups, "unmapped": first.unmapped_rows}


def postgres_url() -> str | None:
    try:
        import psycopg

        admin = os.environ.get("CAMPAIGNFLOW_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres").replace("+psycopg", "")
        with psycopg.connect(admin, connect_timeout=2, autocommit=True) as conn:
            name = f"cf_bench_{os.getpid()}"
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://") + f"/{name}"
    except Exception as exc:  # noqa: BLE001
        print(f"PostgreSQL not reachable ({exc.__class__.__name__}); skipping its figure")
        return None


def drop_postgres(url: str) -> None:
    import psycopg

    db.dispose_all()
    name = url.rsplit("/", 1)[1]
    admin = url.rsplit("/", 1)[0].replace("+psycopg", "") + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--pg-rows", type=int, default=1_000_000)
    ap.add_argument("--no-pg", action="store_true")
    args = ap.parse_args()
    connectors.register(SyntheticConnector)
    n_days = max(args.rows // ADS, 28)
    mapping = {f"c{i}": ("bench-campaign" if i < 30 else None) for i in range(ADS // 100)}
    result: dict = {"rows": n_days * ADS}
    with tempfile.TemporaryDirectory(prefix="cf-bench-") as tmp:
        raw = raw_sqlite(Path(tmp) / "raw.db", n_days, mapping)
        url = f"sqlite:///{Path(tmp) / 'store.db'}"
        real = real_path(url, n_days, 28)
        db.dispose_all()
    result.update({
        "sqlite_raw_rows_per_s": round(result["rows"] / raw), "sqlite_real_rows_per_s": round(real["rows"] / real["seconds"]),
        "sqlite_ratio": round(raw / real["seconds"], 3), "sqlite_raw_s": round(raw, 2), "sqlite_real_s": round(real["seconds"], 2),
        "reingest_28d_rows": real["reingest_rows"], "reingest_28d_s": round(real["reingest_seconds"], 2),
        "rows_after_reingest": real["total_rows"], "duplicates": real["duplicates"], "unmapped_rows": real["unmapped"],
    })
    print(f"SQLite: {result['rows']:,} rows; raw executemany INSERT {raw:.2f} s ({result['sqlite_raw_rows_per_s']:,}/s); "
          f"real ingestion path {real['seconds']:.2f} s ({result['sqlite_real_rows_per_s']:,}/s); "
          f"ratio {result['sqlite_ratio']:.2f} (target >= 0.5)")
    print(f"Re-ingest of the last 28 days: {real['reingest_rows']:,} rows in {real['reingest_seconds']:.2f} s; "
          f"{real['total_rows']:,} rows stored, {real['duplicates']} duplicates (target 0)")
    pg = None if args.no_pg else postgres_url()
    if pg:
        pg_days = max(args.pg_rows // ADS, 28)
        try:
            raw_pg = raw_postgres(pg, pg_days, mapping)
            real_pg = real_path(pg, pg_days, 28)
        finally:
            drop_postgres(pg)
        result.update({"pg_rows": pg_days * ADS, "pg_raw_rows_per_s": round(pg_days * ADS / raw_pg),
                       "pg_real_rows_per_s": round(real_pg["rows"] / real_pg["seconds"]),
                       "pg_ratio": round(raw_pg / real_pg["seconds"], 3), "pg_duplicates": real_pg["duplicates"]})
        print(f"PostgreSQL: {pg_days * ADS:,} rows; raw executemany INSERT {raw_pg:.2f} s; real path "
              f"{real_pg['seconds']:.2f} s; ratio {result['pg_ratio']:.2f}; {real_pg['duplicates']} duplicates after re-ingest")
    result["peak_rss_mb"] = round(peak_rss_mb(), 1)
    result["ok"] = result["sqlite_ratio"] >= 0.5 and result["duplicates"] == 0 and result["peak_rss_mb"] <= 500
    print(f"Peak RSS {result['peak_rss_mb']} MB (target <= 500)")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
