"""The campaign spec: what an operations team writes once, as YAML.

`load_spec` parses and validates a file and raises `SpecInvalid` listing
*every* problem as `path: message`. Structure and types are checked by
pydantic; the cross-references (people, roles, dependencies, dates,
duplicates) by `_semantic_problems`, once the structure is sound.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from cronsim import CronSim, CronSimError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from campaignflow import connectors
from campaignflow.errors import SpecInvalid
from campaignflow.kpis import KPI_NAMES
from campaignflow.timeline import find_cycle
from campaignflow.yamlload import YamlRefused, load_yaml, read_text

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)]
MAX_AMOUNT = 1e12  # far above any campaign, and small enough that a sum of amounts stays a finite number
PositiveAmount = Annotated[float, Field(gt=0, le=MAX_AMOUNT)]
Measure = Annotated[float, Field(ge=-1e15, le=1e15)]  # a goal's target or baseline


class Strict(BaseModel):
    # No NaN or ±Infinity anywhere: a gate must never ask anyone to approve "inf EUR".
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, allow_inf_nan=False)


class Person(Strict):
    handle: Slug = Field(description="Short unique name used everywhere else in the spec, e.g. `maria`.")
    name: str = Field(min_length=1)
    email: str | None = None
    roles: list[Slug] = Field(default_factory=list, description="e.g. campaign_manager, cmo, client_marketing")
    channel: str | None = Field(default=None, description="Name of a notification channel for this person.")


class Goal(Strict):
    name: Slug
    description: str = ""
    kpi: str = Field(min_length=1, description="What is measured: " + ", ".join(KPI_NAMES))
    target: Measure
    unit: str = Field(min_length=1)
    baseline: Measure = 0
    deadline: dt.date


class Persona(Strict):
    name: str = Field(min_length=1)
    description: str = ""
    pains: list[str] = Field(default_factory=list)
    willingness_to_pay: str | None = None


class Segment(Strict):
    name: Slug
    description: str = ""


class Audience(Strict):
    icp: str = Field(default="", description="The ideal customer profile in a sentence or two.")
    personas: list[Persona] = Field(default_factory=list)
    target: list[Segment] = Field(min_length=1, description="Segments to target.")
    exclude: list[Segment] = Field(default_factory=list, description="Segments to exclude.")


class Channel(Strict):
    name: Slug
    kind: Literal["search", "paid_search", "seo", "social", "paid_social", "email", "blog", "video", "podcast",
                  "webinar", "web", "display", "ooh", "events", "other"]
    funnel_stage: Literal["awareness", "consideration", "decision"] = "awareness"


class Deliverable(Strict):
    key: Slug
    name: str = Field(min_length=1)
    owner: Slug
    channel: Slug | None = None
    duration_days: int = Field(gt=0, le=260, description="Business days of work.")
    depends_on: list[Slug] = Field(default_factory=list)
    reviewers: list[list[str]] = Field(
        default_factory=list,
        description="One list of people or roles per review round, in order. Empty: no review (not an asset).",
    )


class BudgetLine(Strict):
    deliverable: Slug
    category: Literal["staff", "contractor", "media"]
    amount: PositiveAmount
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] | None = None
    description: str = ""


# What each source kind takes comes from its connector's declarations (campaignflow/connectors/).
_CONNECTORS = connectors.registry()
SourceKind = Literal[tuple(_CONNECTORS)]  # type: ignore[valid-type]


def _kinds_taking(option: str) -> str:
    """The kinds whose connectors take an option (its default is not None), as a sentence names them."""
    return " or ".join(k for k, c in _CONNECTORS.items() if getattr(c.options, option) is not None)


class MeasurementSource(Strict):
    """One connection to a platform account (or a folder of CSV exports).

    A source `name` is shared across campaigns: campaigns that name the same
    source read the same account once, and each claims its platform campaigns.
    """

    name: Slug
    kind: SourceKind = Field(
        description=", ".join(f"{k} ({c.options.summary})" for k, c in _CONNECTORS.items()) + ".")
    path: str | None = Field(default=None, description="For csv: a file or folder, relative to the spec file.")
    account: str = Field(
        default="",
        description="; ".join(f"{k}: {c.options.account_label}" for k, c in _CONNECTORS.items()) + ".")
    campaigns: list[str] = Field(
        default_factory=list,
        description="Platform campaign names or ids that belong to this campaign; "
                    "with no `campaigns` and no `campaign_match`: every row of the source.",
    )
    campaign_match: str | None = Field(
        default=None,
        description="Naming/UTM convention: a glob matched case-insensitively against platform campaign names "
                    "(GA4: utm_campaign), e.g. 'nw-webinar-q1-*'.")
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="csv: our column name -> the export's column name, e.g. {spend: Cost, date: Day}.",
    )
    metrics: dict[str, str] = Field(
        default_factory=dict,
        description="ga4: the GA4 metrics to request, each mapped to the measure it counts as, e.g. "
                    "{sessions: clicks, keyEvents: conversions, totalRevenue: conversion_value} (default: keyEvents: "
                    "conversions, totalRevenue: conversion_value). A measure no metric maps to is stored as unknown.",
    )
    lookback_days: int | None = Field(
        default=None, ge=0, le=90,
        description="Days re-read on every run because the platform revises them (default: "
                    + ", ".join(f"{k} {c.options.lookback_days}" for k, c in _CONNECTORS.items()) + ").")
    credentials: str | None = Field(
        default=None,
        description="Name of the Prefect credentials block for this source (see docs/ingestion.md).")
    base_url: str | None = Field(default=None, description="API base URL override (proxies, tests, API versions).")
    conversion_actions: list[str] = Field(
        default_factory=list,
        description="meta: the action types counted as conversions (default: purchase, lead, complete_registration).")
    schedule: str | None = Field(default=None, description="Cron schedule of the ingestion deployment, e.g. '0 6 * * *'.")

    # A base_url ends in the API version (a proxy may add a path before it); without one every call is a 404.
    _API_VERSION: ClassVar[str] = r"https?://[^\s/]+(/[^\s]*)?/v\d+(\.\d+)?(alpha|beta)?\d*/?"

    def problems(self) -> list[str]:
        """What is wrong with this source, as `field: message` (the caller prefixes the path)."""
        problems: list[str] = []
        connector = _CONNECTORS[self.kind]
        options = connector.options
        if options.columns is None:
            if options.account and not self.account:
                problems.append(f"account: a {self.kind} source needs `account` ({options.account.what})")
            elif options.account and not re.fullmatch(options.account.pattern, self.account):
                problems.append(f"account: {self.account!r} is not {options.account.what}")
            if self.path:
                problems.append(f"path: only {_kinds_taking('columns')} sources read files; remove `path` from this "
                                f"{self.kind} source")
            if self.columns:
                problems.append(f"columns: only {_kinds_taking('columns')} sources take a column mapping"
                                + options.columns_hint)
        problems += connector.source_problems(self)
        if self.metrics and options.metrics is None:
            problems.append(f"metrics: only {_kinds_taking('metrics')} sources take `metrics` (GA4 metric: measure)")
        if self.conversion_actions and options.conversion_actions is None:
            problems.append(f"conversion_actions: only {_kinds_taking('conversion_actions')} sources count conversions "
                            "from action types")
        if self.base_url and not re.match(r"https?://[^\s/]+", self.base_url):
            problems.append(f"base_url: {self.base_url!r} is not an http(s) URL")
        elif self.base_url and options.base_url and not re.fullmatch(self._API_VERSION, self.base_url):
            problems.append(f"base_url: {self.base_url!r} has no API version at its end; write it as "
                            f"{options.base_url} (or your proxy's address followed by the version)")
        if self.schedule and (why := _cron_refusal(self.schedule)):
            problems.append(f"schedule: {self.schedule!r} is not a cron expression ({why}); "
                            "write minute hour day month weekday, e.g. '0 6 * * *'")
        return problems


class Measurement(Strict):
    sources: list[MeasurementSource] = Field(default_factory=list)


# -- approval policies -----------------------------------------------------------------------------

PolicyName = Literal["any", "all", "quorum"]


class Deciders(Strict):
    """Who decides one stage of a gate, and when their decisions add up to a result."""

    approvers: list[str] = Field(description="People (handles) or roles; a role means each of its members.")
    policy: PolicyName | None = Field(default=None, description="any: first decision wins; all; quorum: N of M")
    quorum: int | None = Field(default=None, ge=1, description="With policy quorum: approvals needed")
    primary: str | None = Field(default=None, description="A person whose decision alone closes the stage")


class Stage(Deciders):
    name: Slug = Field(description="e.g. internal, client")


class Route(Deciders):
    up_to: PositiveAmount | None = Field(default=None, description="Largest amount this route approves; omit on the last")


class Timing(Strict):
    due_days: int | None = Field(default=None, ge=1, le=60, description="Business days after the gate opens")
    on_timeout: Literal["wait", "escalate", "approve", "reject"] | None = Field(
        default=None, description="When the due date passes: keep waiting, escalate, auto-approve or auto-reject")
    escalate_to: list[str] | None = Field(default=None, description="People or roles who join the gate on escalation")


class GateRule(Timing):
    """One gate's policy: plain approvers, or stages run one after another, or (budget) routing by amount."""

    approvers: list[str] | None = None
    policy: PolicyName | None = None
    quorum: int | None = Field(default=None, ge=1)
    primary: str | None = None
    stages: list[Stage] | None = None
    routing: list[Route] | None = Field(default=None, description="Budget only: the first route whose up_to covers the total")
    on_reject: Literal["stop", "drop"] | None = Field(default=None, description="stop the campaign, or drop the asset")


