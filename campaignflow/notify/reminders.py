"""The reminder rule, and the sweep that applies it to every open item.

The rule (`decide`), for one open item:

- due soon: within `due_soon_days` business days of its due date; overdue: past it.
  A gate is due at its `due_at`, or `gate_turnaround_days` business days after it opened.
- it is reminded again every `every_days` business days while it stays due;
- after `escalate_after` reminders the next level of `escalate_to` hears too, and so on;
- a person is only reminded on their team's business days and outside their quiet hours
  (an item nobody could be told about now waits for the next sweep, uncounted);
- with `digest` on, each channel gets one message per sweep listing everything.

The sweep is set-based: one query per kind of item (`KINDS`) reads the open items that may be due
with their reminder counts, the rule decides each in memory, and the new counts and the outbox rows
are written back in bulk, in the sweep's one transaction.
"""

from __future__ import annotations

import datetime as dt
from bisect import insort
import time
from dataclasses import dataclass, field
from functools import cache, partial
from typing import Callable, Iterator, NamedTuple
from zoneinfo import ZoneInfo

from sqlalchemy import Select, and_, bindparam, func, or_, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlmodel import Session

from campaignflow import models as m
from campaignflow.approvals import active_delegations
from campaignflow.models_notify import DeliverableReminder, GateReminder, NotifySettings, ReminderCount
from campaignflow.notify.audience import Audience, _holidays, _zone, ensure_settings
from campaignflow.notify import sla
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


# ---------------------------------------------------------------------------------------------------------
# The rule


class Count(NamedTuple):
    """How often an item has been reminded (its row in the kind's reminder table)."""

    reminders: int = 0
    last_reminded_on: dt.date | None = None
    level: int = 0  # escalation level reached (0: only the people the item waits on)


class OpenItem(NamedTuple):
    """An open item that may be due, as its kind's query reads it."""

    kind: str
    id: int
    campaign_id: str
    key: str
    title: str
    waiting_on: tuple[str, ...]  # who has to act, after stand-ins for people away
    due_on: dt.date | None  # due on a day ...
    due_at: dt.datetime | None  # ... or at a moment ...
    opened_at: dt.datetime | None  # ... or a turnaround after it opened
    count: Count


@dataclass(frozen=True)
class CampaignRules:
    """One campaign's reminder settings, as they stand on the campaign's today (computed once per sweep)."""

    now: dt.datetime
    zone: ZoneInfo
    holidays: frozenset[dt.date]
    today: dt.date
    due_soon_until: dt.date  # due on or before this day: due soon
    recent_after: dt.date  # reminded after this day: too recently to remind again
    turnaround_days: int
    escalate_after: int
    escalation: tuple[tuple[str, ...], ...]  # everyone who hears at each escalation level (level 1 first)

    @classmethod
    def of(cls, aud: Audience, now: dt.datetime) -> CampaignRules:
        r, cal = aud.settings["reminders"], aud.settings["calendar"]
        zone, holidays = _zone(cal["timezone"]), _holidays(tuple(cal["holidays"]))
        today = now.astimezone(zone).date()
        levels: list[tuple[str, ...]] = []
        for names in r["escalate_to"]:
            levels.append(tuple(dict.fromkeys([*(levels[-1] if levels else ()), *aud.expand(names)])))
        return cls(now, zone, holidays, today, shift_business_days(today, r["due_soon_days"], holidays),
                   shift_business_days(today, -r["every_days"], holidays), r["gate_turnaround_days"],
                   r["escalate_after"], tuple(levels))


class Verdict(NamedTuple):
    """What the rule says about a due item."""

    state: str  # overdue, due today, due soon
    due: dt.date
    told: tuple[str, ...] = ()  # who hears now; nobody: reminded too recently, or held
    held: bool = False  # due a reminder, but nobody it would go to can be told now
    count: Count | None = None  # the item's count after this reminder
    escalated: tuple[str, ...] = ()  # who hears because of escalation, not because it waits on them


