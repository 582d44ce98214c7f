"""Store tables for notifications (outbox, reminder state). Migrations: versions/0003_*.py.

The outbox is the only way a message leaves the engine: a row is written in
the same transaction as the decision to send it (with a dedupe key, so the
same message can never be queued twice), and delivery marks it sent, retried
or dead. Apprise URLs never land here: a row names a channel and a target
index, resolved to its secret URL at send time.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import JSON, Column, DateTime, Index
from sqlmodel import Field, SQLModel

from campaignflow.columns import optional_timestamp as _opt_ts, timestamp as _ts


OUTBOX_STATUSES = ("pending", "sending", "sent", "dead")


class OutboxMessage(SQLModel, table=True):
    """One message to one delivery target (a channel's n-th apprise URL)."""

    __table_args__ = (Index("ix_outbox_status_next", "status", "next_attempt_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    dedupe_key: str = Field(unique=True, max_length=300)
    campaign_id: str = Field(default="", index=True)
    kind: str  # e.g. gate.waiting, reminder.digest, sla.breached
    recipient: str = ""  # a person handle, or the channel itself for team/client channels
    channel: str  # a channel name from the channel registry
    target: int = 0  # which URL of the channel
    title: str
    body: str
    status: str = "pending"  # pending|sending|sent|dead
    attempts: int = 0
    next_attempt_at: dt.datetime = _ts()  # also how quiet hours hold a message back
    claimed_until: Optional[dt.datetime] = _opt_ts()
    claim: Optional[str] = Field(default=None, max_length=40)
    last_error: str = ""
    event_id: Optional[int] = None
    created_at: dt.datetime = _ts()
    sent_at: Optional[dt.datetime] = _opt_ts()


class NotifyCursor(SQLModel, table=True):
    """How far the audit log has been turned into messages."""

    name: str = Field(primary_key=True, max_length=40)
    last_event_id: int = 0
    updated_at: dt.datetime = _ts()


class ReminderCount(SQLModel):
    """How often an open item has been reminded, for cadence and escalation (one table per kind of item)."""

    reminders: int = 0
    last_reminded_on: Optional[dt.date] = None
    level: int = 0  # escalation level reached (0: only the people the item waits on)


# Keyed by the item's own integer id: on SQLite that is the rowid, which makes the sweep's upsert of
# tens of thousands of rows a third cheaper than a (kind, id) key.
class GateReminder(ReminderCount, table=True):
    gate_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


class DeliverableReminder(ReminderCount, table=True):
    deliverable_id: int = Field(primary_key=True, sa_column_kwargs={"autoincrement": False})


REMINDER_TABLES: dict[str, type[ReminderCount]] = {"gate": GateReminder, "deliverable": DeliverableReminder}


class SlaBreach(SQLModel, table=True):
    """A client turnaround time that was not met; shown in `campaignflow status`."""

    __table_args__ = (Index("uq_sla_breach", "campaign_id", "rule", "subject", unique=True),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(index=True)
    rule: str  # client_review|publish
    subject: str  # gate key or deliverable key
    due_at: dt.datetime = Field(sa_type=DateTime(timezone=True))
    detected_at: dt.datetime = _ts()
    detail: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))


class NotifySettings(SQLModel, table=True):
    """A campaign's notification settings resolved from its spec, cached so a sweep never re-parses specs."""

    campaign_id: str = Field(primary_key=True, max_length=80)
    spec_hash: str = Field(max_length=16)
    # The few numbers the sweep filters on in SQL, copied out of `settings`.
    enabled: bool = True
    lead_days: int = 1
    turnaround_days: int = 2
    sla_review_days: Optional[int] = None
    sla_publish_days: Optional[int] = None
    settings: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