class ReviewRule(Timing):
    """Defaults for every asset review round (reviewers are set per deliverable and round)."""

    policy: PolicyName | None = None
    quorum: int | None = Field(default=None, ge=1)
    on_reject: Literal["stop", "drop"] | None = None


class Approvals(Strict):
    defaults: Timing = Field(default_factory=Timing, description="Team-wide defaults for every gate")
    goals: GateRule
    budget: GateRule
    reviews: ReviewRule = Field(default_factory=ReviewRule)


# -- notifications: channels, teams, reminders, client SLA ------------------------------------------

MESSAGE_KINDS = (
    "step.started", "step.completed", "step.failed", "campaign.completed", "gate.waiting", "gate.approved",
    "gate.changes_requested", "gate.rejected", "gate.escalated", "gate.timed_out", "gate.delegated",
    "goals.communicated", "timeline.overruns", "kpi.off_track", "reminder", "sla.breached",
    "deliverable.completed", "deliverable.unblocked",
)
ChannelName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)]


class QuietHours(Strict):
    start: dt.time = Field(description="Local time quiet hours begin, e.g. '19:00'.")
    end: dt.time = Field(description="Local time they end, e.g. '08:00' (the next morning when before `start`).")


class Team(Strict):
    name: Slug
    members: list[str] = Field(min_length=1, description="People (handles) or roles in this team.")
    timezone: str | None = Field(default=None, description="IANA time zone, e.g. Europe/Berlin; default notifications.timezone.")
    quiet_hours: QuietHours | None = Field(default=None, description="Default notifications.quiet_hours.")
    holidays: list[dt.date] = Field(default_factory=list, description="Days off for this team, on top of the campaign's.")
    channel: ChannelName | None = Field(default=None, description="Channel for members without a channel of their own.")


