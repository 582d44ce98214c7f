"""The store side of waiting at approval gates: reading them, timing them out, recording decisions.

Each function is one store transaction of its own, so the layers above (flows/gates.py, which waits and
resumes with Prefect, and the app) call them without touching a session or SQL. The rules themselves
(who may decide, what a policy adds up to, what a due date does) stay in `campaignflow.approvals`.
"""

from __future__ import annotations

from sqlmodel import select

from campaignflow import db, models as m
from campaignflow.approvals import DecisionResult, apply_timeouts, decide, waiting_on
from campaignflow.store import attach_flow_run, gate_decisions


def read(gate_ids: list[int]) -> list[tuple[m.ApprovalGate, list[m.Decision]]]:
    """Each gate with its decisions so far, in the order asked."""
    with db.session() as s:
        return [(s.get(m.ApprovalGate, gid), gate_decisions(s, gid)) for gid in gate_ids]


def still_waiting_on(gates: list[tuple[m.ApprovalGate, list[m.Decision]]]) -> list[tuple[m.ApprovalGate, list[str]]]:
    """Each gate with the people it still waits on (from `read`; no store access)."""
    return [(g, waiting_on(g, ds)) for g, ds in gates]


def last_decision(gate_id: int) -> m.Decision:
    with db.session() as s:
        return gate_decisions(s, gate_id)[-1]


def attach_run(gate_ids: list[int], run_id: str) -> None:
    """Note which flow run waits on the gates (a decision from anywhere then knows whom to wake)."""
    with db.session(write=True) as s:
        for gid in gate_ids:
            attach_flow_run(s, gid, run_id)


def _load(gate_ids: list[int]) -> list[m.ApprovalGate]:
    with db.session() as s:
        return list(s.exec(select(m.ApprovalGate).where(m.ApprovalGate.id.in_(gate_ids))))


def _time_out(gates: list[m.ApprovalGate]) -> bool:
    """Act on the due dates among these gates that passed; the write lock is taken only when there is
    something to do. True when a gate changed."""
    now = m.utcnow()
    due = [g.id for g in gates
           if g.status == "open" and g.on_timeout != "wait" and g.due_at and m.as_utc(g.due_at) <= now]
    if due:
        with db.session(write=True) as s:
            apply_timeouts(s, now, gate_ids=due)
    return bool(due)


def time_out_due(gate_ids: list[int]) -> bool:
    """Act on the due dates among these gates that passed; True when a gate changed."""
    return _time_out(_load(gate_ids))


def first_closed(gate_ids: list[int]) -> int | None:
    """The first of the gates that is closed (after acting on due dates), or None while all are open.
    One query a call whatever the number of gates, while nothing is due: a watcher polls it."""
    gates = _load(gate_ids)
    if _time_out(gates):
        gates = _load(gate_ids)
    return next((g.id for g in gates if g.status != "open"), None)


def record_decision(gate_ref: str | int, person: str, outcome: str, comment: str = "",
                    entry_point: str = "cli") -> DecisionResult:
    """`approvals.decide`, the one door for a decision, in a transaction holding the write lock."""
    with db.session(write=True) as s:
        return decide(s, gate_ref, person, outcome, comment, entry_point=entry_point)


def time_out_all() -> list[DecisionResult]:
    """Apply every due gate timeout in the store; returns the gates that changed."""
    with db.session(write=True) as s:
        return apply_timeouts(s)
