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
import gc
import heapq
import time
import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from sqlalchemy import String, and_, func, or_, select, text, type_coerce
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
    """Per-campaign numbers computed once per sweep, and per-person answers cached for the whole sweep."""

    __slots__ = ("aud", "rules", "zone", "holidays", "today", "soon_limit", "cadence_cut", "now", "people",
                 "levels", "every", "turnaround", "digest", "muted", "name", "today_iso", "cid", "reach")

    def __init__(self, cid: str, settings: dict[str, Any], registry: ChannelRegistry, now: dt.datetime,
                 reach: dict[tuple, bool]):
        self.aud = Audience(cid, settings, registry)
        self.cid = cid
        self.reach = reach
        r = settings["reminders"]
        self.rules = r
        cal = settings["calendar"]
        self.zone = _zone(cal["timezone"])
        self.holidays = _holidays(tuple(cal["holidays"]))
        self.today = now.astimezone(self.zone).date()
        self.today_iso = self.today.isoformat()
        self.soon_limit = business_days_after(self.today, r["due_soon_days"], self.holidays)
        self.cadence_cut = business_days_before(self.today, r["every_days"], self.holidays)
        self.now = now
        self.people: dict[str, tuple[bool, str | None]] = {}
        self.every = r["escalate_after"]
        self.levels = r["escalate_to"]
        self.turnaround = r["gate_turnaround_days"]
        self.digest = r["digest"]
        self.muted = self.aud.muted("reminder")
        self.name = settings["name"]

    def person(self, handle: str) -> tuple[bool, str | None]:
        """(can be told now, channel or None to skip): business day and outside quiet hours where they are."""
        answer = self.people.get(handle)
        if answer is None:
            cal = self.aud.calendar(handle)
            key = (cal["timezone"], tuple(cal.get("quiet") or ()), tuple(cal["holidays"]))
            reachable = self.reach.get(key)
            if reachable is None:
                reachable = self.reach[key] = (self.aud.is_workday(handle, self.now)
                                           and self.aud.quiet_until(handle, self.now) is None)
            answer = self.people[handle] = (reachable, self.aud.channel_for(handle) or self.aud.unrouted(handle))
        return answer

    def local_date(self, when: dt.datetime) -> dt.date:
        return m.as_utc(when).astimezone(self.zone).date()


def _state(today: dt.date, due: dt.date, soon_limit: dt.date) -> str | None:
    if today > due:
        return "overdue"
    if today == due:
        return "due today"
    if due <= soon_limit:
        return "due soon"
    return None


# An entry is one reminder line for one person: (campaign, handle, channel, kind, item id, key, title, due,
# state, reminders so far, escalated?, the people it waits on).
Entry = tuple


def sweep(s: Session, registry: ChannelRegistry, now: dt.datetime | None = None) -> SweepReport:
    """One reminder and SLA sweep over every open item; returns what it did."""
    # The sweep builds ~10 objects per due item and frees them all at the end: the cyclic collector
    # would otherwise walk the whole heap again and again meanwhile (a third of the time at 100k items).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _sweep(s, registry, now)
    finally:
        if enabled:
            gc.enable()