class Reminders(Strict):
    due_soon_days: int = Field(default=1, ge=0, le=30, description="Remind this many business days before the due date.")
    every_days: int = Field(default=1, ge=1, le=30, description="Repeat every N business days while due or overdue.")
    escalate_after: int = Field(default=3, ge=1, le=50, description="Escalate one level after this many reminders.")
    escalate_to: list[list[str]] = Field(
        default_factory=lambda: [["account_manager"], ["campaign_manager"]],
        description="Escalation levels, each a list of people or roles (roles nobody holds are skipped).")
    gate_turnaround_days: int = Field(
        default=2, ge=1, le=60, description="A gate with no due time of its own is due this many business days after it opens.")
    digest: bool = Field(default=True, description="One message per person per sweep listing everything waiting on them.")


class ClientSla(Strict):
    client_review_days: int | None = Field(
        default=None, ge=1, le=60, description="Business days the client has to decide a review gate.")
    publish_days: int | None = Field(
        default=None, ge=1, le=365, description="Days from an asset's final approval until it is published (done).")
    client: list[str] = Field(
        default_factory=list,
        description="People or roles on the client side; default: every role starting with `client_`.")


class Notifications(Strict):
    enabled: bool = Field(default=True, description="false: this campaign sends no notifications at all.")
    timezone: str = Field(default="UTC", description="IANA time zone of the team, e.g. Europe/Berlin.")
    quiet_hours: QuietHours | None = None
    teams: list[Team] = Field(default_factory=list)
    roles: dict[str, ChannelName] = Field(default_factory=dict, description="Role -> channel, e.g. {cmo: leadership}.")
    default_channel: ChannelName | None = Field(default=None, description="Channel for anyone without another.")
    client_channel: ChannelName | None = Field(default=None, description="Channel the client reads (SLA, approvals).")
    templates: str | None = Field(default=None, description="Folder of Jinja2 templates overriding the defaults.")
    mute: list[str] = Field(default_factory=list, description="Message kinds not to send: " + ", ".join(MESSAGE_KINDS))
    reminders: Reminders = Field(default_factory=Reminders)
    sla: ClientSla = Field(default_factory=ClientSla)


