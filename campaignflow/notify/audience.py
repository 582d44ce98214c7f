"""Who hears about what, where, and when: a campaign's notification settings, resolved once.

`resolve(spec)` turns a spec into a plain dict (cached per campaign in
`NotifySettings`, keyed by the spec hash, so a sweep over thousands of
campaigns never parses a spec). `Audience` answers the questions the
fan-out and the sweep ask: which people a role means, which channel a
person reads, and whether it is quiet hours or a day off where they are.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import lru_cache
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlmodel import Session

from campaignflow import links
from campaignflow import models as m
from campaignflow.models_notify import NotifySettings
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.templates import template_folder
from campaignflow.spec import CampaignSpec, Notifications
from campaignflow.timeline import is_business_day

UTC = dt.timezone.utc
log = logging.getLogger("campaignflow.notify")


def resolve(spec: CampaignSpec, spec_dir: str = "") -> dict[str, Any]:
    """Everything the notifier needs from a spec, as JSON-ready data."""
    n = spec.notifications
    # A campaign that names channels expects everyone to be reachable: someone without a channel is a
    # dead letter that says so. Otherwise only people the channel registry maps (or its default) hear anything.
    opted_in = n is not None or any(p.channel for p in spec.people)
    n = n or Notifications()
    team_of: dict[str, str] = {}
    teams = {}
    for team in n.teams:
        teams[team.name] = {
            "timezone": team.timezone or n.timezone,
            "quiet": _quiet(team.quiet_hours or n.quiet_hours),
            "holidays": sorted(str(d) for d in set(team.holidays) | set(spec.holidays)),
            "channel": team.channel,
        }
        for handle in spec.expand(team.members):
            team_of.setdefault(handle, team.name)
    client = spec.expand(n.sla.client) if n.sla.client else [
        p.handle for p in spec.people if any(r.startswith("client_") for r in p.roles)]
    templates = template_folder(n.templates, spec_dir) if n.templates else None
    return {
        "enabled": n.enabled,
        "opted_in": opted_in,
        "name": spec.name,
        "client_name": spec.client,
        "people": {p.handle: {"name": p.name, "roles": list(p.roles), "channel": p.channel,
                              "team": team_of.get(p.handle)} for p in spec.people},
        "teams": teams,
        "calendar": {"timezone": n.timezone, "quiet": _quiet(n.quiet_hours),
                     "holidays": sorted(str(d) for d in spec.holidays), "channel": None},
        "roles": dict(n.roles),
        "default_channel": n.default_channel,
        "client_channel": n.client_channel,
        "client_people": client,
        "templates": templates,
        "mute": list(n.mute),
        "reminders": n.reminders.model_dump(),
        "sla": n.sla.model_dump(exclude={"client"}),
    }


def _quiet(hours: Any) -> list[str] | None:
    return [hours.start.strftime("%H:%M"), hours.end.strftime("%H:%M")] if hours else None


def settings_for(s: Session, campaign_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """Resolved settings of many campaigns in one query; stale or missing cache rows are rebuilt."""
    ids = sorted(set(campaign_ids))
    if not ids:
        return {}
    out: dict[str, dict[str, Any]] = {}
    stale: list[str] = []
    existing: set[str] = set()  # stale campaigns that have a cache row to update
    C, NS = m.Campaign, NotifySettings
    for chunk in _chunks(ids, 900):
        for cid, current, data in s.execute(select(C.id, NS.spec_hash == C.spec_hash, NS.settings)
                                            .outerjoin(NS, NS.campaign_id == C.id).where(C.id.in_(chunk))):
            if current:
                out[cid] = data
            else:
                stale.append(cid)
                if data is not None:
                    existing.add(cid)
    if not stale:
        return out
    from campaignflow.spec import parse_yaml

    rows = []
    for chunk in _chunks(stale, 900):
        rows += s.execute(select(m.Campaign.id, m.Campaign.spec_text, m.Campaign.spec_dir, m.Campaign.spec_hash)
                          .where(m.Campaign.id.in_(chunk))).all()
    fresh, changed = [], []
    for cid, text, spec_dir, digest in rows:
        data = resolve(_stored_spec(parse_yaml(text, f"campaign {cid}"), cid), spec_dir)
        out[cid] = data
        values = {"campaign_id": cid, "spec_hash": digest, "settings": data, "enabled": data["enabled"],
                  "lead_days": data["reminders"]["due_soon_days"],
                  "turnaround_days": data["reminders"]["gate_turnaround_days"],
                  "sla_review_days": data["sla"]["client_review_days"], "sla_publish_days": data["sla"]["publish_days"]}
        (changed if cid in existing else fresh).append(values)
    table = NotifySettings.__table__
    if fresh:
        s.execute(table.insert(), fresh)
    for values in changed:
        s.execute(table.update().where(table.c.campaign_id == values["campaign_id"]).values(**values))
    return out


def _stored_spec(data: dict[str, Any], cid: str) -> CampaignSpec:
    """A stored spec was valid when registered: dates are not re-checked against today, and one registered
    before template folders had to stay in the spec's folder keeps its notifications, with default templates."""
    from campaignflow.errors import SpecInvalid
    from campaignflow.spec import validate_spec_data

    try:
        return validate_spec_data(data, f"campaign {cid}", today=dt.date.min)
    except SpecInvalid as exc:
        if not any(p.startswith("notifications.templates:") for p in exc.problems):
            raise
        log.warning("campaign %s: %s; its messages use the default templates", cid,
                    next(p for p in exc.problems if p.startswith("notifications.templates:")))
        notifications = {k: v for k, v in data["notifications"].items() if k != "templates"}
        return validate_spec_data({**data, "notifications": notifications}, f"campaign {cid}", today=dt.date.min)


