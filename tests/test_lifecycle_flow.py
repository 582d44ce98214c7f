"""The lifecycle flow end to end on a real Prefect server (the test harness), driven through the real CLI."""

from __future__ import annotations

import contextvars
import json
import threading
import time

import pytest
from sqlmodel import select

from campaignflow import db, lifecycle, models as m, store
from campaignflow.approvals import pending_for
from campaignflow.spec import validate_spec_data
from conftest import ROOT, Terminal, cli, future_spec, write_spec

pytestmark = pytest.mark.prefect




def approve_everything(campaign_id: str, stop: threading.Event, skip_kinds=()):
    """A background approver using the same decision path as the CLI."""
    from flows.gates import decide_and_resume

    while not stop.wait(0.3):
        with db.session() as s:
            pending = [(g, left) for g, left in pending_for(s) if g.campaign_id == campaign_id]
        for gate, left in pending:
            if gate.kind not in skip_kinds:
                decide_and_resume(gate.id, left[0], "approve", entry_point="test")


def steps_by_name(campaign_id: str) -> dict[str, m.StepRun]:
    with db.session() as s:
        return {r.step: r for r in s.exec(select(m.StepRun).where(m.StepRun.campaign_id == campaign_id))}


def test_demo_runs_all_seven_steps(home, prefect_api):
    result = cli("demo", "--pause", "0.2", timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    for n, step in enumerate(m.STEPS, start=1):
        assert f"[{n}/7] {step}:" in result.stdout
    assert "requests changes on gate" in result.stdout  # a review round went back to drafting
    assert "is completed." in result.stdout
    assert "Traceback" not in result.stdout + result.stderr and "CancelledError" not in result.stderr
    status = json.loads(cli("status", "--json").stdout)
    assert [c["status"] for c in status] == ["completed"]
    with db.session() as s:
        demo_id = status[0]["campaign"]
        decisions = s.exec(select(m.Decision)).all()
        assert decisions and {d.entry_point for d in decisions} == {"demo"}
        assert store.completed_steps(s, demo_id) == list(m.STEPS)


def test_run_waits_for_approval_from_another_terminal_and_resumes_after_a_kill(home, tmp_path, prefect_api):
    spec_path = write_spec(tmp_path / "webinar.yaml", future_spec())
    campaign_id = "northwind-webinar-2027q1"
    first = Terminal("run", str(spec_path))
    first.wait_for("waiting at gate #1")
    assert "Campaign northwind-webinar-2027q1 registered" in first.text

    # From a second terminal: the approvals list shows it, the approval resumes the waiting flow.
    listed = json.loads(cli("approvals", "--for", "priya", "--json").stdout)
    assert [g["gate"] for g in listed] == [1]
    approved = cli("approve", "1", "--as", "priya", "--comment", "Go")
    assert approved.returncode == 0, approved.stderr
    assert "priya approved gate #1" in approved.stdout and "resumes now" in approved.stdout
    first.wait_for("[1/7] goals: 2 goal(s) approved", timeout=30)
    first.wait_for("waiting at gate #2")

    # Kill the flow process while it waits at the budget gate; running again continues there.
    first.kill()
    with db.session() as s:
        assert s.get(m.Campaign, campaign_id).current_step == "budget"
    second = Terminal("run", str(spec_path))
    second.wait_for("waiting at gate #2")
    assert "[1/7] goals: already completed, skipped" in second.text
    assert "Campaign northwind-webinar-2027q1 continues" in second.text
    stop = threading.Event()
    approver = threading.Thread(target=contextvars.copy_context().run, args=(approve_everything, campaign_id, stop))
    approver.start()
    try:
        assert second.finish() == 0, second.text
    finally:
        stop.set()
        approver.join()
    assert "is completed." in second.text
    steps = steps_by_name(campaign_id)
    assert all(steps[s].status == "completed" for s in m.STEPS)
    assert steps["goals"].attempts == 1  # never repeated
    assert steps["budget"].attempts == 2  # interrupted once, continued
    with db.session() as s:
        gates = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.kind == "budget")).all()
        assert len(gates) == 1  # the same gate, not a second one

    again = cli("run", str(spec_path))
    assert again.returncode == 0 and "Nothing to do: the campaign is completed" in again.stdout


def _register(data) -> str:
    import yaml

    spec = validate_spec_data(data)
    with db.session() as s:
        store.register_campaign(s, spec, yaml.safe_dump(data), ROOT)
    return spec.id