def _notification_problems(spec: CampaignSpec) -> list[str]:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    problems: list[str] = []
    handles = {p.handle for p in spec.people}
    roles = {r for p in spec.people for r in p.roles}
    channel_pattern = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

    def refs(path: str, names: list[str]) -> None:
        for j, name in enumerate(names):
            if name not in handles and name not in roles:
                problems.append(f"{path}[{j}]: {name!r} is neither a person in `people` nor a role anyone holds")

    def zone(path: str, name: str | None) -> None:
        if name is None:
            return
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"{path}: {name!r} is not a time zone; use an IANA name such as Europe/Berlin or America/New_York")

    def quiet(path: str, hours: QuietHours | None) -> None:
        if hours is not None and hours.start == hours.end:
            problems.append(f"{path}: start and end are both {hours.start:%H:%M}; give quiet hours a length or remove them")

    for i, person in enumerate(spec.people):
        if person.channel is not None and not channel_pattern.match(person.channel):
            problems.append(f"people[{i}].channel: {person.channel!r} must be a channel name: lowercase letters, digits, "
                            "'-' or '_' (the name of a channel in the channels block or channels.yaml)")
    n = spec.notifications
    if n is None:
        return problems
    zone("notifications.timezone", n.timezone)
    quiet("notifications.quiet_hours", n.quiet_hours)
    team_of: dict[str, str] = {}
    for i, team in enumerate(n.teams):
        zone(f"notifications.teams[{i}].timezone", team.timezone)
        quiet(f"notifications.teams[{i}].quiet_hours", team.quiet_hours)
        refs(f"notifications.teams[{i}].members", team.members)
        for handle in spec.expand(team.members):
            if handle in team_of and team_of[handle] != team.name:
                problems.append(f"notifications.teams[{i}].members: {handle} is already in team {team_of[handle]!r}; "
                                "a person belongs to one team (it decides their time zone and quiet hours)")
            team_of.setdefault(handle, team.name)
    for i, value in _duplicates([t.name for t in n.teams]):
        problems.append(f"notifications.teams[{i}].name: duplicate name {value!r}; each must be unique")
    for role in n.roles:
        if role not in roles:
            problems.append(f"notifications.roles.{role}: nobody in `people` holds the role {role!r}")
    for level, names in enumerate(n.reminders.escalate_to):
        if not names:
            problems.append(f"notifications.reminders.escalate_to[{level}]: is empty; name at least one person or role")
        for j, name in enumerate(names):
            if name not in handles and not name.replace("_", "").replace("-", "").isalnum():
                problems.append(f"notifications.reminders.escalate_to[{level}][{j}]: {name!r} is not a person or role name")
    refs("notifications.sla.client", n.sla.client)
    if n.templates is not None and _leaves_spec_folder(n.templates):
        problems.append(f"notifications.templates: {n.templates!r} leads out of the spec's folder; name a folder "
                        "inside it, relative to the spec file, e.g. notify-templates (no absolute path, '~' or '..')")
    for j, kind in enumerate(n.mute):
        if kind not in MESSAGE_KINDS:
            problems.append(f"notifications.mute[{j}]: {kind!r} is not a message kind; use one of {', '.join(MESSAGE_KINDS)}")
    return problems


