"""Prefect tasks around the notifier: queue state changes, sweep reminders, deliver the outbox.

Thin wrappers: the rules live in campaignflow/notify/. The channel registry
is read inside each task (from the channels block, the channels file and the
environment), so secrets never travel as task parameters or results.
"""

from __future__ import annotations

import datetime as dt

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.logging import get_run_logger

from blocks.notification_channels import load_registry
from campaignflow.notify import service
from campaignflow.notify.channels import redact
from campaignflow.notify.delivery import DeliveryReport, deliver_due
from campaignflow.notify.reminders import SweepReport


@task(name="queue-notifications", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def queue_notifications(now: dt.datetime | None = None) -> int:
    """New audit events (state changes) into outbox rows."""
    added = service.queue_events(load_registry(), now)
    get_run_logger().info("%d message(s) queued from state changes", added)
    return added


@task(name="sweep-reminders", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def sweep_reminders(now: dt.datetime | None = None) -> SweepReport:
    """Due-soon and overdue reminders, escalations and SLA breaches into the outbox."""
    report = service.run_sweep(load_registry(), now)
    get_run_logger().info("sweep: %s", report)
    return report


@task(name="deliver-notifications", cache_policy=NO_CACHE)
def deliver_notifications(limit: int = 2000, now: dt.datetime | None = None) -> DeliveryReport:
    """Send due outbox rows through apprise; failures wait for their backoff, never block the flow."""
    registry = load_registry()
    report = deliver_due(registry, limit=limit, now=now)
    logger = get_run_logger()
    logger.info("delivery: %s", report)
    for problem in report.problems[:20]:
        logger.warning(redact(problem, registry.secrets()))
    return report


@task(name="notify-now", cache_policy=NO_CACHE)
def notify_now() -> str:
    """For the lifecycle flow: queue what just happened and deliver it. A chat outage never fails the campaign."""
    registry = None
    try:
        registry = load_registry()
        report = service.run_once(registry, reminders=False)
        return str(report)
    except Exception as exc:  # noqa: BLE001  the outbox keeps everything; the next pass or sweep delivers it
        text = f"{exc.__class__.__name__}: {exc}"
        message = redact(text, registry.secrets()) if registry else text
        get_run_logger().warning("notifications deferred to the next sweep: %s", message)
        return "deferred"


@task(name="notify-step-failed", cache_policy=NO_CACHE)
def notify_step_failed(campaign_id: str, step: str, error: str) -> None:
    """Record the failure in the audit log (the team hears about it) and try to deliver at once."""
    try:
        service.record_step_failure(campaign_id, step, error)
    except Exception as exc:  # noqa: BLE001  the step's own error is the one the run must report
        get_run_logger().warning("could not record the failure for notification: %s", exc.__class__.__name__)
        return
    notify_now.fn()
