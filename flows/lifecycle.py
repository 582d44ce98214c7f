"""The campaign lifecycle: seven steps, each a subflow, stopping at approval gates.

goals (approval) -> audience -> budget (approval) -> timeline (+ channel plan)
-> content drafts -> reviews (rounds per asset) -> measurement.

Each step records its progress in the campaign store, so running the flow
again after a crash continues at the first step not completed and never
repeats a completed one. Each step leaves a markdown artifact.

Run it:  campaignflow run examples/b2b-webinar.yaml
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from prefect import flow
from prefect.context import FlowRunContext
from prefect.exceptions import Pause

from campaignflow import claims, store
from campaignflow import lifecycle as steps
from campaignflow.lifecycle import StepReport
from campaignflow.models import STEPS
from flows.gates import wait_for_gates
from tasks.artifacts import publish_step_report
from tasks.ingest import refresh_source
from tasks.notify import notify_now, notify_step_failed
from tasks.progress import say
from tasks.store import store_task

claim_campaign = store_task(claims.claim, write=True)
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
settle_reviews = store_task(steps.settle_reviews)
report_reviews = store_task(steps.reviews_report, name="report-reviews")
measurement_sources = store_task(steps.measurement_sources)
measure = store_task(steps.measurement, name="measure-against-goals")


@dataclass(frozen=True)
class StepOutcome:
    """What one pass of a step produced: its report, or the gates it now waits on."""

    report: StepReport | None = None
    go_on: bool = True
    waiting_on: tuple[int, ...] = ()


def _approval_step(campaign_id: str, kind: str, settle: Callable) -> StepOutcome:
    """The next stage or version of the step's gate to wait on, or the settled result."""
    gate = next_plan_gate(campaign_id, kind)
    if isinstance(gate, str):
        return StepOutcome(settle(campaign_id, gate), gate == "approved")
    return StepOutcome(waiting_on=(gate.id,))


@flow(name="goals")
def goals_step(campaign_id: str) -> StepOutcome:
    return _approval_step(campaign_id, "goals", settle_goals)


@flow(name="audience")
def audience_step(campaign_id: str) -> StepOutcome:
    return StepOutcome(research_audience(campaign_id))


@flow(name="budget")
def budget_step(campaign_id: str) -> StepOutcome:
    return _approval_step(campaign_id, "budget", settle_budget)


@flow(name="timeline")
def timeline_step(campaign_id: str) -> StepOutcome:
    return StepOutcome(plan_timeline(campaign_id))


@flow(name="content-drafts")
def content_step(campaign_id: str) -> StepOutcome:
    return StepOutcome(submit_first_drafts(campaign_id))


@flow(name="reviews")
def reviews_step(campaign_id: str) -> StepOutcome:
    """All assets are reviewed in parallel: move on the ones whose gate closed, then wait on the rest."""
    moved, stop = settle_reviews(campaign_id)
    for line in moved:
        say(line)
    gates = [] if stop else open_review_gates(campaign_id)
    if not gates:
        return StepOutcome(report_reviews(campaign_id), not stop)
    return StepOutcome(waiting_on=tuple(g.id for g in gates))


@flow(name="measurement")
def measurement_step(campaign_id: str) -> StepOutcome:
    """Refresh the campaign's metric sources (each an ingestion run of its own), then report from the stored rows."""
    refreshed = [refresh_source(name) for name in measurement_sources(campaign_id)]
    return StepOutcome(measure(campaign_id, refreshed))


STEP_FLOWS: dict[str, Callable[[str], StepOutcome]] = {
    "goals": goals_step, "audience": audience_step, "budget": budget_step, "timeline": timeline_step,
    "content": content_step, "reviews": reviews_step, "measurement": measurement_step,
}
assert tuple(STEP_FLOWS) == STEPS


def run_step(campaign_id: str, step: str) -> StepOutcome:
    """Pass through the step until it has a result, waiting at its gates in between.

    The wait happens here, in the lifecycle run itself: an ad-hoc run pauses, a deployed run
    suspends (and on resume runs again from the top, back to this step).
    """
    outcome = STEP_FLOWS[step](campaign_id)
    while outcome.waiting_on:
        wait_for_gates(list(outcome.waiting_on))
        outcome = STEP_FLOWS[step](campaign_id)
    return outcome


def _held_elsewhere(campaign_id: str, run_id: str) -> bool:
    """Claim (or keep) the campaign for this run; say so and True when another live run holds it."""
    holder = claim_campaign(campaign_id, run_id, *claims.this_process())
    if holder:
        say(f"campaign {campaign_id} is held by run {holder}; this run ({run_id}) stops without doing anything")
    return bool(holder)


@flow(name="campaign-lifecycle", flow_run_name="{campaign_id}")
def campaign_lifecycle(campaign_id: str) -> str:
    """Carry one registered campaign through the seven steps; returns its final status ("held" when another
    run holds the campaign: one lifecycle run per campaign at a time)."""
    run_id = str(FlowRunContext.get().flow_run.id)
    if _held_elsewhere(campaign_id, run_id):
        return "held"
    with claims.leased(campaign_id, run_id, keep_on=(Pause,)):  # a suspended run keeps its claim
        return _carry_through(campaign_id, run_id)


def _carry_through(campaign_id: str, run_id: str) -> str:
    set_campaign_state(campaign_id, status="running", flow_run_id=run_id)
    done = set(completed_steps(campaign_id))
    for number, step in enumerate(STEPS, start=1):
        label = f"[{number}/{len(STEPS)}] {step}"
        if step in done:
            say(f"{label}: already completed, skipped")
            continue
        if _held_elsewhere(campaign_id, run_id):  # recovered elsewhere while this run was away
            return "held"
        say(f"{label}: started")
        start_step(campaign_id, step)
        notify_now()
        try:
            outcome = run_step(campaign_id, step)
        except Exception as exc:
            set_campaign_state(campaign_id, status="failed")
            notify_step_failed(campaign_id, step, f"{exc.__class__.__name__}: {exc}")
            raise
        report = outcome.report
        publish_step_report(campaign_id, step, report)
        if not outcome.go_on:
            say(f"{label}: {report.summary}")
            set_campaign_state(campaign_id, status="stopped")
            return "stopped"
        complete_step(campaign_id, step, report.summary)
        notify_now()
        say(f"{label}: {report.summary}")
    set_campaign_state(campaign_id, status="completed", step="done")
    return "completed"
