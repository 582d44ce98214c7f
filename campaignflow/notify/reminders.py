"""The reminder rule: what is due soon or overdue, who hears about it, and when it escalates.

One sweep reads the settings of every campaign once, then every open item
that may be due in a few set-based queries (approval gates waiting on
approvers, deliverables waiting on their owner) joined with their reminder
state, decides in memory, and writes the reminder states and outbox rows
back in bulk, in the sweep's one transaction. For each item:

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
import json
import time
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import Any, Callable
from zoneinfo import ZoneInfo

from sqlalchemy import String, or_, select, text, type_coerce
from sqlmodel import Session

from campaignflow import models as m
from campaignflow.approvals import active_delegations
from campaignflow.models_notify import REMINDER_TABLES, DeliverableReminder, GateReminder, NotifySettings
from campaignflow.notify.audience import Audience, _chunks, _holidays, _zone, ensure_settings
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.outbox import Message, enqueue
from campaignflow.notify.templates import render
from campaignflow.store import audit
from campaignflow.timeline import shift_business_days

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


def calendar_span(business_days: int) -> int:
    """Calendar days that surely contain `business_days` business days (weekends, a few holidays, time zones)."""
    return business_days * 7 // 5 + 6


class _StoreForm:
    """Dates and instants in the form the store returns them, so the sweep compares them without parsing.

    On SQLite that is ISO text, which compares and sorts like the values (every instant is written by
    SQLAlchemy as UTC 'YYYY-MM-DD HH:MM:SS.ffffff'); elsewhere the driver's own date and datetime objects."""

    def __init__(self, raw: bool):
        self.raw = raw

    def date(self, day: dt.date) -> Any:
        return day.isoformat() if self.raw else day

    def instant(self, when: dt.datetime) -> Any:
        return when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f") if self.raw else when

    def read_date(self, value: Any) -> dt.date:
        return dt.date.fromisoformat(value) if self.raw else value

    def read_instant(self, value: Any) -> dt.datetime:
        return dt.datetime.fromisoformat(value).replace(tzinfo=UTC) if self.raw else m.as_utc(value)


class _LocalDays:
    """One time zone's calendar days around today, each with the instant it starts at (in the store's form):
    an instant's local day is then a binary search rather than a time zone conversion."""

    SPAN = 90  # days either side of today; an instant outside is converted the slow way

    def __init__(self, zone: ZoneInfo, today: dt.date, form: _StoreForm):
        self.zone, self.form = zone, form
        days = [today + dt.timedelta(days=i) for i in range(-self.SPAN, self.SPAN + 1)]
        self.days = [form.date(d) for d in days]
        self.starts = [form.instant(dt.datetime.combine(d, dt.time(), zone)) for d in days]

    def day_of(self, instant: Any) -> Any:
        """The local day (store form) of an instant (store form)."""
        i = bisect_right(self.starts, instant)
        if 0 < i < len(self.starts):
            return self.days[i - 1]
        return self.form.date(self.form.read_instant(instant).astimezone(self.zone).date())


