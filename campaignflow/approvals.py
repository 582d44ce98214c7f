"""Who may decide a gate, when a gate's policy is satisfied, and what happens when it is late.

`decide` is the one door every decision comes through (CLI, web link, HTTP
API, Prefect UI resume form, demo approvers, timeouts), so these rules hold
whatever the entry point. It locks the gate row: two deciders at the same
instant are both recorded and the policy is evaluated once per decision.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from sqlmodel import Session, select

from campaignflow import models as m
from campaignflow.errors import UserError
from campaignflow.spec import CampaignSpec, Deciders, GateRule
from campaignflow.store import audit, find_gate, gate_decisions
from campaignflow.timeline import add_business_days, next_business_day

OUTCOMES = {"approve": "approved", "request_changes": "changes_requested", "reject": "rejected"}
VERBS = {"approve": "approved", "request_changes": "requested changes on", "reject": "rejected"}
TIMEOUT_ACTOR = "timeout"
# A comment is a note to the team that travels in chat messages and the audit; longer reasoning belongs
# in a document the comment links to. Every entry point (CLI, web page, API, Prefect UI) meets this limit here.
TEXT_LIMIT = 4_000  # characters


# -- policy planning: what the spec asks of each gate ------------------------------------------

@dataclass(frozen=True)
class StagePlan:
    name: str
    approvers: list[str]
    policy: str = "any"
    quorum: int | None = None
    primary: str | None = None
    due_days: int | None = None
    on_timeout: str = "wait"
    escalate_to: list[str] = field(default_factory=list)
    on_reject: str = "stop"


def _stage(spec: CampaignSpec, name: str, deciders: Deciders | GateRule, timing, on_reject: str,
           default_policy: str = "any") -> StagePlan:
    d = spec.approvals.defaults
    return StagePlan(
        name=name, approvers=spec.expand(deciders.approvers or []), policy=deciders.policy or default_policy,
        quorum=deciders.quorum, primary=deciders.primary,
        due_days=timing.due_days or d.due_days, on_timeout=timing.on_timeout or d.on_timeout or "wait",
        escalate_to=spec.expand(timing.escalate_to or d.escalate_to or []), on_reject=on_reject,
    )


def plan_stages(spec: CampaignSpec, kind: str, amount: float | None = None) -> list[StagePlan]:
    """The stages of the goals or budget gate, in order; budget routing picks the route the amount falls in."""
    rule: GateRule = getattr(spec.approvals, kind)
    on_reject = rule.on_reject or "stop"
    if rule.routing is not None:
        route = next(r for r in rule.routing if r.up_to is None or (amount or 0) <= r.up_to)
        limit = f"up to {route.up_to:,.0f}" if route.up_to is not None else "above all thresholds"
        return [_stage(spec, f"amount {limit}", route, rule, on_reject)]
    if rule.stages is not None:
        return [_stage(spec, s.name, s, rule, on_reject) for s in rule.stages]
    return [_stage(spec, "", rule, rule, on_reject)]


def review_stage(spec: CampaignSpec, reviewers: list[str]) -> StagePlan:
    rule = spec.approvals.reviews
    return _stage(spec, "", Deciders(approvers=reviewers, policy=rule.policy, quorum=rule.quorum), rule,
                  rule.on_reject or "drop", default_policy="all")


def due_at(opened: dt.datetime, business_days: int | None, holidays: frozenset[dt.date]) -> dt.datetime | None:
    """The same time of day, `business_days` working days after the gate opened."""
    if not business_days:
        return None
    start = next_business_day(opened.date() + dt.timedelta(days=1), holidays)
    return dt.datetime.combine(add_business_days(start, business_days, holidays), opened.timetz())


# -- evaluating decisions ----------------------------------------------------------------------

@dataclass(frozen=True)
class DecisionResult:
    gate_id: int
    gate_key: str
    campaign_id: str
    flow_run_id: str | None
    status: str  # the gate's status after this decision
    recorded: bool  # False when this exact decision was already on record (a double click, a retry)
    waiting_on: list[str]
    seats: tuple[str, ...] = ()  # the approvers this decision was recorded for: the decider's own seat and
    # those of absent approvers they stand in for
    already: str = ""  # when nothing was recorded: what was already on record, as a sentence


def evaluate(gate: m.ApprovalGate, decisions: list[m.Decision]) -> str:
    """The gate status that the decisions so far add up to under the gate's policy."""
    if not decisions:
        return "open"
    primary = next((d for d in decisions if d.person == gate.primary_approver), None)
    if primary is not None:
        return OUTCOMES[primary.outcome]
    if gate.policy == "any":
        return OUTCOMES[decisions[0].outcome]
    outcomes = [d.outcome for d in decisions]
    if "request_changes" in outcomes:
        return "changes_requested"
    approvals = outcomes.count("approve")
    if gate.policy == "quorum":
        if approvals >= gate.quorum:
            return "approved"
        undecided = len(gate.approvers) - len(decisions)
        return "rejected" if approvals + undecided < gate.quorum else "open"
    if "reject" in outcomes:
        return "rejected"
    approved = {d.person for d in decisions if d.outcome == "approve"}
    return "approved" if set(gate.approvers) <= approved else "open"


