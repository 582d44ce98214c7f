"""From the audit log to the outbox: which state change tells whom, with which template.

Every state change already writes an AuditEvent in the same transaction as
the change itself. `fan_out` reads the events after a stored cursor, applies
the rules below (action -> message kind -> audience), and writes outbox rows
with a dedupe key per event, kind and channel, then moves the cursor, all in
one transaction. Run it twice, or crash half-way, and nothing is lost or
doubled. On PostgreSQL an id can commit after a higher one, so each pass
re-reads a window behind the cursor; the dedupe keys make that harmless.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable

from sqlalchemy import select
from sqlmodel import Session

from campaignflow import links
from campaignflow import models as m
from campaignflow.models_notify import NotifyCursor
from campaignflow.notify.audience import Audience, settings_for
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.outbox import Message, enqueue
from campaignflow.notify.templates import render

UTC = dt.timezone.utc
CURSOR = "audit"
REREAD_WINDOW = 200  # ids behind the cursor re-read where commit order may differ from id order


@dataclass
class Notice:
    """One rule's verdict on one event: a kind of message and who gets it."""

    kind: str
    people: list[str] = field(default_factory=list)  # handles (roles already expanded)
    channels: list[str] = field(default_factory=list)  # channels addressed as a whole (client channel)
    context: dict[str, Any] = field(default_factory=dict)


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


# -- the rules: one function per audit action ----------------------------------------------------

def _step_started(ev, aud: Audience, gate) -> list[Notice]:
    return [Notice("step.started", aud.managers(), context={"step": ev.subject})]


def _step_completed(ev, aud: Audience, gate) -> list[Notice]:
    summary = ev.detail.get("summary", "")
    notices = [Notice("step.completed", aud.managers(), context={"step": ev.subject, "summary": summary})]
    if ev.subject == m.STEPS[-1]:
        everyone = aud.expand(aud.managers() + aud.account_managers())
        client = [aud.settings["client_channel"]] if aud.settings.get("client_channel") else []
        notices.append(Notice("campaign.completed", everyone, client, {"summary": summary}))
    return notices


def _step_failed(ev, aud: Audience, gate) -> list[Notice]:
    return [Notice("step.failed", aud.expand(aud.managers() + aud.account_managers()),
                   context={"step": ev.subject, "error": ev.detail.get("error", "")})]


def _gate_opened(ev, aud: Audience, gate) -> list[Notice]:
    return [Notice("gate.waiting", aud.expand(_as_list(ev.detail.get("approvers")) or (gate.approvers if gate else [])))]


def _gate_closed(ev, aud: Audience, gate) -> list[Notice]:
    status = ev.detail.get("status", "")
    if status not in ("approved", "changes_requested", "rejected"):
        return []
    people = aud.expand(([gate.submitted_by] if gate and gate.submitted_by else []) + aud.managers())
    return [Notice(f"gate.{status}", people)]


def _gate_escalated(ev, aud: Audience, gate) -> list[Notice]:
    to = _as_list(ev.detail.get("to") or ev.detail.get("approvers") or ev.detail.get("escalated_to"))
    return [Notice("gate.escalated", aud.expand(to + aud.managers()), context={"note": ev.detail.get("reason", "")})]


def _gate_timed_out(ev, aud: Audience, gate) -> list[Notice]:
    note = ev.detail.get("outcome") or ev.detail.get("action") or ""
    return [Notice("gate.timed_out", aud.expand(aud.managers() + aud.account_managers()), context={"note": note})]


def _gate_delegated(ev, aud: Audience, gate) -> list[Notice]:
    """Someone away hands their approvals in this campaign to a stand-in: the stand-in hears it."""
    return [Notice("gate.delegated", aud.expand(_as_list(ev.detail.get("delegate"))),
                   context={"away": aud.name_of(ev.actor)})]


def _goals_communicated(ev, aud: Audience, gate) -> list[Notice]:
    return [Notice("goals.communicated", aud.expand(_as_list(ev.detail.get("to"))))]


def _to_managers(kind: str) -> Callable:
    def rule(ev, aud: Audience, gate) -> list[Notice]:
        return [Notice(kind, aud.expand(aud.managers() + aud.account_managers()))]
    return rule


def _deliverable_done(ev, aud: Audience, gate) -> list[Notice]:
    """Managers hear a deliverable is done; each owner of work that waited on it hears they can start."""
    name = ev.detail.get("name", ev.subject)
    notices = [Notice("deliverable.completed", aud.expand(aud.managers() + aud.account_managers()),
                      context={"name": name})]
    for waiting in ev.detail.get("unblocked", []):
        notices.append(Notice("deliverable.unblocked", aud.expand([waiting["owner"]]), context={"name": name, "next": waiting}))
    return notices


def _sla_breached(ev, aud: Audience, gate) -> list[Notice]:
    client = [aud.settings["client_channel"]] if aud.settings.get("client_channel") else []
    return [Notice("sla.breached", aud.account_managers(), client, context=dict(ev.detail))]


RULES: dict[str, Callable[..., list[Notice]]] = {
    "step.started": _step_started,
    "step.completed": _step_completed,
    "step.failed": _step_failed,
    "gate.opened": _gate_opened,
    "gate.closed": _gate_closed,
    "gate.escalated": _gate_escalated,
    "gate.timed_out": _gate_timed_out,
    "gate.delegated": _gate_delegated,
    "goals.communicated": _goals_communicated,
    "timeline.overruns": _to_managers("timeline.overruns"),
    "kpi.off_track": _to_managers("kpi.off_track"),
    "sla.breached": _sla_breached,
    "deliverable.done": _deliverable_done,
}


