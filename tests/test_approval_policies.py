"""Gate policies: quorum, primary, routing by amount, stages, delegation, timeouts, audit (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy
import yaml
from sqlmodel import select

from campaignflow import approvals, db, lifecycle, models as m, store
from campaignflow.errors import SpecInvalid, UserError
from campaignflow.spec import validate_spec_data
from conftest import ROOT, cli, future_spec

TEAM = [
    {"handle": "lee", "name": "Lee Marketing", "roles": ["marketing_lead"]},
    {"handle": "ana", "name": "Ana Ops", "roles": ["marketing_lead"]},
]


def spec_with(approvals_section: dict | None = None, budget_amount: float | None = None, **changes) -> dict:
    data = future_spec(**changes)
    data["people"] += TEAM
    if approvals_section:
        data["approvals"] = approvals_section
    if budget_amount is not None:
        data["budget"] = [{"deliverable": "media-buying", "category": "media", "amount": budget_amount}]
    return data


def register(data: dict) -> str:
    spec = validate_spec_data(data)
    with db.session() as s:
        store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
    return spec.id


def next_gate(campaign_id: str, kind: str):
    with db.session() as s:
        return lifecycle.next_plan_gate(s, campaign_id, kind)


def decide(gate, person, outcome="approve", comment="ok"):
    with db.session(write=True) as s:
        return approvals.decide(s, gate, person, outcome, comment)


GOALS_ANY = {"approvers": ["cmo"]}


def test_quorum_two_of_three(store_url):
    cid = register(spec_with({"goals": {"approvers": ["priya", "lee", "ana"], "policy": "quorum", "quorum": 2},
                              "budget": GOALS_ANY}))
    gate = next_gate(cid, "goals")
    assert decide(gate.id, "lee").status == "open"
    assert decide(gate.id, "ana", "reject", "no").status == "open"  # 2 approvals are still possible
    assert decide(gate.id, "priya").status == "approved"


def test_quorum_fails_when_it_can_no_longer_be_reached(store_url):
    cid = register(spec_with({"goals": {"approvers": ["priya", "lee", "ana"], "policy": "quorum", "quorum": 2},
                              "budget": GOALS_ANY}))
    gate = next_gate(cid, "goals")
    decide(gate.id, "lee", "reject", "no")
    assert decide(gate.id, "ana", "reject", "no").status == "rejected"


def test_primary_decision_alone_closes_the_gate(store_url):
    cid = register(spec_with({"goals": {"approvers": ["priya", "lee", "ana"], "policy": "all", "primary": "priya"},
                              "budget": GOALS_ANY}))
    gate = next_gate(cid, "goals")
    assert decide(gate.id, "lee").status == "open"
    assert decide(gate.id, "priya").status == "approved"


ROUTING = {"goals": GOALS_ANY, "budget": {"routing": [
    {"up_to": 10000, "approvers": ["marketing_lead"]},
    {"up_to": 100000, "approvers": ["cmo"]},
    {"approvers": ["cmo", "finance"], "policy": "all"},
]}}


@pytest.mark.parametrize("amount, approvers, policy", [
    (8000, ["lee", "ana"], "any"), (10000, ["lee", "ana"], "any"), (45000, ["priya"], "any"),
    (250000, ["priya", "felix"], "all")])
def test_budget_routing_by_amount(store_url, amount, approvers, policy):
    cid = register(spec_with(ROUTING, budget_amount=amount))
    gate = next_gate(cid, "budget")
    assert (gate.approvers, gate.policy, gate.amount) == (approvers, policy, amount)


def test_stages_run_in_order_and_changes_reset_earlier_approvals(store_url):
    cid = register(spec_with({"goals": GOALS_ANY, "budget": {"stages": [
        {"name": "internal", "approvers": ["maria", "tom", "sam"], "policy": "quorum", "quorum": 2},
        {"name": "client", "approvers": ["client_marketing", "cmo"], "policy": "any"}]}}))
    internal = next_gate(cid, "budget")
    assert (internal.stage, internal.stage_index, internal.stages_total) == ("internal", 0, 2)
    assert "stage 1 of 2" in internal.title
    decide(internal.id, "tom")
    with pytest.raises(UserError, match="separation of duties"):  # maria (campaign manager) submitted the budget
        decide(internal.id, "maria")
    assert next_gate(cid, "budget").id == internal.id  # still open: waiting on a second approval
    cid2 = register(spec_with({"goals": GOALS_ANY, "budget": {"stages": [
        {"name": "internal", "approvers": ["tom"]},
        {"name": "client", "approvers": ["client_marketing", "cmo"]}]}}, id="staged-two"))
    first = next_gate(cid2, "budget")
    decide(first.id, "tom")
    client = next_gate(cid2, "budget")
    assert (client.stage, client.approvers, client.version) == ("client", ["jana", "priya"], 1)
    decide(client.id, "jana", "request_changes", "Split media by month")
    redo = next_gate(cid2, "budget")
    assert (redo.stage, redo.version) == ("internal", 2) and redo.key.endswith("/v2/internal")
    assert "jana: Split media by month" in redo.description
    decide(redo.id, "tom")
    final = next_gate(cid2, "budget")
    assert final.stage == "client" and final.version == 2
    decide(final.id, "priya")
    assert next_gate(cid2, "budget") == "approved"


def test_delegation_records_both_names(store_url):
    cid = register(spec_with())
    gate = next_gate(cid, "goals")  # approvers: priya
    today = dt.date.today()
    with db.session(write=True) as s:
        approvals.delegate(s, "priya", "felix", today - dt.timedelta(days=1), today + dt.timedelta(days=5), "holiday")
    with db.session() as s:
        assert [g.id for g, _ in approvals.pending_for(s, "felix")] == [gate.id]
    result = decide(gate.id, "felix")
    assert result.status == "approved"
    with db.session() as s:
        d = store.gate_decisions(s, gate.id)[0]
        event = s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "decision.recorded")).one()
    assert (d.person, d.decided_by) == ("priya", "felix")
    assert event.actor == "felix" and event.detail["on_behalf_of"] == "priya"


def test_delegation_mistakes(store_url):
    register(spec_with())
    today = dt.date.today()
    with db.session(write=True) as s:
        approvals.delegate(s, "priya", "felix", today, today + dt.timedelta(days=3))
    cases = [("priya", "priya", 0, 1, "cannot delegate to themselves"),
             ("priya", "felix", 3, 1, "is before --from"),
             ("priya", "ghost", 0, 1, "--to 'ghost' is not a person"),
             ("priya", "tom", 2, 6, "already delegates to felix")]
    for person, to, start, end, message in cases:
        with pytest.raises(UserError, match=message), db.session(write=True) as s:
            approvals.delegate(s, person, to, today + dt.timedelta(days=start), today + dt.timedelta(days=end))


def test_delegation_outside_its_dates_does_not_count(store_url):
    cid = register(spec_with())
    gate = next_gate(cid, "goals")
    today = dt.date.today()
    with db.session(write=True) as s:
        approvals.delegate(s, "priya", "felix", today + dt.timedelta(days=10), today + dt.timedelta(days=12))
    with pytest.raises(UserError, match="felix is not an approver of gate .* nor standing in for one"):
        decide(gate.id, "felix")


def _due_gate(on_timeout: str, escalate_to=None):
    timing = {"due_days": 2, "on_timeout": on_timeout}
    if escalate_to:
        timing["escalate_to"] = escalate_to
    cid = register(spec_with({"goals": {"approvers": ["marketing_lead"], "policy": "all", **timing},
                              "budget": GOALS_ANY}))
    gate = next_gate(cid, "goals")
    assert gate.due_at is not None
    due = m.as_utc(gate.due_at)
    assert (due.date() - dt.date.today()).days >= 2  # two business days later, weekends skipped
    return gate, due


def test_timeout_escalates_to_the_next_level(store_url):
    gate, due = _due_gate("escalate", ["cmo"])
    with db.session(write=True) as s:
        assert approvals.apply_timeouts(s, due - dt.timedelta(minutes=1)) == []  # not due yet
        [result] = approvals.apply_timeouts(s, due + dt.timedelta(minutes=1))
    assert result.status == "open" and result.waiting_on == ["lee", "ana", "priya"]
    assert decide(gate.id, "priya").status == "approved"  # after escalation any one of them decides
    with db.session() as s:
        assert s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "gate.escalated")).one().detail["to"] == ["priya"]


@pytest.mark.parametrize("action, status", [("approve", "approved"), ("reject", "rejected")])
def test_timeout_auto_decides(store_url, action, status):
    gate, due = _due_gate(action)
    decide(gate.id, "lee")
    with db.session(write=True) as s:
        [result] = approvals.apply_timeouts(s, due + dt.timedelta(hours=1))
        assert approvals.apply_timeouts(s, due + dt.timedelta(hours=2)) == []  # once
    assert result.status == status
    with db.session() as s:
        timeout = [d for d in store.gate_decisions(s, gate.id) if d.entry_point == "timeout"]
        assert timeout[0].person == "timeout" and timeout[0].outcome == action
        assert s.exec(select(m.AuditEvent).where(m.AuditEvent.action == "gate.timed_out")).one()


def test_wait_never_times_out(store_url):
    gate, due = _due_gate("wait")
    with db.session(write=True) as s:
        assert approvals.apply_timeouts(s, due + dt.timedelta(days=30)) == []


def test_audit_log_is_append_only(store_url):
    register(spec_with())
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        with db.session() as s:
            s.exec(sqlalchemy.text("UPDATE auditevent SET actor = 'mallory'"))
    with pytest.raises(sqlalchemy.exc.DatabaseError, match="append-only"):
        with db.session() as s:
            s.exec(sqlalchemy.text("DELETE FROM auditevent"))


POLICY_MISTAKES = [
    ({"approvers": ["priya", "lee"], "policy": "quorum", "quorum": 3},
     "approvals.goals.quorum: 3 approvals can never come from 2 approver(s)"),
    ({"approvers": ["priya"], "policy": "quorum"}, "approvals.goals.quorum: policy quorum needs `quorum: N`"),
    ({"approvers": ["lee"], "primary": "priya"}, "approvals.goals.primary: 'priya' is not one of this gate's approvers"),
    ({"approvers": ["cmo"], "stages": [{"name": "a", "approvers": ["cmo"]}]},
     "approvals.goals: give exactly one of approvers, stages or routing (found: approvers, stages)"),
    ({"routing": [{"approvers": ["cmo"]}]}, "approvals.goals.routing: routing by amount is for the budget gate only"),
    ({"approvers": ["cmo"], "on_reject": "drop"}, "approvals.goals.on_reject: a rejected goals gate stops the campaign"),
    ({"approvers": ["cmo"], "on_timeout": "escalate", "due_days": 2, "escalate_to": ["cfo"]},
     "approvals.goals.escalate_to[0]: 'cfo' is neither a person"),
    ({"approvers": ["cmo"], "on_timeout": "escalate", "due_days": 2},
     "approvals.goals.on_timeout: escalate needs `escalate_to`"),
    ({"approvers": ["cmo"], "on_timeout": "approve"}, "approvals.goals.on_timeout: approve needs `due_days`"),
]


@pytest.mark.parametrize("goals, message", POLICY_MISTAKES)
def test_policy_mistakes_are_named(home, goals, message):
    with pytest.raises(SpecInvalid) as caught:
        validate_spec_data(spec_with({"goals": goals, "budget": GOALS_ANY}))
    assert message in "\n".join(caught.value.problems)


def test_routing_thresholds_must_increase_and_cover_the_total(home):
    budget = {"routing": [{"up_to": 50000, "approvers": ["cmo"]}, {"up_to": 20000, "approvers": ["finance"]}]}
    with pytest.raises(SpecInvalid) as caught:
        validate_spec_data(spec_with({"goals": GOALS_ANY, "budget": budget}, budget_amount=90000))
    problems = "\n".join(caught.value.problems)
    assert "approvals.budget.routing[1].up_to: thresholds must increase (20000 after 50000)" in problems
    assert "no route approves the budget total 90,000.00" in problems


def test_audit_command_prints_and_exports_csv(home):
    cid = register(spec_with())
    gate = next_gate(cid, "goals")
    decide(gate.id, "priya", "approve", "Go, team")
    text = cli("audit", cid)
    assert text.returncode == 0
    assert "gate.opened" in text.stdout and "decision.recorded" in text.stdout and "Go, team" in text.stdout
    exported = cli("audit", cid, "--csv")
    lines = exported.stdout.strip().splitlines()
    assert lines[0] == "at,actor,action,subject,entry_point,detail"
    assert any(",priya,decision.recorded," in line and ",cli," in line for line in lines)
    missing = cli("audit", "nope")
    assert missing.returncode == 1 and "there is no campaign 'nope'" in missing.stderr


def test_delegate_command(home):
    register(spec_with())
    ok = cli("delegate", "--as", "priya", "--to", "felix", "--from", "2030-01-01", "--until", "2030-01-05")
    assert ok.returncode == 0 and "felix decides priya's gates from 2030-01-01 to 2030-01-05" in ok.stdout
    bad = cli("delegate", "--as", "priya", "--to", "felix", "--from", "01/02/2030", "--until", "2030-01-05")
    assert bad.returncode == 1 and "--from '01/02/2030' is not a date; write it as YYYY-MM-DD" in bad.stderr
