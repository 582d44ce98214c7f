"""Column helpers shared by every table module: UTC timestamps and JSON columns."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, Column, DateTime
from sqlmodel import Field


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def as_utc(value: dt.datetime) -> dt.datetime:
    """SQLite hands back naive datetimes for what was stored as UTC; make them aware again."""
    return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)


def timestamp(**kw: Any) -> Any:
    return Field(default_factory=utcnow, sa_type=DateTime(timezone=True), **kw)


def optional_timestamp(**kw: Any) -> Any:
    return Field(default=None, sa_type=DateTime(timezone=True), **kw)


def json_column(default: Any = None) -> Any:
    factory = (lambda: list(default)) if isinstance(default, list) else (lambda: dict(default or {}))
    return Field(default_factory=factory, sa_column=Column(JSON, nullable=False))