def _chunks(items: list, size: int) -> Iterable[list]:
    for i in range(0, len(items), size):
        yield items[i:i + size]


class Audience:
    """One campaign's people, channels and calendars, over its resolved settings and the channel registry."""

    def __init__(self, campaign_id: str, settings: dict[str, Any], registry: ChannelRegistry):
        self.campaign_id = campaign_id
        self.settings = settings
        self.registry = registry
        self._readers: dict[str, set[str]] | None = None

    def unrouted(self, handle: str) -> str | None:
        """The outbox's stand-in channel for someone with no channel: a dead letter, or None to skip them."""
        return f"!{handle}" if self.settings.get("opted_in") else None

    def muted(self, kind: str) -> bool:
        return kind in self.settings.get("mute", ())

    def expand(self, names: Iterable[str]) -> list[str]:
        """People and roles to handles, in order, without repeats (roles nobody holds mean nobody)."""
        people = self.settings["people"]
        out: list[str] = []
        for name in names:
            handles = [name] if name in people else [h for h, p in people.items() if name in p["roles"]]
            for handle in handles:
                if handle not in out:
                    out.append(handle)
        return out

    def managers(self) -> list[str]:
        return self.expand(["campaign_manager"])

    def account_managers(self) -> list[str]:
        """The agency's account managers; the campaign manager stands in when there is none."""
        return self.expand(["account_manager"]) or self.managers()

    def name_of(self, handle: str) -> str:
        person = self.settings["people"].get(handle)
        return person["name"] if person else handle

    def channel_for(self, handle: str) -> str | None:
        """Where a person reads messages: their own channel, their team's, a role's, the campaign's default."""
        person = self.settings["people"].get(handle)
        if person is None:
            return None
        reg = self.registry
        found = person.get("channel") or reg.people.get(handle)
        if found:
            return found
        team = person.get("team")
        if team:
            found = self.settings["teams"].get(team, {}).get("channel") or reg.teams.get(team)
            if found:
                return found
        for maps in (self.settings["roles"], reg.roles):
            for role in person["roles"]:
                if maps.get(role):
                    return maps[role]
        return self.settings.get("default_channel") or reg.default

    def own_channel(self, handle: str) -> str | None:
        """The channel that belongs to this one person, if any: their own (the spec's `channel:` or the
        channels block's `people:`), read by nobody else here, and no team's, role's, client's or default channel."""
        person = self.settings["people"].get(handle)
        channel = person and (person.get("channel") or self.registry.people.get(handle))
        return channel if channel and self.readers().get(channel) == {handle} else None

    def readers(self) -> dict[str, set[str]]:
        """Who reads each channel (computed once): the campaign's people, whoever the channels block maps
        to it, and "*" for a channel meant for a group."""
        if self._readers is None:
            s, reg = self.settings, self.registry
            readers: dict[str, set[str]] = {}
            for handle in s["people"]:
                readers.setdefault(self.channel_for(handle) or "", set()).add(handle)
            for handle, channel in reg.people.items():
                readers.setdefault(channel, set()).add(handle)
            shared = ({t.get("channel") for t in s["teams"].values()} | set(reg.teams.values()) | set(s["roles"].values())
                      | set(reg.roles.values()) | {s.get("default_channel"), s.get("client_channel"), reg.default})
            for channel in shared - {None}:
                readers.setdefault(channel, set()).add("*")
            self._readers = readers
        return self._readers

    def decision_links(self, gate_id: int, channel: str, people: list[str]) -> dict[str, dict[str, str]]:
        """The one home of the link privacy rule: a signed decision link decides as its person, so a message
        carries one only to a channel that belongs to that one person. Anywhere else: no links at all."""
        out: dict[str, dict[str, str]] = {"approve": {}, "changes": {}}
        for handle in people:
            if channel and self.own_channel(handle) == channel:
                for key, decision in (("approve", "approve"), ("changes", "request_changes")):
                    url = links.approval_link(gate_id, handle, decision)
                    if url:
                        out[key][handle] = url
        return out

    def calendar(self, handle: str | None) -> dict[str, Any]:
        person = self.settings["people"].get(handle or "", {})
        team = person.get("team")
        return self.settings["teams"].get(team) if team else self.settings["calendar"]

    def local_now(self, handle: str | None, now: dt.datetime) -> dt.datetime:
        return now.astimezone(_zone(self.calendar(handle)["timezone"]))

    def is_workday(self, handle: str | None, now: dt.datetime) -> bool:
        cal = self.calendar(handle)
        return is_business_day(self.local_now(handle, now).date(), _holidays(tuple(cal["holidays"])))

    def quiet_until(self, handle: str | None, now: dt.datetime) -> dt.datetime | None:
        """When quiet hours end for this person, if it is quiet hours where they are now; else None."""
        cal = self.calendar(handle)
        return quiet_until(cal.get("quiet"), _zone(cal["timezone"]), now)


