"""approvals, approve, request-changes, reject."""

from __future__ import annotations

from typing import Optional

import typer

from campaignflow.app.commands import app, console, print_json

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
    from campaignflow.app.commands.running import connect_prefect, what_happens_next

    out = console()
    connect_prefect(out, autostart=False)
    from flows.gates import decide_and_resume

    result, resumed = decide_and_resume(gate, person, outcome, comment or "", entry_point="cli")
    said = {"approve": "approved", "request_changes": "requested changes on", "reject": "rejected"}[outcome]
    also = [seat for seat in result.seats if seat != person]
    head = ((f"{person} {said} gate #{result.gate_id} ({result.gate_key})"
             + (f", also for {', '.join(also)} (standing in)" if also else "")) if result.recorded
            else f"already on record: {result.already}; nothing changed")
    if result.status == "open":
        tail = f"the gate stays open, waiting on {', '.join(result.waiting_on)}"
    else:
        tail = what_happens_next(result, resumed)
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


@app.command()
def delegate(
    person: str = typer.Option(..., "--as", help="Who is away: your handle."),
    to: str = typer.Option(..., "--to", help="Who decides your gates meanwhile."),
    starts: str = typer.Option(..., "--from", help="First day away (YYYY-MM-DD)."),
    ends: str = typer.Option(..., "--until", help="Last day away (YYYY-MM-DD)."),
    reason: str = typer.Option("", "--reason", help="e.g. out of office."),
) -> None:
    """Hand your approvals to someone else for a date range (out of office); decisions record both names."""
    import datetime as dt

    from campaignflow import db
    from campaignflow.approvals import delegate as add_delegation
    from campaignflow.errors import UserError

    dates = {}
    for flag, value in (("--from", starts), ("--until", ends)):
        try:
            dates[flag] = dt.date.fromisoformat(value)
        except ValueError:
            raise UserError(f"{flag} {value!r} is not a date; write it as YYYY-MM-DD") from None
    with db.session(write=True) as s:
        row = add_delegation(s, person, to, dates["--from"], dates["--until"], reason)
    console().print(f"{to} decides {person}'s gates from {row.starts} to {row.ends}.")


@app.command()
def timeouts() -> None:
    """Act now on gates past their due date (escalate, auto-approve or auto-reject, as each gate says)."""
    from campaignflow.app.commands.running import connect_prefect

    out = console()
    connect_prefect(out, autostart=False)
    from flows.gates import apply_timeouts_and_resume

    changed = apply_timeouts_and_resume()
    for result in changed:
        out.print(f"gate #{result.gate_id} ({result.gate_key}): {result.status.replace('_', ' ')}"
                  + (f", now waiting on {', '.join(result.waiting_on)}" if result.waiting_on else ""))
    if not changed:
        out.print("No gate is past its due date with a timeout action.")


@app.command()
def audit(
    campaign: str = typer.Argument(..., help="Campaign id."),
    csv: bool = typer.Option(False, "--csv", help="Export as CSV on standard output."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The campaign's append-only audit trail: who did what, when, and through which entry point."""
    from campaignflow import db
    from campaignflow.status import audit_trail

    with db.session() as s:
        rows = audit_trail(s, campaign)
    if as_json:
        print_json(rows)
    elif csv:
        import csv as csvlib
        import sys

        writer = csvlib.DictWriter(sys.stdout, fieldnames=["at", "actor", "action", "subject", "entry_point", "detail"])
        writer.writeheader()
        writer.writerows(rows)
    else:
        out = console()
        for r in rows:
            out.print(f"{r['at'][:19]}  {r['actor']:<10} {r['action']:<20} {r['subject']}"
                      + (f"  [{r['entry_point']}]" if r["entry_point"] else "") + (f"  {r['detail']}" if r["detail"] else ""),
                      highlight=False, markup=False)


@app.command()
def web(host: str = typer.Option("127.0.0.1", help="Interface to listen on."),
        port: int = typer.Option(4290, help="Port to listen on.")) -> None:
    """Serve one-click decision links and the JSON approvals API (set CAMPAIGNFLOW_WEB_URL to where people reach it)."""
    import uvicorn

    from campaignflow.app.commands.running import connect_prefect

    connect_prefect(console(), autostart=False)
    uvicorn.run("campaignflow.app.web:app", host=host, port=port, log_level="warning")
