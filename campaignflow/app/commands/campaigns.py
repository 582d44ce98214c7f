"""validate, spec schema, run, recover, status, demo."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Optional

import typer

from campaignflow.app.commands import app, console, print_json

spec_app = typer.Typer(help="The campaign spec format.", no_args_is_help=True)
app.add_typer(spec_app, name="spec")


@spec_app.command("schema")
def spec_schema() -> None:
    """Print the spec's JSON Schema (point your editor's YAML plugin at it)."""
    from campaignflow.spec import json_schema

    print_json(json_schema())


@app.command()
def validate(spec: Path = typer.Argument(..., help="The campaign spec (YAML).")) -> None:
    """Check a campaign spec and list every problem at once (exit status 2 when invalid)."""
    from campaignflow.spec import load_spec

    parsed, _ = load_spec(spec)
    typer.echo(f"{spec}: valid. {parsed.name} ({parsed.id}): {len(parsed.goals)} goal(s), "
               f"{len(parsed.deliverables)} deliverable(s), budget {parsed.budget_total():,.2f} {parsed.currency}")


def _register(spec_path: Path, today: dt.date | None = None, new_id: str | None = None):
    parsed, text = _parse(spec_path, today, new_id)
    return _register_once(parsed, text, spec_path.resolve().parent)


def _parse(spec_path: Path, today: dt.date | None = None, new_id: str | None = None):
    """The validated spec and its text (nothing is written)."""
    import yaml

    from campaignflow.spec import load_spec, parse_yaml, validate_spec_data

    parsed, text = load_spec(spec_path, today=today)
    if new_id:
        data = parse_yaml(text, str(spec_path))
        data["id"] = new_id
        text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        parsed = validate_spec_data(data, str(spec_path), today=today)
    return parsed, text


def _register_once(parsed, text: str, spec_dir: Path):
    """Register, or find the campaign registered under the same id by a `run` at the same moment."""
    from sqlalchemy.exc import IntegrityError

    from campaignflow import db, store

    try:
        with db.session(write=True) as s:
            return store.register_campaign(s, parsed, text, spec_dir)
    except IntegrityError:
        # Another process inserted the same id between our look and our insert (PostgreSQL lets both look):
        # the second look sees it, and compares the specs as any re-run does.
        with db.session(write=True) as s:
            return store.register_campaign(s, parsed, text, spec_dir)


def _finish(campaign_id: str, out) -> None:
    from campaignflow import db
    from campaignflow.status import detail

    with db.session() as s:
        info = detail(s, campaign_id)
    out.print(f"\nCampaign {info['campaign']} is {info['status']}.")
    for step in info["steps"]:
        out.print(f"  {step['step']:<12} {step['status']:<10} {step['summary']}", highlight=False)


@app.command()
def run(
    spec: Path = typer.Argument(..., help="The campaign spec (YAML)."),
    deployed: bool = typer.Option(False, "--deployed", help="Start it on the served deployment (python -m "
                                  "deployments.lifecycle) and return; its gates wait suspended."),
) -> None:
    """Register a campaign and carry it through its lifecycle; running it again continues where it stopped.

    One lifecycle run per campaign: while another run holds it, `run` says which and exits with status 1.
    """
    from campaignflow.app.commands.running import require_deployment, require_prefect

    out = console()
    parsed, text = _parse(spec)
    # A campaign is registered only when a run can start for it.
    require_deployment(out) if deployed else require_prefect(out)
    campaign, created = _register_once(parsed, text, spec.resolve().parent)
    out.print(f"Campaign {campaign.id} {'registered' if created else 'continues'} "
              f"(status: {campaign.status}, step: {campaign.current_step}).")
    _continue(campaign.id, campaign.status, out, deployed)


def _continue(campaign_id: str, status: str, out, deployed: bool) -> None:
    from campaignflow.app.commands.running import continue_campaign

    if status in ("completed", "stopped"):
        out.print(f"Nothing to do: the campaign is {status}. `campaignflow status {campaign_id}` shows it.")
        return
    if continue_campaign(campaign_id, out, deployed) is not None:
        _finish(campaign_id, out)


@app.command()
def recover(
    campaign: str = typer.Argument(..., help="Campaign id."),
    deployed: bool = typer.Option(False, "--deployed", help="Continue it on the served deployment instead of here."),
) -> None:
    """Continue a campaign whose run died (killed, crashed, cancelled, failed), from its first step not completed.

    The orphaned Prefect run is marked crashed. Refused while a live run holds the campaign.
    """
    from campaignflow import db
    from campaignflow.app.commands.running import require_deployment, require_prefect
    from campaignflow.store import get_campaign

    out = console()
    require_deployment(out) if deployed else require_prefect(out)
    with db.session() as s:
        status = get_campaign(s, campaign).status
    _continue(campaign, status, out, deployed)


@app.command()
def status(
    campaign: Optional[str] = typer.Argument(None, help="A campaign id for the detail; none for all campaigns."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """All campaigns at a glance (step, gates waiting and on whom, overdue work), or one in detail."""
    from campaignflow import db
    from campaignflow import status as st
    from campaignflow.app.commands.running import connect_prefect, run_health

    with db.session() as s:
        data = st.detail(s, campaign) if campaign else st.overview(s)
    out = console()
    connect_prefect(out, autostart=False)
    health = run_health(campaign)
    for row in [data] if campaign else data:
        row["run"] = health[row["campaign"]].as_dict()
    if as_json:
        print_json(data)
        return
    if campaign:
        _print_detail(data, out)
        return
    if not data:
        out.print("No campaigns yet. Start one with `campaignflow run SPEC` or try `campaignflow demo`.")
        return
    from rich.table import Table

    table = Table("campaign", "status", "step", "waiting on", "overdue", "SLA breaches", box=None, pad_edge=False)
    for row in data:
        waiting = "; ".join(f"#{g['gate']} {', '.join(g['on'])}" for g in row["waiting"]) or "—"
        breaches = "; ".join(b["what"] or b["rule"] for b in row.get("sla_breaches", [])) or "—"
        table.add_row(row["campaign"], row["status"], row["step"], waiting, "; ".join(row["overdue"]) or "—", breaches)
    out.print(table)
    for row in data:  # where the store and Prefect disagree, and the one command that mends it
        if row["run"]["state"] in ("orphaned", "none") and row["status"] != "registered":
            out.print(f"{row['campaign']}: {row['run']['says']}", highlight=False)


def _print_detail(info: dict, out) -> None:
    out.print(f"{info['name']} ({info['campaign']}) — {info['status']}, step {info['step']}, "
              f"{info['start']} to {info['end']}")
    out.print(f"Run: {info['run']['says']}", highlight=False)
    out.print("Steps:")
    for step in info["steps"]:
        out.print(f"  {step['step']:<12} {step['status']:<10} {step['summary']}", highlight=False)
    if info["waiting"]:
        out.print("Waiting:")
        for g in info["waiting"]:
            out.print(f"  #{g['gate']} {g['title']} — on {', '.join(g['waiting_on'])}")
    late = [d for d in info["deliverables"] if d["overdue"]]
    if late:
        out.print("Overdue:")
        for d in late:
            out.print(f"  {d['key']} due {d['due']} ({d['owner']}, {d['status']})")
    if info.get("sla_breaches"):
        out.print("Client SLA breaches:")
        for b in info["sla_breaches"]:
            out.print(f"  {b['rule']}: {b['what'] or b['subject']} (due {b['due_at'][:16]})")
    out.print(f"Budget: {info['budget']['total']:,.2f} {info['budget']['currency']} ({', '.join(info['budget']['status'])})")


@app.command()
def demo(
    example: str = typer.Option("b2b-webinar", help="Which bundled example: b2b-webinar or retail-spring."),
    pause: float = typer.Option(1.0, help="Seconds each scripted approver takes to answer."),
) -> None:
    """Run a bundled example campaign from start to finish; scripted approvers answer its gates."""
    from campaignflow.app.commands.demo_approvers import DemoApprovers
    from campaignflow.app.commands.running import require_prefect, run_lifecycle

    out = console()
    examples = Path(__file__).resolve().parents[2] / "examples"  # campaignflow/examples
    spec_path = examples / f"{example}.yaml"
    if not spec_path.is_file():
        names = ", ".join(p.stem for p in sorted(examples.glob("*.yaml")))
        raise typer.BadParameter(f"no bundled example {example!r}; choose one of: {names}", param_hint="--example")
    from campaignflow.spec import load_spec

    base, _ = load_spec(spec_path, today=dt.date.min)
    new_id = f"{base.id}-demo-{dt.datetime.now():%Y%m%d%H%M%S}"
    # A demo replays a plan whose dates may already be behind us: check them against its own start.
    campaign, _ = _register(spec_path, today=base.start, new_id=new_id)
    out.print(f"Demo campaign {campaign.id}: {campaign.name}. Scripted approvers answer each gate "
              f"through the same decision path as `campaignflow approve`.")
    require_prefect(out)
    with DemoApprovers(campaign.id, pause, out):
        result = run_lifecycle(campaign.id, out)
    _finish(campaign.id, out)
    out.print(f"\nDemo {'finished' if result == 'completed' else result}. Try: campaignflow status; "
              f"campaignflow status {campaign.id}")


@app.command()
def done(
    campaign: str = typer.Argument(..., help="Campaign id."),
    deliverable: str = typer.Argument(..., help="Deliverable key, e.g. landing-page."),
    person: str = typer.Option(..., "--as", help="Who says so: its owner or a campaign manager."),
    force: bool = typer.Option(False, "--force", help="Campaign or account manager only: mark it done although "
                               "the goals or budget are not approved or its dependencies are open (audited)."),
) -> None:
    """Mark a deliverable done (published, bought, shipped); reminders about it stop."""
    from campaignflow import db
    from campaignflow.lifecycle import mark_done

    with db.session(write=True) as s:
        row, unblocked = mark_done(s, campaign, deliverable, person, force=force)
    console().print(f"{row.key} is done.")
    for waiting in unblocked:
        console().print(f"{waiting['key']} ({waiting['owner']}) has everything it waits on and can start now.")
