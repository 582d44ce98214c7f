"""The campaign store's tables (SQLModel). Schema changes go through migrations/.

One table per domain noun. Times are timezone-aware UTC; amounts are
stored as numbers with their currency beside them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from campaignflow.columns import as_utc, utcnow  # noqa: F401  (re-exported: m.utcnow, m.as_utc)
from campaignflow.columns import json_column as _json, optional_timestamp as _opt_ts, timestamp as _ts


STEPS = ("goals", "audience", "budget", "timeline", "content", "reviews", "measurement")


class Campaign(SQLModel, table=True):
    id: str = Field(primary_key=True, max_length=80)
    name: str
    client: str = ""
    type: str = "mixed"
    currency: str = Field(max_length=3)
    start: dt.date
    end: dt.date
    spec_text: str
    spec_hash: str = Field(max_length=16)
    spec_dir: str = Field(default="", description="Folder of the spec file, for relative paths in it.")
    status: str = Field(default="registered", index=True)  # registered|running|waiting|completed|stopped|failed
    current_step: str = Field(default="goals")
    flow_run_id: Optional[str] = None
    # The one lifecycle run that holds the campaign (campaignflow/claims.py): its Prefect flow run id, the
    # process running it, and the lease that process renews. No process and no lease: a deployed run
    # waiting suspended.
    run_holder: Optional[str] = None
    run_host: str = ""
    run_pid: Optional[int] = None
    run_lease_until: Optional[dt.datetime] = _opt_ts()
    created_at: dt.datetime = _ts()
    updated_at: dt.datetime = _ts()


class Member(SQLModel, table=True):
    """A person on a campaign's team, with their roles."""

    __table_args__ = (UniqueConstraint("campaign_id", "handle"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    handle: str = Field(index=True)
    name: str
    email: Optional[str] = None
    roles: list[str] = _json([])


class StepRun(SQLModel, table=True):
    """One lifecycle step of one campaign; `completed` steps are never run again."""

    __table_args__ = (UniqueConstraint("campaign_id", "step"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    step: str
    status: str = "running"  # running|completed|failed
    attempts: int = 0
    started_at: dt.datetime = _ts()
    completed_at: Optional[dt.datetime] = _opt_ts()
    summary: str = ""


class Goal(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    name: str
    description: str = ""
    kpi: str
    target: float
    unit: str
    baseline: float = 0
    deadline: dt.date
    status: str = "draft"  # draft|approved|rejected


class AudienceSegment(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "name"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    name: str
    kind: str  # target|exclude
    description: str = ""


class BudgetLine(SQLModel, table=True):
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    deliverable: str
    category: str  # staff|contractor|media
    amount: float
    currency: str = Field(max_length=3)
    description: str = ""
    status: str = "planned"  # planned|approved|rejected
    actual: float = 0


class Deliverable(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    key: str
    name: str
    owner: str
    channel: Optional[str] = None
    duration_days: int
    review_rounds: int = 0
    start: Optional[dt.date] = None
    due: Optional[dt.date] = Field(default=None, index=True)
    critical: bool = False
    status: str = Field(default="planned", index=True)  # planned|drafting|in_review|approved|dropped|done


# Deliverable statuses where the owner has the next move (not yet in review, approved, done or dropped).
OWNER_TO_MOVE = ("planned", "drafting")


class Dependency(SQLModel, table=True):
    __table_args__ = (UniqueConstraint("campaign_id", "deliverable", "depends_on"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    deliverable: str
    depends_on: str


class Asset(SQLModel, table=True):
    """A reviewable deliverable's current draft; `version` goes up with each redraft."""

    __table_args__ = (UniqueConstraint("campaign_id", "deliverable"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    deliverable: str
    version: int = 1
    round: int = 1  # the review round this version is in (1-based)
    status: str = "drafting"  # drafting|in_review|approved|dropped
    submitted_by: str = ""
    updated_at: dt.datetime = _ts()


class ApprovalGate(SQLModel, table=True):
    """A durable approval request that a flow waits on."""

    __table_args__ = (Index("ix_gate_status_due", "status", "due_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    key: str = Field(unique=True, max_length=200)  # e.g. acme-webinar/review/landing-page/r1v2
    campaign_id: str = Field(foreign_key="campaign.id", index=True)
    kind: str  # goals|budget|review
    subject: str = ""  # deliverable key for review gates
    round: int = 0
    version: int = 0
    title: str
    description: str = ""
    approvers: list[str] = _json([])
    policy: str = "any"  # any|all
    submitted_by: str = ""
    amount: Optional[float] = None
    status: str = Field(default="open", index=True)  # open|approved|changes_requested|rejected
    opened_at: dt.datetime = _ts()
    due_at: Optional[dt.datetime] = _opt_ts()
    closed_at: Optional[dt.datetime] = _opt_ts()
    flow_run_id: Optional[str] = None
    stage: str = ""  # the stage's name in a multi-stage gate
    stage_index: int = 0
    stages_total: int = 1
    quorum: Optional[int] = None
    primary_approver: Optional[str] = None
    on_timeout: str = "wait"  # wait|escalate|approve|reject
    escalate_to: list[str] = _json([])
    escalation_level: int = 0
    on_reject: str = "stop"  # stop|drop


class Decision(SQLModel, table=True):
    """One approver's answer to one gate. A repeat of the same click is the same row."""

    __table_args__ = (UniqueConstraint("gate_id", "person"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    gate_id: int = Field(foreign_key="approvalgate.id", index=True)
    person: str
    outcome: str  # approve|request_changes|reject
    comment: str = ""
    entry_point: str = "cli"  # cli|prefect-ui|demo|web|api|timeout
    decided_by: str = ""  # who clicked, when not the approver: their delegate
    decided_at: dt.datetime = _ts()


class Delegation(SQLModel, table=True):
    """`person` is away from `starts` to `ends` (inclusive); `delegate` decides their gates meanwhile."""

    id: Optional[int] = Field(default=None, primary_key=True)
    person: str = Field(index=True)
    delegate: str
    starts: dt.date
    ends: dt.date
    reason: str = ""
    created_at: dt.datetime = _ts()


class UsedLink(SQLModel, table=True):
    """A one-click decision link that has been used; a second use is refused."""

    nonce: str = Field(primary_key=True, max_length=64)
    gate_id: int
    person: str
    used_at: dt.datetime = _ts()


class AuditEvent(SQLModel, table=True):
    """Append-only history of everything that happened to a campaign."""

    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: str = Field(index=True)
    at: dt.datetime = _ts()
    actor: str  # a person handle, or "engine"
    action: str  # e.g. campaign.registered, step.completed, gate.opened, decision.recorded
    subject: str = ""
    detail: dict[str, Any] = _json({})


class MetricDaily(SQLModel, table=True):
    """One day of one ad (or ad group, or campaign) on one platform account.

    The natural key is unique, so re-reading a day overwrites it. Key parts a
    platform does not have are '' (not NULL, which would never collide).
    """

    __table_args__ = (
        UniqueConstraint("date", "source", "account", "platform_campaign", "ad_group", "ad", name="uq_metric_natural_key"),
        Index("ix_metric_campaign_date", "campaign_id", "date"),
    )
    id: Optional[int] = Field(default=None, primary_key=True)
    date: dt.date
    source: str
    account: str = ""
    platform_campaign: str  # the platform's campaign id when it has one (names change), else the name
    ad_group: str = ""
    ad: str = ""
    platform_campaign_name: str = ""  # the name people recognise, for mapping by convention and listings
    campaign_id: Optional[str] = Field(default=None, description="The campaignflow campaign; NULL while unmapped.")
    # A measure the source does not report (GA4 without a linked ads account has no impressions) is
    # NULL, unknown: summing it as 0 would make CTR or CPA look like a result.
    impressions: Optional[int] = 0
    clicks: Optional[int] = 0
    spend: Optional[float] = 0
    conversions: Optional[float] = 0
    conversion_value: Optional[float] = 0
    currency: str = ""


# Feature areas keep their tables in their own modules; importing them here registers them
# with the metadata the migrations compare against.
from campaignflow import models_ingest, models_notify  # noqa: E402,F401
