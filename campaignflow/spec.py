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
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from campaignflow.errors import SpecInvalid
from campaignflow.kpis import KPI_NAMES
from campaignflow.timeline import find_cycle

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]*$", max_length=80)]
PositiveAmount = Annotated[float, Field(gt=0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


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
    target: float
    unit: str = Field(min_length=1)
    baseline: float = 0
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


class MeasurementSource(Strict):
    name: Slug
    kind: Literal["csv"]
    path: str | None = Field(default=None, description="For csv: a file or folder, relative to the spec file.")
    account: str = ""
    campaigns: list[str] = Field(
        default_factory=list,
        description="Platform campaign names or ids that belong to this campaign; empty: every row of the source.",
    )
    columns: dict[str, str] = Field(
        default_factory=dict,
        description="For csv: our column name -> the export's column name, e.g. {spend: Cost, date: Day}.",
    )


class Measurement(Strict):
    sources: list[MeasurementSource] = Field(default_factory=list)


class GatePolicy(Strict):
    approvers: list[str] = Field(description="People (handles) or roles; a role means each of its members.")
    policy: Literal["any", "all"] = "any"


class Approvals(Strict):
    goals: GatePolicy
    budget: GatePolicy


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

    def budget_total(self) -> float:
        return round(sum(line.amount for line in self.budget), 2)


# -- loading and validation ---------------------------------------------------------------------

def spec_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def parse_yaml(text: str, source: str = "spec") -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        raise SpecInvalid([f"{where}: not valid YAML ({getattr(exc, 'problem', exc)})"], source) from None
    if not isinstance(data, dict):
        raise SpecInvalid(["(top): the spec must be a YAML mapping of fields such as id, name, goals"], source)
    return data


def load_spec(path: str | Path, today: dt.date | None = None) -> tuple[CampaignSpec, str]:
    """Read, parse and validate a spec file; return the spec and its text."""
    path = Path(path)
    if not path.is_file():
        raise SpecInvalid([f"(file): {path} does not exist or is not a file"], str(path))
    text = path.read_text(encoding="utf-8")
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
        if "input" in err and kind not in ("missing",) and not isinstance(err["input"], (dict, list)):
            msg += f" (got {err['input']!r})"
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

    for gate in ("goals", "budget"):
        check_refs(f"approvals.{gate}.approvers", getattr(spec.approvals, gate).approvers)

    for i, person in enumerate(spec.people):
        if person.email is not None and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", person.email):
            problems.append(f"people[{i}].email: {person.email!r} is not an email address")
    for i, source in enumerate(spec.measurement.sources):
        if source.kind == "csv" and not source.path:
            problems.append(f"measurement.sources[{i}].path: a csv source needs `path` (a file or folder of exports)")
    return problems


def json_schema() -> dict[str, Any]:
    schema = CampaignSpec.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "campaignflow campaign spec"
    return schema