def waiting_on(gate: m.ApprovalGate, decisions: list[m.Decision]) -> list[str]:
    if gate.status != "open":
        return []
    decided = {d.person for d in decisions}
    return [p for p in gate.approvers if p not in decided]


def active_delegations(s: Session, on: dt.date) -> dict[str, str]:
    """Who stands in for whom on a day: {absent person: delegate}."""
    rows = s.exec(select(m.Delegation).where(m.Delegation.starts <= on, m.Delegation.ends >= on)
                  .order_by(m.Delegation.id))
    return {d.person: d.delegate for d in rows}


def seats_of(s: Session, gate: m.ApprovalGate, person: str) -> list[str]:
    """The approvers `person` decides as on a gate today: themselves, and everyone they stand in for."""
    stand_ins = active_delegations(s, dt.date.today())
    return [a for a in gate.approvers if a == person or stand_ins.get(a) == person]


def undecided_seats(s: Session, gate: m.ApprovalGate, decisions: list[m.Decision], person: str,
                    held: list[str] | None = None) -> list[str]:
    """The seats `person` holds on the gate (`held`, when already known) that no decision fills yet."""
    decided = {d.person for d in decisions}
    return [seat for seat in (held if held is not None else seats_of(s, gate, person)) if seat not in decided]


def decided_by(decisions: list[m.Decision], person: str) -> list[m.Decision]:
    """The decisions `person` made themselves (for their own seat or as someone's delegate)."""
    return [d for d in decisions if (d.decided_by or d.person) == person]


def checked_text(text: str, what: str = "the comment") -> str:
    """Free text as it is stored: trimmed, within TEXT_LIMIT, and storable in every database."""
    text = (text or "").strip()
    if len(text) > TEXT_LIMIT:
        raise UserError(f"{what} is {len(text):,} characters; the limit is {TEXT_LIMIT:,}: shorten it "
                        f"(link to a document for the details)")
    if "\x00" in text:
        raise UserError(f"{what} contains a NUL character (\\x00); remove it")
    return text


def closed_text(gate: m.ApprovalGate, decisions: list[m.Decision]) -> str:
    """How a closed gate ended, for people: 'approved by priya at 2027-01-04 09:12 UTC'."""
    deciding = [d for d in decisions if OUTCOMES[d.outcome] == gate.status] or decisions
    names = ", ".join("its due date passing" if d.person == TIMEOUT_ACTOR
                      else f"{d.decided_by} for {d.person}" if d.decided_by else d.person for d in deciding)
    when = f" at {m.as_utc(gate.closed_at):%Y-%m-%d %H:%M} UTC" if gate.closed_at else ""
    return gate.status.replace("_", " ") + (f" by {names}" if names else "") + when


def decide(s: Session, gate_ref: str | int, person: str, outcome: str, comment: str = "",
           entry_point: str = "cli") -> DecisionResult:
    """Record `person`'s decision for every seat they hold on the gate, then close it if its policy is met."""
    if outcome not in OUTCOMES:
        raise UserError(f"unknown decision {outcome!r}; use one of: {', '.join(OUTCOMES)}")
    comment = checked_text(comment)
    if outcome != "approve" and not comment:
        raise UserError("a comment is required when requesting changes or rejecting: say what must change (--comment TEXT)")
    gate = find_gate(s, gate_ref, lock=True)
    decisions = gate_decisions(s, gate.id)
    seats = _open_seats(s, gate, decisions, person, outcome)
    if not seats:  # this exact decision is already on record: a double click, a retry
        mine = decided_by(decisions, person)[0]
        already = (f"{person} already {VERBS[mine.outcome]} gate #{gate.id} at {mine.decided_at:%Y-%m-%d %H:%M} UTC"
                   + (f"; the gate is {closed_text(gate, decisions)}" if gate.status != "open" else ""))
        return _result(gate, decisions, recorded=False, already=already)
    for seat in seats:
        decision = m.Decision(gate_id=gate.id, person=seat, outcome=outcome, comment=comment, entry_point=entry_point,
                              decided_by=person if person != seat else "")
        s.add(decision)
        s.flush()
        decisions.append(decision)
        audit(s, gate.campaign_id, "decision.recorded", gate.key, actor=person, outcome=outcome, comment=comment,
              entry_point=entry_point, gate_id=gate.id, **({"on_behalf_of": seat} if seat != person else {}))
    _close_if_decided(s, gate, decisions, actor=person)
    return _result(gate, decisions, recorded=True, seats=tuple(seats))


