"""Delivery: due outbox rows to apprise, one message per target URL, each marked the moment it is sent.

The one window where a message can repeat is a crash after apprise handed
the message over and before its row was marked (milliseconds, one row): the
lease then runs out and the row is sent again. Everything else (a crash
before sending, an endpoint that is down for hours) only delays messages.

A message is cut to what its service takes before it is sent (`fit`), and a
service that refuses a message for good (an HTTP 4xx other than 408 and 429)
makes it dead at once: retrying the same bytes cannot help, and a message in
backoff would hold every later message on its channel behind it.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from campaignflow import db, links
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


# Apprise reports a refused HTTP request only in its log, by the convention "…error=<status>." that its
# HTTP plugins share; that status is how delivery tells a refused message from an unreachable service.
_HTTP_STATUS = re.compile(r"\berror=(\d{3})\b")
_RETRYABLE_4XX = (408, 429)  # request timeout, rate limited: the same message may well go through later
_URL = re.compile(r"https?://[^\s<>()\[\]]+")


def refused_for_good(reasons: list[str]) -> int | None:
    """The HTTP status when the service refused the message itself (4xx but 408 and 429), else None."""
    statuses = [int(found) for line in reasons for found in _HTTP_STATUS.findall(line)]
    status = statuses[-1] if statuses else None
    return status if status is not None and 400 <= status < 500 and status not in _RETRYABLE_4XX else None


def fit(plugin, title: str, body: str, whole_text: str = "") -> tuple[str, str]:
    """Title and body cut to the limits apprise declares for this URL's service (`title_maxlen`, `body_maxlen`).

    A cut body says so, says where the whole text is (`whole_text`), and keeps the message's own links (the
    Prefect run, the decision pages) that fell in the cut part: nobody loses the way to act on it."""
    title_max = plugin.title_maxlen
    if title_max > 0 and len(title) > title_max:
        title = title[:title_max - 1].rstrip() + "…"
    budget = plugin.body_maxlen
    if budget <= 0:
        return title, body
    if title and (title_max <= 0 or plugin.overflow_amalgamate_title):
        budget -= len(title) + 2  # the service shows the title inside the body
    if len(body) <= budget:
        return title, body
    note = f"\n… (shortened to fit this channel{'; the whole message: ' + whole_text if whole_text else ''})"
    ours = [u for u in dict.fromkeys(_URL.findall(body)) if _is_ours(u)]
    worst = note + "".join("\n" + u for u in ours)
    if len(worst) > budget // 2:
        ours, worst = [], note  # a tiny limit: the text matters more than the links
    head = body[:max(budget - len(worst), 0)].rstrip()
    tail = note + "".join("\n" + u for u in ours if u not in head)
    return title, (head + tail)[:budget]


def _is_ours(url: str) -> bool:
    bases = [b for b in (links.prefect_ui_url(), links.web_url()) if b]
    return any(url.startswith(base + "/") for base in bases)


def send(url: str, title: str, body: str, secrets: list[str], whole_text: str = "") -> tuple[bool, str, bool]:
    """Hand one message to apprise for one URL: (delivered, reason when not, refused for good).

    The reason never holds a secret. `whole_text` says where to read a message that had to be shortened."""
    import apprise

    _ensure_capture()
    me = threading.get_ident()
    _capture.lines[me] = []
    try:
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            return False, "apprise does not understand this channel URL (check its scheme and format)", True
        title, body = fit(plugin, title, body or title, whole_text)
        ok = plugin.notify(body=body, title=title)
        if ok:
            return True, "", False
        lines = list(dict.fromkeys(_capture.lines.get(me) or []))
        reason = "; ".join(lines) or "the endpoint did not accept the message"
        status = refused_for_good(lines)
        if status is not None:
            reason = f"the service refused this message (HTTP {status}), so it is not retried: {reason}"
        return False, redact(reason, secrets), status is not None
    except Exception as exc:  # noqa: BLE001  a plugin bug must not take the other messages down
        return False, redact(f"{exc.__class__.__name__}: {exc}", secrets), False
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
    """(sent, reason, final): final when no retry can help (the configuration must change first, or the
    service refused this message itself)."""
    urls = registry.channels.get(row.channel)
    if not row.channel:
        return False, (f"{row.recipient or 'the recipient'} has no channel: set `channel` for them in the spec, "
                       "map them in the channels block, or set a default channel"), True
    if urls is None:
        return False, (f"channel {row.channel!r} is not configured: add it to the channels block, channels.yaml "
                       "or the environment, then `campaignflow outbox retry`"), True
    if row.target >= len(urls):
        return False, f"channel {row.channel!r} has no URL number {row.target + 1} any more", True
    return send(urls[row.target], row.title, row.body, secrets, whole_text=f"campaignflow outbox show {row.id}")