def _leaves_spec_folder(path: str) -> bool:
    """Template overrides run with the flow's rights, so they come from the spec's own folder and nowhere else."""
    from pathlib import PurePosixPath, PureWindowsPath

    parts = PurePosixPath(path.replace("\\", "/")).parts
    return (PurePosixPath(path).is_absolute() or bool(PureWindowsPath(path).drive) or path.startswith("~")
            or ".." in parts)


class CampaignSpec(Strict):
    id: Slug = Field(description="Stable campaign id; running the same spec again continues this campaign.")
    name: str = Field(min_length=1)
    client: str = ""
    type: Literal["content", "search", "social", "email", "mixed"] = "mixed"
    start: dt.date
    end: dt.date
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "EUR"
    holidays: list[dt.date] = Field(default_factory=list, description="Non-working days for the timeline.")
    people: list[Person] = Field(min_length=1)
    goals: list[Goal] = Field(min_length=1)
    audience: Audience
    channels: list[Channel] = Field(min_length=1)
    deliverables: list[Deliverable] = Field(min_length=1)
    budget: list[BudgetLine] = Field(min_length=1)
    measurement: Measurement = Field(default_factory=Measurement)
    approvals: Approvals
    notifications: Notifications | None = Field(
        default=None, description="Chat and email notifications: teams, time zones, reminders, client SLA.")

    # -- derived views used across the engine -------------------------------------------------

    def role_members(self, role: str) -> list[str]:
        return [p.handle for p in self.people if role in p.roles]

    def expand(self, names: list[str]) -> list[str]:
        """People and roles to the people they mean, in order, without repeats."""
        handles = {p.handle for p in self.people}
        out: list[str] = []
        for name in names:
            for handle in ([name] if name in handles else self.role_members(name)):
                if handle not in out:
                    out.append(handle)
        return out

    def people_with_role(self, role: str) -> list[Person]:
        return [p for p in self.people if role in p.roles]

    def manager(self) -> str:
        """Who submits the goals and the budget for approval: the first campaign manager ('' when none)."""
        lead = self.people_with_role("campaign_manager")
        return lead[0].handle if lead else ""

    def budget_total(self) -> float:
        return round(sum(line.amount for line in self.budget), 2)


# -- loading and validation ---------------------------------------------------------------------

def spec_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_yaml(text: str, source: str = "spec") -> dict[str, Any]:
    try:
        data = load_yaml(text, source)
    except YamlRefused as exc:
        raise SpecInvalid(exc.problems, source) from None
    if not isinstance(data, dict):
        raise SpecInvalid(["(top): the spec must be a YAML mapping of fields such as id, name, goals"], source)
    return data


def load_spec(path: str | Path, today: dt.date | None = None) -> tuple[CampaignSpec, str]:
    """Read, parse and validate a spec file; return the spec and its text."""
    path = Path(path)
    if not path.is_file():
        raise SpecInvalid([f"(file): {path} does not exist or is not a file"], str(path))
    try:
        text = read_text(path)
    except YamlRefused as exc:
        raise SpecInvalid(exc.problems, str(path)) from None
    return validate_spec_text(text, str(path), today), text


def validate_spec_text(text: str, source: str = "spec", today: dt.date | None = None) -> CampaignSpec:
    return validate_spec_data(parse_yaml(text, source), source, today)


def validate_spec_data(data: dict[str, Any], source: str = "spec", today: dt.date | None = None) -> CampaignSpec:
    try:
        spec = CampaignSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecInvalid([_format_pydantic_error(err) for err in exc.errors()], source) from None
    problems = _semantic_problems(spec, today or dt.date.today())
    if problems:
        raise SpecInvalid(problems, source)
    return spec


