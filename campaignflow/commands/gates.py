"""approvals, approve, request-changes, reject."""

from __future__ import annotations

from typing import Optional

import typer

from campaignflow.commands import app, console, print_json

GATE = typer.Argument(..., help="Gate number (as `approvals` lists it) or gate key.")
AS = typer.Option(..., "--as", help="Who decides: your handle in the campaign spec.")


@app.command()
def approvals(
    person: Optional[str] = typer.Option(None, "--for", help="Only the gates waiting on this person."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Gates waiting for a decision, and on whom."""
    from campaignflow import db
    from campaignflow.status import pending_approvals

    with db.session() as s:
        rows = pending_approvals(s, person)
    if as_json:
        print_json(rows)
        return
    out = console()
    if not rows:
        out.print("Nothing is waiting" + (f" on {person}." if person else "."))
        return
    from rich.table import Table

    table = Table("#", "campaign", "gate", "waiting on", "opened", box=None, pad_edge=False)
    for r in rows:
        table.add_row(str(r["gate"]), r["campaign"], r["title"], ", ".join(r["waiting_on"]), r["opened_at"][:16])
    out.print(table)


def _decide(gate: str, person: str, outcome: str, comment: str) -> None:
    from campaignflow.commands.running import connect_prefect

    out = console()
    connect_prefect(out, autostart=False)
    from flows.gates import decide_and_resume

    result, resumed = decide_and_resume(gate, person, outcome, comment or "", entry_point="cli")
    said = {"approve": "approved", "request_changes": "requested changes on", "reject": "rejected"}[outcome]
    head = (f"{person} {said} gate #{result.gate_id} ({result.gate_key})" if result.recorded
            else f"already on record: {person} {said} gate #{result.gate_id}; nothing changed")
    if result.status == "open":
        tail = f"the gate stays open, waiting on {', '.join(result.waiting_on)}"
    elif resumed:
        tail = f"the gate is {result.status.replace('_', ' ')}; the waiting campaign flow resumes now"
    else:
        tail = (f"the gate is {result.status.replace('_', ' ')}; the campaign continues when its flow runs "
                f"(a waiting flow notices within seconds)")
    out.print(f"{head}: {tail}.", highlight=False)


@app.command()
def approve(gate: str = GATE, person: str = AS,
            comment: str = typer.Option("", "--comment", help="Optional note for the team.")) -> None:
    """Approve a gate."""
    _decide(gate, person, "approve", comment)


@app.command("request-changes")
def request_changes(gate: str = GATE, person: str = AS,
                    comment: str = typer.Option(..., "--comment", help="What must change.")) -> None:
    """Send the work back for another round; the comment says what must change."""
    _decide(gate, person, "request_changes", comment)


@app.command()
def reject(gate: str = GATE, person: str = AS,
           comment: str = typer.Option(..., "--comment", help="Why it is rejected.")) -> None:
    """Reject: goals or budget stop the campaign; an asset is dropped."""
    _decide(gate, person, "reject", comment)
