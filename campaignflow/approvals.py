"""Who may decide a gate, and when a gate's policy is satisfied.

`decide` is the one door every decision comes through (CLI, Prefect UI
resume form, demo approvers), so the rules below hold whatever the entry
point. It locks the gate row, so two deciders at once are both recorded
and the policy is evaluated once per decision, in order.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.errors import UserError
from campaignflow.store import audit, find_gate, gate_decisions

OUTCOMES = {"approve": "approved", "request_changes": "changes_requested", "reject": "rejected"}
VERBS = {"approve": "approved", "request_changes": "requested changes on", "reject": "rejected"}


@dataclass(frozen=True)
class DecisionResult:
    gate_id: int
    gate_key: str
    campaign_id: str
    flow_run_id: str | None
    status: str  # the gate's status after this decision
    recorded: bool  # False when this exact decision was already on record (a double click, a retry)
    waiting_on: list[str]


def evaluate(policy: str, approvers: list[str], decisions: list[m.Decision]) -> str:
    """The gate status that the decisions so far add up to under `policy`."""
    if not decisions:
        return "open"
    if policy == "any":
        return OUTCOMES[decisions[0].outcome]
    outcomes = {d.outcome for d in decisions}
    if "reject" in outcomes:
        return "rejected"
    if "request_changes" in outcomes:
        return "changes_requested"
    approved = {d.person for d in decisions if d.outcome == "approve"}
    return "approved" if set(approvers) <= approved else "open"


def waiting_on(gate: m.ApprovalGate, decisions: list[m.Decision]) -> list[str]:
    if gate.status != "open":
        return []
    decided = {d.person for d in decisions}
    return [p for p in gate.approvers if p not in decided]


def decide(s: Session, gate_ref: str | int, person: str, outcome: str, comment: str = "",
           entry_point: str = "cli") -> DecisionResult:
    if outcome not in OUTCOMES:
        raise UserError(f"unknown decision {outcome!r}; use one of: {', '.join(OUTCOMES)}")
    comment = (comment or "").strip()
    if outcome != "approve" and not comment:
        raise UserError("a comment is required when requesting changes or rejecting: say what must change (--comment TEXT)")
    gate = find_gate(s, gate_ref, lock=True)
    decisions = gate_decisions(s, gate.id)
    mine = next((d for d in decisions if d.person == person), None)
    if mine is not None:
        if mine.outcome == outcome:
            return _result(gate, decisions, recorded=False)
        raise UserError(f"{person} already {VERBS[mine.outcome]} gate {gate.id} ({gate.key}) at "
                        f"{mine.decided_at:%Y-%m-%d %H:%M} UTC; a decision cannot be changed")
    if gate.status != "open":
        raise UserError(f"gate {gate.id} ({gate.key}) is already closed as {gate.status.replace('_', ' ')}; nothing was recorded")
    if person not in gate.approvers:
        raise UserError(f"{person} is not an approver of gate {gate.id} ({gate.key}); its approvers are "
                        f"{', '.join(gate.approvers)}")
    if person == gate.submitted_by:
        raise UserError(f"{person} submitted this work and cannot approve it (separation of duties); "
                        f"ask another approver: {', '.join(p for p in gate.approvers if p != person)}")
    decision = m.Decision(gate_id=gate.id, person=person, outcome=outcome, comment=comment, entry_point=entry_point)
    s.add(decision)
    s.flush()
    decisions.append(decision)
    audit(s, gate.campaign_id, "decision.recorded", gate.key, actor=person, outcome=outcome, comment=comment,
          entry_point=entry_point, gate_id=gate.id)
    status = evaluate(gate.policy, gate.approvers, decisions)
    if status != "open":
        gate.status, gate.closed_at = status, m.utcnow()
        s.add(gate)
        audit(s, gate.campaign_id, "gate.closed", gate.key, actor=person, status=status, gate_id=gate.id)
    return _result(gate, decisions, recorded=True)


def _result(gate: m.ApprovalGate, decisions: list[m.Decision], recorded: bool) -> DecisionResult:
    return DecisionResult(gate.id, gate.key, gate.campaign_id, gate.flow_run_id, gate.status, recorded,
                          waiting_on(gate, decisions))


def pending_for(s: Session, person: str | None = None) -> list[tuple[m.ApprovalGate, list[str]]]:
    """Open gates with the approvers still to decide, optionally only those waiting on `person`."""
    gates = list(s.exec(select(m.ApprovalGate).where(m.ApprovalGate.status == "open").order_by(m.ApprovalGate.id)))
    if not gates:
        return []
    by_gate: dict[int, list[m.Decision]] = {}
    for d in s.exec(select(m.Decision).where(m.Decision.gate_id.in_([g.id for g in gates]))):
        by_gate.setdefault(d.gate_id, []).append(d)
    out = []
    for gate in gates:
        left = waiting_on(gate, by_gate.get(gate.id, []))
        if person is None or person in left:
            out.append((gate, left))
    return out