def decide(item: OpenItem, rules: CampaignRules, can_tell: Callable[[str], bool]) -> Verdict | None:
    """The reminder rule for one open item; None while it is not due soon."""
    due = item.due_on or _due_day(item, rules)
    if (item.due_at is not None and item.due_at < rules.now) or rules.today > due:
        state = "overdue"
    elif rules.today == due:
        state = "due today"
    elif due <= rules.due_soon_until:
        state = "due soon"
    else:
        return None
    last = item.count
    if last.last_reminded_on is not None and last.last_reminded_on > rules.recent_after:
        return Verdict(state, due)
    reminders = last.reminders + 1
    level = min((reminders - 1) // rules.escalate_after, len(rules.escalation))
    escalated = tuple(h for h in rules.escalation[level - 1] if h not in item.waiting_on) if level else ()
    told = tuple(filter(can_tell, item.waiting_on + escalated))
    if not told:
        return Verdict(state, due, held=True)
    return Verdict(state, due, told, False, Count(reminders, rules.today, max(level, last.level)), escalated)


def _due_day(item: OpenItem, rules: CampaignRules) -> dt.date:
    """A moment's day where the campaign is; without one, `gate_turnaround_days` business days after opening."""
    if item.due_at is not None:
        return item.due_at.astimezone(rules.zone).date()
    opened = item.opened_at.astimezone(rules.zone).date()
    return shift_business_days(opened, rules.turnaround_days, rules.holidays)


class Reach:
    """Who can be told now: a business day and outside quiet hours where they are (cached per calendar)."""

    def __init__(self, now: dt.datetime):
        self.now = now
        self.calendars: dict[tuple, bool] = {}

    def __call__(self, aud: Audience, handle: str) -> bool:
        cal = aud.calendar(handle)
        key = (cal["timezone"], tuple(cal.get("quiet") or ()), tuple(cal["holidays"]))
        if key not in self.calendars:
            self.calendars[key] = aud.is_workday(handle, self.now) and aud.quiet_until(handle, self.now) is None
        return self.calendars[key]


# ---------------------------------------------------------------------------------------------------------
# Kinds of item: each a query and an action line. The next kinds (submitted work, reviews) go here.


class Window(NamedTuple):
    """Which open items a sweep reads: those that may be due by the horizon and were not reminded today."""

    horizon: dt.datetime
    opened_before: dt.datetime  # gates without a due time, opened before this, may be past their turnaround
    latest_today: dt.date  # the latest "today" of any campaign: an item reminded on it cannot be due again yet
    standing_in: dict[str, str]  # who stands in for whom today


class Line(NamedTuple):
    """One reminder line for one person, on its way to a message."""

    item: OpenItem
    verdict: Verdict
    handle: str
    channel: str
    aud: Audience

    @property
    def order(self) -> tuple:
        """As a digest lists them: overdue first, then by due date, then by item."""
        return (self.verdict.state != "overdue", self.verdict.due, self.item.kind, self.item.id, self.handle)

    @property
    def escalated(self) -> bool:
        return self.handle in self.verdict.escalated

    @property
    def waiting_on(self) -> list[str]:
        return [self.aud.name_of(h) for h in self.item.waiting_on]


@dataclass(frozen=True)
class Kind:
    name: str
    counts: type[ReminderCount]  # the table its reminder counts are kept in
    open_items: Callable[[Session, Window], Iterator[OpenItem]]
    action: Callable[[Line], str]  # what the reminded person should do


def _counted(query: Select, counts: type[ReminderCount], item_id, window: Window) -> Select:
    """An item query with each item's reminder count, leaving out the items reminded today. (Kinds run it on the
    session's connection: plain Core rows, streamed, rather than ORM results buffered whole.)"""
    key = counts.__table__.primary_key.columns.values()[0]
    return (query.add_columns(func.coalesce(counts.reminders, 0).label("reminders"), counts.last_reminded_on,
                              func.coalesce(counts.level, 0).label("level"))
            .outerjoin(counts, key == item_id)
            .where(or_(counts.last_reminded_on.is_(None), counts.last_reminded_on < window.latest_today)))


def _open_gates(s: Session, window: Window) -> Iterator[OpenItem]:
    G = m.ApprovalGate
    decided: dict[int, set[str]] = {}
    for gate_id, person in s.execute(select(m.Decision.gate_id, m.Decision.person)
                                     .join(G, G.id == m.Decision.gate_id).where(G.status == "open")):
        decided.setdefault(gate_id, set()).add(person)
    query = (select(G.id, G.campaign_id, G.key, G.title, G.approvers, G.due_at, G.opened_at)
             .where(G.status == "open", or_(G.due_at <= window.horizon,
                                            and_(G.due_at.is_(None), G.opened_at <= window.opened_before))))
    rows = s.connection().execute(_counted(query, GateReminder, G.id, window))
    for gate_id, campaign_id, key, title, approvers, due_at, opened_at, reminders, last_reminded_on, level in rows:
        done = decided.get(gate_id, ())
        waiting = tuple(dict.fromkeys(window.standing_in.get(p, p) for p in approvers if p not in done))
        if waiting:
            yield OpenItem("gate", gate_id, campaign_id, key, title, waiting, None,
                           m.as_utc(due_at) if due_at is not None else None, m.as_utc(opened_at),
                           Count(reminders, last_reminded_on, level))


def _open_deliverables(s: Session, window: Window) -> Iterator[OpenItem]:
    D = m.Deliverable
    query = (select(D.id, D.campaign_id, D.key, (D.name + " (" + D.key + ")").label("title"), D.owner, D.due)
             .where(D.status.in_(m.OWNER_TO_MOVE), D.due <= window.horizon.date()))
    rows = s.connection().execute(_counted(query, DeliverableReminder, D.id, window))
    for deliverable_id, campaign_id, key, title, owner, due, reminders, last_reminded_on, level in rows:
        yield OpenItem("deliverable", deliverable_id, campaign_id, key, title, (window.standing_in.get(owner, owner),),
                       due, None, None, Count(reminders, last_reminded_on, level))


def _gate_action(line: Line) -> str:
    if line.escalated:
        return f"please chase {', '.join(line.waiting_on)}"
    link = line.aud.decision_links(line.item.id, line.channel, [line.handle])["approve"].get(line.handle)
    return f"decide: {link}" if link else f"decide: campaignflow approve {line.item.id} --as {line.handle}"


def _deliverable_action(line: Line) -> str:
    if line.escalated:
        return f"please check in with {', '.join(line.waiting_on)}"
    return "finish it, or tell the campaign manager the new date"


KINDS = {kind.name: kind for kind in (
    Kind("gate", GateReminder, _open_gates, _gate_action),
    Kind("deliverable", DeliverableReminder, _open_deliverables, _deliverable_action),
)}


# ---------------------------------------------------------------------------------------------------------
# The sweep


def sweep(s: Session, registry: ChannelRegistry, now: dt.datetime | None = None) -> SweepReport:
    """One reminder and SLA sweep over every open item; returns what it did."""
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)
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
    settings = {row.campaign_id: row.settings for row in enabled}
    zones = {conf["calendar"]["timezone"] for conf in settings.values()}
    horizon = now + dt.timedelta(days=calendar_span(max(row.lead_days for row in enabled)))
    window = Window(horizon, horizon - dt.timedelta(days=min(row.turnaround_days for row in enabled)),
                    max(now.astimezone(_zone(zone)).date() for zone in zones), active_delegations(s, now.date()))
    reach = Reach(now)
    campaigns: dict[str, _Campaign] = {}  # the campaigns that have a due item, as the sweep meets them
    clock("settings")

    counts: dict[Kind, list[dict]] = {kind: [] for kind in KINDS.values()}
    escalations: list[tuple[OpenItem, Verdict]] = []
    out = _Outgoing()
    for kind in KINDS.values():
        saved = counts[kind]
        for item in kind.open_items(s, window):
            c = campaigns.get(item.campaign_id)
            if c is None:
                if item.campaign_id not in settings:
                    continue  # notifications switched off: a few campaigns, dropped here rather than joined per row
                c = campaigns[item.campaign_id] = _Campaign(Audience(item.campaign_id, settings[item.campaign_id],
                                                                     registry), now, reach)
            verdict = decide(item, c.rules, c.can_tell)
            if verdict is None:
                continue
            report.checked += 1
            report.held += verdict.held
            if verdict.count is None:
                continue
            report.reminded += 1
            saved.append({"item_id": item.id, "reminders": verdict.count.reminders,
                          "last_reminded_on": verdict.count.last_reminded_on, "level": verdict.count.level})
            if verdict.count.level > item.count.level:
                report.escalated += 1
                escalations.append((item, verdict))
            for handle in verdict.told:
                c.tell(out, Line(item, verdict, handle, c.channel(handle), c.aud))
    clock("select + decide")
    for kind, rows in counts.items():
        _save_counts(s, kind.counts, rows)
    for item, verdict in escalations:
        audit(s, item.campaign_id, "reminder.escalated", item.key, level=verdict.count.level,
              reminders=verdict.count.reminders, to=list(verdict.escalated), waiting_on=list(item.waiting_on))
    clock("save counts")
    messages = out.messages(now)
    clock("render")
    report.messages = enqueue(s, messages, {k: len(v) for k, v in registry.channels.items()}, now)
    report.breaches = sla.check(s, now)
    clock("enqueue + sla")
    return report


