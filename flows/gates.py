"""Waiting at an approval gate, and waking the flow that waits.

The gate row in the store is the truth; Prefect's pause is how a flow waits
for it. A flow waits with `pause_flow_run` and a typed `GateDecisionInput`
(the Prefect UI shows it as the resume form). A decision from anywhere
goes through `campaignflow.approvals.decide`, and `decide_and_resume`
then resumes the waiting run. A watcher thread beside the pause covers the
race where a decision lands just before the flow has paused: it sees the
closed gate in the store and resumes the run itself.

This module holds no SQL: the store side is `campaignflow.gate_service`, called through the tasks in
tasks/gates.py inside the flow, and directly by the watcher thread (a task a poll would flood the run's
task list) and by the app (a decision from the CLI or the web is no flow).
"""

from __future__ import annotations

import contextvars
import itertools
import threading
from typing import Literal

from pydantic import Field
from prefect.context import FlowRunContext
from prefect.flow_runs import pause_flow_run, resume_flow_run, suspend_flow_run
from prefect.input import RunInput

from campaignflow import claims, gate_service, models as m, settings
from campaignflow.approvals import DecisionResult
from campaignflow.errors import UserError
from tasks.gates import (attach_run, read_gates, reclaim_campaign, record_decision, suspend_claim,
                         time_out_due_gates)
from tasks.progress import say
from tasks.notify import notify_now


class GateDecisionInput(RunInput):
    gate: int = Field(description="The gate number (#) you are deciding")
    decision: Literal["approve", "request_changes", "reject"] = Field(
        description="approve, request_changes (the work goes back for another round) or reject")
    person: str = Field(description="Your handle as written in the campaign spec, e.g. priya")
    comment: str = Field(default="", description="Required when requesting changes or rejecting")


def _form_text(gates: list[tuple[m.ApprovalGate, list[str]]]) -> str:
    parts = []
    for gate, left in gates:
        amount = f"\n\n**Amount:** {gate.amount:,.2f}" if gate.amount else ""
        due = f" Due {m.as_utc(gate.due_at):%Y-%m-%d %H:%M} UTC." if gate.due_at else ""
        # No signed links here: everyone who can open the run would decide as the link's person.
        parts.append(f"## Gate #{gate.id}: {gate.title}\n\n{gate.description}{amount}\n\n"
                     f"Waiting on: **{', '.join(left)}** (policy: {gate.policy}).{due}")
    first = gates[0][0]
    return ("\n\n---\n\n".join(parts) + "\n\nFill in the gate number, your handle and your decision, "
            f"or from a terminal: `campaignflow approve {first.id} --as PERSON`, or with the one-click link "
            "that each approver gets in their own channel.")


def wait_for_gates(gate_ids: list[int]) -> dict[int, str]:
    """Block until at least one of the gates is closed; return the status of every gate.

    An ad-hoc run waits with `pause_flow_run` (the process stays, polling). A deployed run
    suspends with `suspend_flow_run`: no worker is held while people think, and on resume the
    flow runs again from the top, skipping completed steps, back to this gate. The pause key is
    derived from the store (the gates and how many decisions they hold), so a suspended run that
    was resumed with input from the Prefect UI gets that same input back on re-execution.
    """
    run = FlowRunContext.get().flow_run
    run_id, deployed = str(run.id), run.deployment_id is not None
    refused = 0
    for pause_number in itertools.count():
        time_out_due_gates(gate_ids)
        gates = read_gates(gate_ids)
        if any(g.status != "open" for g, _ in gates):
            return {g.id: g.status for g, _ in gates}
        attach_run(gate_ids, run_id)
        waiting = gate_service.still_waiting_on(gates)
        for gate, left in waiting:
            say(f"waiting at gate #{gate.id} ({gate.title}) for {', '.join(left)}: "
                f"campaignflow approve {gate.id} --as {left[0]}")
        notify_now()  # tell the approvers now, not at the next sweep
        decided = sum(len(ds) for _, ds in gates)
        # A pause key that Prefect has seen is not paused again (the call returns at once), so a key is never
        # reused within one execution: a resume that came late (the watcher and the decider both resume) must
        # not make this loop spin. A suspended run executed again from the top makes the same keys in the
        # same order, and so gets back the input its first pause was answered with.
        key = f"gates-{'-'.join(map(str, gate_ids))}-d{decided}-r{refused}-p{pause_number}"
        form = GateDecisionInput.with_initial_data(description=_form_text(waiting), gate=waiting[0][0].id,
                                                   decision="approve", person=waiting[0][1][0])
        if deployed:
            answer = _suspend(form, key, waiting[0][0].campaign_id, run_id)
        else:
            answer = _pause_with_watcher(form, gate_ids, run_id, key)
        if answer is not None and answer.gate in gate_ids and read_gates([answer.gate])[0][0].status == "open":
            # Resumed from the Prefect UI form: record it through the same door as every decision.
            try:
                record_decision(answer.gate, answer.person, answer.decision, answer.comment, entry_point="prefect-ui")
            except UserError as exc:
                refused += 1
                say(f"decision from the Prefect UI not recorded: {exc}")


