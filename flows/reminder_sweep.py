"""Reminder sweep: remind people of what is due soon or overdue, escalate, check client SLAs, deliver.

Each run
0. acts on approval gates past their due date (escalate, auto-approve or
   auto-reject, as each gate's `on_timeout` says) and wakes their runs;
1. sweeps every open approval gate and deliverable: due soon (the spec's
   `notifications.reminders.due_soon_days`), overdue, repeated every
   `every_days` business days, escalated after `escalate_after` reminders,
   respecting each team's time zone, business days, holidays and quiet hours,
   as one digest per person when `digest` is on;
2. records client SLA breaches (they show in `campaignflow status`);
3. turns new audit events (state changes) into messages;
4. delivers the outbox through apprise, with retries and backoff.

Everything goes through the outbox first, so a crash or a chat outage only
delays messages. Run it:

    python -m flows.reminder_sweep            # one sweep now (needs a Prefect API or starts a temporary one)
    campaignflow sweep                         # the same without Prefect
    python -m deployments.reminders            # serve it on an interval (every 15 minutes by default)
"""

from __future__ import annotations

import datetime as dt

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from campaignflow.presentation import markdown_table
from flows.gates import apply_timeouts_and_resume
from tasks.notify import deliver_notifications, queue_notifications, sweep_reminders


@flow(name="reminder-sweep", log_prints=False)
def reminder_sweep(deliver: bool = True, now: dt.datetime | None = None) -> dict:
    """One sweep over every campaign; `now` pretends another time (to preview a morning's reminders)."""
    timed_out = apply_timeouts_and_resume() if now is None else []  # a preview must not decide anything
    swept = sweep_reminders(now)
    queued = queue_notifications(now)
    delivered = deliver_notifications(now=now) if deliver else None
    summary = {"gates_timed_out": len(timed_out), "due_items": swept.checked, "reminded": swept.reminded, "escalated": swept.escalated,
               "held_for_quiet_hours": swept.held, "sla_breaches": swept.breaches,
               "queued": swept.messages + queued,
               "sent": delivered.sent if delivered else 0, "retrying": delivered.retrying if delivered else 0,
               "dead": delivered.dead if delivered else 0}
    table = markdown_table(["", ""], [(k.replace("_", " "), v) for k, v in summary.items()])
    create_markdown_artifact(key="reminder-sweep", markdown=f"# Reminder sweep\n\n{table}\n",
                             description=f"{swept.reminded} reminded, {summary['sent']} sent")
    return summary


if __name__ == "__main__":
    print(reminder_sweep())
