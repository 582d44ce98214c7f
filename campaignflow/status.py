"""Where every campaign stands: the data behind `campaignflow status` and `approvals`.

A handful of set-based queries whatever the number of campaigns, so the
overview stays instant for an account manager with hundreds of them.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.approvals import pending_for
from campaignflow.store import get_campaign


def _gate_dict(gate: m.ApprovalGate, left: list[str]) -> dict[str, Any]:
    return {"gate": gate.id, "key": gate.key, "campaign": gate.campaign_id, "kind": gate.kind, "title": gate.title,
            "policy": gate.policy, "waiting_on": left, "amount": gate.amount,
            "opened_at": gate.opened_at.isoformat(), "due_at": gate.due_at.isoformat() if gate.due_at else None}


def pending_approvals(s: Session, person: str | None = None, campaign_id: str | None = None) -> list[dict[str, Any]]:
    return [_gate_dict(g, left) for g, left in pending_for(s, person, campaign_id)]


def _overdue(s: Session, today: dt.date, campaign_id: str | None = None) -> list[m.Deliverable]:
    query = (select(m.Deliverable)
             .where(m.Deliverable.due < today, m.Deliverable.status.not_in(("approved", "done", "dropped")))
             .order_by(m.Deliverable.due))
    if campaign_id:
        query = query.where(m.Deliverable.campaign_id == campaign_id)
    return list(s.exec(query))


def overview(s: Session, today: dt.date | None = None) -> list[dict[str, Any]]:
    today = today or dt.date.today()
    campaigns = list(s.exec(select(m.Campaign).order_by(m.Campaign.created_at)))
    gates: dict[str, list[dict[str, Any]]] = {}
    for gate in pending_approvals(s):
        gates.setdefault(gate["campaign"], []).append(gate)
    overdue: dict[str, list[str]] = {}
    for d in _overdue(s, today):
        overdue.setdefault(d.campaign_id, []).append(f"{d.key} (due {d.due}, {d.owner})")
    sla = _sla_breaches(s)
    return [{"campaign": c.id, "name": c.name, "client": c.client, "status": c.status, "step": c.current_step,
             "waiting": [{"gate": g["gate"], "title": g["title"], "on": g["waiting_on"]} for g in gates.get(c.id, [])],
             "overdue": overdue.get(c.id, []),
             "sla_breaches": sla.get(c.id, [])} for c in campaigns]


def _sla_breaches(s: Session, campaign_id: str | None = None) -> dict[str, list[dict[str, Any]]]:
    from campaignflow.notify.sla import breaches

    out: dict[str, list[dict[str, Any]]] = {}
    for b in breaches(s, campaign_id):
        out.setdefault(b["campaign"], []).append(b)
    return out


def detail(s: Session, campaign_id: str, today: dt.date | None = None) -> dict[str, Any]:
    today = today or dt.date.today()
    c = get_campaign(s, campaign_id)
    steps = {r.step: r for r in s.exec(select(m.StepRun).where(m.StepRun.campaign_id == c.id))}
    deliverables = list(s.exec(select(m.Deliverable).where(m.Deliverable.campaign_id == c.id).order_by(m.Deliverable.id)))
    budget = list(s.exec(select(m.BudgetLine).where(m.BudgetLine.campaign_id == c.id)))
    goals = list(s.exec(select(m.Goal).where(m.Goal.campaign_id == c.id)))
    late = {d.id for d in _overdue(s, today, c.id)}
    return {
        "campaign": c.id, "name": c.name, "client": c.client, "status": c.status, "step": c.current_step,
        "start": str(c.start), "end": str(c.end), "flow_run_id": c.flow_run_id,
        "steps": [{"step": step, "status": steps[step].status if step in steps else "pending",
                   "summary": steps[step].summary if step in steps else ""} for step in m.STEPS],
        "goals": [{"name": g.name, "kpi": g.kpi, "target": g.target, "unit": g.unit, "deadline": str(g.deadline),
                   "status": g.status} for g in goals],
        "budget": {"total": round(sum(b.amount for b in budget), 2), "currency": c.currency,
                   "status": sorted({b.status for b in budget})},
        "deliverables": [{"key": d.key, "owner": d.owner, "start": str(d.start) if d.start else None,
                          "due": str(d.due) if d.due else None, "critical": d.critical, "status": d.status,
                          "overdue": d.id in late}
                         for d in deliverables],
        "waiting": pending_approvals(s, campaign_id=c.id),
        "sla_breaches": _sla_breaches(s, c.id).get(c.id, []),
    }


def audit_trail(s: Session, campaign_id: str) -> list[dict[str, Any]]:
    get_campaign(s, campaign_id)
    rows = s.exec(select(m.AuditEvent).where(m.AuditEvent.campaign_id == campaign_id).order_by(m.AuditEvent.id))
    out = []
    for e in rows:
        detail = dict(e.detail)
        entry = detail.pop("entry_point", "")
        out.append({"at": e.at.isoformat(), "actor": e.actor, "action": e.action, "subject": e.subject,
                    "entry_point": entry, "detail": "; ".join(f"{k}={v}" for k, v in detail.items() if v not in (None, "", []))})
    return out