class _Campaign:
    """Per-campaign numbers computed once per sweep, and per-person answers cached for the whole sweep.

    Its days and instants are in the store's form (see _StoreForm), like the rows they are compared with."""

    __slots__ = ("aud", "holidays", "today", "soon_limit", "cadence_cut", "now", "people", "calendars", "levels",
                 "every", "turnaround", "digest", "muted", "name", "today_iso", "cid", "reach", "days", "form")

    def __init__(self, cid: str, settings: dict[str, Any], registry: ChannelRegistry, now: dt.datetime,
                 reach: dict[tuple, bool], local_days: Callable[[ZoneInfo, dt.date], _LocalDays], form: _StoreForm):
        self.aud = Audience(cid, settings, registry)
        self.cid = cid
        self.reach = reach
        self.form = form
        r = settings["reminders"]
        cal = settings["calendar"]
        zone = _zone(cal["timezone"])
        self.holidays = _holidays(tuple(cal["holidays"]))
        today = now.astimezone(zone).date()
        self.days = local_days(zone, today)
        self.today_iso = today.isoformat()
        self.today = form.date(today)
        self.soon_limit = form.date(shift_business_days(today, r["due_soon_days"], self.holidays))
        self.cadence_cut = form.date(shift_business_days(today, -r["every_days"], self.holidays))
        self.now = now
        self.people: dict[str, tuple[bool, str | None, list | None]] = {}
        self.calendars: dict[int, bool] = {}  # id of a calendar in the settings -> can its people be told now
        self.every = r["escalate_after"]
        self.levels = r["escalate_to"]
        self.turnaround = r["gate_turnaround_days"]
        self.digest = r["digest"]
        self.muted = self.aud.muted("reminder")
        self.name = settings["name"]

    def gate_due(self, due_at: Any, opened_at: Any) -> Any:
        """A gate's local due day: that of its due time, else `gate_turnaround_days` business days after it opened."""
        if due_at is not None:
            return self.days.day_of(due_at)
        opened = self.form.read_date(self.days.day_of(opened_at))
        return self.form.date(shift_business_days(opened, self.turnaround, self.holidays))

    def person(self, handle: str, out: "_Outgoing") -> tuple[bool, str | None, list | None]:
        """(can be told now, channel or None to skip, the list their reminder lines go to or None).

        Can be told: a business day and outside quiet hours where they are."""
        answer = self.people.get(handle)
        if answer is None:
            aud = self.aud
            cal = aud.calendar(handle)
            reachable = self.calendars.get(id(cal))
            if reachable is None:
                key = (cal["timezone"], tuple(cal.get("quiet") or ()), tuple(cal["holidays"]))
                reachable = self.reach.get(key)
                if reachable is None:
                    reachable = self.reach[key] = (aud.is_workday(handle, self.now)
                                                   and aud.quiet_until(handle, self.now) is None)
                self.calendars[id(cal)] = reachable
            channel = aud.channel_for(handle) or aud.unrouted(handle)
            lines = None
            if reachable and channel is not None and not self.muted:
                lines = out.lines_for(self, handle, channel)
            answer = self.people[handle] = (reachable, channel, lines)
        return answer


class _Digest:
    """One channel's digest: its reminder lines, and who reads it."""

    __slots__ = ("entries", "people", "campaigns", "templates", "top")

    def __init__(self, templates: str | None):
        self.entries: list[Entry] = []
        self.people: dict[str, str] = {}  # handle -> name, in the order they first appear
        self.campaigns: set[str] = set()
        self.templates = templates
        self.top: list[Entry] = []  # the lines the message lists


class _Outgoing:
    """Reminder lines on their way to messages: a digest per channel, or one message per line."""

    def __init__(self):
        self.digests: dict[str, _Digest] = {}
        self.singles: list[Entry] = []

    def lines_for(self, c: _Campaign, handle: str, channel: str) -> list[Entry]:
        if not c.digest:
            return self.singles
        digest = self.digests.get(channel)
        if digest is None:
            digest = self.digests[channel] = _Digest(c.aud.settings.get("templates"))
        digest.people.setdefault(handle, c.aud.name_of(handle))
        digest.campaigns.add(c.cid)
        return digest.entries

    def shown(self) -> list[Entry]:
        """Every line a message will show: each single, and each digest's first DIGEST_LIMIT."""
        for digest in self.digests.values():
            digest.top = heapq.nsmallest(DIGEST_LIMIT, digest.entries)
        return self.singles + [e for d in self.digests.values() for e in d.top]


def _state(today: Any, due: Any, soon_limit: Any) -> str | None:
    """Where a due day stands (days in the store's form), or None when it is not due soon yet."""
    if today > due:
        return "overdue"
    if today == due:
        return "due today"
    if due <= soon_limit:
        return "due soon"
    return None


# An entry is one reminder line for one person: (0 if overdue else 1, due date as the store keeps it, kind,
# item id, handle, campaign, channel, state, reminders so far, escalated?, the people it waits on or None for
# the handle alone). Entries order as a digest lists them: overdue first, then by due date, then by item.
# (No channel has two entries for one item and person, so the comparison never reaches the campaign.)
Entry = tuple


