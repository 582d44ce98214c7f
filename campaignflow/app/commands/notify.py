"""channels, outbox, sweep: chat and email notifications."""

from __future__ import annotations

import datetime as dt
from typing import List, Optional

import typer

from campaignflow.app.commands import app, console, print_json

channels_app = typer.Typer(help="Notification channels (apprise URLs per name): list them, send a test.",
                           no_args_is_help=True)
outbox_app = typer.Typer(help="Messages waiting, sent, or dead: list them, retry the dead ones.", no_args_is_help=True)
app.add_typer(channels_app, name="channels")
app.add_typer(outbox_app, name="outbox")


def registry():
    """Channels from the Prefect block (when a Prefect server is configured or running), the file and the environment."""
    from campaignflow import localserver

    if localserver.configure(autostart=False):
        from blocks.notification_channels import load_registry

        return load_registry(use_block=True)
    from campaignflow.notify.channels import load_local

    return load_local()


@channels_app.command("list")
def channels_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The configured channels, with their URLs masked, and where they come from."""
    from campaignflow.notify.channels import masked

    reg = registry()
    rows = [{"channel": name, "targets": [masked(u) for u in urls]} for name, urls in sorted(reg.channels.items())]
    if as_json:
        print_json({"channels": rows, "people": reg.people, "roles": reg.roles, "teams": reg.teams,
                    "default": reg.default, "sources": reg.sources})
        return
    out = console()
    if not rows:
        out.print("No channels configured. Add some to the channels block, to "
                  f"{__import__('campaignflow.notify.channels', fromlist=['x']).channels_file()} or as "
                  "CAMPAIGNFLOW_CHANNEL_<NAME>=URL (see docs/notifications.md).")
        return
    for row in rows:
        out.print(f"{row['channel']}: {', '.join(row['targets'])}", highlight=False, markup=False)
    out.print(f"(from: {', '.join(reg.sources)})", highlight=False, markup=False)


@channels_app.command("test")
def channels_test(
    name: str = typer.Argument(..., help="The channel name, as a spec or channels.yaml writes it."),
    message: str = typer.Option("campaignflow test message: if you can read this, reminders will reach you here.",
                                "--message", "-m", help="The text to send."),
) -> None:
    """Send a test message to every URL of a channel and say plainly whether it arrived."""
    from campaignflow.notify.channels import masked
    from campaignflow.notify.delivery import send

    reg = registry()
    urls = reg.urls(name)
    out = console()
    failed = 0
    for i, url in enumerate(urls, start=1):
        where = masked(url)
        ok, reason, _ = send(url, f"campaignflow: test of channel {name}", message, reg.secrets())
        if ok:
            out.print(f"arrived: {name} target {i} of {len(urls)} ({where}) accepted the test message.",
                      highlight=False, markup=False)
        else:
            failed += 1
            out.print(f"did NOT arrive: {name} target {i} of {len(urls)} ({where}): {reason}",
                      highlight=False, markup=False)
    if failed:
        raise typer.Exit(1)


@outbox_app.command("list")
def outbox_list(
    status: Optional[str] = typer.Option(None, "--status", help="Only pending, sending, sent or dead messages."),
    limit: int = typer.Option(50, "--limit", min=1, help="How many (newest first)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """The newest outbox messages with their state, attempts and, for failures, the reason."""
    from campaignflow import db
    from campaignflow.errors import UserError
    from campaignflow.models_notify import OUTBOX_STATUSES
    from campaignflow.notify import outbox

    if status is not None and status not in OUTBOX_STATUSES:
        raise UserError(f"--status {status!r} is not a message state; use one of {', '.join(OUTBOX_STATUSES)}")
    with db.session() as s:
        rows = outbox.listing(s, status, limit)
        counts = outbox.counts(s)
    data = [{"id": r.id, "status": r.status, "kind": r.kind, "campaign": r.campaign_id, "to": r.recipient,
             "channel": r.channel, "target": r.target, "title": r.title, "attempts": r.attempts,
             "next_attempt_at": r.next_attempt_at.isoformat() if r.next_attempt_at else None,
             "sent_at": r.sent_at.isoformat() if r.sent_at else None, "error": r.last_error} for r in rows]
    if as_json:
        print_json({"counts": counts, "messages": data})
        return
    out = console()
    out.print("Outbox: " + (", ".join(f"{counts[k]} {k}" for k in OUTBOX_STATUSES if counts.get(k)) or "empty"),
              highlight=False, markup=False)
    if not data:
        return
    for r in data:
        when = f", sent {r['sent_at'][:16]}" if r["sent_at"] else (
            f", next try {r['next_attempt_at'][:16]}" if r["status"] == "pending" else "")
        out.print(f"#{r['id']} {r['status']} {r['kind']} to {r['to'] or '?'} via {r['channel'] or '(no channel)'}, "
                  f"{r['attempts']} attempt(s){when}", highlight=False, markup=False)
        out.print(f"    {r['title']}", highlight=False, markup=False)
        if r["error"]:
            out.print(f"    why: {r['error']}", highlight=False, markup=False)


@outbox_app.command("show")
def outbox_show(message_id: int = typer.Argument(..., help="The message number, as `outbox list` shows it.")) -> None:
    """One message in full: what a channel with a size limit got shortened is all here."""
    from campaignflow import db
    from campaignflow.errors import UserError
    from campaignflow.models_notify import OutboxMessage

    with db.session() as s:
        row = s.get(OutboxMessage, message_id)
        if row is None:
            raise UserError(f"there is no outbox message {message_id}; `campaignflow outbox list` shows them")
        out = console()
        out.print(f"#{row.id} {row.status} {row.kind} to {row.recipient or '?'} via {row.channel or '(no channel)'}",
                  highlight=False, markup=False)
        out.print(row.title, highlight=False, markup=False, soft_wrap=True)
        out.print(row.body, highlight=False, markup=False, soft_wrap=True)
        if row.last_error:
            out.print(f"why: {row.last_error}", highlight=False, markup=False)


@outbox_app.command("retry")
def outbox_retry(
    ids: Optional[List[int]] = typer.Argument(None, help="Message numbers (as `outbox list` shows); none: every dead one."),
) -> None:
    """Give dead messages a fresh set of attempts (after fixing a channel), then deliver them."""
    from campaignflow import db
    from campaignflow.notify import outbox
    from campaignflow.notify.delivery import deliver_due

    reg = registry()
    with db.session(write=True) as s:
        count = outbox.retry(s, list(ids or []), {k: len(v) for k, v in reg.channels.items()})
    out = console()
    if not count:
        out.print("No dead messages to retry.")
        return
    report = deliver_due(reg)
    out.print(f"{count} message(s) back in the queue; delivery: {report}.", highlight=False, markup=False)
    for problem in report.problems[:20]:
        out.print(f"  {problem}", highlight=False, markup=False)


@app.command()
def sweep(
    deliver: bool = typer.Option(True, "--deliver/--no-deliver", help="Send the queued messages now."),
    at: Optional[str] = typer.Option(None, "--at", help="Pretend it is this time (ISO, e.g. 2027-01-12T09:00+01:00)."),
) -> None:
    """Run one reminder sweep now: reminders, escalations, SLA checks, queued state changes, delivery."""
    from campaignflow.errors import UserError
    from campaignflow.notify import service

    now = None
    if at:
        try:
            now = dt.datetime.fromisoformat(at)
        except ValueError:
            raise UserError(f"--at {at!r} is not a date and time; use ISO form, e.g. 2027-01-12T09:00+01:00") from None
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
    reg = registry()
    out = console()
    with out.status("sweeping…"):
        report = service.run_once(reg, deliver=deliver, now=now)
    out.print(str(report), highlight=False, markup=False)
    if report.delivery:
        for problem in report.delivery.problems[:20]:
            out.print(f"  {problem}", highlight=False, markup=False)