# -- addressing ----------------------------------------------------------------------------------

def address(aud: Audience, notice: Notice, now: dt.datetime) -> list[tuple[str, list[str], dt.datetime | None]]:
    """(channel, people on it, hold until) per channel; people sharing a channel get one message there."""
    by_channel: dict[str, list[str]] = {}
    for handle in notice.people:
        channel = aud.channel_for(handle) or aud.unrouted(handle)
        if channel:
            by_channel.setdefault(channel, []).append(handle)
    for channel in notice.channels:
        by_channel.setdefault(channel, [])
    out = []
    for channel, people in by_channel.items():
        holds = [aud.quiet_until(h, now) for h in people] or [aud.quiet_until(None, now)]
        hold = max((h for h in holds if h), default=None)
        out.append((channel, people, hold))
    return out


def gate_context(gate: m.ApprovalGate | None) -> dict[str, Any]:
    if gate is None:
        return {}
    return {"id": gate.id, "key": gate.key, "title": gate.title, "kind": gate.kind, "policy": gate.policy,
            "approvers": list(gate.approvers), "subject": gate.subject,
            "due_at": gate.due_at.strftime("%Y-%m-%d %H:%M UTC") if gate.due_at else None}


def fan_out(s: Session, registry: ChannelRegistry, limit: int = 5000, now: dt.datetime | None = None) -> int:
    """Turn audit events after the cursor into outbox rows; returns the number of rows added."""
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    cursor = s.get(NotifyCursor, CURSOR)
    if cursor is None:
        cursor = NotifyCursor(name=CURSOR, last_event_id=0)
    reread = 0 if s.get_bind().dialect.name == "sqlite" else REREAD_WINDOW
    events = list(s.execute(select(m.AuditEvent).where(m.AuditEvent.id > cursor.last_event_id - reread)
                            .order_by(m.AuditEvent.id).limit(limit)).scalars())
    if not events:
        return 0
    settings = settings_for(s, {e.campaign_id for e in events})
    relevant = [e for e in events if e.action in RULES and settings.get(e.campaign_id, {}).get("enabled")]
    gate_ids = {int(e.detail["gate_id"]) for e in relevant if str(e.detail.get("gate_id", "")).isdigit()}
    gates = {g.id: g for g in s.execute(select(m.ApprovalGate).where(m.ApprovalGate.id.in_(gate_ids))).scalars()} if gate_ids else {}
    decisions: dict[int, list[m.Decision]] = {}
    if gate_ids:
        for d in s.execute(select(m.Decision).where(m.Decision.gate_id.in_(gate_ids)).order_by(m.Decision.id)).scalars():
            decisions.setdefault(d.gate_id, []).append(d)
    campaigns = dict(s.execute(select(m.Campaign.id, m.Campaign.flow_run_id)
                               .where(m.Campaign.id.in_({e.campaign_id for e in relevant}))).all()) if relevant else {}
    messages: list[Message] = []
    for ev in relevant:
        aud = Audience(ev.campaign_id, settings[ev.campaign_id], registry)
        gate = gates.get(int(ev.detail["gate_id"])) if str(ev.detail.get("gate_id", "")).isdigit() else None
        for notice in RULES[ev.action](ev, aud, gate):
            if aud.muted(notice.kind) or not (notice.people or notice.channels):
                continue
            for channel, people, hold in address(aud, notice, now):
                messages.append(_message(ev, aud, notice, channel, people, hold, gate, decisions, campaigns))
    targets = {name: len(urls) for name, urls in registry.channels.items()}
    added = enqueue(s, messages, targets, now)
    cursor.last_event_id = max(cursor.last_event_id, events[-1].id)
    cursor.updated_at = now
    s.add(cursor)
    return added


def _message(ev, aud: Audience, notice: Notice, channel: str, people: list[str], hold, gate, decisions, campaigns) -> Message:
    approval_links = aud.decision_links(gate.id, channel, people) if gate else {"approve": {}, "changes": {}}
    gate_decisions = decisions.get(gate.id, []) if gate else []
    s = aud.settings
    context = {
        "campaign": {"id": ev.campaign_id, "name": s["name"], "client": s.get("client_name", "")},
        "recipients": [{"handle": p, "name": aud.name_of(p)} for p in people],
        "links": {"run": links.run_link((gate.flow_run_id if gate else None) or campaigns.get(ev.campaign_id)),
                  **approval_links},
        "subject": ev.subject, "detail": ev.detail, "actor": ev.actor, "at": ev.at,
        "gate": gate_context(gate), "step": ev.subject, "summary": "", "note": "", "error": "",
        "comments": [{"person": d.person, "comment": d.comment} for d in gate_decisions if d.comment],
        "decided_by": [d.person for d in gate_decisions if d.outcome == "approve"],
        **notice.context,
    }
    title, body = render(notice.kind, context, s.get("templates"))
    unrouted = channel.startswith("!")
    return Message(
        dedupe_key=f"ev{ev.id}:{notice.kind}:{channel}", campaign_id=ev.campaign_id, kind=notice.kind,
        recipient=", ".join(people) if people else channel, channel="" if unrouted else channel,
        title=title, body=body, not_before=hold, event_id=ev.id)