# A waiting run must never expire in Prefect: lateness is the store's rule (a gate's due date and
# on_timeout). `suspend_flow_run(timeout=None)` sets no expiry; `pause_flow_run` needs a number.
PAUSE_NEVER_EXPIRES = 100 * 365 * 24 * 3600


def _suspend(form, key: str, campaign_id: str, run_id: str):
    """Suspend the deployed run; it keeps its claim on the campaign while no process holds it."""
    suspend_claim(campaign_id, run_id)
    answer = suspend_flow_run(wait_for_input=form, timeout=None, key=key)
    # Still here: the suspension had been answered already, and this process carries on holding the run.
    reclaim_campaign(campaign_id, run_id, *claims.this_process())
    return answer


def _pause_with_watcher(form, gate_ids: list[int], run_id: str, key: str):
    stop = threading.Event()
    watcher = threading.Thread(target=contextvars.copy_context().run,
                               args=(_resume_when_closed, gate_ids, run_id, stop), daemon=True)
    watcher.start()
    try:
        return pause_flow_run(wait_for_input=form, timeout=PAUSE_NEVER_EXPIRES,
                              poll_interval=max(1, int(settings.get().gate_poll)), key=key)
    finally:
        stop.set()
        watcher.join()


def _resume_input(gate_id: int) -> dict:
    """The last decision on the gate, as the resume form's input."""
    last = gate_service.last_decision(gate_id)
    return {"gate": gate_id, "decision": last.outcome, "person": last.person, "comment": last.comment}


def _resume_when_closed(gate_ids: list[int], run_id: str, stop: threading.Event) -> None:
    """Beside a pause: apply due-date timeouts, and resume the run once a gate is closed in the store."""
    poll = settings.get().gate_poll  # read once: the loop runs for as long as the gate waits
    while not stop.wait(poll):
        closed = gate_service.first_closed(gate_ids)
        if closed is not None and resume_waiting_run(run_id, _resume_input(closed)):
            return


def resume_waiting_run(run_id: str, run_input: dict) -> bool:
    """Resume a paused run; False when it is not paused (not yet, or no longer) or cannot be reached."""
    if not settings.get().prefect_api_url:
        return False  # no server to reach (Prefect would start a throwaway one); the run's watcher resumes it
    try:
        resume_flow_run(run_id, run_input=run_input)
        return True
    except Exception:  # noqa: BLE001  not paused, or the server is away: the run's own watcher will resume it
        return False


def decide_and_resume(gate_ref: str | int, person: str, outcome: str, comment: str = "",
                      entry_point: str = "cli") -> tuple[DecisionResult, bool]:
    """Record a decision (the one core door), then wake the waiting run if the gate closed."""
    result = gate_service.record_decision(gate_ref, person, outcome, comment, entry_point=entry_point)
    return result, resume_after(result)


def resume_after(result: DecisionResult) -> bool:
    """Wake the run waiting on a gate that a decision (from any entry point) just closed."""
    if result.status != "open" and result.flow_run_id:
        return resume_waiting_run(result.flow_run_id, _resume_input(result.gate_id))
    return False


def apply_timeouts_and_resume() -> list[DecisionResult]:
    """Apply every due gate timeout, then wake the runs whose gates closed (for suspended, deployed runs)."""
    changed = gate_service.time_out_all()
    for result in changed:
        resume_after(result)
    return changed