class _Campaign:
    """One campaign in a sweep: its audience, its rules for today, and who of its people can be told now."""

    def __init__(self, aud: Audience, now: dt.datetime, reach: Reach):
        self.aud = aud
        self.rules = CampaignRules.of(aud, now)
        self.can_tell = cache(partial(reach, aud))
        self.channel = cache(lambda handle: aud.channel_for(handle) or aud.unrouted(handle))
        self.muted = aud.muted("reminder")
        self.digest = aud.settings["reminders"]["digest"]

    def tell(self, out: _Outgoing, line: Line) -> None:
        if line.channel is not None and not self.muted:
            out.add(line, self.digest)


@dataclass
class _Digest:
    """One channel's digest: the reminder lines it lists, how many it has in all, and who reads it."""

    templates: str | None
    top: list[Line] = field(default_factory=list)  # the first DIGEST_LIMIT lines in the digest's order
    count: int = 0  # lines in all
    people: dict[str, str] = field(default_factory=dict)  # handle -> name, in the order they first appear
    campaigns: set[str] = field(default_factory=set)

    def add(self, line: Line) -> None:
        self.count += 1
        if len(self.top) < DIGEST_LIMIT or line.order < self.top[-1].order:
            insort(self.top, line, key=Line.order.fget)
            del self.top[DIGEST_LIMIT:]