def _format_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top)"


_FRIENDLY = {
    "missing": "is required",
    "extra_forbidden": "is not a known field (check the spelling; `campaignflow spec schema` lists the fields)",
}


def _format_pydantic_error(err: dict[str, Any]) -> str:
    # Literal/union errors carry a tag in the location (e.g. 'literal[...]'); drop it from the path.
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))
    kind = err["type"]
    msg = _FRIENDLY.get(kind)
    if msg is None:
        msg = err["msg"]
        if kind == "string_pattern_mismatch":
            pattern = err.get("ctx", {}).get("pattern", "")
            if "A-Z" in pattern:
                msg = "must be a 3-letter currency code such as EUR or USD"
            else:
                msg = "must be lowercase letters, digits, '-' or '_' (e.g. landing-page)"
        elif kind in ("greater_than", "greater_than_equal") and "amount" in loc:
            msg = "must be a positive amount greater than 0"
        elif kind == "finite_number":
            msg = "must be a finite number (not .nan or .inf)"
        elif kind.startswith("date_"):
            msg = "must be a real date as YYYY-MM-DD, e.g. 2027-03-15"
        if "input" in err and kind not in ("missing",) and not isinstance(err["input"], (dict, list)):
            shown = repr(err["input"])
            msg += f" (got {shown if len(shown) <= 60 else shown[:60] + '…'})"
    return f"{_format_path(loc)}: {msg}"


def _duplicates(values: list[str]) -> list[tuple[int, str]]:
    seen: set[str] = set()
    dups = []
    for i, value in enumerate(values):
        if value in seen:
            dups.append((i, value))
        seen.add(value)
    return dups


def _semantic_problems(spec: CampaignSpec, today: dt.date) -> list[str]:
    problems: list[str] = []
    handles = [p.handle for p in spec.people]
    roles = {r for p in spec.people for r in p.roles}
    deliverable_keys = [d.key for d in spec.deliverables]
    channel_names = [c.name for c in spec.channels]

    for field, values in (
        ("people", handles),
        ("goals", [g.name for g in spec.goals]),
        ("deliverables", deliverable_keys),
        ("channels", channel_names),
        ("measurement.sources", [s.name for s in spec.measurement.sources]),
    ):
        key = {"people": "handle", "deliverables": "key"}.get(field, "name")
        for i, value in _duplicates(values):
            problems.append(f"{field}[{i}].{key}: duplicate name {value!r}; each must be unique")
    for i, value in _duplicates([s.name for s in spec.audience.target + spec.audience.exclude]):
        problems.append(f"audience: segment {value!r} is listed twice (a segment is either targeted or excluded)")
    for i, person in enumerate(spec.people):
        if person.handle in roles:
            problems.append(f"people[{i}].handle: {person.handle!r} is also a role name; rename one so approvers are unambiguous")

    def check_refs(path: str, names: list[str]) -> None:
        if not names:
            problems.append(f"{path}: is empty; name at least one person or role")
        for j, name in enumerate(names):
            if name not in handles and name not in roles:
                problems.append(f"{path}[{j}]: {name!r} is neither a person in `people` nor a role anyone holds")

    if spec.end <= spec.start:
        problems.append(f"end: {spec.end} is not after start {spec.start}")
    if spec.start < today:
        problems.append(f"start: {spec.start} is in the past (today is {today}); move the start date")
    for i, goal in enumerate(spec.goals):
        if goal.kpi not in KPI_NAMES:
            problems.append(f"goals[{i}].kpi: {goal.kpi!r} is not a KPI campaignflow measures; use one of {', '.join(KPI_NAMES)}")
        if goal.deadline < today:
            problems.append(f"goals[{i}].deadline: {goal.deadline} is in the past (today is {today})")
        elif goal.deadline <= spec.start:
            problems.append(f"goals[{i}].deadline: {goal.deadline} is not after the campaign start {spec.start}")

    for i, d in enumerate(spec.deliverables):
        if d.owner not in handles:
            problems.append(f"deliverables[{i}].owner: {d.owner!r} is not a person in `people`")
        if d.channel is not None and d.channel not in channel_names:
            problems.append(f"deliverables[{i}].channel: {d.channel!r} is not a channel in `channels`")
        for j, dep in enumerate(d.depends_on):
            if dep not in deliverable_keys:
                problems.append(f"deliverables[{i}].depends_on[{j}]: {dep!r} is not a deliverable")
            elif dep == d.key:
                problems.append(f"deliverables[{i}].depends_on[{j}]: a deliverable cannot depend on itself")
        for r, round_reviewers in enumerate(d.reviewers):
            check_refs(f"deliverables[{i}].reviewers[{r}]", round_reviewers)
    graph = {d.key: [x for x in d.depends_on if x in deliverable_keys and x != d.key] for d in spec.deliverables}
    cycle = find_cycle(graph)
    if cycle:
        i = deliverable_keys.index(cycle[0])
        problems.append(f"deliverables[{i}].depends_on: dependency cycle {' -> '.join(cycle)}")

    for i, line in enumerate(spec.budget):
        if line.deliverable not in deliverable_keys:
            problems.append(f"budget[{i}].deliverable: {line.deliverable!r} is not a deliverable")
        if line.currency and line.currency != spec.currency:
            problems.append(f"budget[{i}].currency: {line.currency} differs from the campaign currency {spec.currency}; "
                            "convert the amount or change `currency`")

    problems += _approval_problems(spec, check_refs)

    for i, person in enumerate(spec.people):
        if person.email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", person.email):
            problems.append(f"people[{i}].email: {person.email!r} is not an email address")
    for i, source in enumerate(spec.measurement.sources):
        problems.extend(f"measurement.sources[{i}].{p}" for p in source.problems())
    problems.extend(_notification_problems(spec))
    return problems