def _sweep(s: Session, registry: ChannelRegistry, now: dt.datetime | None) -> SweepReport:
    from campaignflow.notify import sla

    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    report = SweepReport()
    clock = _Clock(report)
    if s.get_bind().dialect.name == "postgresql":
        # One sweep at a time: two at once would both count the same reminder.
        s.execute(text("SELECT pg_advisory_xact_lock(4714)"))
    ensure_settings(s)
    NS = NotifySettings
    lead, turnaround = s.execute(select(func.max(NS.lead_days), func.min(NS.turnaround_days))
                                 .where(NS.enabled.is_(True))).one()
    if lead is None:
        return report
    zones = {z for z in s.execute(select(NS.settings["calendar"]["timezone"].as_string()).distinct()
                                  .where(NS.enabled.is_(True))).scalars() if z}
    # Whatever a campaign's time zone, an item reminded on the latest "today" anywhere cannot be due again yet.
    latest_today = max(now.astimezone(_zone(z)).date() for z in zones or {"UTC"})
    horizon = now + dt.timedelta(days=calendar_span(lead))
    opened_cut = horizon - dt.timedelta(days=turnaround)
    G, D, RS = m.ApprovalGate, m.Deliverable, ReminderState
    conn = s.connection()

    def with_state(query, kind: str, id_col, campaign_col):
        # Campaigns with notifications switched off are dropped in memory (a few), not joined per row (many).
        return (query.outerjoin(RS, and_(RS.item_kind == kind, RS.item_id == id_col))
                .where(or_(RS.last_reminded_on.is_(None), RS.last_reminded_on < latest_today)))

    # On SQLite, times and dates arrive as text and are parsed here: fromisoformat is many times faster
    # than a type processor per value, and approvers are decoded once, from their stored JSON text.
    raw = s.get_bind().dialect.name == "sqlite"
    as_text = (lambda col: type_coerce(col, String)) if raw else (lambda col: col)
    when = dt.datetime.fromisoformat if raw else (lambda v: v)
    day = dt.date.fromisoformat if raw else (lambda v: v)
    gate_cols = (G.id, G.campaign_id, G.key, G.title, type_coerce(G.approvers, String), as_text(G.opened_at),
                 as_text(G.due_at), RS.reminders, as_text(RS.last_reminded_on), RS.level)

    def fetch(stmt) -> list:
        if not raw:
            return conn.execute(stmt).all()
        # Plain tuples from the driver: SQLAlchemy's row objects cost more than the query here.
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            return cursor.execute(str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))).fetchall()
        finally:
            cursor.close()

    gate_rows = fetch(with_state(select(*gate_cols), "gate", G.id, G.campaign_id)
                      .where(G.status == "open", G.due_at <= horizon))
    gate_rows += fetch(with_state(select(*gate_cols), "gate", G.id, G.campaign_id)
                       .where(G.status == "open", G.due_at.is_(None), G.opened_at <= opened_cut))
    decided: dict[int, set[str]] = {}
    if gate_rows:
        for gid, person in conn.execute(select(m.Decision.gate_id, m.Decision.person)
                                        .join(G, G.id == m.Decision.gate_id).where(G.status == "open")):
            decided.setdefault(gid, set()).add(person)
    standing_in = _delegates(s, now)
    deliverable_rows = fetch(with_state(
        select(D.id, D.campaign_id, D.key, D.name, D.owner, as_text(D.due), RS.reminders, as_text(RS.last_reminded_on),
               RS.level),
        "deliverable", D.id, D.campaign_id).where(D.status.in_(("planned", "drafting")), D.due <= horizon.date()))

    clock("select")
    settings = settings_for(s, {r[1] for r in gate_rows} | {r[1] for r in deliverable_rows})
    clock("settings")
    off = {cid for cid, conf in settings.items() if not conf.get("enabled", True)}
    if off:
        gate_rows = [r for r in gate_rows if r[1] not in off]
        deliverable_rows = [r for r in deliverable_rows if r[1] not in off]
    reach: dict[tuple, bool] = {}  # (time zone, quiet hours, holidays) -> can people on it be told now
    campaigns: dict[str, _Campaign] = {}
    states: list[tuple] = []
    entries: list[Entry] = []
    escalations: list[tuple] = []
    loads = json.loads

    def remind(c: _Campaign, kind: str, item_id: int, key: str, title: str, due: dt.date, state: str,
               base: list[str], reminders: int | None, last: dt.date | None, level_before: int | None) -> None:
        report.checked += 1
        if last is not None and last > c.cadence_cut:
            return  # reminded recently enough
        count = (reminders or 0) + 1
        level = (count - 1) // c.every
        if level:
            level = min(level, len(c.levels))
            escalated = []
            for names in c.levels[:level]:
                escalated += [h for h in c.aud.expand(names) if h not in base and h not in escalated]
            everyone = base + escalated
        else:
            escalated, everyone = None, base
        people = c.people
        reached = []
        for h in everyone:
            answer = people.get(h) or c.person(h)
            if answer[0]:
                reached.append((h, answer[1]))
        if not reached:
            report.held += 1
            return
        report.reminded += 1
        before = level_before or 0
        states.append((kind, item_id, c.cid, count, c.today_iso, level if level > before else before))
        if level > before:
            report.escalated += 1
            escalations.append((c.cid, key, level, count, escalated, base))
        if c.muted:
            return
        for handle, channel in reached:
            if channel is not None:
                entries.append((c, handle, channel, kind, item_id, key, title, due, state, count,
                                escalated is not None and handle not in base, base))

    for gid, cid, key, title, approvers, opened_at, due_at, reminders, last, level in gate_rows:
        c = campaigns.get(cid)
        if c is None:
            c = campaigns[cid] = _Campaign(cid, settings[cid], registry, now, reach)
        if last is not None:
            last = day(last)
        if due_at is not None:
            due_at = when(due_at)
            due = c.local_date(due_at)
            overdue = now > m.as_utc(due_at)
            state = "overdue" if overdue else _state(c.today, due, c.soon_limit)
        else:
            due = business_days_after(c.local_date(when(opened_at)), c.turnaround, c.holidays)
            state = _state(c.today, due, c.soon_limit)
        if state is None:
            continue
        done = decided.get(gid)
        waiting = [standing_in.get(p, p) for p in (loads(approvers) if isinstance(approvers, str) else approvers)
                   if not done or p not in done]
        if waiting:
            remind(c, "gate", gid, key, title, due, state, waiting, reminders, last, level)
    # Deliverables are most of the open items: a tight loop for the common case (one owner, no
    # escalation yet) that compares dates as the store returns them (ISO text on SQLite).
    key_of = (lambda d: d.isoformat()) if raw else (lambda d: d)
    bounds: dict[str, tuple] = {}
    for did, cid, key, name, owner, due, reminders, last, level in deliverable_rows:
        c = campaigns.get(cid)
        if c is None:
            c = campaigns[cid] = _Campaign(cid, settings[cid], registry, now, reach)
        b = bounds.get(cid)
        if b is None:
            b = bounds[cid] = (key_of(c.today), key_of(c.soon_limit), key_of(c.cadence_cut))
        today_k, soon_k, cut_k = b
        if due > soon_k:
            continue
        state = "overdue" if due < today_k else "due today" if due == today_k else "due soon"
        count = (reminders or 0) + 1
        if count <= c.every and owner not in standing_in:
            report.checked += 1
            if last is not None and last > cut_k:
                continue
            ok, channel = c.people.get(owner) or c.person(owner)
            if not ok:
                report.held += 1
                continue
            report.reminded += 1
            states.append(("deliverable", did, cid, count, c.today_iso, level or 0))
            if channel is not None and not c.muted:
                entries.append((c, owner, channel, "deliverable", did, key, f"{name} ({key})", day(due), state, count,
                                False, [owner]))
            continue
        remind(c, "deliverable", did, key, f"{name} ({key})", day(due), state, [standing_in.get(owner, owner)],
               reminders, day(last) if last is not None else None, level)

    clock("decide")
    _save_states(s, states)
    clock("save states")
    for cid, key, level, count, escalated, base in escalations:
        audit(s, cid, "reminder.escalated", key, level=level, reminders=count, to=escalated, waiting_on=base)
    messages = _messages(entries, now)
    clock("render")
    report.messages = enqueue(s, messages, {k: len(v) for k, v in registry.channels.items()}, now)
    report.breaches = sla.check(s, now)
    clock("enqueue + sla")
    return report


