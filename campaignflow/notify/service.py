"""One notification pass: state changes and reminders to the outbox, then the outbox to chat."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from campaignflow import db
from campaignflow.notify import rules
from campaignflow.notify.channels import ChannelRegistry
from campaignflow.notify.delivery import DeliveryReport, deliver_due
from campaignflow.notify.reminders import SweepReport, sweep
from campaignflow.store import audit


@dataclass
class PassReport:
    events: int
    sweep: SweepReport | None
    delivery: DeliveryReport | None

    def __str__(self) -> str:
        parts = [f"{self.events} message(s) queued from state changes"]
        if self.sweep is not None:
            parts.append(f"reminders: {self.sweep}")
        if self.delivery is not None:
            parts.append(f"delivery: {self.delivery}")
        return "; ".join(parts)


def queue_events(registry: ChannelRegistry, now: dt.datetime | None = None, url: str | None = None) -> int:
    """Turn new audit events into outbox rows (one transaction)."""
    with db.session(url, write=True) as s:
        return rules.fan_out(s, registry, now=now)


def run_sweep(registry: ChannelRegistry, now: dt.datetime | None = None, url: str | None = None) -> SweepReport:
    """Reminders, escalations and SLA checks into the outbox (one transaction)."""
    with db.session(url, write=True) as s:
        return sweep(s, registry, now)


def run_once(registry: ChannelRegistry, *, reminders: bool = True, deliver: bool = True,
             now: dt.datetime | None = None, url: str | None = None) -> PassReport:
    """The whole pass: sweep (optional), fan out (the sweep's SLA events too), deliver (optional)."""
    swept = run_sweep(registry, now, url) if reminders else None
    events = queue_events(registry, now, url)
    delivered = deliver_due(registry, url=url, now=now) if deliver else None
    return PassReport(events, swept, delivered)


def record_step_failure(campaign_id: str, step: str, error: str, url: str | None = None) -> None:
    """A failed step has no audit event of its own; write one so the team hears about it."""
    with db.session(url) as s:
        audit(s, campaign_id, "step.failed", step, error=error[:500])