def _approval_problems(spec: CampaignSpec, check_refs) -> list[str]:
    """Gate policies: exactly one way to name deciders, and every policy satisfiable."""
    problems: list[str] = []
    a = spec.approvals

    def check_deciders(path: str, d: Deciders | GateRule, policy_default: str | None) -> None:
        check_refs(f"{path}.approvers", d.approvers or [])
        people = spec.expand(d.approvers or [])
        policy = d.policy or policy_default
        if policy == "quorum" and d.quorum is None:
            problems.append(f"{path}.quorum: policy quorum needs `quorum: N` (how many approvals close the gate)")
        if d.quorum is not None and policy != "quorum":
            problems.append(f"{path}.quorum: only used with `policy: quorum`")
        if d.quorum is not None and people and d.quorum > len(people):
            problems.append(f"{path}.quorum: {d.quorum} approvals can never come from {len(people)} approver(s)")
        if d.primary is not None and d.primary not in people:
            problems.append(f"{path}.primary: {d.primary!r} is not one of this gate's approvers ({', '.join(people)})")
        kind = path.split(".")[1]
        blocked = _needs_submitter(people, policy or "any", d.quorum, d.primary, spec.manager())
        if blocked:
            problems.append(f"{path}.approvers: can never be approved: {spec.manager()} submits the {kind} (the "
                            f"campaign manager) and may not approve that work, and {blocked}")

    policy_default = None
    for kind in ("goals", "budget"):
        rule: GateRule = getattr(a, kind)
        path = f"approvals.{kind}"
        given = [name for name in ("approvers", "stages", "routing") if getattr(rule, name) is not None]
        if len(given) != 1:
            problems.append(f"{path}: give exactly one of approvers, stages or routing (found: {', '.join(given) or 'none'})")
            continue
        if rule.approvers is not None:
            check_deciders(path, rule, policy_default)
        for i, stage in enumerate(rule.stages or []):
            check_deciders(f"{path}.stages[{i}]", stage, policy_default)
        for i, dup in _duplicates([s.name for s in rule.stages or []]):
            problems.append(f"{path}.stages[{i}].name: duplicate stage {dup!r}")
        if rule.routing is not None:
            if kind != "budget":
                problems.append(f"{path}.routing: routing by amount is for the budget gate only")
            for i, route in enumerate(rule.routing):
                check_deciders(f"{path}.routing[{i}]", route, policy_default)
                last = i == len(rule.routing) - 1
                if route.up_to is None and not last:
                    problems.append(f"{path}.routing[{i}].up_to: only the last route may omit up_to")
                if i and route.up_to is not None and rule.routing[i - 1].up_to is not None \
                        and route.up_to <= rule.routing[i - 1].up_to:
                    problems.append(f"{path}.routing[{i}].up_to: thresholds must increase ({route.up_to:g} after "
                                    f"{rule.routing[i - 1].up_to:g})")
            if rule.routing and rule.routing[-1].up_to is not None and spec.budget_total() > rule.routing[-1].up_to:
                problems.append(f"approvals.budget.routing: no route approves the budget total {spec.budget_total():,.2f}; "
                                "add a last route without up_to")
        if rule.on_reject == "drop":
            problems.append(f"{path}.on_reject: a rejected {kind} gate stops the campaign; `drop` is for asset reviews")
    for path, timing in (("approvals.defaults", a.defaults), ("approvals.goals", a.goals),
                         ("approvals.budget", a.budget), ("approvals.reviews", a.reviews)):
        if timing.escalate_to is not None:
            check_refs(f"{path}.escalate_to", timing.escalate_to)
        on_timeout = timing.on_timeout or a.defaults.on_timeout
        if on_timeout == "escalate" and not (timing.escalate_to or a.defaults.escalate_to):
            problems.append(f"{path}.on_timeout: escalate needs `escalate_to` (here or in approvals.defaults): "
                            "the people or roles who join the gate when it is late")
        if timing.on_timeout not in (None, "wait") and not (timing.due_days or a.defaults.due_days):
            problems.append(f"{path}.on_timeout: {timing.on_timeout} needs `due_days` (here or in approvals.defaults)")
    if a.reviews.quorum is not None and a.reviews.policy != "quorum":
        problems.append("approvals.reviews.quorum: only used with `policy: quorum`")
    for i, d in enumerate(spec.deliverables):
        for r, reviewers in enumerate(d.reviewers):
            # The owner submits the asset for review (lifecycle: submitted_by=owner).
            blocked = _needs_submitter(spec.expand(reviewers), a.reviews.policy or "all", a.reviews.quorum, None, d.owner)
            if blocked:
                problems.append(f"deliverables[{i}].reviewers[{r}]: review round {r + 1} of {d.key} can never be "
                                f"approved: {d.owner} owns it and may not approve their own work, and {blocked}")
        if a.reviews.quorum is not None:
            for r, reviewers in enumerate(d.reviewers):
                if reviewers and a.reviews.quorum > len(spec.expand(reviewers)):
                    problems.append(f"deliverables[{i}].reviewers[{r}]: fewer reviewers than the review quorum "
                                    f"{a.reviews.quorum}")
    return problems


