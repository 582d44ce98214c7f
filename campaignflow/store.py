"""Data access for the campaign store: registering campaigns, step progress, gates and the audit log.

Functions take an open session and leave committing to the caller
(`campaignflow.db.session`), so one user action is one transaction.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.errors import UserError
from campaignflow.spec import CampaignSpec, spec_hash, validate_spec_text


def audit(s: Session, campaign_id: str, action: str, subject: str = "", actor: str = "engine", **detail: Any) -> None:
    s.add(m.AuditEvent(campaign_id=campaign_id, action=action, subject=subject, actor=actor, detail=detail))


# -- campaigns ----------------------------------------------------------------------------------

def register_campaign(s: Session, spec: CampaignSpec, spec_text: str, spec_dir: Path | str = "") -> tuple[m.Campaign, bool]:
    """Store a validated spec as a campaign with its team, goals, audience, budget and deliverables.

    Registering the same spec again returns the existing campaign (so a re-run
    continues it); a different spec under the same id is refused, and so is a
    metric source declared differently from how another campaign declares it.
    """
    digest = spec_hash(spec.model_dump(mode="json"))
    existing = s.get(m.Campaign, spec.id)
    if existing is not None:
        if existing.spec_hash != digest:
            raise UserError(
                f"campaign {spec.id!r} is already registered with a different spec; "
                f"give the changed campaign a new `id`, or run the spec it was registered with"
            )
        return existing, False
    from campaignflow.ingest import check_sources  # ingest reads stored specs through this module

    check_sources(s, spec, str(spec_dir))
    campaign = m.Campaign(
        id=spec.id, name=spec.name, client=spec.client, type=spec.type, currency=spec.currency,
        start=spec.start, end=spec.end, spec_text=spec_text, spec_hash=digest, spec_dir=str(spec_dir),
    )
    s.add(campaign)
    s.flush()  # the campaign row first: the rows below reference it
    for p in spec.people:
        s.add(m.Member(campaign_id=spec.id, handle=p.handle, name=p.name, email=p.email, roles=list(p.roles)))
    for g in spec.goals:
        s.add(m.Goal(campaign_id=spec.id, name=g.name, description=g.description, kpi=g.kpi, target=g.target,
                     unit=g.unit, baseline=g.baseline, deadline=g.deadline))
    for kind, segments in (("target", spec.audience.target), ("exclude", spec.audience.exclude)):
        for seg in segments:
            s.add(m.AudienceSegment(campaign_id=spec.id, name=seg.name, kind=kind, description=seg.description))
    for line in spec.budget:
        s.add(m.BudgetLine(campaign_id=spec.id, deliverable=line.deliverable, category=line.category,
                           amount=line.amount, currency=line.currency or spec.currency, description=line.description))
    for d in spec.deliverables:
        s.add(m.Deliverable(campaign_id=spec.id, key=d.key, name=d.name, owner=d.owner, channel=d.channel,
                            duration_days=d.duration_days, review_rounds=len(d.reviewers)))
        for dep in d.depends_on:
            s.add(m.Dependency(campaign_id=spec.id, deliverable=d.key, depends_on=dep))
    s.flush()
    audit(s, spec.id, "campaign.registered", spec.name, spec_hash=digest)
    return campaign, True


def get_campaign(s: Session, campaign_id: str) -> m.Campaign:
    campaign = s.get(m.Campaign, campaign_id)
    if campaign is None:
        known = s.exec(select(m.Campaign.id).order_by(m.Campaign.created_at)).all()
        hint = f"known campaigns: {', '.join(known)}" if known else "no campaign is registered yet; start one with `campaignflow run SPEC`"
        raise UserError(f"there is no campaign {campaign_id!r} ({hint})")
    return campaign


def campaign_spec(campaign: m.Campaign) -> CampaignSpec:
    """The spec a campaign was registered with (dates are not re-checked against today)."""
    return validate_spec_text(campaign.spec_text, f"campaign {campaign.id}", today=dt.date.min)


def set_campaign_state(s: Session, campaign_id: str, *, status: str | None = None, step: str | None = None,
                       flow_run_id: str | None = None) -> None:
    campaign = s.get(m.Campaign, campaign_id)
    if status is not None:
        campaign.status = status
    if step is not None:
        campaign.current_step = step
    if flow_run_id is not None:
        campaign.flow_run_id = flow_run_id
    campaign.updated_at = m.utcnow()
    s.add(campaign)


# -- lifecycle steps ----------------------------------------------------------------------------

def step_run(s: Session, campaign_id: str, step: str) -> m.StepRun | None:
    return s.exec(select(m.StepRun).where(m.StepRun.campaign_id == campaign_id, m.StepRun.step == step)).first()


def start_step(s: Session, campaign_id: str, step: str) -> m.StepRun:
    run = step_run(s, campaign_id, step) or m.StepRun(campaign_id=campaign_id, step=step)
    run.status, run.attempts, run.started_at = "running", run.attempts + 1, m.utcnow()
    s.add(run)
    set_campaign_state(s, campaign_id, status="running", step=step)
    audit(s, campaign_id, "step.started", step, attempt=run.attempts)
    return run


def complete_step(s: Session, campaign_id: str, step: str, summary: str) -> None:
    run = step_run(s, campaign_id, step)
    run.status, run.completed_at, run.summary = "completed", m.utcnow(), summary
    s.add(run)
    audit(s, campaign_id, "step.completed", step, summary=summary)


def completed_steps(s: Session, campaign_id: str) -> list[str]:
    rows = s.exec(select(m.StepRun.step).where(m.StepRun.campaign_id == campaign_id, m.StepRun.status == "completed"))
    return list(rows)


# -- gates --------------------------------------------------------------------------------------

def open_gate(s: Session, *, key: str, campaign_id: str, kind: str, title: str, approvers: list[str],
              **fields: Any) -> m.ApprovalGate:
    """Open the gate `key`, or return it as it is if it was opened before (re-runs reuse it).

    `fields` are further ApprovalGate columns (policy, due_at, stage, amount, ...).
    """
    gate = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.key == key)).first()
    if gate is not None:
        return gate
    gate = m.ApprovalGate(key=key, campaign_id=campaign_id, kind=kind, title=title, approvers=approvers, **fields)
    s.add(gate)
    s.flush()
    audit(s, campaign_id, "gate.opened", key, title=title, approvers=approvers, policy=gate.policy, gate_id=gate.id,
          due_at=gate.due_at.isoformat() if gate.due_at else None)
    return gate


class GateNotFound(UserError):
    """No gate by that number or key (a web or API caller gets 404)."""

    status = 404


# The largest id the store's integer columns hold (PostgreSQL's `integer`); a larger number names no row.
MAX_ID = 2**31 - 1


def find_gate(s: Session, ref: str | int, lock: bool = False) -> m.ApprovalGate:
    """A gate by number (`12`) or key (`acme-webinar/goals`)."""
    query = select(m.ApprovalGate)
    text = str(ref).strip().lstrip("#")
    if "\x00" in text or len(text) > 200:  # no key holds these; PostgreSQL refuses NUL in a query
        shown = text[:40] + ("…" if len(text) > 40 else "")
        raise GateNotFound(f"there is no gate {shown!r}; `campaignflow approvals` lists the open ones by number and key")
    if text.isascii() and text.isdigit():
        number = int(text)
        if number > MAX_ID:
            raise GateNotFound(f"there is no gate {number}; gate numbers are below {MAX_ID + 1:,} "
                               f"and `campaignflow approvals` lists the open ones")
        query = query.where(m.ApprovalGate.id == number)
    else:
        query = query.where(m.ApprovalGate.key == text)
    if lock:
        query = query.with_for_update()
    gate = s.exec(query).first()
    if gate is None:
        raise GateNotFound(f"there is no gate {ref!r}; `campaignflow approvals` lists the open ones")
    return gate


def gate_decisions(s: Session, gate_id: int) -> list[m.Decision]:
    return list(s.exec(select(m.Decision).where(m.Decision.gate_id == gate_id).order_by(m.Decision.decided_at)))


def attach_flow_run(s: Session, gate_id: int, flow_run_id: str) -> None:
    gate = s.get(m.ApprovalGate, gate_id)
    gate.flow_run_id = flow_run_id
    s.add(gate)