class _Clock:
    """Phase timings in the report's details (the bench prints them)."""

    def __init__(self, report: SweepReport):
        self.report, self.last = report, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.details.append(f"{phase} {now - self.last:.3f}s")
        self.last = now


def _delegates(s: Session, now: dt.datetime) -> dict[str, str]:
    """Who stands in for whom today (the approvals area's delegations), so reminders go to the stand-in."""
    delegation = getattr(m, "Delegation", None)
    if delegation is None:
        return {}
    today = now.date()
    try:
        rows = s.execute(select(delegation.person, delegation.delegate)
                         .where(delegation.starts <= today, delegation.ends >= today)).all()
    except Exception:  # noqa: BLE001  an older store without delegations
        return {}
    return dict(rows)


def _save_states(s: Session, states: list[tuple]) -> None:
    if not states:
        return
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        # Straight to the driver: SQLAlchemy's per-row parameter processing would cost more than the write.
        cursor = s.connection().connection.dbapi_connection.cursor()
        try:
            cursor.executemany(
                "INSERT INTO reminderstate (item_kind, item_id, campaign_id, reminders, last_reminded_on, level) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (item_kind, item_id) DO UPDATE SET reminders = "
                "excluded.reminders, last_reminded_on = excluded.last_reminded_on, level = excluded.level", states)
        finally:
            cursor.close()
        return
    rows = [{"item_kind": k, "item_id": i, "campaign_id": c, "reminders": n,
             "last_reminded_on": dt.date.fromisoformat(d), "level": lv} for k, i, c, n, d, lv in states]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert

        stmt = insert(ReminderState.__table__)
        stmt = stmt.on_conflict_do_update(
            index_elements=["item_kind", "item_id"],
            set_={"reminders": stmt.excluded.reminders, "last_reminded_on": stmt.excluded.last_reminded_on,
                  "level": stmt.excluded.level})
        s.execute(stmt, rows)
        return
    for st in rows:
        row = s.get(ReminderState, (st["item_kind"], st["item_id"])) or ReminderState(**st)
        for k, v in st.items():
            setattr(row, k, v)
        s.add(row)