class _Outgoing:
    """Reminder lines on their way to messages: a digest per channel, or one message per line."""

    def __init__(self):
        self.digests: dict[str, _Digest] = {}
        self.singles: list[Line] = []

    def add(self, line: Line, digest: bool) -> None:
        if not digest:
            self.singles.append(line)
            return
        d = self.digests.get(line.channel)
        if d is None:
            d = self.digests[line.channel] = _Digest(line.aud.settings.get("templates"))
        d.add(line)
        if line.handle not in d.people:
            d.people[line.handle] = line.aud.name_of(line.handle)
        d.campaigns.add(line.aud.campaign_id)

    def messages(self, now: dt.datetime) -> list[Message]:
        """Digest: one message per channel listing its people's items; otherwise one per item and channel."""
        messages: list[Message] = []
        for line in self.singles:
            item = _view(line)
            title, body = render("reminder", {"items": [item], "more": 0,
                                              "recipients": [{"handle": line.handle,
                                                              "name": line.aud.name_of(line.handle)}]},
                                 line.aud.settings.get("templates"))
            messages.append(_message(f"rem:{item['key']}:{item['reminders']}:{line.channel}", item["campaign_id"],
                                     line.handle, line.channel, title, body))
        for channel, digest in self.digests.items():
            title, body = render("digest", {"items": [_view(line) for line in digest.top],
                                            "more": max(digest.count - DIGEST_LIMIT, 0), "count": digest.count,
                                            "recipients": [{"handle": h, "name": n} for h, n in digest.people.items()]},
                                 digest.templates)
            # Sweeps run one at a time and commit their reminder counts with these rows, so a sweep can
            # never produce the same digest twice: the channel and the sweep's moment make the key.
            campaign_id = next(iter(digest.campaigns)) if len(digest.campaigns) == 1 else ""
            messages.append(_message(f"digest:{channel}:{now:%Y%m%dT%H%M%S.%f}", campaign_id,
                                     ", ".join(digest.people), channel, title, body))
        return messages


def _view(line: Line) -> dict:
    item, verdict = line.item, line.verdict
    return {"key": f"{item.kind}:{item.id}", "campaign": line.aud.settings["name"], "campaign_id": item.campaign_id,
            "title": item.title, "state": verdict.state, "due": str(verdict.due), "reminders": verdict.count.reminders,
            "escalated": line.escalated, "waiting_on": line.waiting_on, "action": KINDS[item.kind].action(line),
            "kind": item.kind}


def _message(key: str, campaign_id: str, recipient: str, channel: str, title: str, body: str) -> Message:
    unrouted = channel.startswith("!")
    return Message(dedupe_key=key, campaign_id=campaign_id, kind="reminder", recipient=recipient,
                   channel="" if unrouted else channel, title=title, body=body)


def _save_counts(s: Session, table: type[ReminderCount], counts: list[dict]) -> None:
    """Upsert the new reminder counts ({item_id, reminders, last_reminded_on, level}) in one statement, through
    the dialect's INSERT .. ON CONFLICT DO UPDATE."""
    if not counts:
        return
    table = table.__table__
    key = table.primary_key.columns.values()[0]
    insert = {"sqlite": sqlite.insert, "postgresql": postgresql.insert}[s.get_bind().dialect.name]
    stmt = insert(table).values({key: bindparam("item_id")})
    s.connection().execute(
        stmt.on_conflict_do_update(index_elements=[key], set_={c: stmt.excluded[c] for c in Count._fields}), counts)


class _Clock:
    """Phase timings in the report's details (the bench prints them)."""

    def __init__(self, report: SweepReport):
        self.report, self.last = report, time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.report.details.append(f"{phase} {now - self.last:.3f}s")
        self.last = now