def _open_seats(s: Session, gate: m.ApprovalGate, decisions: list[m.Decision], person: str, outcome: str) -> list[str]:
    """The seats `person` decides now; [] when this same decision is already on record; UserError when they may not."""
    mine = decided_by(decisions, person)
    if mine and mine[0].outcome != outcome:
        raise UserError(f"{person} already {VERBS[mine[0].outcome]} gate {gate.id} ({gate.key}) at "
                        f"{mine[0].decided_at:%Y-%m-%d %H:%M} UTC; a decision cannot be changed")
    held = seats_of(s, gate, person)
    seats = undecided_seats(s, gate, decisions, person, held)
    if mine and not seats:
        return []
    if gate.status != "open":
        raise UserError(f"gate {gate.id} ({gate.key}) is already closed as {closed_text(gate, decisions)}; "
                        f"nothing was recorded")
    if not held:
        raise UserError(f"{person} is not an approver of gate {gate.id} ({gate.key}) nor standing in for one; "
                        f"its approvers are {', '.join(gate.approvers)}")
    if gate.submitted_by and gate.submitted_by in (person, *seats):
        if person == gate.submitted_by or seats == [gate.submitted_by]:
            others = [p for p in gate.approvers if p != gate.submitted_by]
            raise UserError(f"{person} cannot decide on work {gate.submitted_by} submitted (separation of duties); "
                            f"ask {', '.join(others) or 'another approver'}")
        seats.remove(gate.submitted_by)  # a stand-in never decides for the person who submitted the work
    if not seats:
        raise UserError(f"{', '.join(held)} {'has' if len(held) == 1 else 'have'} already decided gate {gate.id}; "
                        f"{person} cannot decide for them again")
    return seats


def _close_if_decided(s: Session, gate: m.ApprovalGate, decisions: list[m.Decision], actor: str) -> None:
    status = evaluate(gate, decisions)
    if status != "open":
        _close(s, gate, status, actor, m.utcnow())


def _close(s: Session, gate: m.ApprovalGate, status: str, actor: str, at: dt.datetime) -> None:
    gate.status, gate.closed_at = status, at
    s.add(gate)
    audit(s, gate.campaign_id, "gate.closed", gate.key, actor=actor, status=status, gate_id=gate.id)


def _result(gate: m.ApprovalGate, decisions: list[m.Decision], recorded: bool, seats: tuple[str, ...] = (),
            already: str = "") -> DecisionResult:
    return DecisionResult(gate.id, gate.key, gate.campaign_id, gate.flow_run_id, gate.status, recorded,
                          waiting_on(gate, decisions), seats, already)


def decide_by_link(s: Session, claim, comment: str = "") -> DecisionResult:
    """A decision from a verified one-click link: used once, in the same transaction as the decision."""
    from campaignflow.signing import LinkRefused

    if s.get(m.UsedLink, claim.nonce) is not None:
        raise LinkRefused("This link has already been used. Each link decides once.", 409)
    s.add(m.UsedLink(nonce=claim.nonce, gate_id=claim.gate_id, person=claim.person))
    s.flush()
    return decide(s, claim.gate_id, claim.person, claim.decision, comment, entry_point="web")


# -- delegation --------------------------------------------------------------------------------