def sweep(s: Session, registry: ChannelRegistry, now: dt.datetime | None = None) -> SweepReport:
    """One reminder and SLA sweep over every open item; returns what it did."""
    # The sweep builds a few objects per due item and frees them all at the end: the cyclic collector
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
    ensure_settings(s)  # from here on every campaign's cached settings are current
    NS = NotifySettings
    enabled = s.execute(select(NS.campaign_id, NS.settings, NS.lead_days, NS.turnaround_days)
                        .where(NS.enabled.is_(True))).all()
    if not enabled:
        return report
    settings = {cid: conf for cid, conf, _, _ in enabled}
    lead = max(row[2] for row in enabled)
    turnaround = min(row[3] for row in enabled)
    zones = {conf["calendar"]["timezone"] for conf in settings.values()}
    clock("settings")
    # Whatever a campaign's time zone, an item reminded on the latest "today" anywhere cannot be due again yet.
    latest_today = max(now.astimezone(_zone(z)).date() for z in zones)
    horizon = now + dt.timedelta(days=calendar_span(lead))
    opened_cut = horizon - dt.timedelta(days=turnaround)
    G, D = m.ApprovalGate, m.Deliverable
    GR, DR = GateReminder, DeliverableReminder
    conn = s.connection()

    def not_reminded_today(query, state):
        return query.where(or_(state.last_reminded_on.is_(None), state.last_reminded_on < latest_today))

    # On SQLite, times and dates arrive as text and are compared as text (see _StoreForm), and approvers
    # are decoded once per distinct stored JSON text. Keys and titles are fetched later, only for the
    # items a message shows.
    raw = s.get_bind().dialect.name == "sqlite"
    as_text = (lambda col: type_coerce(col, String)) if raw else (lambda col: col)
    form = _StoreForm(raw)
    now_k = form.instant(now)
    gate_query = (select(G.id, G.campaign_id, type_coerce(G.approvers, String), as_text(G.opened_at),
                         as_text(G.due_at), GR.reminders, as_text(GR.last_reminded_on), GR.level)
                  .outerjoin(GR, GR.gate_id == G.id))

    def fetch(stmt) -> list:
        if not raw:
            return conn.execute(stmt).all()
        # Plain tuples from the driver: SQLAlchemy's row objects cost more than the query here.
        cursor = conn.connection.dbapi_connection.cursor()
        try:
            return cursor.execute(str(stmt.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))).fetchall()
        finally:
            cursor.close()

    gate_rows = fetch(not_reminded_today(gate_query, GR).where(G.status == "open", G.due_at <= horizon))
    gate_rows += fetch(not_reminded_today(gate_query, GR)
                       .where(G.status == "open", G.due_at.is_(None), G.opened_at <= opened_cut))
    decided: dict[int, set[str]] = {}
    if gate_rows:
        for gid, person in conn.execute(select(m.Decision.gate_id, m.Decision.person)
                                        .join(G, G.id == m.Decision.gate_id).where(G.status == "open")):
            decided.setdefault(gid, set()).add(person)
    standing_in = active_delegations(s, now.date())  # reminders go to whoever stands in today
    deliverable_rows = fetch(not_reminded_today(
        select(D.id, D.campaign_id, D.owner, as_text(D.due), DR.reminders,
               as_text(DR.last_reminded_on), DR.level).outerjoin(DR, DR.deliverable_id == D.id), DR)
        .where(D.status.in_(m.OWNER_TO_MOVE), D.due <= horizon.date()))

    clock("select")
    # Campaigns with notifications switched off are dropped here (a few), not joined per row (many).
    if {r[1] for r in gate_rows}.union(r[1] for r in deliverable_rows) - settings.keys():
        gate_rows = [r for r in gate_rows if r[1] in settings]
        deliverable_rows = [r for r in deliverable_rows if r[1] in settings]
    reach: dict[tuple, bool] = {}  # (time zone, quiet hours, holidays) -> can people on it be told now
    zones_days: dict[tuple, _LocalDays] = {}
    out = _Outgoing()
    campaigns: dict[str, _Campaign] = {}

    def local_days(zone: ZoneInfo, today: dt.date) -> _LocalDays:
        days = zones_days.get((zone, today))
        if days is None:
            days = zones_days[zone, today] = _LocalDays(zone, today, form)
        return days

    def campaign(cid: str) -> _Campaign:
        c = campaigns[cid] = _Campaign(cid, settings[cid], registry, now, reach, local_days, form)
        return c

    states: dict[str, list[tuple]] = {"gate": [], "deliverable": []}
    escalations: list[tuple] = []

    def remind(c: _Campaign, kind: str, item_id: int, due: Any, state: str, base: list[str],
               reminders: int | None, last: Any, level_before: int | None) -> None:
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
            answer = people.get(h) or c.person(h, out)
            if answer[0]:
                reached.append((h, answer[1], answer[2]))
        if not reached:
            report.held += 1
            return
        report.reminded += 1
        before = level_before or 0
        states[kind].append((item_id, count, c.today_iso, level if level > before else before))
        if level > before:
            report.escalated += 1
            escalations.append((c.cid, kind, item_id, level, count, escalated, base))
        rank = 0 if state == "overdue" else 1
        for handle, channel, lines in reached:
            if lines is not None:
                lines.append((rank, due, kind, item_id, handle, c, channel, state, count,
                              escalated is not None and handle not in base, base))

    approver_lists: dict[str, list[str]] = {}  # stored JSON text -> list: a few distinct values, decoded once
    for gid, cid, approvers, opened_at, due_at, reminders, last, level in gate_rows:
        c = campaigns.get(cid) or campaign(cid)
        if not raw:
            due_at, opened_at = (m.as_utc(v) if v is not None else None for v in (due_at, opened_at))
        due = c.gate_due(due_at, opened_at)
        state = "overdue" if due_at is not None and due_at < now_k else _state(c.today, due, c.soon_limit)
        if state is None:
            continue
        if isinstance(approvers, str):
            approvers = approver_lists.get(approvers) or approver_lists.setdefault(approvers, json.loads(approvers))
        done = decided.get(gid)
        waiting = [standing_in.get(p, p) for p in approvers if not done or p not in done]
        if waiting:
            remind(c, "gate", gid, due, state, list(dict.fromkeys(waiting)), reminders, last, level)
    # Deliverables are most of the open items: a tight loop for the common case (one owner, no escalation yet).
    checked = reminded = held = 0
    deliverable_states = states["deliverable"]
    for did, cid, owner, due, reminders, last, level in deliverable_rows:
        c = campaigns.get(cid) or campaign(cid)
        state = _state(c.today, due, c.soon_limit)
        if state is None:
            continue
        count = (reminders or 0) + 1
        if count > c.every or owner in standing_in:
            remind(c, "deliverable", did, due, state, [standing_in.get(owner, owner)], reminders, last, level)
            continue
        checked += 1
        if last is not None and last > c.cadence_cut:
            continue
        ok, channel, lines = c.people.get(owner) or c.person(owner, out)
        if not ok:
            held += 1
            continue
        reminded += 1
        deliverable_states.append((did, count, c.today_iso, level or 0))
        if lines is not None:
            lines.append((0 if state == "overdue" else 1, due, "deliverable", did, owner, c, channel, state, count,
                          False, None))
    report.checked += checked
    report.reminded += reminded
    report.held += held

    clock("decide")
    _save_states(s, states)
    clock("save states")
    shown = out.shown()
    described = _describe(s, {(e[2], e[3]) for e in shown} | {(e[1], e[2]) for e in escalations})
    for cid, kind, item_id, level, count, escalated, base in escalations:
        audit(s, cid, "reminder.escalated", described[kind, item_id][0], level=level, reminders=count, to=escalated,
              waiting_on=base)
    messages = _messages(out, described, now)
    clock("render")
    report.messages = enqueue(s, messages, {k: len(v) for k, v in registry.channels.items()}, now)
    report.breaches = sla.check(s, now)
    clock("enqueue + sla")
    # Each campaign's person cache holds the digest lines, whose entries hold the campaign: break that cycle,
    # so the sweep's objects are freed as it returns rather than by a collector pass over all of them.
    for c in campaigns.values():
        c.people.clear()
    return report


