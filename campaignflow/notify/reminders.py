"""The reminder rule: what is due soon or overdue, who hears about it, and when it escalates.

One sweep reads every open item that may be due with two set-based
queries per kind (approval gates waiting on approvers, deliverables waiting
on their owner) joined with their reminder state, decides in memory, and
writes the reminder states and outbox rows back in bulk, in the sweep's one
transaction. For each item:

- due soon: within `due_soon_days` business days of its due date; overdue: past it.
  A gate is due at its `due_at`, or `gate_turnaround_days` business days after it opened.
- it is reminded again every `every_days` business days while it stays due;
- after `escalate_after` reminders the next level of `escalate_to` hears too, and so on;
- a person is only reminded on their team's business days and outside their quiet hours
  (an item nobody could be told about now waits for the next sweep, uncounted);
- with `digest` on, each channel gets one message per sweep listing everything.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import and_, func, select
from sqlmodel import Session

from campaignflow import links
from campaignflow import models as m
from campaignflow.models_notify import NotifySettings, ReminderState
from campaignflow.notify.audience import Audience, _holidays, _zone, ensure_settings, settings_for
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.outbox import Message, enqueue
from campaignflow.notify.templates import render
from campaignflow.store import audit
from campaignflow.timeline import is_business_day

UTC = dt.timezone.utc
DIGEST_LIMIT = 50  # items listed in one digest; the rest is counted


@dataclass
class SweepReport:
    checked: int = 0  # open items that were due soon or overdue
    reminded: int = 0
    escalated: int = 0
    held: int = 0  # due items whose people are all in quiet hours or off today
    messages: int = 0
    breaches: int = 0
    details: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return (f"{self.checked} due item(s): {self.reminded} reminded, {self.escalated} escalated, "
                f"{self.held} held for quiet hours or days off; {self.messages} message(s) queued; "
                f"{self.breaches} new SLA breach(es)")


@lru_cache(maxsize=4096)
def business_days_after(day: dt.date, n: int, holidays: frozenset[dt.date]) -> dt.date:
    """The n-th business day after `day` (n = 0: `day` itself)."""
    while n > 0:
        day += dt.timedelta(days=1)
        if is_business_day(day, holidays):
            n -= 1
    return day


@lru_cache(maxsize=4096)
def business_days_before(day: dt.date, n: int, holidays: frozenset[dt.date]) -> dt.date:
    while n > 0:
        day -= dt.timedelta(days=1)
        if is_business_day(day, holidays):
            n -= 1
    return day


def calendar_span(business_days: int) -> int:
    """Calendar days that surely contain `business_days` business days (weekends, a few holidays, time zones)."""
    return business_days * 7 // 5 + 6


class _Campaign:
    """Per-campaign numbers computed once per sweep."""

    def __init__(self, cid: str, settings: dict[str, Any], registry: ChannelRegistry, now: dt.datetime):
        self.aud = Audience(cid, settings, registry)
        r = settings["reminders"]
        self.rules = r
        cal = settings["calendar"]
        self.zone = _zone(cal["timezone"])
        self.holidays = _holidays(tuple(cal["holidays"]))
        self.today = now.astimezone(self.zone).date()
        self.soon_limit = business_days_after(self.today, r["due_soon_days"], self.holidays)
        self.cadence_cut = business_days_before(self.today, r["every_days"], self.holidays)
        self.reach: dict[str, bool] = {}
        self.now = now

    def reachable(self, handle: str) -> bool:
        if handle not in self.reach:
            self.reach[handle] = self.aud.is_workday(handle, self.now) and self.aud.quiet_until(handle, self.now) is None
        return self.reach[handle]

    def local_date(self, when: dt.datetime) -> dt.date:
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when.astimezone(self.zone).date()


def _state(today: dt.date, due: dt.date, soon_limit: dt.date) -> str | None:
    if today > due:
        return "overdue"
    if today == due:
        return "due today"
    if due <= soon_limit:
        return "due soon"
    return None


def sweep(s: Session, registry: ChannelRegistry, now: dt.datetime | None = None) -> SweepReport:
    """One reminder and SLA sweep over every open item; returns what it did."""
    from campaignflow.notify import sla

    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    report = SweepReport()
    ensure_settings(s)
    lead, turnaround = s.execute(select(func.max(NotifySettings.lead_days), func.min(NotifySettings.turnaround_days))
                                 .where(NotifySettings.enabled.is_(True))).one()
    if lead is None:
        return report
    horizon = now + dt.timedelta(days=calendar_span(lead))
    opened_cut = horizon - dt.timedelta(days=turnaround)
    G, D, RS, NS = m.ApprovalGate, m.Deliverable, ReminderState, NotifySettings

    def with_state(query, kind: str, id_col, campaign_col):
        return (query.join(NS, NS.campaign_id == campaign_col)
                .outerjoin(RS, and_(RS.item_kind == kind, RS.item_id == id_col))
                .where(NS.enabled.is_(True)))

    gate_cols = (G.id, G.campaign_id, G.key, G.title, G.approvers, G.opened_at, G.due_at,
                 RS.reminders, RS.last_reminded_on, RS.level)
    gate_rows = list(s.execute(with_state(select(*gate_cols), "gate", G.id, G.campaign_id)
                               .where(G.status == "open", G.due_at <= horizon)))
    gate_rows += list(s.execute(with_state(select(*gate_cols), "gate", G.id, G.campaign_id)
                                .where(G.status == "open", G.due_at.is_(None), G.opened_at <= opened_cut)))
    decided: dict[int, set[str]] = {}
    if gate_rows:
        for gid, person in s.execute(select(m.Decision.gate_id, m.Decision.person)
                                     .join(G, G.id == m.Decision.gate_id).where(G.status == "open")):
            decided.setdefault(gid, set()).add(person)
    deliverable_rows = list(s.execute(with_state(
        select(D.id, D.campaign_id, D.key, D.name, D.owner, D.due, RS.reminders, RS.last_reminded_on, RS.level),
        "deliverable", D.id, D.campaign_id).where(D.status.in_(("planned", "drafting")), D.due <= horizon.date())))

    settings = settings_for(s, {r.campaign_id for r in gate_rows} | {r.campaign_id for r in deliverable_rows})
    campaigns: dict[str, _Campaign] = {}

    def campaign(cid: str) -> _Campaign:
        c = campaigns.get(cid)
        if c is None:
            c = campaigns[cid] = _Campaign(cid, settings[cid], registry, now)
        return c

    states: list[dict[str, Any]] = []
    entries: list[tuple[_Campaign, str, dict[str, Any]]] = []  # (campaign, handle, item view)
    for row in gate_rows:
        c = campaign(row.campaign_id)
        if row.due_at is not None:
            due = c.local_date(row.due_at)
            overdue = now > (row.due_at if row.due_at.tzinfo else row.due_at.replace(tzinfo=UTC))
            state = "overdue" if overdue else _state(c.today, due, c.soon_limit)
        else:
            due = business_days_after(c.local_date(row.opened_at), c.rules["gate_turnaround_days"], c.holidays)
            state = _state(c.today, due, c.soon_limit)
        if state is None:
            continue
        waiting = [p for p in row.approvers if p not in decided.get(row.id, ())]
        if not waiting:
            continue
        _remind(c, "gate", row, row.title, due, state, waiting, states, entries, report, s)
    for row in deliverable_rows:
        c = campaign(row.campaign_id)
        state = _state(c.today, row.due, c.soon_limit)
        if state is not None:
            _remind(c, "deliverable", row, f"{row.name} ({row.key})", row.due, state, [row.owner], states, entries,
                    report, s)

    _save_states(s, states)
    messages = _messages(entries, now)
    report.messages = enqueue(s, messages, {k: len(v) for k, v in registry.channels.items()}, now)
    report.breaches = sla.check(s, now)
    return report


def _remind(c: _Campaign, kind: str, row: Any, title: str, due: dt.date, state: str, base: list[str],
            states: list, entries: list, report: SweepReport, s: Session) -> None:
    report.checked += 1
    if row.last_reminded_on is not None and row.last_reminded_on > c.cadence_cut:
        return  # reminded recently enough
    count = (row.reminders or 0) + 1
    every, levels = c.rules["escalate_after"], c.rules["escalate_to"]
    level = min((count - 1) // every, len(levels))
    escalated: list[str] = []
    for names in levels[:level]:
        escalated += [h for h in c.aud.expand(names) if h not in base and h not in escalated]
    reached = [h for h in base + escalated if c.reachable(h)]
    if not reached:
        report.held += 1
        return
    report.reminded += 1
    states.append({"item_kind": kind, "item_id": row.id, "campaign_id": c.aud.campaign_id, "reminders": count,
                   "last_reminded_on": c.today, "level": max(level, row.level or 0)})
    if level > (row.level or 0):
        report.escalated += 1
        audit(s, c.aud.campaign_id, "reminder.escalated", row.key, level=level, reminders=count, to=escalated,
              waiting_on=base)
    waiting_names = [c.aud.name_of(h) for h in base]
    for handle in reached:
        is_escalation = handle not in base
        if kind == "gate":
            link = links.approval_link(row.id, handle, "approve")
            action = (f"please chase {', '.join(waiting_names)}" if is_escalation else
                      f"decide: {link}" if link else f"decide: campaignflow approve {row.id} --as {handle}")
        else:
            action = (f"please check in with {', '.join(waiting_names)}" if is_escalation
                      else "finish it, or tell the campaign manager the new date")
        entries.append((c, handle, {
            "key": f"{kind}:{row.id}", "campaign": c.aud.settings["name"], "campaign_id": c.aud.campaign_id,
            "title": title, "state": state, "due": str(due), "reminders": count, "escalated": is_escalation,
            "waiting_on": waiting_names, "action": action, "kind": kind,
        }))


def _save_states(s: Session, states: list[dict[str, Any]]) -> None:
    if not states:
        return
    dialect = s.get_bind().dialect.name
    table = ReminderState.__table__
    if dialect in ("sqlite", "postgresql"):
        insert = __import__(f"sqlalchemy.dialects.{dialect}", fromlist=["insert"]).insert
        stmt = insert(table)
        stmt = stmt.on_conflict_do_update(
            index_elements=["item_kind", "item_id"],
            set_={"reminders": stmt.excluded.reminders, "last_reminded_on": stmt.excluded.last_reminded_on,
                  "level": stmt.excluded.level})
        s.execute(stmt, states)
    else:
        for st in states:
            row = s.get(ReminderState, (st["item_kind"], st["item_id"])) or ReminderState(**st)
            for k, v in st.items():
                setattr(row, k, v)
            s.add(row)


def _messages(entries: list[tuple[_Campaign, str, dict[str, Any]]], now: dt.datetime) -> list[Message]:
    """Digest: one message per channel listing its people's items; otherwise one per item and channel."""
    digests: dict[str, list[tuple[_Campaign, str, dict[str, Any]]]] = {}
    out: list[Message] = []
    for c, handle, item in entries:
        if c.aud.muted("reminder"):
            continue
        channel = c.aud.channel_for(handle) or c.aud.unrouted(handle)
        if channel is None:
            continue
        if c.rules["digest"]:
            digests.setdefault(channel, []).append((c, handle, item))
            continue
        title, body = render("reminder", {"items": [item], "recipients": [{"handle": handle, "name": c.aud.name_of(handle)}],
                                          "more": 0}, c.aud.settings.get("templates"))
        out.append(_message(f"rem:{item['key']}:{item['reminders']}:{channel}", item["campaign_id"], handle, channel,
                            title, body))
    for channel, group in digests.items():
        c0 = group[0][0]
        items = [item for _, _, item in group]
        people: dict[str, str] = {}
        for c, handle, _ in group:
            people.setdefault(handle, c.aud.name_of(handle))
        fingerprint = hashlib.sha1("|".join(sorted(f"{i['key']}:{i['reminders']}:{h}" for _, h, i in group))
                                   .encode()).hexdigest()[:12]
        title, body = render("digest", {"items": items[:DIGEST_LIMIT], "more": max(len(items) - DIGEST_LIMIT, 0),
                                        "recipients": [{"handle": h, "name": n} for h, n in people.items()]},
                             c0.aud.settings.get("templates"))
        campaign_ids = {i["campaign_id"] for i in items}
        out.append(_message(f"digest:{channel}:{now:%Y%m%dT%H%M}:{fingerprint}",
                            items[0]["campaign_id"] if len(campaign_ids) == 1 else "", ", ".join(people), channel,
                            title, body))
    return out


def _message(key: str, campaign_id: str, recipient: str, channel: str, title: str, body: str) -> Message:
    unrouted = channel.startswith("!")
    return Message(dedupe_key=key, campaign_id=campaign_id, kind="reminder", recipient=recipient,
                   channel="" if unrouted else channel, title=title, body=body)