def delegate(s: Session, person: str, to: str, starts: dt.date, ends: dt.date, reason: str = "") -> m.Delegation:
    """`person` is out of office from `starts` to `ends`; `to` decides their gates meanwhile."""
    if person == to:
        raise UserError("a person cannot delegate to themselves; name someone else with --to")
    if ends < starts:
        raise UserError(f"--until {ends} is before --from {starts}; the range must end on or after it starts")
    known = set(s.exec(select(m.Member.handle)).all())
    for who, flag in ((person, "--as"), (to, "--to")):
        if who not in known:
            raise UserError(f"{flag} {who!r} is not a person on any campaign")
    overlapping = s.exec(select(m.Delegation).where(m.Delegation.person == person, m.Delegation.starts <= ends,
                                                    m.Delegation.ends >= starts)).first()
    if overlapping is not None:
        raise UserError(f"{person} already delegates to {overlapping.delegate} from {overlapping.starts} to "
                        f"{overlapping.ends}; choose dates that do not overlap")
    reason = checked_text(reason, "--reason")
    row = m.Delegation(person=person, delegate=to, starts=starts, ends=ends, reason=reason)
    s.add(row)
    s.flush()
    for campaign_id in s.exec(select(m.Member.campaign_id).where(m.Member.handle == person)).all():
        audit(s, campaign_id, "gate.delegated", f"{person} -> {to}", actor=person, delegate=to,
              starts=str(starts), ends=str(ends), reason=reason)
    return row


# -- due dates ---------------------------------------------------------------------------------

def apply_timeouts(s: Session, now: dt.datetime | None = None, gate_ids: list[int] | None = None) -> list[DecisionResult]:
    """Act on open gates past their due date, as each gate's `on_timeout` says; returns the gates that changed.

    escalate: the escalation approvers join the gate, any one of them may now decide, and a new due
    date follows; approve / reject: the gate closes that way, recorded as a decision by `timeout`.
    """
    now = now or m.utcnow()
    query = (select(m.ApprovalGate.id).where(m.ApprovalGate.status == "open", m.ApprovalGate.due_at.is_not(None),
                                             m.ApprovalGate.due_at <= now, m.ApprovalGate.on_timeout != "wait"))
    if gate_ids is not None:
        query = query.where(m.ApprovalGate.id.in_(gate_ids))
    changed = []
    for gate_id in s.exec(query).all():
        gate = find_gate(s, gate_id, lock=True)
        if gate.status != "open" or gate.due_at is None or m.as_utc(gate.due_at) > now:
            continue  # decided or moved on while we looked
        if gate.on_timeout in ("approve", "reject"):
            outcome = gate.on_timeout
            comment = f"not decided by {gate.due_at:%Y-%m-%d %H:%M} UTC: {VERBS[outcome]} automatically"
            decisions = gate_decisions(s, gate.id)
            decision = m.Decision(gate_id=gate.id, person=TIMEOUT_ACTOR, outcome=outcome, comment=comment,
                                  entry_point="timeout")
            s.add(decision)
            s.flush()
            audit(s, gate.campaign_id, "gate.timed_out", gate.key, outcome=outcome, due_at=gate.due_at.isoformat(),
                  gate_id=gate.id)
            _close(s, gate, OUTCOMES[outcome], "engine", now)
            changed.append(_result(gate, decisions + [decision], recorded=True))
        elif gate.on_timeout == "escalate":
            joining = [p for p in gate.escalate_to if p not in gate.approvers]
            previous_due = gate.due_at
            gate.approvers = gate.approvers + joining
            gate.policy, gate.quorum = "any", None
            gate.escalation_level += 1
            gate.on_timeout = "wait"  # one escalation; the reminders keep chasing after that
            gate.due_at = None
            s.add(gate)
            audit(s, gate.campaign_id, "gate.escalated", gate.key, to=joining, level=gate.escalation_level,
                  due_at=previous_due.isoformat(), gate_id=gate.id)
            changed.append(_result(gate, gate_decisions(s, gate.id), recorded=True))
    return changed


# -- reading -----------------------------------------------------------------------------------

def pending_for(s: Session, person: str | None = None,
                campaign_id: str | None = None) -> list[tuple[m.ApprovalGate, list[str]]]:
    """Open gates with the approvers still to decide; with `person`, those waiting on them or on whom they
    stand in for; with `campaign_id`, one campaign's."""
    query = select(m.ApprovalGate).where(m.ApprovalGate.status == "open").order_by(m.ApprovalGate.id)
    if campaign_id is not None:
        query = query.where(m.ApprovalGate.campaign_id == campaign_id)
    gates = list(s.exec(query))
    if not gates:
        return []
    by_gate: dict[int, list[m.Decision]] = {}
    for d in s.exec(select(m.Decision).where(m.Decision.gate_id.in_([g.id for g in gates]))):
        by_gate.setdefault(d.gate_id, []).append(d)
    seats = {person} if person else set()
    if person:
        seats |= {absent for absent, stand_in in active_delegations(s, dt.date.today()).items() if stand_in == person}
    out = []
    for gate in gates:
        left = waiting_on(gate, by_gate.get(gate.id, []))
        if person is None or seats & set(left):
            out.append((gate, left))
    return out