class _Clock:
    """Phase timings in the report's details (the bench prints them)."""

    def __init__(self, report: SweepReport):
        self.report, self.last = report, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.details.append(f"{phase} {now - self.last:.3f}s")
        self.last = now


def _save_states(s: Session, states: dict[str, list[tuple]]) -> None:
    """Upsert (item id, reminders, day, level) rows into each kind's reminder table."""
    dialect = s.get_bind().dialect.name
    for kind, rows in states.items():
        if not rows:
            continue
        table = REMINDER_TABLES[kind].__table__
        id_col = table.primary_key.columns.values()[0].name
        if dialect == "sqlite":
            # Straight to the driver: SQLAlchemy's per-row parameter processing would cost more than the write.
            cursor = s.connection().connection.dbapi_connection.cursor()
            try:
                cursor.executemany(
                    f"INSERT INTO {table.name} ({id_col}, reminders, last_reminded_on, level) VALUES (?, ?, ?, ?) "
                    f"ON CONFLICT ({id_col}) DO UPDATE SET reminders = excluded.reminders, "
                    "last_reminded_on = excluded.last_reminded_on, level = excluded.level", rows)
            finally:
                cursor.close()
            continue
        values = [{id_col: i, "reminders": n, "last_reminded_on": dt.date.fromisoformat(d), "level": lv}
                  for i, n, d, lv in rows]
        if dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert

            stmt = insert(table)
            s.execute(stmt.on_conflict_do_update(
                index_elements=[id_col],
                set_={"reminders": stmt.excluded.reminders, "last_reminded_on": stmt.excluded.last_reminded_on,
                      "level": stmt.excluded.level}), values)
            continue
        model = REMINDER_TABLES[kind]
        for value in values:
            row = s.get(model, value[id_col]) or model(**value)
            for k, v in value.items():
                setattr(row, k, v)
            s.add(row)