def _view(entry: Entry) -> dict[str, Any]:
    c, handle, channel, kind, item_id, key, title, due, state, count, escalated, base = entry
    names = [c.aud.name_of(h) for h in base]
    if kind == "gate":
        link = links.approval_link(item_id, handle, "approve")
        action = (f"please chase {', '.join(names)}" if escalated else
                  f"decide: {link}" if link else f"decide: campaignflow approve {item_id} --as {handle}")
    else:
        action = (f"please check in with {', '.join(names)}" if escalated
                  else "finish it, or tell the campaign manager the new date")
    return {"key": f"{kind}:{item_id}", "campaign": c.name, "campaign_id": c.aud.campaign_id, "title": title,
            "state": state, "due": str(due), "reminders": count, "escalated": escalated, "waiting_on": names,
            "action": action, "kind": kind}


def _messages(entries: list[Entry], now: dt.datetime) -> list[Message]:
    """Digest: one message per channel listing its people's items; otherwise one per item and channel."""
    digests: dict[str, list[Entry]] = {}
    out: list[Message] = []
    for entry in entries:
        c, handle, channel = entry[0], entry[1], entry[2]
        if c.digest:
            digests.setdefault(channel, []).append(entry)
            continue
        item = _view(entry)
        title, body = render("reminder", {"items": [item], "more": 0,
                                          "recipients": [{"handle": handle, "name": c.aud.name_of(handle)}]},
                             c.aud.settings.get("templates"))
        out.append(_message(f"rem:{item['key']}:{item['reminders']}:{channel}", item["campaign_id"], handle, channel,
                            title, body))
    for channel, group in digests.items():
        # Overdue first, then by due date: what matters most tops the list.
        top = heapq.nsmallest(DIGEST_LIMIT, group, key=lambda e: (e[8] != "overdue", e[7], e[4]))
        shown = [_view(e) for e in top]
        people: dict[str, str] = {}
        campaign_ids: set[str] = set()
        for e in group:
            if e[1] not in people:
                people[e[1]] = e[0].aud.name_of(e[1])
            campaign_ids.add(e[0].cid)
        title, body = render("digest", {"items": shown, "more": max(len(group) - DIGEST_LIMIT, 0),
                                        "count": len(group),
                                        "recipients": [{"handle": h, "name": n} for h, n in people.items()]},
                             group[0][0].aud.settings.get("templates"))
        # Sweeps run one at a time and commit their reminder states with these rows, so a sweep can
        # never produce the same digest twice: the channel and the sweep's moment make the key.
        out.append(_message(f"digest:{channel}:{now:%Y%m%dT%H%M%S.%f}",
                            next(iter(campaign_ids)) if len(campaign_ids) == 1 else "", ", ".join(people), channel,
                            title, body))
    return out


def _message(key: str, campaign_id: str, recipient: str, channel: str, title: str, body: str) -> Message:
    unrouted = channel.startswith("!")
    return Message(dedupe_key=key, campaign_id=campaign_id, kind="reminder", recipient=recipient,
                   channel="" if unrouted else channel, title=title, body=body)
