"""Delivery: due outbox rows to apprise, one message per target URL, each marked the moment it is sent.

The one window where a message can repeat is a crash after apprise handed
the message over and before its row was marked (milliseconds, one row): the
lease then runs out and the row is sent again. Everything else (a crash
before sending, an endpoint that is down for hours) only delays messages.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from campaignflow import db
from campaignflow.notify import outbox
from campaignflow.notify.channels import ChannelRegistry, redact

UTC = dt.timezone.utc


@dataclass
class DeliveryReport:
    sent: int = 0
    retrying: int = 0
    dead: int = 0
    problems: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.sent} sent, {self.retrying} to retry, {self.dead} dead"


class _Capture(logging.Handler):
    """Apprise says why a send failed only in its log; keep the lines per sending thread."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.lines: dict[int, list[str]] = {}

    def emit(self, record: logging.LogRecord) -> None:
        buf = self.lines.get(record.thread)
        if buf is not None:
            buf.append(record.getMessage())


_capture = _Capture()
_capture_lock = threading.Lock()


def _ensure_capture() -> None:
    with _capture_lock:
        logger = logging.getLogger("apprise")
        if _capture not in logger.handlers:
            logger.addHandler(_capture)


def send(url: str, title: str, body: str, secrets: list[str]) -> tuple[bool, str]:
    """Hand one message to apprise for one URL; (delivered, reason when not). The reason never holds a secret."""
    import apprise

    _ensure_capture()
    me = threading.get_ident()
    _capture.lines[me] = []
    try:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            return False, "apprise does not understand this channel URL (check its scheme and format)"
        ok = plugin.notify(body=body or title, title=title)
        lines = _capture.lines.get(me) or []
        reason = "; ".join(dict.fromkeys(lines)) or "the endpoint did not accept the message"
        return bool(ok), "" if ok else redact(reason, secrets)
    except Exception as exc:  # noqa: BLE001  a plugin bug must not take the other messages down
        return False, redact(f"{exc.__class__.__name__}: {exc}", secrets)
    finally:
        _capture.lines.pop(me, None)


def deliver_due(registry: ChannelRegistry, *, limit: int = 500, workers: int = 4, now: dt.datetime | None = None,
                url: str | None = None, on_sent: Callable[[int], None] | None = None) -> DeliveryReport:
    """Send every due outbox row (up to `limit`); returns what happened."""
    report = DeliveryReport()
    secrets = registry.secrets()
    # Claim against the clock at the start: a row that fails now waits for the next pass, even with no backoff.
    now = (now or dt.datetime.now(UTC)).astimezone(UTC)  # SQLite keeps wall times: compare in UTC
    while report.sent + report.retrying + report.dead < limit:
        with db.session(url, write=True) as s:
            rows = outbox.claim(s, min(200, limit - report.sent - report.retrying - report.dead), now)
            heads = outbox.queue_heads(s, {r.channel for r in rows if r.channel}, now)
        if not rows:
            break
        # Chat is read in order: each target gets its messages one after another, oldest first, and
        # nothing overtakes a message that is still waiting for a retry.
        queues: dict[tuple[str, int], list] = {}
        for row in rows:
            queues.setdefault((row.channel, row.target), []).append(row)
        claimed = {r.id for r in rows}
        runnable, held = [], []
        for key, queue in queues.items():
            head = heads.get(key)
            (held if key[0] and head is not None and head not in claimed else runnable).append(queue)
        if held:
            with db.session(url, write=True) as s:
                for queue in held:
                    outbox.release(s, [r.id for r in queue], queue[0].claim)
        if not runnable:
            break

        def work(queue: list) -> list[tuple]:
            results = []
            for i, row in enumerate(queue):
                ok, reason, final = _attempt(row, registry, secrets)
                # Mark each row the moment its send returns: the only window for a repeat is this gap.
                with db.session(url, write=True) as s:
                    if ok:
                        outbox.mark_sent(s, row.id, row.claim)
                        status = "sent"
                    else:
                        status = outbox.mark_failed(s, row.id, row.claim, row.attempts, reason, final=final)
                        if status == "pending":
                            outbox.release(s, [r.id for r in queue[i + 1:]], row.claim)
                results.append((row, status, reason))
                if status == "pending":
                    break  # the rest of this target's queue waits behind the failed message
            return results

        failures = 0
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for results in pool.map(work, runnable):
                for row, status, reason in results:
                    if status == "sent":
                        report.sent += 1
                        if on_sent:
                            on_sent(row.id)
                    elif status == "dead":
                        report.dead += 1
                        report.problems.append(f"#{row.id} to {row.channel or row.recipient}: {reason}")
                    else:
                        report.retrying += 1
                        report.problems.append(f"#{row.id} to {row.channel}: {reason} (will retry)")
                    failures += status != "sent"
        if failures or held:
            break  # the rest waits for its backoff and the next pass; hammering a down endpoint helps nobody
    return report


def _attempt(row, registry: ChannelRegistry, secrets: list[str]) -> tuple[bool, str, bool]:
    """(sent, reason, final): final when no retry can help until someone changes the configuration."""
    urls = registry.channels.get(row.channel)
    if not row.channel:
        return False, (f"{row.recipient or 'the recipient'} has no channel: set `channel` for them in the spec, "
                       "map them in the channels block, or set a default channel"), True
    if urls is None:
        return False, (f"channel {row.channel!r} is not configured: add it to the channels block, channels.yaml "
                       "or the environment, then `campaignflow outbox retry`"), True
    if row.target >= len(urls):
        return False, f"channel {row.channel!r} has no URL number {row.target + 1} any more", True
    ok, reason = send(urls[row.target], row.title, row.body, secrets)
    return ok, reason, False