def _describe(s: Session, items: set[tuple[str, int]]) -> dict[tuple[str, int], tuple[str, str]]:
    """(key, title) of the items that messages show or escalations name: fetched for those alone."""
    found: dict[tuple[str, int], tuple[str, str]] = {}
    for kind, model, title_col in (("gate", m.ApprovalGate, m.ApprovalGate.title),
                                   ("deliverable", m.Deliverable, m.Deliverable.name)):
        for chunk in _chunks(sorted(i for k, i in items if k == kind), 900):
            for item_id, key, title in s.execute(select(model.id, model.key, title_col).where(model.id.in_(chunk))):
                found[kind, item_id] = (key, title if kind == "gate" else f"{title} ({key})")
    return found


def _view(entry: Entry, described: dict[tuple[str, int], tuple[str, str]]) -> dict[str, Any]:
    _, due, kind, item_id, handle, c, channel, state, count, escalated, base = entry
    names = [c.aud.name_of(h) for h in base or (handle,)]
    if kind == "gate":
        link = c.aud.decision_links(item_id, channel, [handle])["approve"].get(handle)
        action = (f"please chase {', '.join(names)}" if escalated else
                  f"decide: {link}" if link else f"decide: campaignflow approve {item_id} --as {handle}")
    else:
        action = (f"please check in with {', '.join(names)}" if escalated
                  else "finish it, or tell the campaign manager the new date")
    return {"key": f"{kind}:{item_id}", "campaign": c.name, "campaign_id": c.cid, "title": described[kind, item_id][1],
            "state": state, "due": str(due), "reminders": count, "escalated": escalated, "waiting_on": names,
            "action": action, "kind": kind}


def _messages(out: _Outgoing, described: dict[tuple[str, int], tuple[str, str]], now: dt.datetime) -> list[Message]:
    """Digest: one message per channel listing its people's items; otherwise one per item and channel."""
    messages: list[Message] = []
    for entry in out.singles:
        handle, c, channel = entry[4], entry[5], entry[6]
        item = _view(entry, described)
        title, body = render("reminder", {"items": [item], "more": 0,
                                          "recipients": [{"handle": handle, "name": c.aud.name_of(handle)}]},
                             c.aud.settings.get("templates"))
        messages.append(_message(f"rem:{item['key']}:{item['reminders']}:{channel}", item["campaign_id"], handle,
                                 channel, title, body))
    for channel, digest in out.digests.items():
        count = len(digest.entries)
        title, body = render("digest", {"items": [_view(e, described) for e in digest.top],
                                        "more": max(count - DIGEST_LIMIT, 0), "count": count,
                                        "recipients": [{"handle": h, "name": n} for h, n in digest.people.items()]},
                             digest.templates)
        # Sweeps run one at a time and commit their reminder states with these rows, so a sweep can
        # never produce the same digest twice: the channel and the sweep's moment make the key.
        campaign_id = next(iter(digest.campaigns)) if len(digest.campaigns) == 1 else ""
        messages.append(_message(f"digest:{channel}:{now:%Y%m%dT%H%M%S.%f}", campaign_id, ", ".join(digest.people),
                                 channel, title, body))
    return messages


def _message(key: str, campaign_id: str, recipient: str, channel: str, title: str, body: str) -> Message:
    unrouted = channel.startswith("!")
    return Message(dedupe_key=key, campaign_id=campaign_id, kind="reminder", recipient=recipient,
                   channel="" if unrouted else channel, title=title, body=body)
