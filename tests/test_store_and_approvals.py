"""The store and the one decision door, on SQLite and on PostgreSQL."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import yaml
from sqlmodel import select

from campaignflow import approvals, db, lifecycle, models as m, store
from campaignflow.errors import UserError
from campaignflow.spec import validate_spec_data
from conftest import future_spec
from ingest_helpers import measure


def register(data=None):
    data = data or future_spec()
    spec = validate_spec_data(data)
    with db.session() as s:
        campaign, created = store.register_campaign(s, spec, yaml.safe_dump(data), Path("."))
    return spec, campaign, created


def test_register_is_idempotent_and_refuses_a_changed_spec(store_url):
    spec, campaign, created = register()
    assert created
    _, again, created_again = register()
    assert not created_again and again.id == campaign.id
    changed = future_spec()
    changed["budget"][0]["amount"] = 9999
    with pytest.raises(UserError, match="already registered with a different spec"):
        register(changed)
    with db.session() as s:
        assert len(s.exec(select(m.BudgetLine).where(m.BudgetLine.campaign_id == spec.id)).all()) == 5
        assert len(s.exec(select(m.Member)).all()) == len(spec.people)


def _budget_gate(spec):
    with db.session() as s:
        return lifecycle.next_plan_gate(s, spec.id, "budget")


def test_open_gate_is_reused_on_rerun(store_url):
    spec, _, _ = register()
    first, second = _budget_gate(spec), _budget_gate(spec)
    assert first.id == second.id
    assert first.approvers == ["priya", "felix"] and first.policy == "all"
    assert first.amount == pytest.approx(28700)


def decide(gate, person, outcome="approve", comment=""):
    with db.session(write=True) as s:
        return approvals.decide(s, gate, person, outcome, comment)


def test_policy_all_waits_for_everyone(store_url):
    spec, _, _ = register()
    gate = _budget_gate(spec)
    first = decide(gate.id, "priya")
    assert first.status == "open" and first.waiting_on == ["felix"]
    second = decide(gate.key, "felix")
    assert second.status == "approved" and second.recorded


def test_policy_any_first_decision_wins(store_url):
    spec, _, _ = register()
    with db.session() as s:
        gate = lifecycle.next_plan_gate(s, spec.id, "goals")
    assert gate.policy == "any" and gate.approvers == ["priya"]
    assert decide(gate.id, "priya", "reject", "Not SMART enough").status == "rejected"


def test_user_mistakes_are_refused_and_nothing_is_recorded(store_url):
    spec, _, _ = register()
    gate = _budget_gate(spec)
    with pytest.raises(UserError, match="there is no gate '999'"):
        decide("999", "priya")
    with pytest.raises(UserError, match="tom is not an approver of gate .* its approvers are priya, felix"):
        decide(gate.id, "tom")
    with pytest.raises(UserError, match="a comment is required"):
        decide(gate.id, "priya", "request_changes", "  ")
    with pytest.raises(UserError, match="unknown decision"):
        decide(gate.id, "priya", "maybe")
    with db.session() as s:
        assert store.gate_decisions(s, gate.id) == []


def test_double_click_records_one_decision_and_a_closed_gate_says_so(store_url):
    spec, _, _ = register()
    gate = _budget_gate(spec)
    decide(gate.id, "priya", "request_changes", "Cut media by 10 %")
    again = decide(gate.id, "priya", "request_changes", "Cut media by 10 %")
    assert not again.recorded and again.status == "changes_requested"
    with pytest.raises(UserError, match="already requested changes on gate"):
        decide(gate.id, "priya", "approve")
    with pytest.raises(UserError, match="is already closed as changes requested by priya at .* UTC; nothing was recorded"):
        decide(gate.id, "felix", "approve")
    with db.session() as s:
        assert len(store.gate_decisions(s, gate.id)) == 1


def test_submitter_cannot_approve_own_work(store_url):
    data = future_spec()
    data["deliverables"][0]["reviewers"] = [["sam", "maria"]]  # sam owns the brief
    data["approvals"]["reviews"] = {"policy": "any"}  # with `all` the spec is refused: sam's approval never comes
    spec, _, _ = register(data)
    with db.session() as s:
        lifecycle.content_drafts(s, spec.id)
        gates = lifecycle.open_review_gates(s, spec.id)
    brief = next(g for g in gates if g.subject == "messaging-brief")
    with pytest.raises(UserError, match="separation of duties"):
        decide(brief.id, "sam")


def test_simultaneous_deciders_are_both_recorded_once(store_url):
    spec, _, _ = register()
    gate = _budget_gate(spec)
    results, errors = [], []
    barrier = threading.Barrier(2)

    def click(person):
        barrier.wait()
        try:
            results.append(decide(gate.id, person))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=click, args=(p,)) for p in ("priya", "felix")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(r.status for r in results) == ["approved", "open"]
    with db.session() as s:
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "gate.closed")).all()
        assert len(events) == 1
        assert len(store.gate_decisions(s, gate.id)) == 2


def test_review_rounds_move_assets(store_url):
    spec, _, _ = register()
    with db.session() as s:
        lifecycle.content_drafts(s, spec.id)
        gates = {g.subject: g for g in lifecycle.open_review_gates(s, spec.id)}
    assert set(gates) == {"messaging-brief", "landing-page", "invite-emails", "linkedin-ads"}
    landing = gates["landing-page"]
    decide(landing.id, "maria", "request_changes", "Lead with the date")
    with db.session() as s:
        landing = s.get(m.ApprovalGate, landing.id)
        assert "changes requested" in lifecycle.settle_review(s, spec.id, landing)
        reopened = {g.subject: g for g in lifecycle.open_review_gates(s, spec.id)}["landing-page"]
    assert reopened.version == 2 and reopened.round == 1 and reopened.key.endswith("r1v2")
    decide(reopened.id, "maria")
    with db.session() as s:
        lifecycle.settle_review(s, spec.id, s.get(m.ApprovalGate, reopened.id))
        final = {g.subject: g for g in lifecycle.open_review_gates(s, spec.id)}["landing-page"]
    assert final.round == 2 and final.approvers == ["jana", "priya"]
    decide(final.id, "jana")
    decide(final.id, "priya", "reject", "Off brand")
    with db.session() as s:
        assert "dropped" in lifecycle.settle_review(s, spec.id, s.get(m.ApprovalGate, final.id))
        deliverable = s.exec(select(m.Deliverable).where(m.Deliverable.key == "landing-page")).one()
        assert deliverable.status == "dropped"


def test_timeline_and_measurement_persist(store_url):
    spec, _, _ = register()
    with db.session() as s:
        report = lifecycle.timeline(s, spec.id)
        assert "critical path messaging-brief -> landing-page -> linkedin-ads -> media-buying" in report.summary
        media = s.exec(select(m.Deliverable).where(m.Deliverable.key == "media-buying")).one()
        assert media.critical and media.due is not None
    first = measure(spec.id)
    again = measure(spec.id)  # re-reading the same export overwrites, never duplicates
    with db.session() as s:
        rows = s.exec(select(m.MetricDaily)).all()
    assert first.summary == again.summary
    assert len(rows) == 140  # 112 mapped + 28 rows of an unmapped always-on campaign, kept
    assert sum(r.campaign_id is None for r in rows) == 28


def approve_plan(campaign_id):
    """Approve the goals gate (priya) and the budget gate (priya and felix), as the lifecycle would ask."""
    for kind, people in (("goals", ["priya"]), ("budget", ["priya", "felix"])):
        with db.session() as s:
            gate = lifecycle.next_plan_gate(s, campaign_id, kind)
        for person in people:
            decide(gate.id, person)


def test_marking_deliverables_done(store_url):
    spec, _, _ = register()
    with db.session() as s:
        lifecycle.timeline(s, spec.id)
    approve_plan(spec.id)
    with pytest.raises(UserError, match="sam neither owns media-buying \\(omar does\\) nor manages the campaign"):
        with db.session() as s:
            lifecycle.mark_done(s, spec.id, "media-buying", "sam")
    with pytest.raises(UserError, match="has no deliverable 'media'"):
        with db.session() as s:
            lifecycle.mark_done(s, spec.id, "media", "omar")
    with pytest.raises(UserError, match="landing-page is still planned: its reviews must approve it"):
        with db.session() as s:
            lifecycle.mark_done(s, spec.id, "landing-page", "lea")
    with db.session() as s:
        for key in ("messaging-brief", "landing-page", "linkedin-ads"):
            s.exec(select(m.Deliverable).where(m.Deliverable.key == key)).one().status = "done"
    with db.session() as s:
        assert lifecycle.mark_done(s, spec.id, "media-buying", "tom")[0].status == "done"  # the account manager may
        lifecycle.mark_done(s, spec.id, "media-buying", "omar")  # again: nothing new
        events = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "deliverable.done")).all()
    assert [e.actor for e in events] == ["tom"] and "forced_past" not in events[0].detail
