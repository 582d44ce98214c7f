"""Store tables for metric ingestion (cursors, runs). Migrations: versions/0002_*.py, 0006_*.py."""

from __future__ import annotations

import datetime as dt
from typing import Optional

from sqlmodel import Field, SQLModel

from campaignflow.columns import timestamp


class IngestCursor(SQLModel, table=True):
    """How far one source account has been read: the last day of the last committed run.

    Written in the same transaction as the metric rows, so it never runs ahead of them.
    """

    source: str = Field(primary_key=True)
    account: str = Field(primary_key=True, default="")
    kind: str
    last_date: Optional[dt.date] = None
    last_run_id: Optional[int] = None
    updated_at: dt.datetime = timestamp()


class IngestionRun(SQLModel, table=True):
    """One run of one source: what window was read, how it went, and why it stopped when it failed."""

    id: Optional[int] = Field(default=None, primary_key=True)
    source: str = Field(index=True)
    account: str = ""
    kind: str
    trigger: str = "cli"  # cli|schedule|lifecycle|bench
    status: str = "succeeded"  # succeeded|failed
    since: Optional[dt.date] = None
    until: Optional[dt.date] = None
    started_at: dt.datetime = timestamp()
    finished_at: dt.datetime = timestamp()
    requests: int = 0
    retries: int = 0
    rows_fetched: int = 0
    rows_written: int = 0
    unmapped_rows: int = 0
    error: str = ""
    warnings: str = ""  # what a succeeded run should say anyway, one per line (e.g. no action counted)