def test_rejected_goals_stop_the_campaign(home, prefect_api):
    from flows.lifecycle import campaign_lifecycle
    from flows.gates import decide_and_resume

    campaign_id = _register(future_spec())

    def reject_when_open():
        for _ in range(200):
            with db.session() as s:
                pending = pending_for(s)
            if pending:
                decide_and_resume(pending[0][0].id, "priya", "reject", "Targets are not tied to pipeline")
                return
            time.sleep(0.2)

    threading.Thread(target=contextvars.copy_context().run, args=(reject_when_open,), daemon=True).start()
    assert campaign_lifecycle(campaign_id) == "stopped"
    with db.session() as s:
        assert s.get(m.Campaign, campaign_id).status == "stopped"
        assert {g.status for g in s.exec(select(m.Goal))} == {"rejected"}
    assert steps_by_name(campaign_id)["goals"].status == "running"
    assert "audience" not in steps_by_name(campaign_id)


def _in_background(fn, *args):
    stop = threading.Event()
    thread = threading.Thread(target=contextvars.copy_context().run, args=(fn, *args, stop), daemon=True)
    thread.start()
    return stop


def test_decision_before_the_flow_waits_is_honoured(home, prefect_api):
    """Approved before the flow reaches the gate: the flow never waits there."""
    from flows.lifecycle import campaign_lifecycle
    from flows.gates import decide_and_resume

    campaign_id = _register(future_spec())
    with db.session() as s:
        gate = lifecycle.next_plan_gate(s, campaign_id, "goals")
    result, resumed = decide_and_resume(gate.id, "priya", "approve")
    assert result.status == "approved" and not resumed  # no flow was waiting yet
    stop = _in_background(approve_everything, campaign_id)
    try:
        assert campaign_lifecycle(campaign_id) == "completed"
    finally:
        stop.set()
    with db.session() as s:
        assert s.get(m.ApprovalGate, gate.id).flow_run_id is None  # the flow never waited on it


def answer_from_the_ui(campaign_id: str, stop: threading.Event):
    """What the Prefect UI does: resume the paused run with typed input (no campaignflow code involved)."""
    from prefect.flow_runs import resume_flow_run

    while not stop.wait(0.3):
        with db.session() as s:
            pending = [(g, left) for g, left in pending_for(s) if g.campaign_id == campaign_id and g.flow_run_id]
        for gate, left in pending[:1]:
            try:
                resume_flow_run(gate.flow_run_id, run_input={"gate": gate.id, "decision": "approve",
                                                              "person": left[0], "comment": "from the UI"})
            except Exception:  # noqa: BLE001  not paused (yet)
                pass


def test_resume_from_the_prefect_ui_form_records_the_decision(home, prefect_api):
    from flows.lifecycle import campaign_lifecycle

    campaign_id = _register(future_spec())
    stop = _in_background(answer_from_the_ui, campaign_id)
    try:
        assert campaign_lifecycle(campaign_id) == "completed"
    finally:
        stop.set()
    with db.session() as s:
        decisions = s.exec(select(m.Decision)).all()
        budget = s.exec(select(m.ApprovalGate).where(m.ApprovalGate.kind == "budget")).one()
    assert decisions and {(d.entry_point, d.comment) for d in decisions} == {("prefect-ui", "from the UI")}
    assert budget.status == "approved"  # policy all: two UI answers, one wait each


def test_cli_decision_mistakes_are_one_clear_sentence(home, prefect_api):
    campaign_id = _register(future_spec())
    with db.session() as s:
        gate = lifecycle.next_plan_gate(s, campaign_id, "budget")
    cases = [
        (("approve", "42", "--as", "priya"), "error: there is no gate '42'"),
        (("approve", str(gate.id), "--as", "tom"), "error: tom is not an approver of gate"),
        (("reject", str(gate.id), "--as", "priya", "--comment", " "), "error: a comment is required"),
    ]
    for args, message in cases:
        result = cli(*args)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith(message), result.stderr
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert cli("reject", str(gate.id), "--as", "priya", "--comment", "Too much media").returncode == 0
    closed = cli("approve", str(gate.id), "--as", "felix")
    assert closed.returncode == 1 and "already closed as rejected" in closed.stderr
    missing = cli("request-changes", str(gate.id), "--as", "felix")
    assert missing.returncode == 2 and "--comment" in missing.stderr
