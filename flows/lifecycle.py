"""The campaign lifecycle: seven steps, each a subflow, stopping at approval gates.

goals (approval) -> audience -> budget (approval) -> timeline (+ channel plan)
-> content drafts -> reviews (rounds per asset) -> measurement.

Each step records its progress in the campaign store, so running the flow
again after a crash continues at the first step not completed and never
repeats a completed one. Each step leaves a markdown artifact.

Run it:  campaignflow run examples/b2b-webinar.yaml
"""

from __future__ import annotations

from typing import Callable

from prefect import flow
from prefect.context import FlowRunContext

from campaignflow import lifecycle as steps
from campaignflow import store
from campaignflow.lifecycle import StepReport
from campaignflow.models import STEPS
from flows.gates import wait_for_gate, wait_for_gates
from tasks.artifacts import publish_step_report
from tasks.notify import notify_now, notify_step_failed
from tasks.progress import say
from tasks.store import store_task

completed_steps = store_task(store.completed_steps)
start_step = store_task(store.start_step)
complete_step = store_task(store.complete_step)
set_campaign_state = store_task(store.set_campaign_state)
next_plan_gate = store_task(steps.next_plan_gate)
settle_goals = store_task(steps.settle_goals)
research_audience = store_task(steps.audience, name="research-audience")
settle_budget = store_task(steps.settle_budget)
plan_timeline = store_task(steps.timeline, name="plan-timeline")
submit_first_drafts = store_task(steps.content_drafts, name="submit-first-drafts")
open_review_gates = store_task(steps.open_review_gates)
settle_review = store_task(steps.settle_review)
report_reviews = store_task(steps.reviews_report, name="report-reviews")
measure = store_task(steps.measurement, name="measure-against-goals")


def _approval_step(campaign_id: str, kind: str, settle: Callable) -> tuple[StepReport, bool]:
    """Wait at each stage of the step's gate in turn; changes requested opens the next version."""
    while True:
        gate = next_plan_gate(campaign_id, kind)
        if isinstance(gate, str):
            return settle(campaign_id, gate), gate == "approved"
        status = wait_for_gate(gate.id)
        if status == "changes_requested":
            say(f"changes requested on gate #{gate.id}; it opens again as a new version")
        elif status == "approved" and gate.stage_index + 1 < gate.stages_total:
            say(f"gate #{gate.id} approved at stage {gate.stage}; on to the next stage")


@flow(name="goals")
def goals_step(campaign_id: str) -> tuple[StepReport, bool]:
    return _approval_step(campaign_id, "goals", settle_goals)


@flow(name="audience")
def audience_step(campaign_id: str) -> tuple[StepReport, bool]:
    return research_audience(campaign_id), True


@flow(name="budget")
def budget_step(campaign_id: str) -> tuple[StepReport, bool]:
    return _approval_step(campaign_id, "budget", settle_budget)


@flow(name="timeline")
def timeline_step(campaign_id: str) -> tuple[StepReport, bool]:
    return plan_timeline(campaign_id), True


@flow(name="content-drafts")
def content_step(campaign_id: str) -> tuple[StepReport, bool]:
    return submit_first_drafts(campaign_id), True


@flow(name="reviews")
def reviews_step(campaign_id: str) -> tuple[StepReport, bool]:
    """All assets are reviewed in parallel: wait until any gate closes, move that asset on, repeat."""
    while True:
        gates = open_review_gates(campaign_id)
        if not gates:
            return report_reviews(campaign_id), True
        statuses = wait_for_gates([g.id for g in gates])
        for gate in gates:
            if statuses[gate.id] != "open":
                gate.status = statuses[gate.id]
                moved = settle_review(campaign_id, gate)
                if moved:
                    say(moved)
                if gate.status == "rejected" and gate.on_reject == "stop":
                    return report_reviews(campaign_id), False


@flow(name="measurement")
def measurement_step(campaign_id: str) -> tuple[StepReport, bool]:
    return measure(campaign_id), True


STEP_FLOWS: dict[str, Callable[[str], tuple[StepReport, bool]]] = {
    "goals": goals_step, "audience": audience_step, "budget": budget_step, "timeline": timeline_step,
    "content": content_step, "reviews": reviews_step, "measurement": measurement_step,
}
assert tuple(STEP_FLOWS) == STEPS


@flow(name="campaign-lifecycle", flow_run_name="{campaign_id}")
def campaign_lifecycle(campaign_id: str) -> str:
    """Carry one registered campaign through the seven steps; returns its final status."""
    set_campaign_state(campaign_id, status="running", flow_run_id=str(FlowRunContext.get().flow_run.id))
    done = set(completed_steps(campaign_id))
    for number, step in enumerate(STEPS, start=1):
        label = f"[{number}/{len(STEPS)}] {step}"
        if step in done:
            say(f"{label}: already completed, skipped")
            continue
        say(f"{label}: started")
        start_step(campaign_id, step)
        notify_now()
        try:
            report, go_on = STEP_FLOWS[step](campaign_id)
        except Exception as exc:
            set_campaign_state(campaign_id, status="failed")
            notify_step_failed(campaign_id, step, f"{exc.__class__.__name__}: {exc}")
            raise
        publish_step_report(campaign_id, step, report)
        if not go_on:
            say(f"{label}: {report.summary}")
            set_campaign_state(campaign_id, status="stopped")
            return "stopped"
        complete_step(campaign_id, step, report.summary)
        notify_now()
        say(f"{label}: {report.summary}")
    set_campaign_state(campaign_id, status="completed", step="done")
    return "completed"
