"""The outbox: every message is a row before it is a chat message.

`enqueue` writes rows with a dedupe key and ignores keys already there, so
whatever produces messages (the audit fan-out, the reminder sweep) can run
again after a crash without doubling anything. Delivery `claim`s due rows
(an atomic UPDATE, so two deliverers never take the same row), sends, and
marks each row at once: sent, back to pending with a backoff, or dead after
the last attempt. A claim whose process died is taken again when its lease
runs out.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from typing import Any, Iterable

from sqlalchemy import and_, func, or_, select, update
from sqlmodel import Session

from campaignflow import settings
from campaignflow.errors import UserError
from campaignflow.models_notify import OutboxMessage

UTC = dt.timezone.utc
LEASE = dt.timedelta(minutes=10)  # far longer than apprise's socket timeouts


def max_attempts() -> int:
    return settings.get().notify_max_attempts


def backoff(attempts: int) -> dt.timedelta:
    """Wait before attempt `attempts + 1`: doubling from CAMPAIGNFLOW_NOTIFY_BACKOFF seconds (30), at most 2 h."""
    base = settings.get().notify_backoff
    return dt.timedelta(seconds=min(base * 2 ** max(attempts - 1, 0), 7200))


@dataclass
class Message:
    dedupe_key: str
    campaign_id: str
    kind: str
    recipient: str
    channel: str
    title: str
    body: str
    not_before: dt.datetime | None = None
    event_id: int | None = None


def enqueue(s: Session, messages: Iterable[Message], targets: dict[str, int] | None = None,
            now: dt.datetime | None = None) -> int:
    """Write one row per message and target URL of its channel; keys already queued are skipped. Returns rows added."""
    now = now or dt.datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for msg in messages:
        for target in range(max(1, (targets or {}).get(msg.channel, 1))):
            rows.append({
                "dedupe_key": msg.dedupe_key + (f"#{target}" if target else ""), "campaign_id": msg.campaign_id,
                "kind": msg.kind, "recipient": msg.recipient, "channel": msg.channel, "target": target,
                "title": msg.title, "body": msg.body, "status": "pending", "attempts": 0,
                "next_attempt_at": max(msg.not_before or now, now), "last_error": "", "event_id": msg.event_id,
                "created_at": now,
            })
    if not rows:
        return 0
    dialect = s.get_bind().dialect.name
    added = 0
    for i in range(0, len(rows), 500):
        chunk = rows[i:i + 500]
        if dialect in ("sqlite", "postgresql"):
            insert = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"]).insert
            result = s.execute(insert(OutboxMessage).values(chunk).on_conflict_do_nothing(index_elements=["dedupe_key"]))
            added += max(result.rowcount or 0, 0)
        else:
            keys = [r["dedupe_key"] for r in chunk]
            have = set(s.execute(select(OutboxMessage.dedupe_key).where(OutboxMessage.dedupe_key.in_(keys))).scalars())
            fresh = [r for r in chunk if r["dedupe_key"] not in have]
            if fresh:
                s.execute(OutboxMessage.__table__.insert(), fresh)
            added += len(fresh)
    return added


def _due(now: dt.datetime):
    return or_(and_(OutboxMessage.status == "pending", OutboxMessage.next_attempt_at <= now),
               and_(OutboxMessage.status == "sending", OutboxMessage.claimed_until < now))


def claim(s: Session, limit: int = 200, now: dt.datetime | None = None) -> list[OutboxMessage]:
    """Take up to `limit` due rows for this process; nobody else gets them until they are marked or the lease ends."""
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    token = uuid.uuid4().hex
    ids = select(OutboxMessage.id).where(_due(now)).order_by(OutboxMessage.id).limit(limit)
    s.execute(update(OutboxMessage)
              .where(OutboxMessage.id.in_(ids.scalar_subquery()), _due(now))
              .values(status="sending", claim=token, claimed_until=now + LEASE, attempts=OutboxMessage.attempts + 1)
              .execution_options(synchronize_session=False))
    return list(s.execute(select(OutboxMessage).where(OutboxMessage.claim == token).order_by(OutboxMessage.id)).scalars())


def release(s: Session, row_ids: list[int], claim_token: str) -> None:
    """Give claimed rows back untried (they wait behind an earlier message on the same target)."""
    if row_ids:
        s.execute(update(OutboxMessage).where(OutboxMessage.id.in_(row_ids), OutboxMessage.claim == claim_token)
                  .values(status="pending", claim=None, claimed_until=None, attempts=OutboxMessage.attempts - 1))


def queue_heads(s: Session, channels: set[str], now: dt.datetime) -> dict[tuple[str, int], int]:
    """Per (channel, target): the oldest message that must go before any later one (due, sending, or failed before).

    A message held for quiet hours and never tried does not hold others back.
    """
    if not channels:
        return {}
    blocking = or_(OutboxMessage.status == "sending",
                   and_(OutboxMessage.status == "pending",
                        or_(OutboxMessage.attempts > 0, OutboxMessage.next_attempt_at <= now)))
    rows = s.execute(select(OutboxMessage.channel, OutboxMessage.target, func.min(OutboxMessage.id))
                     .where(OutboxMessage.channel.in_(channels), blocking)
                     .group_by(OutboxMessage.channel, OutboxMessage.target))
    return {(channel, target): head for channel, target, head in rows}


def mark_sent(s: Session, row_id: int, claim_token: str, now: dt.datetime | None = None) -> None:
    s.execute(update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.claim == claim_token)
              .values(status="sent", sent_at=now or dt.datetime.now(UTC), claim=None, claimed_until=None, last_error=""))


def mark_failed(s: Session, row_id: int, claim_token: str, attempts: int, reason: str, *, final: bool = False,
                now: dt.datetime | None = None) -> str:
    """Back to pending with a backoff, or dead after the last attempt (or at once when `final`). Returns the status."""
    now = now or dt.datetime.now(UTC)
    dead = final or attempts >= max_attempts()
    status = "dead" if dead else "pending"
    reason = reason if not dead or final else f"{reason} (gave up after {attempts} attempts)"
    s.execute(update(OutboxMessage).where(OutboxMessage.id == row_id, OutboxMessage.claim == claim_token)
              .values(status=status, claim=None, claimed_until=None, last_error=reason[:1000],
                      next_attempt_at=now + backoff(attempts)))
    return status


def retry(s: Session, ids: list[int] | None = None, targets: dict[str, int] | None = None,
          now: dt.datetime | None = None) -> int:
    """Dead rows (all, or `ids`) back to pending now, with a fresh set of attempts."""
    now = now or dt.datetime.now(UTC)
    query = select(OutboxMessage).where(OutboxMessage.status == "dead")
    if ids:
        query = query.where(OutboxMessage.id.in_(ids))
        found = set(s.execute(select(OutboxMessage.id, OutboxMessage.status).where(OutboxMessage.id.in_(ids))).all())
        missing = sorted(set(ids) - {i for i, _ in found})
        live = sorted(i for i, st in found if st != "dead")
        if missing:
            raise UserError(f"there is no outbox message {', '.join(map(str, missing))}; `campaignflow outbox list` shows them")
        if live:
            raise UserError(f"outbox message {', '.join(map(str, live))} is not dead (only dead messages are retried; "
                            "pending ones are retried on their own)")
    rows = list(s.execute(query).scalars())
    extra: list[Message] = []
    for row in rows:
        row.status, row.attempts, row.next_attempt_at, row.last_error = "pending", 0, now, ""
        s.add(row)
        # A channel that was unknown when the message was queued may now have several URLs.
        if row.target == 0 and (targets or {}).get(row.channel, 1) > 1:
            extra.append(Message(row.dedupe_key, row.campaign_id, row.kind, row.recipient, row.channel, row.title,
                                 row.body, event_id=row.event_id))
    s.flush()
    if extra:
        enqueue(s, extra, targets, now)
    return len(rows)


def counts(s: Session) -> dict[str, int]:
    return dict(s.execute(select(OutboxMessage.status, func.count()).group_by(OutboxMessage.status)).all())


def listing(s: Session, status: str | None = None, limit: int = 50) -> list[OutboxMessage]:
    query = select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(limit)
    if status:
        query = query.where(OutboxMessage.status == status)
    return list(s.execute(query).scalars())