def _needs_submitter(people: list[str], policy: str, quorum: int | None, primary: str | None,
                     submitter: str) -> str | None:
    """Why a stage cannot be approved without its submitter, whose decision `approvals.decide` refuses
    (whoever submitted the work cannot approve it); None when it can. Escalation does not count: a gate
    must close on its own approvers."""
    if not submitter or submitter not in people or (primary is not None and primary != submitter):
        return None  # a primary other than the submitter closes the stage alone
    others = len(people) - 1
    if not others:
        return f"{submitter} is the only approver; add another person or role"
    if policy == "all":
        return f"policy `all` needs {submitter} too; remove {submitter} from the approvers or use policy any"
    if policy == "quorum" and quorum and others < quorum <= len(people):
        return (f"quorum {quorum} cannot be reached without {submitter} ({others} other approver(s)); "
                f"lower the quorum or add approvers")
    return None


def json_schema() -> dict[str, Any]:
    schema = CampaignSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "campaignflow campaign spec"
    return schema


def _cron_refusal(expression: str) -> str | None:
    """Why cron cannot read `expression`, or None when it can."""
    if len(expression.split()) != 5:  # cronsim also takes 6 fields, seconds first, which Prefect reads otherwise
        return f"{len(expression.split())} fields instead of 5"
    try:
        CronSim(expression, dt.datetime(2000, 1, 1))
    except CronSimError as exc:
        return str(exc).lower()
    return None