def quiet_until(quiet: list[str] | None, zone: ZoneInfo, now: dt.datetime) -> dt.datetime | None:
    if not quiet:
        return None
    start, end = (dt.time.fromisoformat(t) for t in quiet)
    local = now.astimezone(zone)
    t = local.time()
    if start < end:
        inside = start <= t < end
        end_day = local.date()
    else:  # across midnight, e.g. 19:00-08:00
        inside = t >= start or t < end
        end_day = local.date() + dt.timedelta(days=1) if t >= start else local.date()
    if not inside:
        return None
    return dt.datetime.combine(end_day, end, tzinfo=zone).astimezone(UTC)


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


@lru_cache(maxsize=1024)
def _holidays(days: tuple[str, ...]) -> frozenset[dt.date]:
    return frozenset(dt.date.fromisoformat(d) for d in days)


def ensure_settings(s: Session) -> int:
    """Resolve the settings of every campaign that has none yet (or whose spec changed); returns how many."""
    stale = list(s.execute(
        select(m.Campaign.id).outerjoin(NotifySettings, NotifySettings.campaign_id == m.Campaign.id)
        .where((NotifySettings.campaign_id.is_(None)) | (NotifySettings.spec_hash != m.Campaign.spec_hash))).scalars())
    if stale:
        settings_for(s, stale)
        s.flush()
    return len(stale)
