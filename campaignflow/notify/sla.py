"""Client SLA: turnaround times the spec promises, and the breaches of them.

- client_review: a review gate waiting on someone on the client side is
  decided within `client_review_days` business days of opening;
- publish: an asset is published (its deliverable `done`) within
  `publish_days` days of its final approval.

A breach is recorded once (`SlaBreach`), written to the audit log as
`sla.breached` (which the fan-out turns into a message to the account
manager and the client channel), and shown by `campaignflow status`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel import Session

from campaignflow import models as m
from campaignflow.models_notify import NotifySettings, SlaBreach
from campaignflow.notify.audience import _holidays, _zone, settings_for
from campaignflow.store import audit
from campaignflow.timeline import shift_business_days

UTC = dt.timezone.utc
LABELS = {"client_review": "client review turnaround", "publish": "publish after approval"}


def _late(delta: dt.timedelta) -> str:
    hours = int(delta.total_seconds() // 3600)
    return f"{hours // 24} day(s) {hours % 24} hour(s)" if hours >= 24 else f"{max(hours, 0)} hour(s)"


def check(s: Session, now: dt.datetime | None = None) -> int:
    """Record every new breach; returns how many."""

    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    G, D, NS, B = m.ApprovalGate, m.Deliverable, NotifySettings, SlaBreach
    found: list[dict[str, Any]] = []

    min_review = s.execute(select(func.min(NS.sla_review_days)).where(NS.enabled.is_(True))).scalar()
    if min_review:
        rows = list(s.execute(
            select(G.id, G.campaign_id, G.key, G.title, G.approvers, G.opened_at, NS.sla_review_days)
            .join(NS, NS.campaign_id == G.campaign_id)
            .outerjoin(B, and_(B.campaign_id == G.campaign_id, B.rule == "client_review", B.subject == G.key))
            .where(NS.enabled.is_(True), NS.sla_review_days.is_not(None), G.status == "open", G.kind == "review",
                   G.opened_at <= now - dt.timedelta(days=min_review), B.id.is_(None))))
        decided: dict[int, set[str]] = {}
        if rows:
            for gid, person in s.execute(select(m.Decision.gate_id, m.Decision.person)
                                         .where(m.Decision.gate_id.in_([r.id for r in rows]))):
                decided.setdefault(gid, set()).add(person)
        settings = settings_for(s, {r.campaign_id for r in rows})
        for r in rows:
            conf = settings[r.campaign_id]
            client = set(conf.get("client_people", []))
            waiting = [p for p in r.approvers if p in client and p not in decided.get(r.id, ())]
            if not waiting:
                continue
            zone = _zone(conf["calendar"]["timezone"])
            opened = m.as_utc(r.opened_at).astimezone(zone)
            due_day = shift_business_days(opened.date(), r.sla_review_days, _holidays(tuple(conf["calendar"]["holidays"])))
            due = dt.datetime.combine(due_day, opened.time(), tzinfo=zone).astimezone(UTC)
            if now > due:
                names = [conf["people"].get(p, {}).get("name", p) for p in waiting]
                found.append({"campaign_id": r.campaign_id, "rule": "client_review", "subject": r.key, "due_at": due,
                              "what": f"the client's decision on {r.title}", "waiting_on": names,
                              "gate_id": r.id, "days": r.sla_review_days, "late": _late(now - due)})

    if s.execute(select(func.min(NS.sla_publish_days)).where(NS.enabled.is_(True))).scalar():
        approved_at = func.max(G.closed_at).label("approved_at")
        rows = list(s.execute(
            select(D.id, D.campaign_id, D.key, D.name, D.owner, NS.sla_publish_days, approved_at)
            .join(NS, NS.campaign_id == D.campaign_id)
            .join(G, and_(G.campaign_id == D.campaign_id, G.subject == D.key, G.kind == "review", G.status == "approved"))
            .outerjoin(B, and_(B.campaign_id == D.campaign_id, B.rule == "publish", B.subject == D.key))
            .where(NS.enabled.is_(True), NS.sla_publish_days.is_not(None), D.status == "approved", B.id.is_(None))
            .group_by(D.id, D.campaign_id, D.key, D.name, D.owner, NS.sla_publish_days)))
        for r in rows:
            if r.approved_at is None:
                continue
            due = m.as_utc(r.approved_at) + dt.timedelta(days=r.sla_publish_days)
            if now > due:
                found.append({"campaign_id": r.campaign_id, "rule": "publish", "subject": r.key, "due_at": due,
                              "what": f"publishing {r.name}", "waiting_on": [r.owner], "days": r.sla_publish_days,
                              "late": _late(now - due)})

    for b in found:
        detail = {k: v for k, v in b.items() if k not in ("campaign_id", "rule", "subject", "due_at")}
        s.add(SlaBreach(campaign_id=b["campaign_id"], rule=b["rule"], subject=b["subject"], due_at=b["due_at"],
                        detected_at=now, detail=detail))
        audit(s, b["campaign_id"], "sla.breached", b["subject"], rule=b["rule"], rule_label=LABELS[b["rule"]],
              due=b["due_at"].strftime("%Y-%m-%d %H:%M UTC"), **detail)
    return len(found)


def breaches(s: Session, campaign_id: str | None = None) -> list[dict[str, Any]]:
    """Recorded breaches, newest first, for `campaignflow status`."""
    query = select(SlaBreach).order_by(SlaBreach.detected_at.desc(), SlaBreach.id.desc())
    if campaign_id:
        query = query.where(SlaBreach.campaign_id == campaign_id)
    return [{"campaign": b.campaign_id, "rule": b.rule, "subject": b.subject,
             "due_at": m.as_utc(b.due_at).isoformat(), "detected_at": m.as_utc(b.detected_at).isoformat(),
             "what": b.detail.get("what", ""), "waiting_on": b.detail.get("waiting_on", [])}
            for b in s.execute(query).scalars()]
